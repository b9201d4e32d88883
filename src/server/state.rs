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
    let metrics = Arc::new(crate::metrics::Metrics::new(&plan.config_hash));
    let opened = crate::store::open(&plan)?;
    for m in &opened.migrations {
        tracing::info!(migration = %m, "applied internal migration");
    }
    for c in &opened.changes {
        tracing::info!("{c}");
    }
    let (store, mut resources, cursors) = (opened.store, opened.resources, opened.cursors);
    for (name, resource) in resources.iter_mut() {
        // Just opened: nothing else holds them yet.
        if let Some(resource) = Arc::get_mut(resource) {
            resource.count_faults_into(metrics.faults(&name.0));
        }
    }
    // The writer (SQLite) and the user-sightings drain start before anything can write.
    let store = store.with_metrics(metrics.store()).start(&plan.database)?;
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
    if let Some(schedule) = plan.backup.clone() {
        crate::backup::schedule::start(plan.clone(), schedule, audit.clone())?;
    }
    crate::store::report_missing_kids(&store, resources.values().cloned().collect());
    let limits = Arc::new(RateLimits::from_plan(&plan, audit.clone())?.with_metrics(&metrics));
    let auth = Arc::new(
        Authenticator::build(&plan)?
            .attach_store(&plan, &store, &audit)?
            .with_metrics(&metrics),
    );
    // The key refresher runs on its own thread: the server serves while the provider
    // is still unreachable.
    auth.start()?;
    let authz = Arc::new(Authorizer::build(&plan));
    let openapi = render_openapi(&plan);
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
        metrics,
    })
}

/// The OpenAPI document of `plan`, rendered once when a route serves it: the same bytes
/// `nestflux openapi` prints.
pub fn render_openapi(plan: &Plan) -> Option<Bytes> {
    plan.routes
        .iter()
        .any(|r| r.action == Action::OpenApi)
        .then(|| {
            let mut text = crate::openapi::render(plan);
            text.push('\n');
            Bytes::from(text)
        })
}
