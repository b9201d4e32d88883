//! Bounded property test with a hand-rolled generator (a fixed-seed xorshift PRNG; `proptest`
//! could replace it): random and near-valid JSON, up to 40 levels deep, never panics the
//! validator; every refusal points into the document; every accepted document is accepted
//! again unchanged and satisfies each declared rule, checked here independently.

use regex::Regex;
use serde_json::{Map, Value, json};

use super::{note, pointers_resolve, schema};
use crate::validate::{MAX_VIOLATIONS, Mode, Schema};

const CASES: usize = 20_000;
const MAX_GEN_DEPTH: usize = 40;

const CODES: [&str; 16] = [
    "required",
    "type",
    "too_short",
    "too_long",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "multiple_of",
    "enum",
    "too_few_items",
    "too_many_items",
    "not_unique",
    "unknown_field",
    "not_nullable",
    "too_deep",
];

const KEYS: [&str; 22] = [
    "title", "body", "tags", "priority", "due", "secret", "name", "kind", "score", "count", "flag",
    "ids", "home", "meta", "grid", "zip", "city", "v", "x", "a/b", "~", "",
];

const RICH: &str = r#"
[schemas.Address]
zip = { type = "string", pattern = "^[0-9]{5}$" }
city = { type = "string", trim = true, min_length = 1, default = "Paris" }
[schemas.Rich]
name = { type = "string", trim = true, min_length = 1, max_length = 8 }
kind = { type = "enum", values = ["a", "b"], nullable = true, optional = true }
score = { type = "number", min = -10, exclusive_max = 10, multiple_of = 0.5, optional = true }
count = { type = "integer", min = 0, default = 0 }
flag = { type = "boolean", optional = true }
ids = { type = "array", items = { type = "integer" }, unique = true, max_items = 5, optional = true }
home = { ref = "Address", optional = true, nullable = true }
meta = { type = "object", strict = false, optional = true, fields = { v = { type = "integer", optional = true } } }
grid = { type = "array", items = { type = "array", items = { type = "number", nullable = true } }, optional = true }
"#;

/// xorshift64*: small, fast, and the same sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn string(&mut self) -> String {
        match self.below(12) {
            0 => String::new(),
            1 => " ".repeat(self.below(4) + 1),
            2 => "x".repeat(self.below(240)),
            3 => "é".repeat(self.below(220)),
            4 => "🦀".repeat(self.below(40)),
            5 => (*self.pick(&[
                "2025-01-31T09:30:00Z",
                "2025-01-31",
                "2024-02-29T23:59:60+00:00",
                "2025-13-01T00:00:00Z",
                "2025-01-31T09:30:00.123-05:00",
            ]))
            .to_owned(),
            6 => (*self.pick(&[
                "75001", "7500", " 75001 ", "a", "b", "c", "A", "3", "true", "null",
            ]))
            .to_owned(),
            7 => (*self.pick(&KEYS)).to_owned(),
            _ => {
                let alphabet = [
                    ' ', 'a', 'b', 'z', '0', '9', '/', '~', '\n', '\t', 'é', '\u{0}', '\u{202e}',
                ];
                (0..self.below(20)).map(|_| *self.pick(&alphabet)).collect()
            }
        }
    }

    fn number(&mut self) -> Value {
        match self.below(10) {
            0 => json!(self.below(8) as i64 - 2),
            1 => json!(*self.pick(&[
                3.0, 2.5, -0.0, 0.5, 9.5, 10.0, -10.0, 1e300, -1e300, 1e19, 0.1
            ])),
            2 => json!(*self.pick(&[i64::MAX, i64::MIN, 0, 1, 5])),
            3 => json!(u64::MAX - self.below(3) as u64),
            4 => json!(self.next() as i64),
            5 => json!(f64::from_bits(self.next()))
                .as_f64()
                .map_or(json!(0), |f| json!(f)),
            _ => json!((self.below(41) as f64 - 20.0) / 2.0),
        }
    }

    fn scalar(&mut self) -> Value {
        match self.below(4) {
            0 => Value::Null,
            1 => Value::Bool(self.chance(50)),
            2 => self.number(),
            _ => Value::String(self.string()),
        }
    }

    /// Any JSON, at most `MAX_GEN_DEPTH - depth` more levels deep.
    fn value(&mut self, depth: usize) -> Value {
        if depth >= MAX_GEN_DEPTH {
            return self.scalar();
        }
        if self.chance(3) {
            return self.chain(MAX_GEN_DEPTH - depth);
        }
        let wide = depth < 3;
        match self.below(10) {
            0..=5 => self.scalar(),
            6 | 7 => {
                let n = self.below(if wide { 7 } else { 3 });
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ => {
                let n = self.below(if wide { 6 } else { 3 });
                let mut map = Map::new();
                for _ in 0..n {
                    let key = (*self.pick(&KEYS)).to_owned();
                    let value = self.value(depth + 1);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }

    /// A single chain of nested arrays and objects, `levels` deep.
    fn chain(&mut self, levels: usize) -> Value {
        let mut v = self.scalar();
        for _ in 1..self.below(levels) + 1 {
            v = if self.chance(50) {
                json!([v])
            } else {
                json!({ "v": v })
            };
        }
        v
    }

    /// A document shaped like a Note: mostly right, sometimes wrong, sometimes extra keys.
    fn note_like(&mut self) -> Value {
        let mut map = Map::new();
        for key in ["title", "body", "tags", "priority", "due", "secret"] {
            if !self.chance(if key == "title" { 90 } else { 70 }) {
                continue;
            }
            let value = if self.chance(15) {
                self.value(1)
            } else {
                match key {
                    "tags" => {
                        let n = self.below(12);
                        Value::Array(
                            (0..n)
                                .map(|_| {
                                    if self.chance(95) {
                                        json!("x".repeat(self.below(34)))
                                    } else {
                                        self.scalar()
                                    }
                                })
                                .collect(),
                        )
                    }
                    "priority" => json!(self.below(7) as i64),
                    "due" => json!(*self.pick(&[
                        "2025-01-31T09:30:00Z",
                        "2025-01-31T09:30:00+02:00",
                        "2025-01-31T09:30:00.25z",
                        "2025-01-31"
                    ])),
                    "title" => json!("t".repeat(self.below(205))),
                    _ => json!(self.string()),
                }
            };
            map.insert(key.to_owned(), value);
        }
        if self.chance(10) {
            map.insert((*self.pick(&KEYS)).to_owned(), self.value(1));
        }
        if self.chance(3) {
            self.value(0)
        } else {
            Value::Object(map)
        }
    }

    /// A document shaped like a Rich.
    fn rich_like(&mut self) -> Value {
        let mut map = Map::new();
        for key in [
            "name", "kind", "score", "count", "flag", "ids", "home", "meta", "grid",
        ] {
            if !self.chance(if key == "name" { 95 } else { 60 }) {
                continue;
            }
            let value = if self.chance(15) {
                self.value(1)
            } else {
                match key {
                    "name" => json!(
                        self.pick(&["n", " n ", "abcdefgh", "abcdefghi", "  "])
                            .to_owned()
                    ),
                    "kind" => json!(*self.pick(&["a", "b", "c"])),
                    "score" => json!((self.below(45) as f64 - 22.0) / 2.0),
                    "count" => json!(self.below(5) as i64 - 1),
                    "flag" => json!(self.chance(50)),
                    "ids" => {
                        Value::Array((0..self.below(7)).map(|_| json!(self.below(4))).collect())
                    }
                    "home" => {
                        json!({ "zip": *self.pick(&["75001", "7500", "12345"]), "city": *self.pick(&["Lyon", " ", " Nice "]) })
                    }
                    "meta" => {
                        let levels = if self.chance(20) {
                            MAX_GEN_DEPTH - 2
                        } else {
                            5
                        };
                        let deep = self.chain(levels);
                        json!({ "v": self.below(3), "free": deep })
                    }
                    _ => Value::Array(
                        (0..self.below(3))
                            .map(|_| json!([self.number(), null]))
                            .collect(),
                    ),
                }
            };
            map.insert(key.to_owned(), value);
        }
        Value::Object(map)
    }
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(usize::MAX, |s| s.chars().count())
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks a refusal, or an acceptance and the accepted document's re-validation.
fn check_common(schema: &Schema, doc: &Value, mode: Mode) -> Option<Map<String, Value>> {
    match schema.validate(doc, mode) {
        Err(violations) => {
            assert!(
                !violations.is_empty() && violations.len() <= MAX_VIOLATIONS,
                "{doc}"
            );
            assert!(
                violations.iter().all(|v| CODES.contains(&v.code)),
                "{violations:?}"
            );
            assert!(pointers_resolve(doc, &violations), "{doc}\n{violations:?}");
            None
        }
        Ok(out) => {
            assert_eq!(
                schema.validate(&out, mode).as_ref(),
                Ok(&out),
                "not stable: {doc}"
            );
            assert!(depth(&out) <= crate::validate::MAX_DEPTH, "{doc}");
            match out {
                Value::Object(map) => Some(map),
                other => panic!("accepted a non-object: {other}"),
            }
        }
    }
}

fn check_note(out: &Map<String, Value>, mode: Mode, date_time: &Regex) {
    let known = ["title", "body", "tags", "priority", "due", "secret"];
    assert!(out.keys().all(|k| known.contains(&k.as_str())), "{out:?}");
    if mode == Mode::Create {
        for key in ["title", "body", "tags", "priority"] {
            assert!(out.contains_key(key), "{key} missing from {out:?}");
        }
    }
    if let Some(t) = out.get("title") {
        assert!((1..=200).contains(&chars(t)), "{t}");
    }
    if let Some(b) = out.get("body") {
        assert!(chars(b) <= 10_000);
    }
    if let Some(tags) = out.get("tags") {
        let tags = tags.as_array().map(Vec::as_slice).unwrap_or_default();
        assert!(tags.len() <= 10 && out["tags"].is_array());
        assert!(tags.iter().all(|t| chars(t) <= 32), "{tags:?}");
    }
    if let Some(p) = out.get("priority") {
        assert!(p.as_i64().is_some_and(|p| (1..=5).contains(&p)), "{p}");
    }
    match out.get("due") {
        Some(Value::String(d)) => assert!(date_time.is_match(d), "{d}"),
        Some(Value::Null) => assert_eq!(mode, Mode::Patch),
        Some(other) => panic!("due {other}"),
        None => {}
    }
    match out.get("secret") {
        Some(Value::Null) => assert_eq!(mode, Mode::Patch),
        Some(s) => assert!(chars(s) <= 2000),
        None => {}
    }
}

fn check_rich(out: &Map<String, Value>) {
    let name = out.get("name").and_then(Value::as_str).unwrap_or_default();
    assert!(
        (1..=8).contains(&name.chars().count()) && name.trim() == name,
        "{name:?}"
    );
    assert!(
        out.get("count")
            .and_then(Value::as_i64)
            .is_some_and(|c| c >= 0)
    );
    if let Some(kind) = out.get("kind") {
        assert!(kind.is_null() || kind == "a" || kind == "b");
    }
    if let Some(score) = out.get("score") {
        let s = score.as_f64().unwrap_or(f64::NAN);
        assert!(
            (-10.0..10.0).contains(&s) && (s * 2.0).fract() == 0.0,
            "{s}"
        );
    }
    if let Some(ids) = out.get("ids").and_then(Value::as_array) {
        assert!(ids.len() <= 5);
        for (i, a) in ids.iter().enumerate() {
            assert!(ids[..i].iter().all(|b| a.as_i64() != b.as_i64()), "{ids:?}");
        }
    }
    if let Some(home) = out.get("home").filter(|h| !h.is_null()) {
        let zip = home["zip"].as_str().unwrap_or_default();
        assert!(
            zip.len() == 5 && zip.bytes().all(|b| b.is_ascii_digit()),
            "{home}"
        );
        let city = home["city"].as_str().unwrap_or_default();
        assert!(!city.is_empty() && city.trim() == city, "{home}");
    }
}

#[test]
fn random_documents_never_panic_and_accepted_ones_hold() {
    let note = note();
    let rich = schema(RICH, "Rich");
    let date_time =
        match Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
        {
            Ok(re) => re,
            Err(e) => panic!("{e}"),
        };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = [0usize; 4];
    for i in 0..CASES {
        match i % 4 {
            0 => {
                let doc = rng.note_like();
                if let Some(out) = check_common(&note, &doc, Mode::Create) {
                    check_note(&out, Mode::Create, &date_time);
                    accepted[0] += 1;
                }
            }
            1 => {
                let doc = rng.note_like();
                if let Some(out) = check_common(&note, &doc, Mode::Patch) {
                    check_note(&out, Mode::Patch, &date_time);
                    accepted[1] += 1;
                }
            }
            2 => {
                let doc = rng.rich_like();
                if let Some(out) = check_common(&rich, &doc, Mode::Create) {
                    check_rich(&out);
                    accepted[2] += 1;
                }
            }
            _ => {
                // Anything at all, against both schemas.
                let doc = rng.value(0);
                for (schema, mode) in [
                    (&note, Mode::Create),
                    (&note, Mode::Patch),
                    (&rich, Mode::Patch),
                ] {
                    if check_common(schema, &doc, mode).is_some() {
                        accepted[3] += 1;
                    }
                }
            }
        }
    }
    // The generator must reach both outcomes often enough for the test to mean something.
    assert!(
        accepted[0] > 500 && accepted[1] > 1000 && accepted[2] > 250,
        "accepted {accepted:?}"
    );
}
