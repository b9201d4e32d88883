//! The security schemes a plan declares (bearer, API key, session cookie) and the
//! requirement of a route that needs an identity.

use serde_json::{Map, Value, json};

use super::SESSION_COOKIE;
use crate::plan::Plan;

/// Which security schemes a plan declares.
pub(super) struct Schemes {
    bearer: bool,
    api_key: bool,
    session: bool,
}

impl Schemes {
    pub(super) fn of(plan: &Plan) -> Self {
        let auth = plan.auth.as_ref();
        let api_key = auth.is_some_and(|a| !a.api_keys.is_empty());
        Self {
            // API keys may also be sent as `Authorization: Bearer nfk_…`.
            bearer: auth.is_some_and(|a| a.issuer.is_some() || a.dev_issuer) || api_key,
            api_key,
            session: auth.is_some_and(|a| a.session.is_some()),
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
        if self.session {
            out.insert(
                "session".into(),
                json!({
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "The browser session made by the OIDC login.",
                }),
            );
        }
        out
    }

    /// The `security` of a route that needs an identity: any one declared scheme.
    pub(super) fn requirement(&self) -> Value {
        let names = [
            (self.bearer, "bearer"),
            (self.api_key, "apiKey"),
            (self.session, "session"),
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
