//! What actions (and the pipeline before them) read besides the request: built once by
//! `server` before the workers start, since a limit, cache or pool built per worker would
//! silently multiply.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::web::Bytes;

use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::plan::Plan;
use crate::plan::data::ResourceName;
use crate::ratelimit::RateLimits;
use crate::store::Store;
use crate::store::crud::Resource;

use super::health::Readiness;

/// Everything a request handler may need beyond the request itself.
pub struct AppState {
    /// The compiled plan the server runs.
    pub plan: Arc<Plan>,
    /// Every rate-limit bucket, shared by all workers.
    pub limits: Arc<RateLimits>,
    /// Bearer verification (JWKS and verified-token caches) and API keys.
    pub auth: Arc<Authenticator>,
    /// Permission decisions, precomputed per role.
    pub authz: Arc<Authorizer>,
    /// The database pool.
    pub store: Store,
    /// Each declared resource's table and SQL.
    pub resources: BTreeMap<ResourceName, Arc<Resource>>,
    /// The last readiness check, for `health`.
    pub readiness: Readiness,
    /// The sink of non-mutation audit events.
    pub audit: crate::audit::sink::AuditSink,
    /// Signs and checks the audit log's page cursors.
    pub cursors: Arc<crate::store::cursor::CursorKeys>,
    /// The OpenAPI document of the plan, rendered once at startup when a route serves it:
    /// the same bytes `nestflux openapi` prints.
    pub openapi: Option<Bytes>,
    /// Every metric of this server (served by the `metrics` action).
    pub metrics: Arc<crate::metrics::Metrics>,
}
