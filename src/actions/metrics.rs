//! `metrics`: the server's metrics in the Prometheus text format (0.0.4), protected like any
//! route. The gauges of the database pool are read at scrape time; everything else is
//! counted as it happens (see [`crate::metrics`]).

use actix_web::HttpResponse;
use actix_web::http::header;

use super::AppState;
use crate::problem::Problem;

/// Encodes every metric of the running server.
pub fn metrics(state: &AppState) -> Result<HttpResponse, Problem> {
    let (connections, idle) = state.store.pool_state();
    state.metrics.sample_pool(connections, idle);
    let text = state.metrics.encode().map_err(|_| Problem::internal())?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text))
}
