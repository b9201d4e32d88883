//! `openapi`: the OpenAPI 3.1 document of the running plan, rendered once at startup and
//! served as the same bytes `nestflux openapi` prints.

use actix_web::HttpResponse;
use actix_web::http::header;

use super::AppState;
use crate::problem::Problem;

/// Serves the document rendered into the state at startup.
pub fn openapi(state: &AppState) -> Result<HttpResponse, Problem> {
    // Rendered whenever a route serves it, so never missing here.
    let body = state.openapi.clone().ok_or_else(Problem::internal)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body))
}
