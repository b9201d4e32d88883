//! Prometheus metrics with bounded labels: one registry per server, served by the `metrics`
//! action in the Prometheus text format (0.0.4) by `prometheus-client`'s own encoder.
//!
//! The [`Metrics`] handle is built once before the workers start and handed down as state,
//! never a global: `AppState` holds it (the envelope, the route handler and the `metrics`
//! action read it there), and each layer that counts something gets its own pre-resolved
//! counters when it is built (`RateLimits::with_metrics`, `Authenticator::with_metrics`,
//! `Store::with_metrics`, `Resource::count_faults_into`). A layer built without them
//! counts into detached metrics nobody reads (the CLI tools, the benchmarks).
//!
//! Labels never carry request data: `route` is the route's path template (`/api/notes/{id}`),
//! or [`UNMATCHED`] for a request no route served (unknown path, refused by the global limit
//! before routing, a CORS preflight), or [`REDIRECT`] on the HTTP→HTTPS listener; `method`
//! is one of nine methods or `other`; `status` is the numeric status; `policy`, `reason`,
//! `kind`, `resource` and `issuer` come from the file or from fixed lists.
//!
//! The request path is cheap: each (route, method) gets a [`RouteMetrics`] when the route
//! table is assembled, whose latency histogram and per-status counters are resolved once,
//! on first use, and then incremented without hashing or formatting a label.
//!
//! ```text
//! nestflux_http_requests_total{route,method,status}          counter
//! nestflux_http_request_duration_seconds{route,method}       histogram
//! nestflux_auth_accepted_total{kind}                         counter   bearer, dev, api_key, session
//! nestflux_auth_refused_total{reason}                        counter   missing, expired, signature, …
//! nestflux_authz_denied_total{route,method}                  counter
//! nestflux_rate_limit_decisions_total{policy,decision}       counter   allowed, limited, fallback, unavailable
//! nestflux_db_pool_connections / _idle_connections           gauge     read at scrape time
//! nestflux_db_writer_queue_depth                             gauge     the writer
//! nestflux_db_commit_batch_size                              histogram writes per committed batch
//! nestflux_db_commit_duration_seconds                        histogram BEGIN to end of COMMIT
//! nestflux_jwks_refreshes_total{issuer,result}               counter   ok, failed
//! nestflux_token_cache_hits_total / _misses_total            counter
//! nestflux_decryption_failures_total{resource,reason}        counter   undecryptable, key_unavailable
//! nestflux_plan_reloads_total{result}                        counter   success, failure
//! nestflux_config_info{config_hash}                          gauge     1 for the loaded file
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `route` label of a request no route served.
pub const UNMATCHED: &str = "unmatched";
/// The `route` label of a request to the HTTP→HTTPS redirect listener.
pub const REDIRECT: &str = "https-redirect";
/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `method` label values: the methods of RFC 9110 and PATCH, then one for all others
/// (a client may send any token as a method; it must not make a series).
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "other",
];

/// Statuses with a pre-resolved counter per route, sorted (any other status is counted
/// through the family: same series, one hash more).
const STATUSES: [u16; 30] = [
    200, 201, 204, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412,
    413, 414, 415, 416, 422, 428, 429, 431, 500, 503, 504,
];

/// Request latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commit latency buckets, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Commit batch size buckets (the writer commits at most 256 writes at once).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<String>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<String>,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    resource: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabel {
    config_hash: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every metric of one server, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    denied: Family<RouteLabels, Counter>,
    routes: Mutex<HashMap<(String, &'static str), Arc<RouteMetrics>>>,
    unmatched: Vec<Arc<RouteMetrics>>,
    redirected: Vec<Arc<RouteMetrics>>,
    auth_accepted: Family<KindLabel, Counter>,
    auth_refused: Family<ReasonLabel, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    pool_connections: Gauge,
    pool_idle: Gauge,
    store: StoreMetrics,
    jwks: Family<IssuerLabels, Counter>,
    token_cache: TokenCacheMetrics,
    faults: Family<FaultLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    config: Family<HashLabel, Gauge>,
    config_hash: Mutex<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every NestFlux metric, the loaded file's hash in `nestflux_config_info`.
    pub fn new(config_hash: &str) -> Self {
        let mut registry = Registry::with_prefix("nestflux");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from the request's arrival to its response, by route template and method",
            latency.clone(),
        );
        let auth_accepted = Family::<KindLabel, Counter>::default();
        registry.register(
            "auth_accepted",
            "Requests authenticated, by how the caller proved it (bearer, dev, api_key, session)",
            auth_accepted.clone(),
        );
        let auth_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests to a protected route refused by authentication, by reason",
            auth_refused.clone(),
        );
        let denied = Family::<RouteLabels, Counter>::default();
        registry.register(
            "authz_denied",
            "Requests refused by authorization (403), by route template and method",
            denied.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by policy: allowed, limited (429), fallback (the backend could not decide and the fallback let it through), unavailable (503)",
            decisions.clone(),
        );
        let pool_connections = Gauge::default();
        registry.register(
            "db_pool_connections",
            "Connections the database pool holds (read at scrape time)",
            pool_connections.clone(),
        );
        let pool_idle = Gauge::default();
        registry.register(
            "db_pool_idle_connections",
            "Idle connections in the database pool (read at scrape time)",
            pool_idle.clone(),
        );
        let store = StoreMetrics::default();
        registry.register(
            "db_writer_queue_depth",
            "Writes waiting for the writer",
            store.queue_depth.clone(),
        );
        registry.register(
            "db_commit_batch_size",
            "Writes committed per transaction (group commit)",
            store.batch_size.clone(),
        );
        registry.register(
            "db_commit_duration_seconds",
            "Time of one write transaction, from BEGIN to the end of COMMIT",
            store.commit_seconds.clone(),
        );
        let jwks = Family::<IssuerLabels, Counter>::default();
        registry.register(
            "jwks_refreshes",
            "Fetches of an issuer's signing keys, by issuer and result (ok, failed)",
            jwks.clone(),
        );
        let token_cache = TokenCacheMetrics::default();
        registry.register(
            "token_cache_hits",
            "Bearer tokens answered from the verified or refused token cache",
            token_cache.hits.clone(),
        );
        registry.register(
            "token_cache_misses",
            "Bearer tokens that needed a full verification",
            token_cache.misses.clone(),
        );
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "decryption_failures",
            "Stored encrypted values that could not be read, by resource and reason (undecryptable, key_unavailable)",
            faults.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "plan_reloads",
            "Reloads of the configuration file, by result (success, failure)",
            reloads.clone(),
        );
        let config = Family::<HashLabel, Gauge>::default();
        registry.register(
            "config_info",
            "The SHA-256 of the configuration being served (secrets left out), as a label; always 1",
            config.clone(),
        );
        config
            .get_or_create(&HashLabel {
                config_hash: config_hash.to_string(),
            })
            .set(1);
        let per_method = |route: &str| -> Vec<Arc<RouteMetrics>> {
            METHODS
                .iter()
                .map(|m| Arc::new(RouteMetrics::new(route, m, &requests, &latency, &denied)))
                .collect()
        };
        let unmatched = per_method(UNMATCHED);
        let redirected = per_method(REDIRECT);
        Self {
            registry,
            requests,
            latency,
            denied,
            routes: Mutex::new(HashMap::new()),
            unmatched,
            redirected,
            auth_accepted,
            auth_refused,
            decisions,
            pool_connections,
            pool_idle,
            store,
            jwks,
            token_cache,
            faults,
            reloads,
            config,
            config_hash: Mutex::new(config_hash.to_string()),
        }
    }

    /// The metrics of one route template and method, the same object for every caller
    /// (each worker registers the route table again).
    pub fn route(&self, template: &str, method: &Method) -> Arc<RouteMetrics> {
        let method = method_label(method);
        let mut routes = match self.routes.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        routes
            .entry((template.to_string(), method))
            .or_insert_with(|| {
                Arc::new(RouteMetrics::new(
                    template,
                    method,
                    &self.requests,
                    &self.latency,
                    &self.denied,
                ))
            })
            .clone()
    }

    /// The metrics of a request no route served.
    pub fn unmatched(&self, method: &Method) -> &RouteMetrics {
        &self.unmatched[method_slot(method)]
    }

    /// The metrics of a request to the HTTP→HTTPS redirect listener.
    pub fn redirected(&self, method: &Method) -> &RouteMetrics {
        &self.redirected[method_slot(method)]
    }

    /// Authentication outcomes, pre-resolved for the hot path (accepted callers).
    pub fn auth(&self) -> AuthMetrics {
        let kind = |k: &'static str| {
            self.auth_accepted
                .get_or_create_owned(&KindLabel { kind: k })
        };
        AuthMetrics {
            bearer: kind("bearer"),
            dev: kind("dev"),
            api_key: kind("api_key"),
            session: kind("session"),
            refused: Some(self.auth_refused.clone()),
        }
    }

    /// The decision counters of one rate-limit policy.
    pub fn decisions(&self, policy: &str) -> Decisions {
        let c = |d: &'static str| {
            self.decisions.get_or_create_owned(&DecisionLabels {
                policy: policy.to_string(),
                decision: d,
            })
        };
        Decisions {
            allowed: c("allowed"),
            limited: c("limited"),
            fallback: c("fallback"),
            unavailable: c("unavailable"),
        }
    }

    /// The writer queue, commit batch and commit latency metrics.
    pub fn store(&self) -> StoreMetrics {
        self.store.clone()
    }

    /// The refresh counters of one issuer's keys.
    pub fn jwks(&self, issuer: &str) -> JwksMetrics {
        let c = |result: &'static str| {
            self.jwks.get_or_create_owned(&IssuerLabels {
                issuer: issuer.to_string(),
                result,
            })
        };
        JwksMetrics {
            ok: c("ok"),
            failed: c("failed"),
        }
    }

    /// The token cache's hit and miss counters.
    pub fn token_cache(&self) -> TokenCacheMetrics {
        self.token_cache.clone()
    }

    /// The decryption failure counters of one resource.
    pub fn faults(&self, resource: &str) -> FaultCounters {
        let c = |reason: &'static str| {
            self.faults.get_or_create_owned(&FaultLabels {
                resource: resource.to_string(),
                reason,
            })
        };
        FaultCounters {
            undecryptable: c("undecryptable"),
            key_unavailable: c("key_unavailable"),
        }
    }

    /// Records a reload of the configuration file: `ok` with the hash of the plan now
    /// served (which replaces the old one in `nestflux_config_info`), or a failure (the old
    /// plan keeps serving; `hash` is ignored).
    pub fn record_reload(&self, ok: bool, hash: &str) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if !ok {
            return;
        }
        let mut current = match self.config_hash.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *current != hash {
            self.config.remove(&HashLabel {
                config_hash: current.clone(),
            });
            *current = hash.to_string();
        }
        self.config
            .get_or_create(&HashLabel {
                config_hash: hash.to_string(),
            })
            .set(1);
    }

    /// Sets the gauges read at scrape time: the pool's connections.
    pub fn sample_pool(&self, connections: u32, idle: u32) {
        self.pool_connections.set(i64::from(connections));
        self.pool_idle.set(i64::from(idle));
    }

    /// Every metric in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `method` label of a request method.
fn method_label(method: &Method) -> &'static str {
    METHODS[method_slot(method)]
}

fn method_slot(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

/// The metrics of one route template and method: latency, requests per status and
/// authorization denials, each resolved to its series once.
pub struct RouteMetrics {
    labels: RouteLabels,
    requests: Family<RequestLabels, Counter>,
    latency_family: HistogramFamily<RouteLabels>,
    denied_family: Family<RouteLabels, Counter>,
    latency: OnceLock<Histogram>,
    statuses: [OnceLock<Counter>; STATUSES.len()],
    denied: OnceLock<Counter>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.labels.method, self.labels.route)
    }
}

impl RouteMetrics {
    fn new(
        route: &str,
        method: &'static str,
        requests: &Family<RequestLabels, Counter>,
        latency: &HistogramFamily<RouteLabels>,
        denied: &Family<RouteLabels, Counter>,
    ) -> Self {
        Self {
            labels: RouteLabels {
                route: Arc::new(route.to_string()),
                method,
            },
            requests: requests.clone(),
            latency_family: latency.clone(),
            denied_family: denied.clone(),
            latency: OnceLock::new(),
            statuses: std::array::from_fn(|_| OnceLock::new()),
            denied: OnceLock::new(),
        }
    }

    /// Counts one answered request and its latency.
    pub fn observe(&self, status: u16, elapsed: Duration) {
        self.latency
            .get_or_init(|| self.latency_family.get_or_create_owned(&self.labels))
            .observe(elapsed.as_secs_f64());
        let labels = || RequestLabels {
            route: self.labels.route.clone(),
            method: self.labels.method,
            status,
        };
        match STATUSES.binary_search(&status) {
            Ok(i) => {
                self.statuses[i]
                    .get_or_init(|| self.requests.get_or_create_owned(&labels()))
                    .inc();
            }
            Err(_) => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
    }

    /// Counts one request refused by authorization.
    pub fn denied(&self) {
        self.denied
            .get_or_init(|| self.denied_family.get_or_create_owned(&self.labels))
            .inc();
    }
}

/// The route metrics of a request served by a route, in its extensions (put there by the
/// route table, read by the envelope once the response is known).
#[derive(Debug, Clone)]
pub struct Matched(pub Arc<RouteMetrics>);

/// Counts an authorization denial (a 403) of the route serving `req`.
pub fn denied(req: &actix_web::HttpRequest, status: u16) {
    use actix_web::HttpMessage;
    if status != 403 {
        return;
    }
    if let Some(Matched(m)) = req.extensions().get::<Matched>() {
        m.denied();
    }
}

/// Authentication outcomes. `Default` counts into detached counters.
#[derive(Debug, Clone, Default)]
pub struct AuthMetrics {
    bearer: Counter,
    dev: Counter,
    api_key: Counter,
    session: Counter,
    refused: Option<Family<ReasonLabel, Counter>>,
}

impl AuthMetrics {
    /// Counts an authenticated caller of `kind` (`bearer`, `dev`, `api_key`, `session`).
    pub fn accepted(&self, kind: &str) {
        match kind {
            "bearer" => self.bearer.inc(),
            "dev" => self.dev.inc(),
            "api_key" => self.api_key.inc(),
            _ => self.session.inc(),
        };
    }

    /// Counts a refusal; `reason` is one of a fixed list of names.
    pub fn refused(&self, reason: &'static str) {
        if let Some(f) = &self.refused {
            f.get_or_create(&ReasonLabel { reason }).inc();
        }
    }
}

/// The decision counters of one rate-limit policy.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Let through.
    pub allowed: Counter,
    /// Refused with 429.
    pub limited: Counter,
    /// Undecided (backend unreachable), let through by the declared fallback.
    pub fallback: Counter,
    /// Undecided, refused with 503.
    pub unavailable: Counter,
}

/// The writer queue depth, commit batch size and commit latency. `Default` is detached.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Writes waiting for the writer.
    pub queue_depth: Gauge,
    /// Writes per committed transaction.
    pub batch_size: Histogram,
    /// BEGIN to end of COMMIT, in seconds.
    pub commit_seconds: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            queue_depth: Gauge::default(),
            batch_size: Histogram::new(BATCH_BUCKETS),
            commit_seconds: Histogram::new(COMMIT_BUCKETS),
        }
    }
}

/// One issuer's key refreshes.
#[derive(Debug, Clone, Default)]
pub struct JwksMetrics {
    /// Fetches that got a valid answer.
    pub ok: Counter,
    /// Fetches that failed (the last good keys keep serving).
    pub failed: Counter,
}

/// The verified-token cache's hits and misses. `Default` is detached.
#[derive(Debug, Clone, Default)]
pub struct TokenCacheMetrics {
    /// Answered from memory (accepted or refused).
    pub hits: Counter,
    /// Verified in full.
    pub misses: Counter,
}

/// One resource's decryption failures.
#[derive(Debug, Clone, Default)]
pub struct FaultCounters {
    /// The value does not decrypt (tampered, moved, not `nf1`).
    pub undecryptable: Counter,
    /// The value needs a key the ring lacks.
    pub key_unavailable: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_series_shared() {
        let m = Metrics::new("sha256:aa");
        let a = m.route("/api/notes/{id}", &Method::GET);
        let b = m.route("/api/notes/{id}", &Method::GET);
        assert!(Arc::ptr_eq(&a, &b));
        a.observe(200, Duration::from_millis(3));
        b.observe(200, Duration::from_millis(3));
        a.observe(299, Duration::from_millis(3));
        let odd = Method::from_bytes(b"BREW").unwrap();
        m.unmatched(&odd).observe(404, Duration::from_millis(1));
        m.record_reload(true, "sha256:bb");
        m.record_reload(false, "sha256:cc");
        let text = m.encode().unwrap();
        assert!(text.contains(
            "nestflux_http_requests_total{route=\"/api/notes/{id}\",method=\"GET\",status=\"200\"} 2"
        ), "{text}");
        assert!(text.contains("status=\"299\"} 1"), "{text}");
        assert!(text.contains(
            "nestflux_http_requests_total{route=\"unmatched\",method=\"other\",status=\"404\"} 1"
        ), "{text}");
        assert!(!text.contains("BREW"));
        assert!(
            text.contains("nestflux_config_info{config_hash=\"sha256:bb\"} 1"),
            "{text}"
        );
        assert!(!text.contains("sha256:aa"), "{text}");
        assert!(
            text.contains("nestflux_plan_reloads_total{result=\"failure\"} 1"),
            "{text}"
        );
    }
}
