//! The real OpenID provider (npm `oidc-provider`, run by `tests/oidc/provider.mjs`) for the
//! auth tests, on 127.0.0.1. Missing node or `npm ci --prefix tests/oidc` is a test
//! failure, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Audience of the provider's RS256 JWT access tokens (its `API_AUD`).
pub const AUD: &str = "urn:nestflux:api";
/// Audience of its ES256 JWT access tokens (its default `API_AUD_ES`).
pub const AUD_ES: &str = "urn:nestflux:api:es256";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs the provider from the npm registry (`npm ci`, pinned by package-lock.json) on
/// first use, so `cargo test` works on a fresh machine; panics with the install line when
/// node or npm is missing.
pub fn require_node() {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "node is required by the auth tests (Debian: apt-get install nodejs npm)"
    );
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if !dir()
            .join("node_modules/oidc-provider/package.json")
            .exists()
        {
            let _ = Command::new("npm")
                .args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(dir())
                .status();
        }
    });
    assert!(
        dir()
            .join("node_modules/oidc-provider/package.json")
            .exists(),
        "the oidc-provider npm package is missing: run `npm ci --prefix tests/oidc`"
    );
}

pub use crate::common::free_port;

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// How long a start of the provider may take before it counts as stalled. Node starts it
/// in about a second, and 300 starts on a loaded machine took 8 s at worst. A start that
/// never ended was Node.js 20's deadlock in key generation (tests/oidc/keygen.mjs); for any
/// other stall the panic says how far node got (its stages on stderr), what its threads
/// were doing (/proc) and, where gdb is installed, their native stacks.
const START_WAIT: Duration = Duration::from_secs(60);

/// What a stalled process is doing, from /proc: per thread its name, state (R running,
/// S sleeping, D in the kernel) and CPU ticks so far, and where in the kernel it waits.
fn proc_state(pid: u32) -> String {
    let mut lines = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return lines;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let stat = read("stat");
        // Fields after the `(comm)`: state is the first, utime and stime the 12th and 13th.
        let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        let f: Vec<&str> = after.split_whitespace().collect();
        lines.push_str(&format!(
            "\n  thread {} {:?}: state {} utime {} stime {} wchan {}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            f.first().unwrap_or(&"?"),
            f.get(11).unwrap_or(&"?"),
            f.get(12).unwrap_or(&"?"),
            read("wchan"),
        ));
    }
    lines
}

/// The native stack of every thread of `pid`, where gdb is installed (it is not required).
fn native_stacks(pid: u32) -> String {
    let out = Command::new("timeout")
        .args(["30", "gdb", "-p", &pid.to_string(), "-batch", "-ex"])
        .arg("thread apply all bt 30")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let frames: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
                .collect();
            format!("\n  native stacks (gdb):\n{}", frames.join("\n"))
        }
        _ => String::new(),
    }
}

/// A running `node provider.mjs`; killed on drop.
pub struct Provider {
    child: Child,
    pub port: u16,
    pub keys_file: PathBuf,
    /// What it printed, line by line (`grant refresh_token`, …).
    out: Arc<Mutex<Vec<String>>>,
}

/// The port in provider.mjs's `oidc-provider http://127.0.0.1:PORT ready` line.
fn ready_port(line: &str) -> Option<u16> {
    let issuer = line
        .strip_prefix("oidc-provider ")?
        .strip_suffix(" ready")?;
    issuer.rsplit_once(':')?.1.parse().ok()
}

impl Provider {
    /// Starts the provider on `port` with signing keys in `keys_file` (generated with kids
    /// `rsa-GEN` / `ec-GEN` when the file does not exist yet). Port 0 lets the provider bind
    /// a free port itself (read it from [`Provider::port`]): unlike a port chosen here and
    /// released, nothing can take it while node starts.
    pub fn start(port: u16, keys_file: &Path, key_gen: &str) -> Provider {
        Self::start_with(port, keys_file, key_gen, &[])
    }

    /// As [`Provider::start`], with more of provider.mjs's environment (`RP_REDIRECT`,
    /// `AT_TTL`, `ROTATE_REFRESH`, `REFRESH_DELAY_MS`).
    pub fn start_with(
        port: u16,
        keys_file: &Path,
        key_gen: &str,
        env: &[(&str, &str)],
    ) -> Provider {
        require_node();
        let mut child = Command::new("node")
            .arg(dir().join("provider.mjs"))
            .env("PORT", port.to_string())
            .env("KEYS_FILE", keys_file)
            .env("KEY_GEN", key_gen)
            .env("API_AUD", AUD)
            .env("API_AUD_ES", AUD_ES)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = ready_port(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let errors = Arc::new(Mutex::new(String::new()));
        let err_sink = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut e = err_sink.lock().unwrap();
                e.push_str(&line);
                e.push('\n');
            }
        });
        let started = std::time::Instant::now();
        let Ok(port) = rx.recv_timeout(START_WAIT) else {
            let exited = child.try_wait().ok().flatten();
            let proc_state = exited
                .is_none()
                .then(|| proc_state(child.id()) + &native_stacks(child.id()));
            let _ = child.kill();
            let _ = child.wait();
            // The stderr reader gets the rest once the process is gone.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "oidc-provider did not start on port {port} within {:?} ({}); load {}{}\nits stderr:\n{}",
                started.elapsed(),
                exited.map_or("still running".to_string(), |s| format!("exited: {s}")),
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .trim(),
                proc_state.unwrap_or_default(),
                errors.lock().unwrap()
            );
        };
        Provider {
            child,
            port,
            keys_file: keys_file.to_path_buf(),
            out,
        }
    }

    /// How many successful grants of `grant_type` the provider has answered so far.
    pub fn grants(&self, grant_type: &str) -> usize {
        let line = format!("grant {grant_type}");
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter(|l| **l == line)
            .count()
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client_credentials access token (a JWT) of `nestflux-svc` for `resource`.
    pub fn token(&self, resource: &str) -> String {
        let client = reqwest::blocking::Client::new();
        let res = client
            .post(format!("{}/token", self.issuer()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "nestflux-svc"),
                ("client_secret", "svc-secret"),
                ("resource", resource),
                ("scope", "api:read"),
            ])
            .send()
            .expect("token request");
        let status = res.status();
        let body: Value = res.json().expect("token response is JSON");
        assert!(status.is_success(), "token endpoint: {status} {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One signing key as PEM (from the provider's KEYS_FILE, or freshly made).
#[derive(Debug, Clone)]
pub struct KeyMaterial {
    pub kid: String,
    pub alg: String,
    pub private_pem: String,
    pub public_spki_pem: String,
    pub public_pkcs1_pem: Option<String>,
    pub public_der_b64: String,
    pub public_jwk: Value,
}

/// The keys in a provider KEYS_FILE, or `--fresh` ones that no provider knows.
pub fn keys(source: &str) -> Vec<KeyMaterial> {
    let out = Command::new("node")
        .arg(dir().join("keys_pem.mjs"))
        .arg(source)
        .output()
        .expect("node keys_pem.mjs");
    assert!(out.status.success(), "keys_pem.mjs failed");
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("keys JSON");
    list.into_iter()
        .map(|k| KeyMaterial {
            kid: k["kid"].as_str().unwrap_or_default().into(),
            alg: k["alg"].as_str().unwrap_or_default().into(),
            private_pem: k["private_pem"].as_str().unwrap_or_default().into(),
            public_spki_pem: k["public_spki_pem"].as_str().unwrap_or_default().into(),
            public_pkcs1_pem: k["public_pkcs1_pem"].as_str().map(String::from),
            public_der_b64: k["public_der_b64"].as_str().unwrap_or_default().into(),
            public_jwk: k["public_jwk"].clone(),
        })
        .collect()
}

/// A nestflux.toml trusting `issuer` for `audience`, with whoami routes for each access
/// kind and an API key `ci` (viewer) whose hash is `api_key_hash`.
pub fn nestflux_config(issuer: &str, audience: &str, api_key_hash: &str) -> String {
    let api_key = crate::common::api_key_table("ci", api_key_hash, "viewer");
    format!(
        r#"
[auth]
issuer = "{issuer}"
audience = "{audience}"
algorithms = ["RS256", "ES256"]
roles_claim = "roles"
leeway = "5s"
{api_key}
[roles.viewer]
permissions = ["notes:read"]

[roles.service]
inherits = ["viewer"]
permissions = ["reports:read"]

[roles.admin]
permissions = ["*:*"]

[[routes]]
method = "GET"
path = "/api/me"
action = "whoami"
authenticated = true

[[routes]]
method = "GET"
path = "/api/me/reports"
action = "whoami"
permission = "reports:read"

[[routes]]
method = "GET"
path = "/api/me/admin"
action = "whoami"
permission = "audit:read"

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
"#
    )
}
