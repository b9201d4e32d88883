//! The issuer's signing keys: discovered, fetched with redirect, size and time limits,
//! refreshed in the background, and kept serving while the provider is down.
//!
//! A valid JWKS answer replaces the key set even when it holds no usable key (an emergency
//! revocation publishes `{"keys": []}`): tokens signed by removed keys stop working at once.
//! Only a failed fetch keeps the last good keys, and only for `auth.jwks_max_stale`.
//!
//! Requests never fetch. A token naming an unknown `kid` may *ask* the refresher thread
//! for an early fetch, at most once per [`MIN_REFETCH_INTERVAL`], and wait for its outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use tokio::sync::{Notify, watch};

/// Largest discovery document or JWKS accepted.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Time allowed for one fetch (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys read from one JWKS; the rest are ignored.
pub const MAX_KEYS: usize = 64;
/// Periodic refresh while the provider answers.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// Fastest on-demand refetch (unknown `kid`): a flood of forged kids costs one fetch per
/// interval, never one per request.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long the last good keys serve while fetches fail, unless configured
/// (`auth.jwks_max_stale`).
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(6 * 3600);
/// Retry backoff while the provider is unreachable.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// One usable verification key, bound to the algorithms its type allows.
pub struct KeyEntry {
    /// Allow-list ∩ the key type's algorithms ∩ the JWK's own `alg`, when it has one.
    pub algorithms: Vec<Algorithm>,
    /// The key, ready to verify signatures.
    pub key: DecodingKey,
    /// The JWK as published, to notice a key that changed under the same `kid`.
    fingerprint: String,
}

/// The keys of one successful fetch.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<KeyEntry>>,
    unnamed: Vec<Arc<KeyEntry>>,
}

/// Which key verifies a token.
pub enum Lookup {
    /// The key for this token.
    Found(Arc<KeyEntry>),
    /// No key under this `kid` (or no key at all for a token without `kid`).
    Unknown,
    /// A key exists, but not for this algorithm (or several could apply to a kid-less token).
    Mismatch,
}

impl KeySet {
    /// Reads a JWKS document; keys that are unusable, not for signatures, symmetric, or
    /// outside the allow-list are skipped.
    pub fn from_document(doc: &Value, allowed: &[Algorithm]) -> Self {
        let mut set = KeySet::default();
        let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
            return set;
        };
        for raw in keys.iter().take(MAX_KEYS) {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            let algorithms = key_algorithms(&jwk, allowed);
            if algorithms.is_empty() {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let entry = Arc::new(KeyEntry {
                algorithms,
                key,
                fingerprint: raw.to_string(),
            });
            match jwk.common.key_id {
                // A duplicated kid is ambiguous: the first one published wins.
                Some(kid) => {
                    set.by_kid.entry(kid).or_insert(entry);
                }
                None => set.unnamed.push(entry),
            }
        }
        set
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key for a token's `kid` and `alg`.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(entry) if entry.algorithms.contains(&alg) => Lookup::Found(entry.clone()),
                Some(_) => Lookup::Mismatch,
                None => Lookup::Unknown,
            },
            None => {
                let mut fitting = self
                    .by_kid
                    .values()
                    .chain(&self.unnamed)
                    .filter(|e| e.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Lookup::Found(only.clone()),
                    (None, _) => Lookup::Unknown,
                    (Some(_), Some(_)) => Lookup::Mismatch,
                }
            }
        }
    }

    /// Whether every key of `self` is still published, unchanged, in `next`.
    fn is_kept_by(&self, next: &KeySet) -> bool {
        self.by_kid.iter().all(|(kid, e)| {
            next.by_kid
                .get(kid)
                .is_some_and(|n| n.fingerprint == e.fingerprint)
        }) && self
            .unnamed
            .iter()
            .all(|e| next.unnamed.iter().any(|n| n.fingerprint == e.fingerprint))
    }
}

/// The algorithms a JWK may verify: its type's family (and curve), intersected with the
/// allow-list and with the JWK's own `alg`. Symmetric (`oct`) keys get none.
pub fn key_algorithms(jwk: &Jwk, allowed: &[Algorithm]) -> Vec<Algorithm> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Vec::new();
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Vec::new();
    }
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => &[],
        },
        _ => &[],
    };
    let own = match jwk.common.key_algorithm {
        Some(ka) => match Algorithm::try_from(ka) {
            Ok(a) => Some(a),
            // An `alg` we cannot use (RSA-OAEP, unknown…): the key is not for us.
            Err(_) => return Vec::new(),
        },
        None => None,
    };
    family
        .iter()
        .copied()
        .filter(|a| allowed.contains(a) && own.is_none_or(|o| o == *a))
        .collect()
}

/// Why a fetch failed. Written to the log; never shown to callers.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed (connection, TLS, timeout).
    #[error("GET {url}: {message}")]
    Http {
        /// The URL fetched.
        url: String,
        /// What failed.
        message: String,
    },
    /// The provider answered with a status other than 200.
    #[error("GET {url}: status {status}")]
    Status {
        /// The URL fetched.
        url: String,
        /// The status received.
        status: u16,
    },
    /// The document exceeds the size limit.
    #[error("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
    },
    /// The body is not a JSON document.
    #[error("GET {url}: not a JSON document")]
    Json {
        /// The URL fetched.
        url: String,
    },
    /// The discovery document names another issuer.
    #[error("discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The issuer the document names.
        found: String,
        /// The configured issuer.
        expected: String,
    },
    /// The discovery document's `jwks_uri` is missing, not a URL, or of a refused scheme.
    #[error("discovery document has no usable jwks_uri ({0})")]
    BadJwksUri(String),
    /// The JWKS answer has no `keys` array.
    #[error("GET {url}: not a JWKS document (no `keys` array)")]
    NotJwks {
        /// The URL fetched.
        url: String,
    },
}

/// The key cache of one issuer, shared by every worker.
pub struct Jwks {
    issuer: url::Url,
    /// `iss` values naming our issuer: the configured URL with and without the slash that
    /// URL parsing adds to an empty path.
    accepted_issuers: Vec<String>,
    allowed: Vec<Algorithm>,
    keys: RwLock<Arc<KeySet>>,
    /// Bumped whenever a key that was served disappears or changes: verified-token cache
    /// entries from an older epoch are no longer trusted.
    epoch: AtomicU64,
    /// Bumped after every fetch attempt, to wake requests waiting for one.
    attempts: watch::Sender<u64>,
    wake: Notify,
    in_flight: AtomicBool,
    last_on_demand: Mutex<Option<Instant>>,
    http: reqwest::Client,
    /// Keys given at construction and never fetched (no refresher, no refetch).
    fixed: bool,
    /// How long the last good keys serve while fetches fail.
    max_stale: Duration,
    /// When the last valid answer was installed.
    last_good: Mutex<Option<Instant>>,
    /// Counts the refresher's fetches, once attached.
    metrics: std::sync::OnceLock<crate::metrics::JwksMetrics>,
}

impl Jwks {
    /// A cache for `issuer`, empty until the refresher's first fetch.
    pub fn new(issuer: url::Url, allowed: Vec<Algorithm>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect could send the key fetch anywhere (SSRF, key substitution).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .user_agent(concat!("nestflux/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            accepted_issuers: accepted_issuers(&issuer),
            issuer,
            allowed,
            keys: RwLock::new(Arc::new(KeySet::default())),
            epoch: AtomicU64::new(0),
            attempts: watch::Sender::new(0),
            wake: Notify::new(),
            in_flight: AtomicBool::new(false),
            last_on_demand: Mutex::new(None),
            http,
            fixed: false,
            max_stale: DEFAULT_MAX_STALE,
            last_good: Mutex::new(None),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// A key set that never changes and is never fetched (the development issuer's).
    pub fn fixed(
        issuer: url::Url,
        allowed: Vec<Algorithm>,
        document: &Value,
    ) -> Result<Self, reqwest::Error> {
        let mut jwks = Self::new(issuer, allowed.clone())?;
        jwks.fixed = true;
        jwks.install(KeySet::from_document(document, &allowed));
        Ok(jwks)
    }

    /// Sets how long the last good keys keep serving while fetches fail.
    pub fn with_max_stale(mut self, max_stale: Duration) -> Self {
        self.max_stale = max_stale;
        self
    }

    /// Counts the refresher's fetches (ok, failed) into `metrics`; the first call wins.
    pub fn count_refreshes_into(&self, metrics: crate::metrics::JwksMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The issuer whose keys these are.
    pub fn issuer(&self) -> &url::Url {
        &self.issuer
    }

    /// `iss` values that name this issuer.
    pub fn accepted_issuers(&self) -> &[String] {
        &self.accepted_issuers
    }

    /// The keys currently served.
    pub fn current(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current key epoch (see [`Jwks::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Replaces the key set; returns whether a previously served key went away.
    pub fn install(&self, next: KeySet) -> bool {
        let mut guard = match self.keys.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let dropped = !guard.is_kept_by(&next);
        if dropped {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        *guard = Arc::new(next);
        dropped
    }

    /// How fresh the served keys are, for the health route's detail: `fixed` (the development
    /// issuer's, never fetched), `fresh` (a valid answer within two refresh periods),
    /// `stale` (fetches failing; the last good keys serve until `auth.jwks_max_stale`),
    /// `none` (no usable key: not loaded yet, retired, or none published).
    pub fn freshness(&self) -> Value {
        let age = match self.last_good.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        }
        .map(|t| t.elapsed());
        let keys = self.current().len();
        let state = match age {
            _ if self.fixed => "fixed",
            _ if keys == 0 => "none",
            Some(a) if a <= REFRESH_EVERY * 2 + FETCH_TIMEOUT * 2 => "fresh",
            _ => "stale",
        };
        serde_json::json!({
            "issuer": self.issuer.as_str(),
            "state": state,
            "keys": keys,
            "age_s": age.map(|a| a.as_secs()),
            "max_stale_s": (!self.fixed).then_some(self.max_stale.as_secs()),
        })
    }

    /// Installs the key set of a valid answer (even an empty one) and notes when it came.
    fn accept(&self, next: KeySet, now: Instant) -> bool {
        let dropped = self.install(next);
        if let Ok(mut last) = self.last_good.lock() {
            *last = Some(now);
        }
        dropped
    }

    /// After a failed fetch: retires the served keys once the last valid answer is older than
    /// `max_stale`. Returns whether keys were retired now.
    fn expire_if_stale(&self, now: Instant) -> bool {
        let last = match self.last_good.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        let stale = last.is_some_and(|at| now.saturating_duration_since(at) > self.max_stale);
        if stale && !self.current().is_empty() {
            self.install(KeySet::default());
            return true;
        }
        false
    }

    /// Starts the refresher on its own thread with its own small runtime, so key fetches
    /// never run on (or depend on) the request workers.
    pub fn spawn_refresher(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("nestflux-jwks".into())
            .spawn(move || runtime.block_on(me.refresh_loop()))?;
        Ok(())
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut backoff = RETRY_MIN;
        loop {
            self.in_flight.store(true, Ordering::Release);
            let fetched = self.fetch().await;
            if let Some(m) = self.metrics.get() {
                if fetched.is_ok() { &m.ok } else { &m.failed }.inc();
            }
            let wait = match fetched {
                Ok(set) => {
                    let count = set.len();
                    let dropped = self.accept(set, Instant::now());
                    if count == 0 {
                        tracing::warn!(
                            target: "nestflux::auth",
                            keys_retired = dropped,
                            "the issuer publishes no key usable with auth.algorithms: every token of this issuer is refused until it does"
                        );
                    } else {
                        tracing::info!(
                            target: "nestflux::auth",
                            keys = count,
                            keys_retired = dropped,
                            "issuer signing keys loaded"
                        );
                    }
                    backoff = RETRY_MIN;
                    REFRESH_EVERY
                }
                Err(e) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    if self.expire_if_stale(Instant::now()) {
                        tracing::error!(
                            target: "nestflux::auth",
                            error = %e,
                            max_stale_s = self.max_stale.as_secs(),
                            "the issuer's signing keys could not be refreshed for longer than auth.jwks_max_stale: they are retired and every token of this issuer is refused until a fetch succeeds"
                        );
                    } else {
                        tracing::warn!(
                            target: "nestflux::auth",
                            error = %e,
                            retry_in_s = wait.as_secs(),
                            "could not load the issuer's signing keys; the last good keys keep serving"
                        );
                    }
                    wait
                }
            };
            self.in_flight.store(false, Ordering::Release);
            self.attempts.send_modify(|n| *n = n.wrapping_add(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Called by a request whose `kid` is unknown: asks for an early fetch (at most once per
    /// [`MIN_REFETCH_INTERVAL`]) or joins one in flight, and waits for it. `false` when no
    /// fetch happened, so the caller should not look again.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        if self.fixed {
            return false;
        }
        let mut attempts = self.attempts.subscribe();
        let allowed = {
            let mut last = match self.last_on_demand.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            let due = last.is_none_or(|t| t.elapsed() >= MIN_REFETCH_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if allowed {
            self.wake.notify_one();
        } else if !self.in_flight.load(Ordering::Acquire) {
            return false;
        }
        // Discovery and JWKS, each bounded by FETCH_TIMEOUT.
        tokio::time::timeout(
            FETCH_TIMEOUT * 2 + Duration::from_secs(1),
            attempts.changed(),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// One discovery + JWKS fetch.
    pub async fn fetch(&self) -> Result<KeySet, FetchError> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.as_str().trim_end_matches('/')
        );
        let doc = self.get_json(&discovery).await?;
        let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if !self.accepted_issuers.iter().any(|i| i == found) {
            return Err(FetchError::IssuerMismatch {
                found: found.to_string(),
                expected: self.accepted_issuers[0].clone(),
            });
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::BadJwksUri("missing".into()))?;
        let jwks_url = url::Url::parse(jwks_uri)
            .map_err(|_| FetchError::BadJwksUri(format!("`{jwks_uri}` is not a URL")))?;
        // Plain HTTP only where the configuration allowed a plain-HTTP issuer.
        let scheme_ok = jwks_url.scheme() == "https"
            || (jwks_url.scheme() == "http" && self.issuer.scheme() == "http");
        if !scheme_ok || jwks_url.host_str().is_none() {
            return Err(FetchError::BadJwksUri(format!(
                "`{jwks_uri}` must be https:// like the issuer"
            )));
        }
        let jwks = self.get_json(jwks_url.as_str()).await?;
        if !jwks.get("keys").is_some_and(Value::is_array) {
            return Err(FetchError::NotJwks {
                url: jwks_url.to_string(),
            });
        }
        // A valid answer, even with no usable key: the issuer decides what is trusted.
        Ok(KeySet::from_document(&jwks, &self.allowed))
    }

    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let http = |e: reqwest::Error| FetchError::Http {
            url: url.to_string(),
            message: e.without_url().to_string(),
        };
        let mut res = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http)?;
        if !res.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: res.status().as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
        };
        if res
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|_| FetchError::Json {
            url: url.to_string(),
        })
    }
}

fn accepted_issuers(issuer: &url::Url) -> Vec<String> {
    let text = issuer.as_str().to_string();
    let mut out = vec![text.clone()];
    if issuer.path() == "/" {
        out.insert(0, text.trim_end_matches('/').to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALL: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    fn ec_key(kid: &str, alg: Option<&str>) -> Value {
        let mut k = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        if let Some(a) = alg {
            k["alg"] = json!(a);
        }
        k
    }

    #[test]
    fn keys_are_bound_to_their_type_and_alg() {
        let doc = json!({ "keys": [
            ec_key("ec", Some("ES256")),
            ec_key("ec-any", None),
            ec_key("ec-lies", Some("RS256")),
            ec_key("ec-enc", None).as_object().map(|o| {
                let mut o = o.clone();
                o.insert("use".into(), json!("enc"));
                Value::Object(o)
            }).unwrap_or_default(),
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256" },
        ]});
        let set = KeySet::from_document(&doc, ALL);
        assert!(matches!(
            set.lookup(Some("ec"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup(Some("ec"), Algorithm::RS256),
            Lookup::Mismatch
        ));
        assert!(matches!(
            set.lookup(Some("ec-any"), Algorithm::ES256),
            Lookup::Found(_)
        ));
        // A JWK whose alg contradicts its type, an encryption key and an HMAC secret are dropped.
        assert!(matches!(
            set.lookup(Some("ec-lies"), Algorithm::ES256),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.lookup(Some("ec-enc"), Algorithm::ES256),
            Lookup::Unknown
        ));
        assert!(matches!(
            set.lookup(Some("hmac"), Algorithm::ES256),
            Lookup::Unknown
        ));
        assert_eq!(set.len(), 2);
        // Without kid and two ES256 keys, nothing is guessed.
        assert!(matches!(
            set.lookup(None, Algorithm::ES256),
            Lookup::Mismatch
        ));
        // An allow-list without ES256 makes the EC keys useless.
        assert!(KeySet::from_document(&doc, &[Algorithm::RS256]).is_empty());
    }

    #[test]
    fn a_removed_or_changed_key_bumps_the_epoch() {
        let jwks = Jwks::new(url::Url::parse("http://127.0.0.1:1").unwrap(), ALL.to_vec()).unwrap();
        let one = json!({ "keys": [ec_key("a", None)] });
        let two = json!({ "keys": [ec_key("a", None), ec_key("b", None)] });
        assert!(!jwks.install(KeySet::from_document(&one, ALL)));
        assert!(!jwks.install(KeySet::from_document(&two, ALL)));
        assert_eq!(jwks.epoch(), 0);
        assert!(jwks.install(KeySet::from_document(&one, ALL)));
        assert_eq!(jwks.epoch(), 1);
    }

    #[test]
    fn a_valid_empty_answer_retires_every_key() {
        let jwks = Jwks::new(url::Url::parse("http://127.0.0.1:1").unwrap(), ALL.to_vec()).unwrap();
        let now = Instant::now();
        jwks.accept(
            KeySet::from_document(&json!({ "keys": [ec_key("a", None)] }), ALL),
            now,
        );
        assert_eq!(jwks.current().len(), 1);
        assert!(jwks.accept(KeySet::from_document(&json!({ "keys": [] }), ALL), now));
        assert!(jwks.current().is_empty());
        assert_eq!(
            jwks.epoch(),
            1,
            "cached verifications of the old keys are void"
        );
        // A rotation to an algorithm outside the allow-list is the same as no key.
        let jwks = Jwks::new(url::Url::parse("http://127.0.0.1:1").unwrap(), ALL.to_vec()).unwrap();
        jwks.accept(
            KeySet::from_document(&json!({ "keys": [ec_key("a", None)] }), ALL),
            now,
        );
        let es_only_rsa =
            KeySet::from_document(&json!({ "keys": [ec_key("a", None)] }), &[Algorithm::RS256]);
        assert!(jwks.accept(es_only_rsa, now));
        assert!(jwks.current().is_empty());
    }

    #[test]
    fn failed_fetches_keep_the_last_keys_only_until_max_stale() {
        let jwks = Jwks::new(url::Url::parse("http://127.0.0.1:1").unwrap(), ALL.to_vec())
            .unwrap()
            .with_max_stale(Duration::from_secs(3600));
        let t0 = Instant::now();
        jwks.accept(
            KeySet::from_document(&json!({ "keys": [ec_key("a", None)] }), ALL),
            t0,
        );
        assert!(!jwks.expire_if_stale(t0 + Duration::from_secs(3599)));
        assert_eq!(
            jwks.current().len(),
            1,
            "an outage within max_stale keeps the keys"
        );
        assert!(jwks.expire_if_stale(t0 + Duration::from_secs(3601)));
        assert!(jwks.current().is_empty());
        assert_eq!(jwks.epoch(), 1);
        // Retired once, not again on every later failure.
        assert!(!jwks.expire_if_stale(t0 + Duration::from_secs(7200)));
    }

    #[test]
    fn issuer_spellings() {
        let u = url::Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            accepted_issuers(&u),
            vec!["http://127.0.0.1:9000", "http://127.0.0.1:9000/"]
        );
        let u = url::Url::parse("https://id.example/realms/x").unwrap();
        assert_eq!(accepted_issuers(&u), vec!["https://id.example/realms/x"]);
    }
}
