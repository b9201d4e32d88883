//! Startup-to-listening and `check` time for a generated config of 200 routes, 50 roles
//! and 50 schemas, against the cost of starting the process at all (`nestflux --version`)
//! measured in the same run. Run: `cargo bench --bench startup`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../tests/it/fixtures.rs"]
mod fixtures;

const RUNS: usize = 15;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.toml");
    std::fs::write(&full, generate()).expect("write");
    let bin = env!("CARGO_BIN_EXE_nestflux");

    let baseline = median(RUNS, || {
        let t = Instant::now();
        let ok = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true));
        t.elapsed()
    });
    let check = median(RUNS, || {
        let t = Instant::now();
        let out = Command::new(bin)
            .arg("check")
            .arg(&full)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    });
    let startup = median(RUNS, || {
        let t = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&full)
            .current_dir(dir.path())
            .env("NESTFLUX_SERVER__BIND", "127.0.0.1:0")
            .env("NESTFLUX_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve");
        let stderr = child.stderr.take().expect("stderr");
        let listening = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("nestflux listening on"));
        let elapsed = t.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        assert!(listening, "server did not start");
        elapsed
    });

    println!("| measurement (median of {RUNS})                     | time     | × process start |");
    println!("|----------------------------------------------------|----------|-----------------|");
    row(
        "process start (`nestflux --version`, baseline)",
        baseline,
        baseline,
    );
    row("`check`: 200 routes, 50 roles, 50 schemas", check, baseline);
    row(
        "`serve` to listening: the same, 50 tables exist",
        startup,
        baseline,
    );
}

fn row(name: &str, t: Duration, base: Duration) {
    println!(
        "| {name:<50} | {:>6.2}ms | {:>15.2} |",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() / base.as_secs_f64()
    );
}

fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut v: Vec<Duration> = (0..runs).map(|_| f()).collect();
    v.sort();
    v[runs / 2]
}

/// 200 routes, 50 roles and 50 schemas (each the fixture's Note) backing 50 resources
/// (tables in a SQLite file).
fn generate() -> String {
    let mut s = String::from("[auth.dev]\nenabled = false\n");
    for r in 0..50 {
        s += &format!("[roles.role{r}]\npermissions = [\"res{r}:read\", \"res{r}:create\"]\n");
        if r > 0 {
            s += &format!("inherits = [\"role{}\"]\n", r - 1);
        }
    }
    for i in 0..50 {
        s += &fixtures::note_schema(&format!("S{i}"));
        s += &format!("[resources.res{i}]\nschema = \"S{i}\"\n");
    }
    for i in 0..200 {
        s += &format!(
            "[[routes]]\nmethod = \"GET\"\npath = \"/r{i}/health\"\naction = \"health\"\npublic = true\n"
        );
    }
    s
}
