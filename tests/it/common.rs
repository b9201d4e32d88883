//! Test harness: runs the real `nestflux` binary with a config written by the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nestflux")
}

/// A temporary directory holding a `nestflux.toml`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("nestflux.toml"), config).expect("write config");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("nestflux.toml")
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write file");
        p
    }

    /// Runs `nestflux ARGS --config <this project's file>` to completion.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .current_dir(self.path());
        clean_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run nestflux")
    }

    /// Starts `nestflux serve` on a free port and waits until it listens.
    pub fn serve(&self, env: &[(&str, &str)]) -> Server {
        self.try_serve(env)
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts the server; `Err(log)` when it exits instead of listening.
    pub fn try_serve(&self, env: &[(&str, &str)]) -> Result<Server, String> {
        self.spawn(&["serve"], true, env)
    }

    /// Runs `nestflux ARGS` (a `serve`) with the bind address the file gives, not a free
    /// port, and waits until it listens.
    pub fn serve_args_as_written(&self, args: &[&str], env: &[(&str, &str)]) -> Server {
        self.spawn(args, false, env)
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    fn spawn(
        &self,
        args: &[&str],
        free_port: bool,
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .current_dir(self.path());
        clean_env(&mut cmd);
        if free_port {
            cmd.env("NESTFLUX_SERVER__BIND", "127.0.0.1:0");
        }
        cmd.env("NESTFLUX_LOG_FORMAT", "json");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn nestflux");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = listening_url(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Ok(Server { child, url, log }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(log.lock().unwrap().clone())
            }
        }
    }
}

/// The binary with no `NESTFLUX_*` variable inherited from the test runner's environment
/// (every one of them is configuration).
pub fn command() -> Command {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd);
    cmd
}

fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("NESTFLUX_") {
            cmd.env_remove(k);
        }
    }
}

fn listening_url(line: &str) -> Option<String> {
    let at = line.find("nestflux listening on ")?;
    let rest = &line[at + "nestflux listening on ".len()..];
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

/// A running `nestflux serve`; killed on drop.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it satisfies `ready` (lines arrive through a pipe, a moment after the
    /// response), or as it is after 5 s.
    pub fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if ready(&log) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nestflux keys api-key NAME` through the real binary: (key, hash to declare).
pub fn new_api_key(name: &str) -> (String, String) {
    let out = Project::new(MINIMAL).run(&["keys", "api-key", name], &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no `{prefix}` in {text}"))
    };
    let (key, hash) = (field("key:"), field("hash:"));
    assert!(
        key.starts_with("nfk_") && hash.starts_with("sha256:"),
        "{text}"
    );
    assert!(text.contains(&format!("[auth.api_keys.{name}]")), "{text}");
    (key, hash)
}

/// The `[auth.api_keys.NAME]` table that declares a key by its hash, with one role.
pub fn api_key_table(name: &str, hash: &str, role: &str) -> String {
    format!("\n[auth.api_keys.{name}]\nhash = \"{hash}\"\nroles = [\"{role}\"]\n")
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A minimal valid config serving only `/health`.
pub const MINIMAL: &str = r#"
[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
"#;

/// A throwaway CA and a server certificate for `127.0.0.1` and `localhost` signed by it.
pub struct TestCa {
    /// The CA certificate, for clients to trust.
    pub ca_pem: String,
    /// The server's certificate and private key.
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nestflux test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf");
        Self {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes `server.pem` and `server.key` into the project, as `[server.tls]` names them.
    pub fn install(&self, p: &Project) {
        p.write("server.pem", &self.cert_pem);
        p.write("server.key", &self.key_pem);
    }

    /// A client that trusts this CA.
    pub fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA pem"),
            )
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }
}

/// The `[server.tls]` table for a project where [`TestCa::install`] wrote the files.
pub const TLS: &str = "[server.tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n";

/// A free port on 127.0.0.1 (released before use: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
