//! Actions: the thin glue at the end of the pipeline.

pub mod audit;
pub mod health;
pub mod metrics;
pub mod openapi;
mod query;
pub mod resource;
pub mod session;
mod state;
pub mod whoami;

pub use state::AppState;

use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use crate::plan::routes::{Action, RoutePlan};
use crate::problem::Problem;

/// Runs a route's action.
pub async fn run(
    route: &RoutePlan,
    req: &HttpRequest,
    body: Option<Value>,
    state: &AppState,
) -> Result<HttpResponse, Problem> {
    match route.action {
        Action::Health => Ok(health::health(state, route.detail).await),
        Action::Whoami => whoami::whoami(req, state),
        Action::OpenApi => openapi::openapi(state),
        Action::Metrics => metrics::metrics(state),
        Action::Audit => audit::audit(req, state).await,
        a @ (Action::List | Action::Get | Action::Create | Action::Update | Action::Delete) => {
            resource::run(a, route, req, body, state).await
        }
        a @ (Action::Login | Action::Callback | Action::Logout | Action::Session) => {
            // Boxed: inline, the session actions' future would grow every request's.
            Box::pin(session::run(a, req, state)).await
        }
    }
}
