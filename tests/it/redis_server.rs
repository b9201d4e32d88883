//! A private Redis for one test: the real `redis-server` (Debian package, started by
//! `.ci/services.sh`) on a free 127.0.0.1 port, owned by the test so it can stop it, freeze
//! it and start it again without touching any other test.
//!
//! Tests that need Redis run when `TEST_REDIS_URL` is set (CI sets it, like
//! `TEST_POSTGRES_URL`); elsewhere they print a loud `SKIPPED` line and pass.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::free_port;

/// Whether the Redis tests run here; prints why not.
pub fn available(test: &str) -> bool {
    let set = std::env::var("TEST_REDIS_URL").is_ok_and(|u| !u.is_empty());
    if !set {
        eprintln!("SKIPPED {test}: TEST_REDIS_URL is not set (`. .ci/services.sh` sets it)");
    }
    set
}

/// A `redis-server` child process on 127.0.0.1; killed on drop.
pub struct Redis {
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(None)
    }

    /// A Redis that requires `password` (`requirepass`).
    pub fn start_with(password: Option<&str>) -> Redis {
        let mut r = Redis {
            port: free_port(),
            password: password.map(str::to_string),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.up();
        r
    }

    /// `redis://127.0.0.1:PORT/0`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn up(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/services.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.cli(&["PING"]).contains("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (connections drop at once).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.up();
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// `redis-cli` against this server; its output (empty when it cannot connect).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(p) = &self.password {
            cmd.args(["-a", p, "--no-auth-warning"]);
        }
        cmd.args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }

    /// The data directory (for files a test wants beside it).
    #[allow(dead_code)]
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}
