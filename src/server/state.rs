//! State shared by every worker, built once before the workers start: a limit, cache or
//! pool built per worker would silently multiply.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::plan::Plan;
use crate::plan::data::ResourceName;
use crate::ratelimit::RateLimits;
use crate::store::crud::Resource;
use crate::store::{Store, StoreError};

/// Everything a request handler may need beyond the request itself.
pub struct AppState {
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
    pub readiness: crate::actions::health::Readiness,
}

/// Why the server could not be assembled from a valid plan (a database that will not open,
/// a key ring that will not load, …).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::SetupError),
}

impl AppState {
    /// Builds the shared state from a compiled plan.
    pub fn build(plan: Arc<Plan>) -> Result<Self, StartError> {
        let opened = crate::store::open(&plan)?;
        for m in &opened.migrations {
            tracing::info!(migration = %m, "applied internal migration");
        }
        for c in &opened.changes {
            tracing::info!("{c}");
        }
        let (store, resources) = (opened.store, opened.resources);
        let limits = Arc::new(RateLimits::from_plan(&plan));
        let auth = Arc::new(Authenticator::build(&plan)?.attach_store(&plan, &store)?);
        // The key refresher runs on its own thread: the server serves while the provider
        // is still unreachable.
        auth.start()?;
        let authz = Arc::new(Authorizer::build(&plan));
        Ok(Self {
            plan,
            limits,
            auth,
            authz,
            store,
            resources,
            readiness: Default::default(),
        })
    }
}
