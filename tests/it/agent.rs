//! A browser without a browser: a cookie jar and the redirects and forms of a login, driven
//! over plain HTTP against the real `oidc-provider` (its development login and consent
//! pages, as `tools/oidc/oidc_flow.py` does) and the real `nestflux`.
//!
//! Like a browser, the jar is per host, not per port: the provider on 127.0.0.1:P and
//! nestflux on 127.0.0.1:N see each other's cookies, as they would in Chromium.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};

use crate::common::client;

/// One browser: its cookies, by name.
#[derive(Default, Clone, Debug)]
pub struct Agent {
    pub jar: BTreeMap<String, String>,
}

/// A `Set-Cookie` as a test reads it: name, value and the attributes as written.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    pub attributes: String,
}

impl SetCookie {
    pub fn max_age(&self) -> Option<i64> {
        self.attributes
            .split(';')
            .find_map(|a| a.trim().strip_prefix("Max-Age="))
            .and_then(|v| v.parse().ok())
    }
}

pub fn set_cookies(res: &Response) -> Vec<SetCookie> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (pair, attributes) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=')?;
            Some(SetCookie {
                name: name.trim().into(),
                value: value.trim().into(),
                attributes: attributes.trim().into(),
            })
        })
        .collect()
}

pub fn location(res: &Response) -> String {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location on {} {}", res.status(), res.url()))
        .to_string()
}

impl Agent {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Cookie:` for every cookie in the jar.
    pub fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Attaches the jar to a request.
    pub fn with(&self, req: RequestBuilder) -> RequestBuilder {
        if self.jar.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        }
    }

    /// Stores (or, with `Max-Age=0`, removes) what a response sets.
    pub fn absorb(&mut self, res: &Response) {
        for c in set_cookies(res) {
            let gone = c.max_age().is_some_and(|a| a <= 0)
                || c.attributes
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            if gone || c.value.is_empty() {
                self.jar.remove(&c.name);
            } else {
                self.jar.insert(c.name, c.value);
            }
        }
    }

    pub fn get(&mut self, url: &str) -> Response {
        let res = self.with(client().get(url)).send().expect("GET");
        self.absorb(&res);
        res
    }

    /// `GET /auth/login?return_to=…`: the provider URL it redirects to.
    pub fn start_login(&mut self, server: &str, return_to: Option<&str>) -> String {
        let mut url = format!("{server}/auth/login");
        if let Some(r) = return_to {
            let encoded: String = url::form_urlencoded::byte_serialize(r.as_bytes()).collect();
            url = format!("{url}?return_to={encoded}");
        }
        let res = self.get(&url);
        assert_eq!(
            res.status(),
            StatusCode::FOUND,
            "{}",
            res.text().unwrap_or_default()
        );
        location(&res)
    }

    /// Follows the provider's redirects and fills its login and consent forms as `user`,
    /// until it redirects to `callback_prefix`: returns that callback URL (not fetched).
    pub fn authorize(&mut self, provider_url: &str, user: &str, callback_prefix: &str) -> String {
        let form_action = regex::Regex::new(r#"<form[^>]*action="([^"]+)""#).unwrap();
        let prompt = regex::Regex::new(r#"name="prompt" value="(\w+)""#).unwrap();
        let mut url = provider_url.to_string();
        for _ in 0..20 {
            if url.starts_with(callback_prefix) {
                return url;
            }
            let res = self.get(&url);
            if res.status().is_redirection() {
                url = join(&url, &location(&res));
                continue;
            }
            let page_url = res.url().to_string();
            let status = res.status();
            let html = res.text().unwrap_or_default();
            let (Some(action), Some(kind)) = (form_action.captures(&html), prompt.captures(&html))
            else {
                panic!("the provider answered {status} without a form:\n{html}");
            };
            let action = join(&page_url, &action[1]);
            let mut form = vec![("prompt".to_string(), kind[1].to_string())];
            if &kind[1] == "login" {
                form.push(("login".into(), user.into()));
                form.push(("password".into(), "anything".into()));
            }
            let res = self
                .with(client().post(&action).form(&form))
                .send()
                .expect("POST form");
            self.absorb(&res);
            assert!(
                res.status().is_redirection(),
                "form {action}: {}",
                res.status()
            );
            url = join(&action, &location(&res));
        }
        panic!("no redirect to {callback_prefix} after 20 steps");
    }

    /// A whole login as `user`: returns the callback's response (303 and the session
    /// cookie when it worked).
    pub fn login(&mut self, server: &str, user: &str, return_to: Option<&str>) -> Response {
        let provider = self.start_login(server, return_to);
        let callback = self.authorize(&provider, user, &format!("{server}/auth/callback"));
        self.get(&callback)
    }
}

/// `base` joined with a possibly relative `href`.
pub fn join(base: &str, href: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(&href.replace("&amp;", "&")))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| href.to_string())
}
