//! Hot reload: on SIGHUP (and with `serve --watch`, when the file changes) the file is
//! loaded and compiled again exactly as at startup; a plan that compiles and changes only
//! keys that can change live is swapped in whole, otherwise the old plan keeps serving.
//!
//! Nothing is half-applied: every check runs before the swap, and the swap is one pointer
//! store ([`super::live::Live::swap`]). What survives a reload: the database pool and
//! writer, the audit sink, authentication (JWKS caches, sessions store), and the buckets of
//! every rate-limit policy whose definition did not change.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::live::Live;
use super::tls::LiveCert;
use crate::actions::AppState;
use crate::plan::{Diagnostic, Plan};

/// Keys whose change takes effect on reload; a change anywhere else needs a restart.
/// (`[rate_limits]` only on the memory backend: Redis keeps the buckets of every instance.)
pub const LIVE_KEYS: &[&str] = &[
    "routes",
    "roles",
    "cors",
    "headers",
    "rate_limits",
    "server.body_limit",
    "server.trusted_proxies",
    "server.tls.cert",
    "server.tls.key",
];

/// A file loaded and compiled as `serve` does at startup.
pub struct Loaded {
    /// The compiled plan, ready to serve.
    pub plan: Plan,
    /// The effective configuration (file and variables, layered), to compare key by key.
    /// Held in memory only; never logged (it may hold secrets).
    pub raw: Value,
}

/// Loads and compiles the file again; `Err` carries every diagnostic.
pub type Load = Box<dyn Fn() -> Result<Loaded, Vec<Diagnostic>> + Send>;

/// How the running server reloads its file.
pub struct Reloading {
    /// Loads the file as at startup.
    pub load: Load,
    /// The effective configuration the server started with.
    pub raw: Value,
    /// With `serve --watch`: the file to watch for changes.
    pub watch: Option<PathBuf>,
    /// Where to record this server's pid for `nestflux reload` ([`crate::pidfile`]),
    /// once the database is open and the socket bound.
    pub pid_file: Option<PathBuf>,
}

/// The result of one reload, logged and counted (logged by [`outcome`], counted by the reloader).
#[derive(Debug)]
pub enum Outcome {
    /// The new plan serves every request that arrives from now on.
    Applied {
        /// The generation now serving.
        generation: u64,
        /// The new plan's `config_hash`.
        config_hash: String,
        /// Rate-limit policies whose buckets were kept.
        limits_kept: Vec<String>,
    },
    /// The file did not load or compile: the old plan keeps serving.
    Invalid {
        /// How many errors (each one was logged).
        errors: usize,
    },
    /// The file changes keys that only a restart can apply: nothing was applied.
    NeedsRestart {
        /// The keys, by path.
        keys: Vec<String>,
    },
}

/// One log line per reload (the reloader also counts it in `nestflux_plan_reloads_total`).
pub fn outcome(o: &Outcome) {
    match o {
        Outcome::Applied {
            generation,
            config_hash,
            limits_kept,
        } => tracing::info!(
            target: "nestflux::reload",
            outcome = "applied",
            generation,
            config_hash = %config_hash,
            rate_limits_kept = ?limits_kept,
            "configuration reloaded: new requests use the new plan"
        ),
        Outcome::Invalid { errors } => tracing::error!(
            target: "nestflux::reload",
            outcome = "invalid",
            errors,
            "configuration reload refused: the file has errors; the previous plan keeps serving"
        ),
        Outcome::NeedsRestart { keys } => tracing::error!(
            target: "nestflux::reload",
            outcome = "needs-restart",
            keys = ?keys,
            "configuration reload refused: {} can only change with a restart; nothing was applied and the previous plan keeps serving",
            keys.join(", ")
        ),
    }
}

/// Starts the reloader: SIGHUP (and the watched file) trigger one reload at a time, on a
/// thread of its own so loading never runs on a request worker.
pub fn start(reloading: Reloading, live: Arc<Live>, cert: Option<Arc<LiveCert>>) {
    let (tx, rx) = mpsc::channel::<&'static str>();
    let hup = tx.clone();
    // Registered now, before the server says it listens: a SIGHUP from then on reloads
    // (SIGHUP's default action would end the process).
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangups) => {
            actix_web::rt::spawn(async move {
                while hangups.recv().await.is_some() {
                    if hup.send("SIGHUP").is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => {
            tracing::error!(target: "nestflux::reload", error = %e, "cannot listen for SIGHUP: reload is off");
        }
    }
    if let Some(path) = reloading.watch.clone() {
        watch(path, tx);
    }
    let Reloading { load, raw, .. } = reloading;
    let spawned = std::thread::Builder::new()
        .name("nestflux-reload".into())
        .spawn(move || {
            let mut running = raw;
            while let Ok(trigger) = rx.recv() {
                // Several triggers at once (an editor writing twice) make one reload.
                while rx.try_recv().is_ok() {}
                tracing::info!(target: "nestflux::reload", trigger, "reloading the configuration");
                let result = once(&load, &running, &live, cert.as_deref());
                outcome(&result.0);
                // Counted on the metrics every generation shares.
                let metrics = live.load().state.metrics.clone();
                match &result.0 {
                    Outcome::Applied { config_hash, .. } => {
                        metrics.record_reload(true, config_hash)
                    }
                    Outcome::Invalid { .. } | Outcome::NeedsRestart { .. } => {
                        metrics.record_reload(false, "")
                    }
                }
                if let Some(raw) = result.1 {
                    running = raw;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: "nestflux::reload", error = %e, "cannot start the reloader: reload is off");
    }
}

/// Polls the file (its bytes, not only its time stamp) every half second.
fn watch(path: PathBuf, tx: mpsc::Sender<&'static str>) {
    let spawned = std::thread::Builder::new()
        .name("nestflux-watch".into())
        .spawn(move || {
            let mut last = std::fs::read(&path).ok();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let now = std::fs::read(&path).ok();
                if now != last {
                    last = now;
                    if tx.send("file changed").is_err() {
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(target: "nestflux::reload", error = %e, "cannot watch the configuration file");
    }
}

/// One reload: load, compare, build, swap. Returns the outcome and, when applied, the
/// effective configuration now running.
fn once(
    load: &Load,
    running: &Value,
    live: &Live,
    cert: Option<&LiveCert>,
) -> (Outcome, Option<Value>) {
    let loaded = match load() {
        Ok(l) => l,
        Err(diagnostics) => {
            for d in &diagnostics {
                tracing::error!(
                    target: "nestflux::reload",
                    path = %d.path,
                    code = d.code.as_str(),
                    suggestion = d.suggestion.as_deref().unwrap_or(""),
                    "{}",
                    d.message
                );
            }
            return (
                Outcome::Invalid {
                    errors: diagnostics.len(),
                },
                None,
            );
        }
    };
    let changed = changed_keys(running, &loaded.raw);
    let keys: Vec<String> = changed.iter().filter(|k| !is_live(k)).cloned().collect();
    if !keys.is_empty() {
        return (Outcome::NeedsRestart { keys }, None);
    }
    let limits_changed = changed
        .iter()
        .any(|k| k.starts_with("rate_limits") || k.starts_with("server.trusted_proxies"));
    let previous = live.load();
    let plan = Arc::new(loaded.plan);
    let (state, limits_kept) = match next_state(&previous.state, plan.clone(), limits_changed) {
        Ok(s) => s,
        Err(o) => return (o, None),
    };
    // Everything is checked and built: apply the certificate, then the plan.
    if let (Some(cert), Some(tls)) = (cert, plan.server.tls.as_ref()) {
        cert.replace(tls);
    }
    state.audit.offer(
        crate::audit::Event::now("-", "config.reloaded", "ok").details(&serde_json::json!({
            "config_hash": plan.config_hash,
            "changed": changed,
        })),
    );
    let generation = live.swap(Arc::new(state));
    (
        Outcome::Applied {
            generation,
            config_hash: plan.config_hash.clone(),
            limits_kept,
        },
        Some(loaded.raw),
    )
}

/// The state of a reloaded plan: the pool, writer, audit sink, authentication and
/// unchanged rate-limit buckets carried over; what depends on the plan alone built anew.
fn next_state(
    previous: &AppState,
    plan: Arc<Plan>,
    limits_changed: bool,
) -> Result<(AppState, Vec<String>), Outcome> {
    let (limits, kept) = if limits_changed {
        match previous.limits.carry_over(&plan) {
            Some((limits, kept)) => (Arc::new(limits.with_metrics(&previous.metrics)), kept),
            None => {
                return Err(Outcome::NeedsRestart {
                    keys: vec!["rate_limits (backend = \"redis\")".into()],
                });
            }
        }
    } else {
        let kept = plan
            .rate_limits
            .policies
            .keys()
            .map(|n| n.0.clone())
            .collect();
        (previous.limits.clone(), kept)
    };
    let openapi = super::state::render_openapi(&plan);
    Ok((
        AppState {
            authz: Arc::new(crate::authz::Authorizer::build(&plan)),
            plan,
            limits,
            auth: previous.auth.clone(),
            store: previous.store.clone(),
            resources: previous.resources.clone(),
            readiness: Default::default(),
            audit: previous.audit.clone(),
            cursors: previous.cursors.clone(),
            openapi,
            metrics: previous.metrics.clone(),
        },
        kept,
    ))
}

/// Whether a change of `key` can be applied live.
fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|l| {
        key == *l
            || key
                .strip_prefix(l)
                .is_some_and(|rest| rest.starts_with(['.', '[']))
    })
}

/// The paths of every key whose effective value differs (objects compared key by key,
/// anything else as a whole).
pub fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(old, new, "", &mut out);
    out
}

fn diff(old: &Value, new: &Value, path: &str, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    &at,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_named_by_path_and_judged_live_or_not() {
        let old = serde_json::json!({"server": {"bind": "a", "body_limit": 1, "tls": null},
            "routes": [1], "database": {"url": "x"}});
        let new = serde_json::json!({"server": {"bind": "b", "body_limit": 2,
            "tls": {"cert": "c"}}, "routes": [1, 2], "database": {"url": "x"}});
        let keys = changed_keys(&old, &new);
        assert_eq!(
            keys,
            ["routes", "server.bind", "server.body_limit", "server.tls"]
        );
        let restart: Vec<_> = keys.iter().filter(|k| !is_live(k)).collect();
        assert_eq!(restart, ["server.bind", "server.tls"]);
        assert!(is_live("server.tls.cert") && !is_live("server.tls.redirect_http"));
        assert!(!is_live("routesx") && is_live("rate_limits.global.quota"));
    }
}
