//! The security schemes a plan declares (bearer, API key, session cookie) and the
//! requirement of a route that needs an identity.

use serde_json::{Map, Value, json};

use crate::plan::Plan;

/// Which security schemes a plan declares.
pub(super) struct Schemes {
    bearer: bool,
    api_key: bool,
    /// The session cookie's name, when `[auth.session]` is declared.
    session: Option<&'static str>,
}

impl Schemes {
    pub(super) fn of(plan: &Plan) -> Self {
        let auth = plan.auth.as_ref();
        let api_key = auth.is_some_and(|a| !a.api_keys.is_empty());
        Self {
            // API keys may also be sent as `Authorization: Bearer nfk_…`.
            bearer: auth.is_some_and(|a| a.issuer.is_some() || a.dev_issuer) || api_key,
            api_key,
            session: auth
                .and_then(|a| a.session.as_ref())
                .map(|s| s.session_cookie()),
        }
    }

    pub(super) fn components(&self) -> Map<String, Value> {
        let mut out = Map::new();
        if self.bearer {
            out.insert(
                "bearer".into(),
                json!({
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "`Authorization: Bearer <token>`: a JWT from the configured issuer (or, when API keys are declared, an API key `nfk_…`).",
                }),
            );
        }
        if self.api_key {
            out.insert(
                "apiKey".into(),
                json!({
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "description": "A declared API key `nfk_…`; its roles come from the configuration.",
                }),
            );
        }
        if let Some(cookie) = self.session {
            out.insert(
                "session".into(),
                json!({
                    "type": "apiKey",
                    "in": "cookie",
                    "name": cookie,
                    "description": "The browser session made by the OIDC login (`GET /auth/login`). Unsafe methods authenticated by it also need a same-origin `Origin` (or `Sec-Fetch-Site`), or one listed in `[cors]`.",
                }),
            );
        }
        out
    }

    /// Whether the browser session's cookie is a way in.
    pub(super) fn has_session(&self) -> bool {
        self.session.is_some()
    }

    /// The `security` of a route that needs an identity: any one declared scheme.
    pub(super) fn requirement(&self) -> Value {
        let names = [
            (self.bearer, "bearer"),
            (self.api_key, "apiKey"),
            (self.session.is_some(), "session"),
        ];
        Value::Array(
            names
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| json!({ *name: [] }))
                .collect(),
        )
    }
}
