//! Validation of one JSON document against a compiled shape: every violation collected (up
//! to [`MAX_VIOLATIONS`]), the normalised document built on the way. Recursion follows the
//! schema, never the input alone, and stops at [`MAX_DEPTH`].

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::{
    ArrayRules, CompiledField, Kind, MAX_DEPTH, MAX_VIOLATIONS, Mode, NumberRules, Shape,
    StringRules, Violation,
};

/// 2^63: the first integer above `i64::MAX`, exactly representable as `f64`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

pub(super) fn validate_document(
    shape: &Shape,
    document: &Value,
    mode: Mode,
) -> Result<Value, Vec<Violation>> {
    let mut v = Validator::default();
    let out = match document {
        Value::Object(map) => v.shape(shape, map, mode, 1).map(Value::Object),
        _ => {
            v.push("type", "the body must be a JSON object");
            None
        }
    };
    v.finish(out)
}

pub(super) fn validate_value(
    field: &CompiledField,
    value: &Value,
) -> Result<Value, Vec<Violation>> {
    let mut v = Validator::default();
    let out = v.value(field, value, 1);
    v.finish(out)
}

/// Appends `/segment` to an RFC 6901 pointer, escaping `~` as `~0` and `/` as `~1`.
pub(super) fn push_segment(pointer: &mut String, segment: &str) {
    pointer.push('/');
    for c in segment.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
}

/// A number as sent: integers stay exact, everything else is an `f64`.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Exact comparison with a finite bound (no rounding of large integers).
    fn cmp_bound(self, bound: f64) -> Ordering {
        match self {
            Num::Float(f) => f.partial_cmp(&bound).unwrap_or(Ordering::Equal),
            Num::Int(i) => {
                if bound >= TWO_63 {
                    return Ordering::Less;
                }
                if bound < -TWO_63 {
                    return Ordering::Greater;
                }
                let floor = bound.floor();
                // In range and integral, so the cast is exact.
                match i.cmp(&(floor as i64)) {
                    Ordering::Equal if bound > floor => Ordering::Less,
                    other => other,
                }
            }
        }
    }

    fn is_multiple_of(self, m: f64) -> bool {
        if let Num::Int(i) = self
            && m.fract() == 0.0
            && (1.0..TWO_63).contains(&m)
        {
            return i.checked_rem(m as i64) == Some(0);
        }
        // Binary floats make 0.3 / 0.1 = 2.9999999999999996: allow a few ulps around the
        // nearest whole quotient, relative to it (so 1e-300 is not a multiple of 0.5).
        let q = self.as_f64() / m;
        let whole = q.round();
        q.is_finite() && (q - whole).abs() <= whole.abs() * 8.0 * f64::EPSILON
    }
}

/// A bound in messages: `5`, not `5.0`.
/// The violation for an integer beyond `i64`, when no declared bound already refuses it.
pub(super) fn storage_limit(positive: bool) -> (&'static str, String) {
    if positive {
        ("maximum", format!("must be at most {}", i64::MAX))
    } else {
        ("minimum", format!("must be at least {}", i64::MIN))
    }
}

fn show(bound: f64) -> String {
    if bound.fract() == 0.0 && bound.abs() < 1e15 {
        format!("{}", bound as i64)
    } else {
        bound.to_string()
    }
}

#[derive(Default)]
struct Validator {
    pointer: String,
    violations: Vec<Violation>,
}

impl Validator {
    fn finish(self, out: Option<Value>) -> Result<Value, Vec<Violation>> {
        match out {
            Some(value) if self.violations.is_empty() => Ok(value),
            _ => Err(self.violations),
        }
    }

    fn push(&mut self, code: &'static str, message: impl Into<String>) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                pointer: self.pointer.clone(),
                code,
                message: message.into(),
            });
        }
    }

    fn full(&self) -> bool {
        self.violations.len() >= MAX_VIOLATIONS
    }

    fn enter(&mut self, segment: &str) -> usize {
        let mark = self.pointer.len();
        push_segment(&mut self.pointer, segment);
        mark
    }

    fn leave(&mut self, mark: usize) {
        self.pointer.truncate(mark);
    }

    /// The members of an object; `depth` is the object's own nesting level.
    fn shape(
        &mut self,
        shape: &Shape,
        map: &Map<String, Value>,
        mode: Mode,
        depth: usize,
    ) -> Option<Map<String, Value>> {
        let mut out = Map::new();
        let mut ok = true;
        for field in &shape.fields {
            if self.full() {
                return None;
            }
            let mark = self.enter(&field.name);
            match map.get(&field.name) {
                None => match (mode, &field.default) {
                    (Mode::Create, Some(default)) => {
                        out.insert(field.name.clone(), default.clone());
                    }
                    (Mode::Create, None) if !field.optional => {
                        self.push("required", "this field is required");
                        ok = false;
                    }
                    _ => {}
                },
                // In a patch, null on an optional field clears it.
                Some(Value::Null) if mode == Mode::Patch && field.optional => {
                    out.insert(field.name.clone(), Value::Null);
                }
                Some(value) => match self.value(field, value, depth + 1) {
                    Some(normalised) => {
                        out.insert(field.name.clone(), normalised);
                    }
                    None => ok = false,
                },
            }
            self.leave(mark);
        }
        for (key, value) in map {
            if shape.field(key).is_some() {
                continue;
            }
            if self.full() {
                return None;
            }
            let mark = self.enter(key);
            if shape.strict {
                self.push("unknown_field", "this field is not part of the schema");
                ok = false;
            } else if nesting(value, MAX_DEPTH - depth.min(MAX_DEPTH)) {
                self.push("too_deep", format!("nested deeper than {MAX_DEPTH} levels"));
                ok = false;
            } else {
                out.insert(key.clone(), value.clone());
            }
            self.leave(mark);
        }
        ok.then_some(out)
    }

    /// One value of `field`; `depth` is the nesting level the value would occupy.
    fn value(&mut self, field: &CompiledField, value: &Value, depth: usize) -> Option<Value> {
        if value.is_null() {
            if field.nullable {
                return Some(Value::Null);
            }
            self.push("not_nullable", "must not be null");
            return None;
        }
        match &field.kind {
            Kind::String(rules) => self.string(rules, value),
            Kind::Integer(rules) => self.integer(rules, value),
            Kind::Number(rules) => self.number(rules, value),
            Kind::Boolean => {
                if value.is_boolean() {
                    Some(value.clone())
                } else {
                    self.push("type", "must be a boolean");
                    None
                }
            }
            Kind::Enum(values) => match value.as_str() {
                Some(s) if values.iter().any(|v| v == s) => Some(value.clone()),
                Some(_) => {
                    self.push("enum", format!("must be one of: {}", values.join(", ")));
                    None
                }
                None => {
                    self.push("type", "must be a string");
                    None
                }
            },
            Kind::Array(rules) => self.array(rules, value, depth),
            Kind::Object(shape) | Kind::Ref { shape, .. } => {
                let Some(map) = value.as_object() else {
                    self.push("type", "must be an object");
                    return None;
                };
                if depth > MAX_DEPTH {
                    self.push("too_deep", format!("nested deeper than {MAX_DEPTH} levels"));
                    return None;
                }
                self.shape(shape, map, Mode::Create, depth)
                    .map(Value::Object)
            }
        }
    }

    fn string(&mut self, rules: &StringRules, value: &Value) -> Option<Value> {
        let Some(raw) = value.as_str() else {
            self.push("type", "must be a string");
            return None;
        };
        let s = if rules.trim { raw.trim() } else { raw };
        let mut ok = true;
        if rules.min_length.is_some() || rules.max_length.is_some() {
            let len = s.chars().count() as u64;
            if let Some(min) = rules.min_length
                && len < min
            {
                self.push(
                    "too_short",
                    format!("must be at least {min} characters long"),
                );
                ok = false;
            }
            if let Some(max) = rules.max_length
                && len > max
            {
                self.push("too_long", format!("must be at most {max} characters long"));
                ok = false;
            }
        }
        if let Some(pattern) = &rules.pattern
            && !pattern.is_match(s)
        {
            self.push(
                "pattern",
                format!("must match the pattern {}", pattern.as_str()),
            );
            ok = false;
        }
        if let Some(format) = rules.format
            && !format.matches(s)
        {
            self.push("format", format!("must be {}", format.example()));
            ok = false;
        }
        ok.then(|| Value::String(s.to_owned()))
    }

    fn integer(&mut self, rules: &NumberRules, value: &Value) -> Option<Value> {
        let Some(n) = value.as_number() else {
            self.push("type", "must be an integer");
            return None;
        };
        let i = if let Some(i) = n.as_i64() {
            i
        } else {
            // JSON Schema counts 3.0 as an integer; it is stored as 3.
            let f = n.as_f64().unwrap_or(f64::NAN);
            if !n.is_u64() && (!f.is_finite() || f.fract() != 0.0) {
                self.push("type", "must be an integer");
                return None;
            }
            if n.is_u64() || !(-TWO_63..TWO_63).contains(&f) {
                // Beyond what an integer column holds: the schema's own bounds speak first.
                if self.bounds(rules, Num::Float(f)) {
                    let (code, message) = storage_limit(f > 0.0);
                    self.push(code, message);
                }
                return None;
            }
            f as i64
        };
        self.bounds(rules, Num::Int(i)).then(|| Value::from(i))
    }

    fn number(&mut self, rules: &NumberRules, value: &Value) -> Option<Value> {
        let n = match value.as_number() {
            Some(n) => match n.as_i64() {
                Some(i) => Num::Int(i),
                None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            None => {
                self.push("type", "must be a number");
                return None;
            }
        };
        if let Num::Float(f) = n
            && !f.is_finite()
        {
            self.push("type", "must be a finite number");
            return None;
        }
        self.bounds(rules, n).then(|| value.clone())
    }

    fn bounds(&mut self, rules: &NumberRules, n: Num) -> bool {
        let mut ok = true;
        if let Some(min) = rules.min
            && n.cmp_bound(min) == Ordering::Less
        {
            self.push("minimum", format!("must be at least {}", show(min)));
            ok = false;
        }
        if let Some(min) = rules.exclusive_min
            && n.cmp_bound(min) != Ordering::Greater
        {
            self.push("minimum", format!("must be greater than {}", show(min)));
            ok = false;
        }
        if let Some(max) = rules.max
            && n.cmp_bound(max) == Ordering::Greater
        {
            self.push("maximum", format!("must be at most {}", show(max)));
            ok = false;
        }
        if let Some(max) = rules.exclusive_max
            && n.cmp_bound(max) != Ordering::Less
        {
            self.push("maximum", format!("must be less than {}", show(max)));
            ok = false;
        }
        if let Some(m) = rules.multiple_of
            && m > 0.0
            && !n.is_multiple_of(m)
        {
            self.push("multiple_of", format!("must be a multiple of {}", show(m)));
            ok = false;
        }
        ok
    }

    fn array(&mut self, rules: &ArrayRules, value: &Value, depth: usize) -> Option<Value> {
        let Some(items) = value.as_array() else {
            self.push("type", "must be an array");
            return None;
        };
        if depth > MAX_DEPTH {
            self.push("too_deep", format!("nested deeper than {MAX_DEPTH} levels"));
            return None;
        }
        let mut ok = true;
        let count = items.len() as u64;
        if let Some(min) = rules.min_items
            && count < min
        {
            self.push("too_few_items", format!("must have at least {min} items"));
            ok = false;
        }
        if let Some(max) = rules.max_items
            && count > max
        {
            self.push("too_many_items", format!("must have at most {max} items"));
            ok = false;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if self.full() {
                return None;
            }
            let mark = self.enter(&i.to_string());
            match self.value(&rules.items, item, depth + 1) {
                Some(normalised) => out.push(normalised),
                None => ok = false,
            }
            self.leave(mark);
        }
        if rules.unique && ok {
            let mut seen = HashSet::with_capacity(out.len());
            for (i, item) in out.iter().enumerate() {
                let mut key = String::new();
                canonical(item, &mut key);
                if !seen.insert(key) {
                    let mark = self.enter(&i.to_string());
                    self.push("not_unique", "duplicates an earlier item");
                    self.leave(mark);
                    ok = false;
                }
            }
        }
        ok.then_some(Value::Array(out))
    }
}

/// Whether `value` nests arrays or objects more than `budget` levels deep (iteratively, so
/// hostile input cannot overflow the stack).
fn nesting(value: &Value, budget: usize) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if level + 1 > budget {
            return true;
        }
        stack.extend(children.map(|c| (c, level + 1)));
    }
    false
}

/// A key equal for values JSON Schema calls equal (`1` and `1.0`; objects in any key order).
/// Only called on validated values, whose depth is bounded.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push('n'),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "i{i};");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "u{u};");
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && (-TWO_63..TWO_63).contains(&f) {
                    let _ = write!(out, "i{};", f as i64);
                } else {
                    let _ = write!(out, "f{};", f.to_bits());
                }
            }
        }
        Value::String(s) => {
            let _ = write!(out, "s{}:{s}", s.len());
        }
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for key in keys {
                let _ = write!(out, "{}:{key}", key.len());
                if let Some(v) = map.get(key) {
                    canonical(v, out);
                }
                out.push(',');
            }
            out.push('}');
        }
    }
}
