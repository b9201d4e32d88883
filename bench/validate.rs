//! Validating a typical `Note` body (the reference schema) against the cost of parsing the
//! same body with `serde_json::from_str`, measured in the same run.
//! Run: `cargo bench --bench validate`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use nestflux::config::RawConfig;
use nestflux::plan::Diagnostics;
use nestflux::validate::{Mode, compile_schemas};
use serde_json::Value;

const OPS: u32 = 200_000;

/// A note as a client would create it: every kind of field the schema declares but `secret`.
const NOTE: &str = r#"{"title":"Buy milk","body":"Two litres, semi-skimmed, from the shop on the corner before it closes.","tags":["home","errands","weekly"],"priority":2,"due":"2025-06-01T09:00:00Z"}"#;

/// A patch changing two fields.
const PATCH: &str = r#"{"priority":4,"due":null}"#;

/// A body with five violations, all of which are reported.
const INVALID: &str =
    r#"{"title":"","tags":["home",7],"priority":9,"due":"tomorrow","colour":"red"}"#;

/// Median ns per op over 5 runs of `OPS` calls.
fn ns_per_op(mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..OPS {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(OPS)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/reference/nestflux.toml"
    );
    let text = std::fs::read_to_string(path).expect("read the reference file");
    let raw: RawConfig = toml::from_str(&text).expect("parse the reference file");
    let mut d = Diagnostics::default();
    let schemas = compile_schemas(&raw.schemas, &mut d);
    assert!(!d.has_errors(), "{:?}", d.errors);
    let note = schemas
        .get("Note")
        .expect("the reference declares Note")
        .clone();

    let parsed: Value = serde_json::from_str(NOTE).expect("NOTE is JSON");
    let patch: Value = serde_json::from_str(PATCH).expect("PATCH is JSON");
    let invalid: Value = serde_json::from_str(INVALID).expect("INVALID is JSON");
    assert!(note.validate(&parsed, Mode::Create).is_ok());
    assert!(note.validate(&patch, Mode::Patch).is_ok());
    let violations = note
        .validate(&invalid, Mode::Create)
        .expect_err("INVALID is invalid");
    assert_eq!(violations.len(), 5, "{violations:?}");

    let baseline = ns_per_op(|| {
        let v: Value = serde_json::from_str(black_box(NOTE)).unwrap_or(Value::Null);
        black_box(v);
    });
    let create = ns_per_op(|| {
        black_box(note.validate(black_box(&parsed), Mode::Create).is_ok());
    });
    let end_to_end = ns_per_op(|| {
        let v: Value = serde_json::from_str(black_box(NOTE)).unwrap_or(Value::Null);
        black_box(note.validate(&v, Mode::Create).is_ok());
    });
    let patching = ns_per_op(|| {
        black_box(note.validate(black_box(&patch), Mode::Patch).is_ok());
    });
    let refusing = ns_per_op(|| {
        black_box(note.validate(black_box(&invalid), Mode::Create).is_err());
    });

    println!(
        "Note body: {} bytes; median of 5 runs × {OPS} ops",
        NOTE.len()
    );
    println!();
    println!("| measurement                                         | ns/op    | × from_str |");
    println!("|-----------------------------------------------------|----------|------------|");
    let row = |name: &str, ns: f64| {
        println!("| {name:<51} | {ns:>8.0} | {:>9.2}× |", ns / baseline);
    };
    row("serde_json::from_str of the Note body (baseline)", baseline);
    row("validate(Create): the parsed Note, defaults filled", create);
    row(
        "from_str + validate(Create): what a request pays",
        end_to_end,
    );
    row("validate(Patch): two fields, one cleared", patching);
    row("validate(Create): invalid body, 5 violations", refusing);
}
