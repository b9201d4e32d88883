//! Raw configuration: serde types that mirror `nestflux.toml` key for key, and nothing more.
//!
//! These types only parse. Every check, every cross-reference and every conversion into
//! typed values happens in [`crate::plan`]. Unknown keys are collected while reading (every
//! one of them, with the nearest valid name) and refused by the compile step, so a typo
//! such as `permision` can never silently open a route; the JSON Schema says so too
//! (`additionalProperties: false`).

mod keys;
mod lenient;
mod load;
pub mod read;
pub mod source;

pub use load::{CONTROL_VARS, LoadError, Loaded, load, load_from, var_for};
pub use read::{Issue, IssueKind};
pub use source::{ConfigSource, EnvEntry, Origin, SourceMap};

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawConfig {
    /// Listening socket, limits, TLS and proxies.
    pub server: RawServer,
    /// Where declared resources and internal tables live.
    pub database: RawDatabase,
    /// Secure response headers (Helmet's defaults); a key overrides one, `""` removes it.
    pub headers: RawHeaders,
    /// Cross-origin resource sharing. Absent: no cross-origin access.
    pub cors: Option<RawCors>,
    /// Who is calling: OIDC issuer, development issuer, browser sessions.
    pub auth: Option<RawAuth>,
    /// Roles and the permissions they grant.
    pub roles: BTreeMap<String, RawRole>,
    /// Rate-limit policies; the policy named `global` applies to every request.
    pub rate_limits: RawRateLimits,
    /// Field encryption at rest. Keys come from the environment, never the file.
    pub encryption: Option<RawEncryption>,
    /// Validation schemas, by name.
    pub schemas: BTreeMap<String, BTreeMap<String, RawField>>,
    /// Declared data resources, by name.
    pub resources: BTreeMap<String, RawResource>,
    /// The route table.
    pub routes: Vec<RawRoute>,
    /// The audit log: retention of `nestflux_audit` (the log itself is always on).
    pub audit: Option<RawAudit>,
    /// Scheduled backups of the SQLite database, taken by the running server.
    pub backup: Option<RawBackup>,
}

/// `[backup]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawBackup {
    /// How often the server takes a backup, e.g. `"6h"` (at least `"1m"`).
    pub every: Option<String>,
    /// How many scheduled backups to keep (the newest); default 14.
    pub keep: Option<u32>,
    /// The directory the backups go to (it must exist and be writable).
    pub dir: Option<String>,
}

/// `[audit]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawAudit {
    /// Delete audit rows older than this, e.g. `"400d"` (at least one day); absent: keep
    /// every row. Pruning leaves an anchor row so `nestflux audit verify` still passes.
    pub retain: Option<String>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawServer {
    /// Socket address to listen on, e.g. `127.0.0.1:8080`.
    pub bind: String,
    /// Largest accepted request body, e.g. `"1MiB"`; larger bodies get 413.
    #[serde(deserialize_with = "lenient::string")]
    pub body_limit: String,
    /// Time allowed to read a request and produce its response, e.g. `"15s"`.
    #[serde(deserialize_with = "lenient::string")]
    pub request_timeout: String,
    /// Time in-flight requests get to finish on SIGTERM/SIGINT, e.g. `"10s"`.
    #[serde(deserialize_with = "lenient::string")]
    pub shutdown_timeout: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// CIDRs of proxies whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// HTTPS with rustls; HSTS is sent only over TLS.
    pub tls: Option<RawTls>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            body_limit: "1MiB".into(),
            request_timeout: "15s".into(),
            shutdown_timeout: "10s".into(),
            workers: 0,
            trusted_proxies: Vec::new(),
            tls: None,
        }
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Also listen for plain HTTP on this socket address (e.g. `0.0.0.0:80`) and answer every
    /// request with 308 to the same path over HTTPS.
    #[serde(default)]
    pub redirect_http: Option<String>,
    /// `host[:port]` the redirect points to (e.g. `api.example.com`); never taken from the
    /// request's Host header. Defaults to `server.bind`, which must then be a specific address.
    #[serde(default)]
    pub public_host: Option<String>,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawDatabase {
    /// `sqlite://path` (embedded) or `postgres://user@host/db`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// How long a request waits for a connection or a lock before answering 503, e.g. `"5s"`.
    #[serde(deserialize_with = "lenient::string")]
    pub busy_timeout: String,
    /// SQLite: writes that may wait for the one writer; when full, a write is answered 503
    /// with `Retry-After` at once.
    pub write_queue: usize,
    /// How often a subject's `last_seen` in the users table may move, e.g. `"1m"`.
    #[serde(deserialize_with = "lenient::string")]
    pub last_seen_interval: String,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: "sqlite://nestflux.db".into(),
            pool_size: 8,
            busy_timeout: "5s".into(),
            write_queue: 1024,
            last_seen_interval: "1m".into(),
        }
    }
}

/// `[headers]`: one key per secure header. Absent keeps Helmet's default, `""` removes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawHeaders {
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<String>,
    /// `Cross-Origin-Opener-Policy`.
    pub cross_origin_opener_policy: Option<String>,
    /// `Cross-Origin-Resource-Policy`.
    pub cross_origin_resource_policy: Option<String>,
    /// `Cross-Origin-Embedder-Policy` (not sent by default).
    pub cross_origin_embedder_policy: Option<String>,
    /// `Origin-Agent-Cluster`.
    pub origin_agent_cluster: Option<String>,
    /// `Referrer-Policy`.
    pub referrer_policy: Option<String>,
    /// Sent only over TLS.
    pub strict_transport_security: Option<String>,
    /// `X-Content-Type-Options`.
    pub x_content_type_options: Option<String>,
    /// `X-DNS-Prefetch-Control`.
    pub x_dns_prefetch_control: Option<String>,
    /// `X-Download-Options`.
    pub x_download_options: Option<String>,
    /// `X-Frame-Options`.
    pub x_frame_options: Option<String>,
    /// `X-Permitted-Cross-Domain-Policies`.
    pub x_permitted_cross_domain_policies: Option<String>,
    /// `X-XSS-Protection`.
    pub x_xss_protection: Option<String>,
}

/// `[cors]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawCors {
    /// Allowed origins, e.g. `https://app.example.com`; `"*"` allows any (never with credentials).
    pub origins: Vec<String>,
    /// Methods allowed on cross-origin requests.
    pub methods: Vec<String>,
    /// Request headers allowed on cross-origin requests.
    pub headers: Vec<String>,
    /// Response headers the browser may read.
    pub expose_headers: Vec<String>,
    /// Allow cookies and `Authorization` on cross-origin requests.
    pub credentials: bool,
    /// How long a browser may cache a preflight answer, e.g. `"10m"`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub max_age: Option<String>,
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            methods: vec!["GET".into(), "POST".into(), "PATCH".into(), "DELETE".into()],
            headers: vec!["authorization".into(), "content-type".into()],
            expose_headers: Vec::new(),
            credentials: false,
            max_age: None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawAuth {
    /// OIDC issuer URL: discovery document and JWKS come from here.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub issuer: Option<String>,
    /// Required `aud` of bearer tokens.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub audience: Option<String>,
    /// Allowed signature algorithms; `none` and HS* are refused.
    pub algorithms: Vec<String>,
    /// Dotted path to the roles in a token, e.g. `realm_access.roles`.
    #[serde(deserialize_with = "lenient::string")]
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` / `nbf`, e.g. `"30s"`.
    #[serde(deserialize_with = "lenient::string")]
    pub leeway: String,
    /// How long the last good signing keys keep serving while the issuer cannot be reached
    /// (transport or HTTP failures only), e.g. `"6h"`. After that every token is refused.
    #[serde(deserialize_with = "lenient::string")]
    pub jwks_max_stale: String,
    /// Accept only tokens whose header says `typ: at+jwt` (RFC 9068 access tokens). Off by
    /// default: Keycloak and Authentik access tokens say `JWT`.
    pub require_access_token_typ: bool,
    /// Clients whose access tokens are accepted, by the `azp` claim. Empty (the default):
    /// any `azp`; otherwise a token naming another client is refused.
    pub allowed_clients: Vec<String>,
    /// Accept a plain-HTTP issuer that is not on loopback. Refused in production.
    pub dangerous_allow_http_issuer: bool,
    /// Built-in development token issuer.
    pub dev: Option<RawDevIssuer>,
    /// Browser login through the OIDC authorization code flow with PKCE.
    pub session: Option<RawSession>,
    /// Machine callers, by name: `[auth.api_keys.NAME] hash = "sha256:…", roles = […]`.
    pub api_keys: BTreeMap<String, RawApiKey>,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
            roles_claim: "roles".into(),
            leeway: "30s".into(),
            jwks_max_stale: "6h".into(),
            require_access_token_typ: false,
            allowed_clients: Vec::new(),
            dangerous_allow_http_issuer: false,
            dev: None,
            session: None,
            api_keys: BTreeMap::new(),
        }
    }
}

/// `[auth.api_keys.NAME]`: a key is declared by its hash, never by the key itself.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawApiKey {
    /// `sha256:<64 hex>` of the key, as printed by `nestflux keys api-key NAME`.
    pub hash: String,
    /// Roles the key's caller has.
    pub roles: Vec<String>,
}

/// `[auth.dev]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawDevIssuer {
    /// Turn the development issuer on (`nestflux token`). Refused in production.
    pub enabled: bool,
}

/// `[auth.session]`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawSession {
    /// The OIDC client id.
    #[serde(deserialize_with = "lenient::string")]
    pub client_id: String,
    /// Secret of a confidential client; set it through `NESTFLUX_AUTH__SESSION__CLIENT_SECRET(_FILE)`.
    #[schemars(skip)]
    #[serde(skip_serializing)]
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub client_secret: Option<String>,
    /// The callback URL registered with the provider.
    pub redirect_url: String,
    /// A session unused this long ends, e.g. `"30m"`.
    #[serde(deserialize_with = "lenient::string")]
    pub idle_timeout: String,
    /// A session ends this long after login whatever its use, e.g. `"12h"`.
    #[serde(deserialize_with = "lenient::string")]
    pub absolute_timeout: String,
    /// Scopes asked for at login (`openid` is always asked for); add `offline_access` where
    /// the provider issues refresh tokens only for it (Authentik).
    pub scopes: Vec<String>,
    /// Where the provider sends the browser after logout; must be registered with it.
    /// Defaults to the origin of `redirect_url` with path `/`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub post_logout_redirect_url: Option<String>,
    /// Time a started login may take to come back to the callback, e.g. `"10m"`.
    #[serde(deserialize_with = "lenient::string")]
    pub login_timeout: String,
    /// Send the session cookie without `Secure` and without the `__Host-` prefix, for a
    /// plain-HTTP `redirect_url` that is not on loopback. Refused in production.
    pub dangerous_insecure_cookie: bool,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: None,
            redirect_url: String::new(),
            idle_timeout: "30m".into(),
            absolute_timeout: "12h".into(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            post_logout_redirect_url: None,
            login_timeout: "10m".into(),
            dangerous_insecure_cookie: false,
        }
    }
}

/// `[roles.NAME]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawRole {
    /// Roles whose permissions this role also has.
    pub inherits: Vec<String>,
    /// Permissions `resource:action[:own]`; `*` matches a whole segment.
    pub permissions: Vec<String>,
}

/// `[rate_limits]`: a backend choice plus named policies.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct RawRateLimits {
    /// `memory` (default) or `redis`.
    pub backend: Option<String>,
    /// Redis URL when `backend = "redis"` (`redis://host:6379/0`, TLS with `rediss://`). A
    /// password belongs in `NESTFLUX_RATE_LIMITS__REDIS_URL`, or in
    /// `NESTFLUX_RATE_LIMITS__REDIS_PASSWORD(_FILE)` beside a password-less URL; one written
    /// in the file is a `secret-in-file` warning in development, an error in production.
    #[serde(skip_serializing)]
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub redis_url: Option<String>,
    /// The Redis password. Only from `NESTFLUX_RATE_LIMITS__REDIS_PASSWORD(_FILE)`: in the
    /// file it is an error in every profile.
    #[schemars(skip)]
    #[serde(skip_serializing)]
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub redis_password: Option<String>,
    /// Longest a request waits for Redis before the `on_backend_error` fallback decides,
    /// e.g. `"50ms"` (the default).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub redis_timeout: Option<String>,
    /// What decides while Redis is unreachable or slow: `local` (the default: this
    /// instance's own in-memory limits), `deny` (503 with `Retry-After`) or `allow`.
    pub on_backend_error: Option<String>,
    /// Test only: shifts this instance's clock as the rate limiter sees it, e.g. `"-90s"`
    /// or `"+1h"`. Refused in production.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub dangerous_clock_offset: Option<String>,
    /// Named policies; `global` applies to every request before authentication.
    #[serde(flatten)]
    pub policies: BTreeMap<String, RawRatePolicy>,
}

/// `[rate_limits.NAME]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawRatePolicy {
    /// `ip`, `user` (falls back to ip for anonymous callers) or `api_key`.
    pub key: Option<String>,
    /// Requests per second.
    pub per_second: Option<u32>,
    /// Requests per minute.
    pub per_minute: Option<u32>,
    /// Requests per hour.
    pub per_hour: Option<u32>,
    /// Requests allowed at once above the steady rate.
    pub burst: Option<u32>,
}

/// `[encryption]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawEncryption {
    /// `kid:base64,…`; the first encrypts, all decrypt. Only from `NESTFLUX_ENCRYPTION__KEYS(_FILE)`.
    #[schemars(skip)]
    #[serde(skip_serializing)]
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub keys: Option<String>,
}

/// One field of a `[schemas.NAME]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawField {
    /// `string`, `integer`, `number`, `boolean`, `enum`, `array` or `object`; absent with `ref`.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// Name of another schema this field has the shape of.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// A new record may leave the field out.
    pub optional: bool,
    /// `null` is a value of the field.
    pub nullable: bool,
    /// Value filled in when a new record leaves the field out.
    #[schemars(with = "Option<serde_json::Value>")]
    pub default: Option<toml::Value>,
    /// Shown in the OpenAPI document.
    pub description: Option<String>,
    // string
    /// Shortest string, in characters.
    pub min_length: Option<u64>,
    /// Longest string, in characters.
    pub max_length: Option<u64>,
    /// Regular expression the string must match somewhere (anchor it with `^…$`), as in JSON Schema.
    pub pattern: Option<String>,
    /// email | uri | uuid | date | date-time | ipv4 | ipv6
    pub format: Option<String>,
    /// Trim surrounding whitespace before checking and storing.
    pub trim: bool,
    // integer / number
    /// Smallest allowed value.
    pub min: Option<f64>,
    /// Largest allowed value.
    pub max: Option<f64>,
    /// Values must be greater than this.
    pub exclusive_min: Option<f64>,
    /// Values must be less than this.
    pub exclusive_max: Option<f64>,
    /// Values must be a multiple of this.
    pub multiple_of: Option<f64>,
    // enum
    /// The allowed values of an `enum`.
    pub values: Option<Vec<String>>,
    // array
    /// The element of an `array`.
    pub items: Option<Box<RawField>>,
    /// Fewest elements.
    pub min_items: Option<u64>,
    /// Most elements.
    pub max_items: Option<u64>,
    /// Elements must all differ.
    pub unique: bool,
    // object
    /// The fields of an inline `object`.
    pub fields: Option<BTreeMap<String, RawField>>,
    /// Objects refuse unknown keys unless `strict = false`.
    pub strict: Option<bool>,
}

/// `[resources.NAME]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawResource {
    /// The schema that describes one record.
    pub schema: String,
    /// Store the creator's subject; enables `:own` permissions.
    pub owner: bool,
    /// Fields stored encrypted with AES-256-GCM.
    pub encrypted: Vec<String>,
    /// Encrypted fields that also get an HMAC blind index for equality filters.
    pub blind_index: Vec<String>,
    /// Field → permission needed to read or write it.
    pub field_permissions: BTreeMap<String, String>,
}

/// `[[routes]]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default)]
#[schemars(deny_unknown_fields)]
pub struct RawRoute {
    /// HTTP method in uppercase, e.g. `GET`.
    pub method: String,
    /// Path with `{param}` segments, e.g. `/api/notes/{id}`.
    pub path: String,
    /// `health`, `whoami`, `audit`, or with a resource: `list`, `get`, `create`, `update`, `delete`.
    pub action: String,
    /// The `[resources]` entry the action works on.
    pub resource: Option<String>,
    /// Anyone may call.
    pub public: bool,
    /// Any valid identity may call.
    pub authenticated: bool,
    /// Callers need this permission (`resource:action`).
    pub permission: Option<String>,
    /// Name of a `[rate_limits]` policy applied after authentication.
    pub rate_limit: Option<String>,
    /// Summary of the operation in the OpenAPI document.
    pub summary: Option<String>,
    /// `health` only: also answer the checks behind the status (database, each issuer's
    /// signing keys, the config hash). Declare it on a protected route; the public health
    /// route answers only `status`.
    pub detail: bool,
}
