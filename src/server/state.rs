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
        let (store, resources) = open_store(&plan)?;
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

/// Opens the database, applies the internal migrations and the declared-resource DDL
/// (refusing destructive drift), and compiles each resource's SQL.
pub fn open_store(
    plan: &Plan,
) -> Result<(Store, BTreeMap<ResourceName, Arc<Resource>>), StoreError> {
    let (store, applied) = Store::open(&plan.database)?;
    for m in &applied {
        tracing::info!(migration = %m, "applied internal migration");
    }
    let tables = crate::store::tables(plan);
    let changes = crate::store::ddl::sync(&mut store.conn()?, &tables)?;
    for c in &changes {
        tracing::info!("{c}");
    }
    let pg = store.is_postgres();
    let resources = tables
        .into_iter()
        .map(|t| {
            let ring = plan.encryption.ring.clone();
            (
                ResourceName(t.name.clone()),
                Arc::new(Resource::new(t, pg).with_keys(ring)),
            )
        })
        .collect();
    Ok((store, resources))
}
