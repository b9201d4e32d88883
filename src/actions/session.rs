//! The browser-login routes `[auth.session]` brings, as HTTP: redirects and the session
//! report, never cached. The work is `auth::session`'s.

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::auth::session::{Redirect, Sessions};
use crate::plan::routes::Action;
use crate::problem::Problem;

/// Runs one of the login, callback, logout and session actions.
pub async fn run(
    action: Action,
    req: &HttpRequest,
    state: &AppState,
) -> Result<HttpResponse, Problem> {
    let sessions = sessions(state)?;
    let bearer = state.auth.bearer();
    match action {
        Action::Login => Ok(redirect(StatusCode::FOUND, sessions.login(req).await?)),
        Action::Callback => Ok(redirect(
            StatusCode::SEE_OTHER,
            sessions.callback(req, bearer).await?,
        )),
        Action::Logout => Ok(redirect(StatusCode::SEE_OTHER, sessions.logout(req).await?)),
        _ => {
            let status = sessions.status(req, bearer).await?;
            let mut res = HttpResponse::Ok();
            res.insert_header((header::CACHE_CONTROL, "no-store"));
            for c in status.cookies {
                res.append_header((header::SET_COOKIE, c));
            }
            Ok(res.json(
                status
                    .session
                    .unwrap_or_else(|| json!({ "authenticated": false })),
            ))
        }
    }
}

fn sessions(state: &AppState) -> Result<&Sessions, Problem> {
    // The routes exist only with [auth.session], which always builds the sessions.
    state
        .auth
        .sessions()
        .map(|s| s.as_ref())
        .ok_or_else(Problem::not_found)
}

fn redirect(status: StatusCode, r: Redirect) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.insert_header((header::LOCATION, r.location))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    for c in r.cookies {
        res.append_header((header::SET_COOKIE, c));
    }
    res.finish()
}
