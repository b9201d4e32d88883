//! Builds the [`AppState`] shared by every worker, once, before the workers start.

use std::sync::Arc;

use actix_web::web::Bytes;

use crate::actions::AppState;
use crate::auth::Authenticator;
use crate::authz::Authorizer;
use crate::plan::Plan;
use crate::plan::routes::Action;
use crate::ratelimit::RateLimits;
use crate::store::StoreError;

/// Why the server could not be assembled from a valid plan (a database that will not open,
/// a key ring that will not load, …).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listening socket or thread could not be set up.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database would not open, migrate or sync.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Authentication could not be set up.
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::SetupError),
    /// The rate-limit backend could not be set up.
    #[error("rate limiting: {0}")]
    RateLimits(#[from] crate::ratelimit::redis::RedisSetupError),
}

/// Builds the shared state from a compiled plan: opens the database, sets up
/// authentication and renders what is served unchanged.
pub fn build(plan: Arc<Plan>) -> Result<AppState, StartError> {
    let opened = crate::store::open(&plan)?;
    for m in &opened.migrations {
        tracing::info!(migration = %m, "applied internal migration");
    }
    for c in &opened.changes {
        tracing::info!("{c}");
    }
    let (store, resources, cursors) = (opened.store, opened.resources, opened.cursors);
    // The writer (SQLite) and the user-sightings drain start before anything can write.
    let store = store.start(&plan.database)?;
    let audit = crate::audit::sink::start(store.clone())?;
    audit.offer(
        crate::audit::Event::now("-", "config.loaded", "ok").details(&serde_json::json!({
            "config_hash": plan.config_hash,
            "profile": plan.profile.name(),
            "version": env!("CARGO_PKG_VERSION"),
        })),
    );
    if let Some(retain) = plan.audit.retain {
        crate::audit::retention::start(store.clone(), retain)?;
    }
    crate::store::report_missing_kids(&store, resources.values().cloned().collect());
    let limits = Arc::new(RateLimits::from_plan(&plan, audit.clone())?);
    let auth = Arc::new(Authenticator::build(&plan)?.attach_store(&plan, &store, &audit)?);
    // The key refresher runs on its own thread: the server serves while the provider
    // is still unreachable.
    auth.start()?;
    let authz = Arc::new(Authorizer::build(&plan));
    let openapi = plan
        .routes
        .iter()
        .any(|r| r.action == Action::OpenApi)
        .then(|| {
            let mut text = crate::openapi::render(&plan);
            text.push('\n');
            Bytes::from(text)
        });
    Ok(AppState {
        plan,
        limits,
        auth,
        authz,
        store,
        resources,
        readiness: Default::default(),
        audit,
        cursors,
        openapi,
    })
}
