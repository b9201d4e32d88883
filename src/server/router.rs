//! The route table of one plan, compiled to a matcher that answers exactly as Actix's
//! resource registration did: the first path (in [`registration_order`]) whose pattern
//! matches serves the request, and answers 405 with `Allow` for a method it does not serve.
//!
//! Patterns are whole segments only (`/a/{id}/b`; checked when compiling), so matching is
//! a comparison of segments, with no regular expression. A router belongs to one plan and
//! is swapped with it on reload.

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::http::header::HeaderValue;

use crate::metrics::{Matched as Counted, Metrics};
use crate::plan::routes::{RoutePlan, registration_order};

/// One path pattern and the routes it serves.
pub struct PathRoutes {
    /// The pattern as declared, e.g. `/api/notes/{id}` (the route template of logs).
    pub template: Arc<str>,
    segments: Vec<Segment>,
    methods: Vec<(Method, Arc<RoutePlan>)>,
    /// The metrics of each entry of `methods`, same order, resolved once per plan.
    counted: Vec<Counted>,
    /// The `Allow` header of a 405 on this path.
    pub allow: HeaderValue,
}

enum Segment {
    Static(String),
    Param(String),
}

/// The compiled route table of one plan.
#[derive(Default)]
pub struct Router {
    paths: Vec<PathRoutes>,
    /// Indices into `paths` by segment count, each list in registration order.
    by_len: Vec<Vec<usize>>,
}

/// What a request path matched.
pub struct Matched<'a> {
    /// The path's routes.
    pub path: &'a PathRoutes,
    /// `(name, value)` of each parameter, values as they appear in the (re-quoted) path.
    pub params: Vec<(&'a str, &'a str)>,
}

impl PathRoutes {
    /// The route serving `method` here; HEAD is answered by GET where its action allows.
    pub fn route(&self, method: &Method) -> Option<(&Arc<RoutePlan>, &Counted)> {
        let i = self.methods.iter().position(|(m, _)| m == method)?;
        Some((&self.methods[i].1, self.counted.get(i)?))
    }
}

impl Router {
    /// Compiles the plan's routes, each with its metrics.
    pub fn new(routes: &[RoutePlan], metrics: &Metrics) -> Self {
        let mut router = Router::default();
        for (path, routes) in registration_order(routes) {
            let mut methods: Vec<(Method, Arc<RoutePlan>)> = routes
                .iter()
                .map(|r| (r.method.clone(), Arc::new((*r).clone())))
                .collect();
            let mut allow: Vec<String> = methods.iter().map(|(m, _)| m.to_string()).collect();
            // HEAD is answered wherever GET is declared (RFC 9110 §9.3.2): the same
            // pipeline and headers, and actix sends no body.
            let head = methods
                .iter()
                .find(|(m, r)| *m == Method::GET && r.action.answers_head())
                .map(|(_, r)| r.clone())
                .filter(|_| !methods.iter().any(|(m, _)| *m == Method::HEAD));
            if let Some(r) = head {
                allow.push(Method::HEAD.to_string());
                methods.push((Method::HEAD, r));
            }
            let allow =
                HeaderValue::from_str(&allow.join(", ")).unwrap_or(HeaderValue::from_static("GET"));
            let segments: Vec<Segment> = path
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => Segment::Param(name.to_string()),
                        None => Segment::Static(s.to_string()),
                    },
                )
                .collect();
            let len = segments.len();
            if router.by_len.len() <= len {
                router.by_len.resize_with(len + 1, Vec::new);
            }
            router.by_len[len].push(router.paths.len());
            let counted = methods
                .iter()
                .map(|(m, _)| Counted(metrics.route(path, m)))
                .collect();
            router.paths.push(PathRoutes {
                template: Arc::from(path),
                segments,
                methods,
                counted,
                allow,
            });
        }
        router
    }

    /// The first path whose pattern matches `path`, as Actix would pick it. A parameter
    /// matches one non-empty segment (`[^/]+`).
    pub fn find<'a>(&'a self, path: &'a str) -> Option<Matched<'a>> {
        let parts: Vec<&str> = path.split('/').collect();
        let candidates = self.by_len.get(parts.len())?;
        'next: for &i in candidates {
            let Some(p) = self.paths.get(i) else {
                continue;
            };
            let mut params = Vec::new();
            for (seg, part) in p.segments.iter().zip(&parts) {
                match seg {
                    Segment::Static(s) if s == part => {}
                    Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), *part)),
                    _ => continue 'next,
                }
            }
            return Some(Matched { path: p, params });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::dev::ResourceDef;

    #[test]
    fn segments_match_as_actix_resource_patterns_do() {
        let patterns = ["/", "/a", "/a/b", "/a/{id}", "/a/{id}/c", "/x/{p}/{q}"];
        let paths = [
            "/", "", "/a", "/a/", "/a/b", "/a/z", "/a//c", "/a/z/c", "/a/b/c", "/x/1/2", "/x//2",
            "/x/1/2/", "/b",
        ];
        for pattern in patterns {
            let def = ResourceDef::new(pattern);
            let router = Router::new(&[route(pattern)], &Metrics::new("-"));
            for path in paths {
                assert_eq!(
                    router.find(path).is_some(),
                    def.is_match(path),
                    "{pattern} on {path}"
                );
            }
        }
    }

    #[test]
    fn the_first_registered_path_wins_and_params_are_captured() {
        let router = Router::new(&[route("/a/{id}"), route("/a/b")], &Metrics::new("-"));
        let m = router.find("/a/b").map(|m| m.path.template.to_string());
        assert_eq!(m.as_deref(), Some("/a/b"));
        let m = router.find("/a/7").map(|m| m.params);
        assert_eq!(m, Some(vec![("id", "7")]));
    }

    fn route(path: &str) -> RoutePlan {
        RoutePlan {
            index: 0,
            method: Method::GET,
            path: path.into(),
            action: crate::plan::routes::Action::Health,
            resource: None,
            access: crate::plan::routes::Access::Public,
            rate_limit: None,
            body_schema: None,
            summary: None,
            detail: false,
        }
    }
}
