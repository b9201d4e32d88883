//! The four routes of browser login: start a login, finish it at the callback, log out,
//! and report the session. Each answers a [`Redirect`] or a [`Status`] for `actions` to
//! send, or a problem.

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::http::header;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::provider::ProviderError;
use super::refresh::expiries;
use super::{
    Failure, LOGINS, MAX_CODE_LEN, MAX_STATE_LEN, Query, Redirect, SESSIONS, Sessions, Status, aad,
    cookie, csrf, hex, id_token, millis, now_ms, random_id, return_to, rfc3339, roles_json, sha256,
    unhex32,
};
use crate::auth::jwt::BearerVerifier;
use crate::deadline::Deadline;
use crate::problem::Problem;
use crate::store::sessions::{self as rows, PendingLogin, SessionRow};

/// How long a login's or logout's write may take when the request carries no deadline.
const WRITE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// How long logout waits to learn the provider's logout endpoint.
const LOGOUT_DISCOVERY: std::time::Duration = std::time::Duration::from_secs(3);

impl Sessions {
    /// `GET /auth/login`: a pending login in the database, the login cookie, and the
    /// redirect to the provider.
    pub async fn login(&self, req: &HttpRequest) -> Result<Redirect, Problem> {
        let ring = self.ring().map_err(|f| self.problem(&f))?;
        let d = self
            .provider
            .discovered()
            .await
            .map_err(|e| self.problem(&Failure::Provider(e)))?;
        let query = Query::parse(req.query_string());
        let return_to =
            return_to::checked(query.one("return_to"), &self.own_origin, &self.cors_origins);
        let (state, nonce, verifier, browser) = (
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
            random_id().map_err(|_| Problem::internal())?,
        );
        let state_hash = hex(&sha256(&state));
        let now = now_ms();
        let pending = PendingLogin {
            pkce_verifier: ring
                .seal(&aad(LOGINS, "pkce_verifier", &state_hash), &verifier)
                .map_err(|_| Problem::internal())?,
            state_hash,
            browser_hash: hex(&sha256(&browser)),
            nonce_hash: hex(&sha256(&nonce)),
            return_to,
            created_at: now,
            expires_at: now + millis(self.plan.login_timeout),
        };
        self.store
            .run(move |c| rows::insert_login(c, &pending))
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?;
        let url = self.provider.authorize_url(&d, state, nonce, &verifier);
        Ok(Redirect {
            location: url.to_string(),
            cookies: vec![cookie::set(
                self.plan.login_cookie(),
                &browser,
                self.plan.login_timeout,
                self.secure(),
            )],
        })
    }

    /// The callback: the pending login taken once and checked (state, browser, expiry,
    /// issuer), the code exchanged, the ID token verified, and a new session.
    pub async fn callback(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
    ) -> Result<Redirect, Problem> {
        let clear_login = cookie::clear(self.plan.login_cookie(), self.secure());
        let refuse = |detail: &str| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "login-failed",
                format!("the login could not be completed: {detail}; start again at /auth/login"),
            )
            .header(header::SET_COOKIE, clear_login.clone())
        };
        let ring = self.ring().map_err(|f| self.problem(&f))?;
        let query = Query::parse(req.query_string());
        let state = query
            .one("state")
            .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN)
            .ok_or_else(|| refuse("no state"))?;
        let state_hash = hex(&sha256(state));
        let taken = state_hash.clone();
        let pending = self
            .store
            .run(move |c| rows::take_login(c, &taken))
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?
            // The state names a pending login; none left (never made, used, swept): 404,
            // like any missing row, so a well-formed but stale callback is not a "bad request".
            .ok_or_else(|| {
                let mut gone = refuse("unknown, already used or expired state");
                gone.status = StatusCode::NOT_FOUND;
                gone
            })?;
        let now = now_ms();
        if now >= pending.expires_at {
            return Err(refuse("the login took too long"));
        }
        let browser = match cookie::read(req, self.plan.login_cookie()) {
            cookie::Read::One(b) => b,
            _ => return Err(refuse("this login was started in another browser")),
        };
        if !bool::from(
            hex(&sha256(&browser))
                .as_bytes()
                .ct_eq(pending.browser_hash.as_bytes()),
        ) {
            return Err(refuse("this login was started in another browser"));
        }
        if let Some(error) = query.one("error") {
            let code = if error.len() <= 64
                && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                error
            } else {
                "error"
            };
            return Err(refuse(&format!("the provider answered {code}")));
        }
        // RFC 9207: a response naming another issuer is a mix-up attack.
        if let Some(iss) = query.one("iss")
            && !self.jwks.accepted_issuers().iter().any(|i| i == iss)
        {
            return Err(refuse("the response names another issuer"));
        }
        let code = query
            .one("code")
            .filter(|c| !c.is_empty() && c.len() <= MAX_CODE_LEN)
            .ok_or_else(|| refuse("no code"))?;
        let verifier = ring
            .open(
                &aad(LOGINS, "pkce_verifier", &pending.state_hash),
                &pending.pkce_verifier,
            )
            .map_err(|_| refuse("the login record is unreadable"))?;
        let d = self
            .provider
            .discovered()
            .await
            .map_err(|e| self.problem(&Failure::Provider(e)))?;
        let tokens = match self.provider.exchange(&d, code.to_string(), verifier).await {
            Ok(t) => t,
            Err(ProviderError::Rejected(code)) => {
                tracing::info!(target: "nestflux::auth", error = %code, "the provider refused the code exchange");
                return Err(refuse("the provider refused the code"));
            }
            Err(e) => return Err(self.problem(&Failure::Provider(e))),
        };
        let id_token = tokens
            .id_token
            .clone()
            .ok_or_else(|| refuse("the provider sent no ID token"))?;
        let nonce_hash: [u8; 32] =
            unhex32(&pending.nonce_hash).ok_or_else(|| refuse("the login record is unreadable"))?;
        let expect = id_token::Expect {
            client_id: &self.plan.client_id,
            nonce_sha256: Some(&nonce_hash),
            access_token: Some(&tokens.access_token),
            subject: None,
            leeway_secs: self.leeway_secs,
        };
        let verified = id_token::verify(&self.jwks, &self.allowed, &id_token, &expect)
            .await
            .map_err(|e| {
                tracing::info!(target: "nestflux::auth", error = %e, "ID token refused at login");
                refuse("the ID token is not valid for this login")
            })?;
        let identity = self
            .identity(
                bearer,
                &tokens.access_token,
                &verified.subject,
                Some(&verified.claims),
            )
            .await;
        let text = |k: &str| {
            verified
                .claims
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| v.len() <= 1024)
                .map(str::to_string)
        };
        let issuer = text("iss").unwrap_or_default();
        let sighting = crate::store::users::Sighting {
            issuer: issuer.clone(),
            subject: verified.subject.clone(),
            email: text("email"),
            name: text("name"),
        };
        if let Err(e) = self
            .store
            .run(move |c| crate::store::users::record(c, &sighting))
            .await
        {
            tracing::warn!(target: "nestflux::auth", error = %e, "could not record the user sighting");
        }

        // Session fixation: whatever session id the browser held before is ended, and the
        // new one is fresh randomness.
        if let cookie::Read::One(old) = cookie::read(req, self.plan.session_cookie()) {
            self.delete_quietly(&hex(&sha256(&old))).await;
        }
        let id = random_id().map_err(|_| Problem::internal())?;
        let id_hash = hex(&sha256(&id));
        let seal = |field: &str, value: &str| {
            ring.seal(&aad(SESSIONS, field, &id_hash), value)
                .map_err(|_| Problem::internal())
        };
        let (access_expires_at, refresh_at) = expiries(
            now,
            tokens.expires_in,
            identity.exp_ms,
            tokens.refresh_token.is_some(),
        );
        let absolute = now + millis(self.plan.absolute_timeout);
        let row = SessionRow {
            id_hash: id_hash.clone(),
            issuer,
            subject: verified.subject.clone(),
            roles: roles_json(&identity.roles.unwrap_or_default()),
            access_token: seal("access_token", &tokens.access_token)?,
            refresh_token: match &tokens.refresh_token {
                Some(t) => Some(seal("refresh_token", t)?),
                None => None,
            },
            id_token: Some(seal("id_token", &id_token)?),
            access_expires_at,
            refresh_at,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: (now + millis(self.plan.idle_timeout)).min(absolute),
            absolute_expires_at: absolute,
            generation: 0,
            refresh_lease_until: None,
        };
        // A login is a decision: its audit row commits with the session, or neither does.
        let event = crate::audit::Event::now(&verified.subject, "session.login", "ok")
            .request(&crate::request_id::of(req), &peer(req));
        let audited = self
            .store
            .write(Deadline::of(req, WRITE_WITHIN), move |c| {
                rows::insert_session(c, &row)?;
                crate::store::audit::append(c, std::slice::from_ref(&event))
            })
            .await
            .map_err(|e| self.problem(&Failure::Store(e)))?;
        crate::audit::sink::trace(&audited);
        tracing::info!(target: "nestflux::auth", subject = %verified.subject, "browser login");
        Ok(Redirect {
            location: pending.return_to,
            cookies: vec![
                cookie::set(
                    self.plan.session_cookie(),
                    &id,
                    self.plan.absolute_timeout,
                    self.secure(),
                ),
                clear_login,
            ],
        })
    }

    /// `POST /auth/logout`: the session deleted here (every instance sees it at once), the
    /// cookie cleared, and the browser sent to the provider's logout.
    pub async fn logout(&self, req: &HttpRequest) -> Result<Redirect, Problem> {
        csrf::check(req, &self.plan.origin, &self.cors_origins)
            .map_err(|r| self.problem(&Failure::Csrf(r)))?;
        let clear = cookie::clear(self.plan.session_cookie(), self.secure());
        let mut hint = None;
        if let cookie::Read::One(id) = cookie::read(req, self.plan.session_cookie()) {
            let id_hash = hex(&sha256(&id));
            let hash = id_hash.clone();
            let (rid, ip) = (crate::request_id::of(req), peer(req));
            // The session's end and its audit row (actor: whose session it was) commit
            // together; no row for a cookie that named no session.
            let (deleted, audited) = self
                .store
                .write(Deadline::of(req, WRITE_WITHIN), move |c| {
                    let Some(deleted) = rows::delete_session(c, &hash)? else {
                        return Ok((None, Vec::new()));
                    };
                    let event = crate::audit::Event::now(&deleted.subject, "session.logout", "ok")
                        .request(&rid, &ip);
                    let audited = crate::store::audit::append(c, std::slice::from_ref(&event))?;
                    Ok((Some(deleted), audited))
                })
                .await
                .map_err(|e| {
                    self.problem(&Failure::Store(e))
                        .header(header::SET_COOKIE, clear.clone())
                })?;
            crate::audit::sink::trace(&audited);
            let sealed = deleted.and_then(|d| d.id_token);
            if let (Some(sealed), Some(ring)) = (sealed, &self.ring) {
                hint = ring
                    .open(&aad(SESSIONS, "id_token", &id_hash), &sealed)
                    .ok();
            }
        }
        // The provider's logout endpoint, if it can be learnt quickly: logout never waits
        // long for a provider that is down (the local logout is done either way).
        let d = match tokio::time::timeout(LOGOUT_DISCOVERY, self.provider.discovered()).await {
            Ok(Ok(d)) => Some(d),
            _ => self.provider.known().await,
        };
        let location = self.provider.logout_url(d.as_deref(), hint.as_deref());
        Ok(Redirect {
            location: location.to_string(),
            cookies: vec![clear],
        })
    }

    /// `GET /auth/session`: the session for front ends, without counting as a use.
    pub async fn status(
        &self,
        req: &HttpRequest,
        bearer: Option<&BearerVerifier>,
    ) -> Result<Status, Problem> {
        let clear = || vec![cookie::clear(self.plan.session_cookie(), self.secure())];
        let id = match cookie::read(req, self.plan.session_cookie()) {
            cookie::Read::Absent => {
                return Ok(Status {
                    session: None,
                    cookies: Vec::new(),
                });
            }
            cookie::Read::Bad => {
                return Ok(Status {
                    session: None,
                    cookies: clear(),
                });
            }
            cookie::Read::One(id) => id,
        };
        match self.current(&id, bearer, false).await {
            Ok(row) => {
                let caller = self.caller(&row);
                let roles: Vec<&str> = caller.roles.iter().map(|r| r.0.as_str()).collect();
                Ok(Status {
                    session: Some(serde_json::json!({
                        "authenticated": true,
                        "subject": caller.subject,
                        "roles": roles,
                        "expires_at": rfc3339(row.idle_expires_at.min(row.absolute_expires_at)),
                    })),
                    cookies: Vec::new(),
                })
            }
            Err(Failure::Ended | Failure::Unknown) => Ok(Status {
                session: None,
                cookies: clear(),
            }),
            Err(f) => Err(self.problem(&f)),
        }
    }
}

/// The connection's peer address, for audit rows (forwarded headers are the rate limiter's
/// business; this is what the socket saw).
fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}
