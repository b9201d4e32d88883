//! `openapi`: the OpenAPI 3.1 document of the running plan, rendered once and served as
//! the same bytes `nestflux openapi` prints.

use std::sync::{Arc, OnceLock, Weak};

use actix_web::HttpResponse;
use actix_web::http::header;
use actix_web::web::Bytes;

use crate::plan::Plan;
use crate::server::AppState;

/// The rendered document and the plan it was rendered from. A process serves one plan, so
/// one slot is enough; another plan (tests building several) is rendered each time. The
/// `Weak` keeps the plan's allocation, so its address cannot be reused by another plan.
static RENDERED: OnceLock<(Weak<Plan>, Bytes)> = OnceLock::new();

pub fn openapi(state: &AppState) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(rendered(&state.plan))
}

/// The document of `plan`, rendered on first use; the plan is immutable, so it never goes
/// stale.
fn rendered(plan: &Arc<Plan>) -> Bytes {
    let (owner, bytes) = RENDERED.get_or_init(|| (Arc::downgrade(plan), render(plan)));
    if std::ptr::eq(owner.as_ptr(), Arc::as_ptr(plan)) {
        bytes.clone()
    } else {
        render(plan)
    }
}

fn render(plan: &Plan) -> Bytes {
    let mut text = crate::openapi::render(plan);
    text.push('\n');
    Bytes::from(text)
}
