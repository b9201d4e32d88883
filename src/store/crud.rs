//! CRUD over one declared resource. Identifiers come from the plan; every request value is
//! a bound parameter. PostgreSQL returns each row as JSON text it builds itself; SQLite
//! returns the columns, and [`Resource::reveal`] writes the JSON. (SQLite's `json_object`
//! text, parsed again here, took about 30 % of a list's CPU in perf; reading the columns
//! takes less than half of that.)
//!
//! Reading a row decrypts only the encrypted fields its reader may see ([`ReadMask`]); a
//! field that does not decrypt becomes `null` and is named in the row's `_errors`, so one bad
//! value never hides the rest of a row or of a list.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::conn::{Cells, SqlValue};
use super::cursor::{Cursor, CursorKeys};
use super::dialect::{Bind, Kind, json_row, pair, placeholder, quote, to_bind};
use super::table::{Table, index_column};
use super::{Conn, StoreError, now};
use crate::crypto::{Aad, CryptoError, KeyRing, kid_of};

pub use crate::plan::data::ERRORS_KEY;

/// A list request, already validated against the plan.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only rows of this owner (`:own` permissions).
    pub owner: Option<String>,
    /// Equality filters on declared scalar fields: (column, typed value).
    pub filters: Vec<(String, Value)>,
    /// Sort column (`id` by default) and direction.
    pub sort: String,
    /// Descending order.
    pub desc: bool,
    /// Most rows in the page.
    pub limit: usize,
    /// Continue after this position.
    pub after: Option<Cursor>,
}

/// Who may read a guarded field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldRule {
    /// Nobody in this request.
    Never,
    /// Only on rows this subject owns.
    OwnRows(String),
}

/// The fields a caller may not read (everywhere, or outside their own rows). Fields it does
/// not name are readable. Built by the caller of the store from its permissions.
#[derive(Debug, Clone, Default)]
pub struct ReadMask {
    rules: Vec<(String, FieldRule)>,
}

impl ReadMask {
    /// Nothing hidden.
    pub fn all() -> Self {
        Self::default()
    }

    /// Hides `field` except where `rule` allows it.
    pub fn hide(mut self, field: &str, rule: FieldRule) -> Self {
        self.rules.push((field.to_string(), rule));
        self
    }

    /// Whether `field` of a row owned by `owner` may be read.
    pub fn may_read(&self, field: &str, owner: Option<&str>) -> bool {
        match self.rules.iter().find(|(f, _)| f == field) {
            None => true,
            Some((_, FieldRule::Never)) => false,
            Some((_, FieldRule::OwnRows(subject))) => owner == Some(subject.as_str()),
        }
    }
}

/// Why a readable field of a row is `null` in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldFault {
    /// The value does not decrypt: tampered, moved from another row or field, or not in
    /// the `nf1` format.
    Undecryptable,
    /// The value needs a key the ring does not hold.
    KeyUnavailable,
}

impl FieldFault {
    /// The code published in `_errors`.
    pub fn code(self) -> &'static str {
        match self {
            FieldFault::Undecryptable => "undecryptable",
            FieldFault::KeyUnavailable => "key-unavailable",
        }
    }
}

/// A row as its reader may see it, already rendered as the JSON object the response
/// carries, with unreadable fields left out and encrypted ones decrypted, written directly
/// as text and never built as a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    json: String,
    id: String,
    owner: Option<String>,
    /// The value of the column a list is sorted by (its next cursor's position).
    key: Option<Value>,
    faults: Vec<(String, FieldFault)>,
}

impl Row {
    /// The row's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The subject who owns the row, when the resource records one.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Readable fields that could not be read (each is `null` in the JSON).
    pub fn faults(&self) -> &[(String, FieldFault)] {
        &self.faults
    }

    /// Whether a readable field needs a key the ring lacks.
    pub fn needs_missing_key(&self) -> bool {
        self.faults
            .iter()
            .any(|(_, f)| *f == FieldFault::KeyUnavailable)
    }

    /// The JSON object: the readable fields, plus `_errors: [{field, code}]` when some
    /// could not be read.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON object as owned text.
    pub fn into_json(self) -> String {
        self.json
    }

    /// The JSON object as a value (for callers that need to look inside).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// A JSON object's members in their order, borrowed from its text: keys and raw values.
struct Members<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<&'de str, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A row as the database returned it, before [`Resource::reveal`].
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// PostgreSQL: the row rendered as a JSON object by the database.
    Json(String),
    /// SQLite: the selected columns' values.
    Cells(Cells),
}

impl Stored {
    /// About how long the row's JSON is.
    fn len_hint(&self) -> usize {
        match self {
            Stored::Json(text) => text.len(),
            Stored::Cells(cells) => cells.text_len() + 32 * cells.len(),
        }
    }
}

/// One field of a stored row: JSON text, or an SQL value to render as its kind.
#[derive(Debug, Clone, Copy)]
enum Member<'a> {
    /// Already JSON (PostgreSQL's rendering, a JSON column, a boolean, `null`).
    Json(&'a str),
    /// A string, unescaped.
    Text(&'a str),
    /// An integer.
    Int(i64),
    /// A number.
    Real(f64),
}

impl<'a> Member<'a> {
    /// SQLite's value `v` of a column of `kind`, as JSON renders it.
    fn of(kind: Kind, v: SqlValue<'a>) -> Result<Self, StoreError> {
        Ok(match (kind, v) {
            (_, SqlValue::Null) => Member::Json("null"),
            (Kind::Bool, SqlValue::Int(i)) => Member::Json(if i == 0 { "false" } else { "true" }),
            (Kind::Bool, SqlValue::Real(f)) => {
                Member::Json(if f == 0.0 { "false" } else { "true" })
            }
            (Kind::Json, SqlValue::Text(text)) => {
                // Stored as serialized JSON; checked so that a damaged value cannot break
                // the answer's JSON.
                serde_json::from_str::<&RawValue>(text).map_err(corrupt)?;
                Member::Json(text)
            }
            (Kind::Bool, SqlValue::Text(_)) => {
                return Err(StoreError::Corrupt("text in a boolean column".into()));
            }
            (_, SqlValue::Text(text)) => Member::Text(text),
            (_, SqlValue::Int(i)) => Member::Int(i),
            (_, SqlValue::Real(f)) => Member::Real(f),
        })
    }

    /// The string this member holds, unescaped; `None` when it is not a string.
    fn text(self) -> Result<Option<Cow<'a, str>>, StoreError> {
        match self {
            Member::Text(text) => Ok(Some(Cow::Borrowed(text))),
            Member::Json(raw) if raw.starts_with('"') => json_text(raw).map(Some).map_err(corrupt),
            _ => Ok(None),
        }
    }

    /// Appends the member as JSON.
    fn push_to(self, out: &mut String) {
        match self {
            Member::Json(raw) => out.push_str(raw),
            Member::Text(text) => crate::json_string::push(out, text),
            Member::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Member::Real(f) => match serde_json::Number::from_f64(f) {
                Some(n) => out.push_str(&n.to_string()),
                // JSON has no NaN or infinity (SQLite's own rendering made NaN null too).
                None => out.push_str("null"),
            },
        }
    }

    /// The member as a JSON value.
    fn to_value(self) -> Result<Value, StoreError> {
        Ok(match self {
            Member::Json(raw) => serde_json::from_str(raw).map_err(corrupt)?,
            Member::Text(text) => Value::String(text.to_string()),
            Member::Int(i) => Value::from(i),
            Member::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        })
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// The text of a JSON string value, borrowed when it holds no escape (ids, timestamps and
/// sealed values never do).
fn json_text(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(raw).map(Cow::Owned),
    }
}

/// An insert prepared outside the writer: the values to bind, encrypted.
#[derive(Debug, Clone)]
pub struct Insert {
    id: String,
    binds: Vec<Bind>,
}

impl Insert {
    /// The new row's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// An update prepared outside the writer.
#[derive(Debug, Clone)]
pub struct Update {
    id: String,
    sql: String,
    binds: Vec<Bind>,
}

/// What an insert or update appends to return the written row: PostgreSQL's `RETURNING`.
/// SQLite's would cost a statement journal (RETURNING runs as a trigger, and a statement
/// with a trigger keeps a copy of every page it changes so it can be undone alone) and a
/// temporary table: about 8 % of a POST's CPU in perf. On SQLite the row is read back by
/// id in the same transaction instead.
fn returning(pg: bool, row_json: &str) -> String {
    if pg {
        format!(" RETURNING {row_json} AS j")
    } else {
        String::new()
    }
}

/// The SQL of one resource, built once from the plan.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource's table.
    pub table: Table,
    pg: bool,
    /// The expression rendering a row as JSON text (PostgreSQL's `RETURNING`).
    row_json: String,
    /// What a `SELECT` of whole rows lists: PostgreSQL renders the row as JSON text (`j`),
    /// SQLite returns the columns of `fields`, which [`Resource::reveal`] renders itself.
    row_select: String,
    /// The row's fields in select order (SQLite's cells): name, kind and whether encrypted.
    fields: Vec<(String, Kind, bool)>,
    /// Seals and opens the encrypted fields; `None` when no keys are configured.
    ring: Option<Arc<KeyRing>>,
    /// Signs and checks list cursors.
    cursors: Option<Arc<CursorKeys>>,
    get_sql: String,
    get_own_sql: String,
    insert_sql: String,
    delete_sql: String,
    delete_own_sql: String,
    /// Counts the stored values that do not decrypt (detached by default).
    faults: crate::metrics::FaultCounters,
}

impl Resource {
    /// The SQL of `table` for the given dialect.
    pub fn new(table: Table, pg: bool) -> Self {
        let mut fields = vec![("id".to_string(), Kind::Text, false)];
        if table.owner {
            fields.push(("owner".to_string(), Kind::Text, false));
        }
        fields.extend(
            table
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.kind, c.encrypted)),
        );
        fields.push(("created_at".to_string(), Kind::Text, false));
        fields.push(("updated_at".to_string(), Kind::Text, false));
        let exprs: Vec<String> = fields.iter().map(|(n, k, _)| pair(pg, n, *k)).collect();
        let row_json = json_row(pg, &exprs);
        let row_select = if pg {
            format!("{row_json} AS j")
        } else {
            let cols: Vec<String> = fields.iter().map(|(n, _, _)| quote(n)).collect();
            cols.join(", ")
        };
        let name = quote(&table.name);
        let ph = |n: usize, kind: Kind| placeholder(pg, n, kind);
        let id_is = format!("{} = {}", quote("id"), ph(1, Kind::Text));
        let own = format!("{id_is} AND {} = {}", quote("owner"), ph(2, Kind::Text));
        let select = |cond: &str| format!("SELECT {row_select} FROM {name} WHERE {cond}");

        let mut cols = vec![quote("id")];
        let mut kinds = vec![Kind::Text];
        if table.owner {
            cols.push(quote("owner"));
            kinds.push(Kind::Text);
        }
        for c in &table.columns {
            cols.push(quote(&c.name));
            kinds.push(c.kind);
        }
        for f in table.blind_indexed() {
            cols.push(quote(&index_column(f)));
            kinds.push(Kind::Text);
        }
        for stamp in ["created_at", "updated_at"] {
            cols.push(quote(stamp));
            kinds.push(Kind::Text);
        }
        let values: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| ph(i + 1, *k))
            .collect();
        let insert_sql = format!(
            "INSERT INTO {name} ({}) VALUES ({}){}",
            cols.join(", "),
            values.join(", "),
            returning(pg, &row_json)
        );
        Self {
            get_sql: select(&id_is),
            // A table without owners has no row anyone owns: fail closed.
            get_own_sql: if table.owner {
                select(&own)
            } else {
                select(&format!("{id_is} AND 1 = 0"))
            },
            insert_sql,
            delete_sql: format!("DELETE FROM {name} WHERE {id_is}"),
            delete_own_sql: if table.owner {
                format!("DELETE FROM {name} WHERE {own}")
            } else {
                format!("DELETE FROM {name} WHERE {id_is} AND 1 = 0")
            },
            table,
            pg,
            row_json,
            row_select,
            fields,
            ring: None,
            cursors: None,
            faults: Default::default(),
        }
    }

    /// Counts the values of this resource that do not decrypt into `faults`.
    pub fn count_faults_into(&mut self, faults: crate::metrics::FaultCounters) {
        self.faults = faults;
    }

    /// Whether the SQL is PostgreSQL's.
    pub(super) fn pg(&self) -> bool {
        self.pg
    }

    /// The key ring for the encrypted fields (built once, shared by every resource).
    pub fn with_keys(mut self, ring: Option<Arc<KeyRing>>) -> Self {
        self.ring = ring;
        self
    }

    /// The keys that sign and check this resource's list cursors.
    pub fn with_cursor_keys(mut self, keys: Arc<CursorKeys>) -> Self {
        self.cursors = Some(keys);
        self
    }

    /// True when the resource has encrypted fields but no key ring: its routes must refuse.
    pub fn keys_missing(&self) -> bool {
        self.table.has_encrypted() && self.ring.is_none()
    }

    pub(super) fn ring(&self) -> Result<&KeyRing, StoreError> {
        self.ring.as_deref().ok_or_else(|| {
            StoreError::Corrupt(format!(
                "resources.{}: encryption keys are not configured",
                self.table.name
            ))
        })
    }

    pub(super) fn crypto_error(&self, field: &str, id: &str, e: CryptoError) -> StoreError {
        // The message names the row, field and key id; never the stored text.
        StoreError::Corrupt(format!("{}.{field} of row {id}: {e}", self.table.name))
    }

    /// The cursor of the next page, as handed to clients.
    pub fn encode_cursor(&self, c: &Cursor) -> Option<String> {
        self.cursors.as_ref().map(|k| k.encode(&self.table.name, c))
    }

    /// The cursor in `text`, if this deployment made it for this resource.
    pub fn decode_cursor(&self, text: &str) -> Option<Cursor> {
        self.cursors.as_ref()?.decode(&self.table.name, text)
    }

    /// The bind of one field value: encrypted fields are sealed to (resource, field, id).
    fn field_bind(
        &self,
        id: &str,
        name: &str,
        kind: Kind,
        v: Option<&Value>,
    ) -> Result<Bind, StoreError> {
        match v {
            Some(Value::String(plain)) if self.table.is_encrypted(name) => {
                let aad = Aad {
                    resource: &self.table.name,
                    field: name,
                    id,
                };
                let sealed = self
                    .ring()?
                    .seal(&aad, plain)
                    .map_err(|e| self.crypto_error(name, id, e))?;
                Ok(Bind::Text(Some(sealed)))
            }
            Some(v) => Ok(to_bind(kind, v)),
            None => Ok(kind.null()),
        }
    }

    /// The blind index bind of a blind-indexed field's plaintext value.
    fn index_bind(&self, field: &str, v: Option<&Value>) -> Result<Bind, StoreError> {
        match v {
            Some(Value::String(plain)) => Ok(Bind::Text(Some(self.ring()?.blind_index(
                &self.table.name,
                field,
                plain,
            )))),
            _ => Ok(Bind::Text(None)),
        }
    }

    /// Rows of a `SELECT` of [`Resource::row_select`] (or PostgreSQL's `RETURNING`), as the
    /// database returned them. `cached` keeps the statement prepared (bounded texts only).
    fn fetch(
        &self,
        conn: &mut Conn,
        sql: &str,
        binds: &[Bind],
        cached: bool,
    ) -> Result<Vec<Stored>, StoreError> {
        if self.pg {
            let rows = if cached {
                conn.query_json_cached(sql, binds)?
            } else {
                conn.query_json(sql, binds)?
            };
            Ok(rows.into_iter().map(Stored::Json).collect())
        } else {
            let rows = conn.query_cells(sql, binds, cached)?;
            Ok(rows.into_iter().map(Stored::Cells).collect())
        }
    }

    /// A stored row as `mask` lets its reader see it, rendered as JSON: unreadable fields
    /// left out (never decrypted), readable encrypted fields decrypted, and a field that does
    /// not decrypt written as `null` and named in the row's faults (logged with its key id).
    /// `key` names the column whose value the caller needs back (a list's sort column).
    pub fn reveal(
        &self,
        stored: &Stored,
        mask: &ReadMask,
        key: Option<&str>,
    ) -> Result<Row, StoreError> {
        let size = stored.len_hint() + 16;
        match stored {
            Stored::Json(text) => {
                let Members(members) = serde_json::from_str(text).map_err(corrupt)?;
                let find = |name: &str| {
                    members
                        .iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, raw)| Member::Json(raw.get()))
                };
                let fields = members.iter().map(|&(name, raw)| {
                    Ok((name, self.table.is_encrypted(name), Member::Json(raw.get())))
                });
                let owner = if self.table.owner {
                    find("owner")
                } else {
                    None
                };
                self.render(size, find("id"), owner, fields, mask, key)
            }
            Stored::Cells(cells) => {
                if cells.len() != self.fields.len() {
                    return Err(StoreError::Corrupt(format!(
                        "{}: a row of {} columns where {} were selected",
                        self.table.name,
                        cells.len(),
                        self.fields.len()
                    )));
                }
                // `fields` starts with `id`, then `owner` when the table has owners.
                let text_at =
                    |i: usize| cells.get(i).map(|v| Member::of(Kind::Text, v)).transpose();
                let owner = if self.table.owner { text_at(1)? } else { None };
                let fields =
                    self.fields
                        .iter()
                        .zip(cells.values())
                        .map(|((name, kind, sealed), v)| {
                            Ok((name.as_str(), *sealed, Member::of(*kind, v)?))
                        });
                self.render(size, text_at(0)?, owner, fields, mask, key)
            }
        }
    }

    /// [`Resource::reveal`]'s JSON (about `size` bytes), written from the row's id, owner and
    /// fields in order (name, whether encrypted, value), read once, without collecting them.
    fn render<'a>(
        &self,
        size: usize,
        id: Option<Member<'a>>,
        owner: Option<Member<'a>>,
        fields: impl Iterator<Item = Result<(&'a str, bool, Member<'a>), StoreError>>,
        mask: &ReadMask,
        key: Option<&str>,
    ) -> Result<Row, StoreError> {
        let text = |m: Option<Member<'a>>| -> Result<Option<String>, StoreError> {
            Ok(match m {
                Some(m) => m.text()?.map(Cow::into_owned),
                None => None,
            })
        };
        let mut row = Row {
            json: String::with_capacity(size),
            id: text(id)?.unwrap_or_default(),
            owner: text(owner)?,
            key: None,
            faults: Vec::new(),
        };
        row.json.push('{');
        for field in fields {
            let (name, sealed, member) = field?;
            if !mask.may_read(name, row.owner.as_deref()) {
                continue;
            }
            if row.json.len() > 1 {
                row.json.push(',');
            }
            // Names are identifiers validated at compile time: nothing to escape.
            row.json.push('"');
            row.json.push_str(name);
            row.json.push_str("\":");
            if Some(name) == key {
                row.key = Some(member.to_value()?);
            }
            // Stored encrypted values are strings; `null` and other values pass as they are.
            let text = if sealed { member.text()? } else { None };
            let Some(stored) = text else {
                member.push_to(&mut row.json);
                continue;
            };
            match self.open(name, &row.id, &stored) {
                Ok(plain) => crate::json_string::push(&mut row.json, &plain),
                Err(fault) => {
                    row.json.push_str("null");
                    row.faults.push((name.to_string(), fault));
                }
            }
        }
        if !row.faults.is_empty() {
            let errors: Vec<Value> = row
                .faults
                .iter()
                .map(|(field, fault)| json!({ "field": field, "code": fault.code() }))
                .collect();
            row.json
                .push_str(&format!(",\"{ERRORS_KEY}\":{}", Value::Array(errors)));
        }
        row.json.push('}');
        Ok(row)
    }

    /// Decrypts one stored value of `field` in row `id`; a failure is logged (with the key
    /// id, never the value) and reported as the field's fault.
    fn open(&self, field: &str, id: &str, stored: &str) -> Result<String, FieldFault> {
        let aad = Aad {
            resource: &self.table.name,
            field,
            id,
        };
        let Some(ring) = self.ring.as_deref() else {
            self.faults.key_unavailable.inc();
            return Err(FieldFault::KeyUnavailable);
        };
        ring.open(&aad, stored).map_err(|e| {
            tracing::error!(
                resource = %self.table.name,
                field,
                row = %id,
                kid = kid_of(stored).unwrap_or("-"),
                error = %e,
                "a stored value could not be decrypted; answered as null"
            );
            match e {
                CryptoError::UnknownKey { .. } => {
                    self.faults.key_unavailable.inc();
                    FieldFault::KeyUnavailable
                }
                _ => {
                    self.faults.undecryptable.inc();
                    FieldFault::Undecryptable
                }
            }
        })
    }

    /// One row, if it exists (and belongs to `owner` when given).
    pub fn get(
        &self,
        conn: &mut Conn,
        id: &str,
        owner: Option<&str>,
        mask: &ReadMask,
    ) -> Result<Row, StoreError> {
        let mut binds = vec![Bind::Text(Some(id.to_string()))];
        let sql = match owner {
            Some(owner) => {
                binds.push(Bind::Text(Some(owner.to_string())));
                &self.get_own_sql
            }
            None => &self.get_sql,
        };
        let rows = self.fetch(conn, sql, &binds, true)?;
        let row = rows.first().ok_or(StoreError::NotFound)?;
        self.reveal(row, mask, None)
    }

    /// Inserts a validated document; returns the stored row. Runs in the caller's
    /// transaction (the writer's savepoint). A serving process splits this in three:
    /// [`Resource::prepare_insert`] on the request's worker, [`Resource::insert`] in the
    /// writer, [`Resource::reveal`] back on the worker, so the one writer only writes.
    pub fn create(
        &self,
        conn: &mut Conn,
        owner: Option<&str>,
        doc: &Map<String, Value>,
        mask: &ReadMask,
    ) -> Result<Row, StoreError> {
        let insert = self.prepare_insert(owner, doc)?;
        let stored = self.insert(conn, &insert)?;
        self.reveal(&stored, mask, None)
    }

    /// The insert of a validated document: its id (chosen here, before encrypting, because
    /// every ciphertext is bound to it), encrypted values and blind indexes.
    pub fn prepare_insert(
        &self,
        owner: Option<&str>,
        doc: &Map<String, Value>,
    ) -> Result<Insert, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let binds = self.insert_binds(&id, owner, doc)?;
        Ok(Insert { id, binds })
    }

    /// Runs a prepared insert; returns the stored row as the database renders it (for
    /// [`Resource::reveal`]).
    pub fn insert(&self, conn: &mut Conn, insert: &Insert) -> Result<Stored, StoreError> {
        let rows = if self.pg {
            self.fetch(conn, &self.insert_sql, &insert.binds, true)?
        } else {
            conn.execute_cached(&self.insert_sql, &insert.binds)?;
            self.read_back(conn, &insert.id)?
        };
        rows.into_iter()
            .next()
            .ok_or_else(|| StoreError::Database("the inserted row was not found".into()))
    }

    /// The binds of [`Resource::create`]'s insert, in column order.
    fn insert_binds(
        &self,
        id: &str,
        owner: Option<&str>,
        doc: &Map<String, Value>,
    ) -> Result<Vec<Bind>, StoreError> {
        let stamp = now();
        let mut binds = Vec::with_capacity(self.table.columns.len() + 4);
        binds.push(Bind::Text(Some(id.to_string())));
        if self.table.owner {
            binds.push(Bind::Text(owner.map(str::to_string)));
        }
        for c in &self.table.columns {
            binds.push(self.field_bind(id, &c.name, c.kind, doc.get(&c.name))?);
        }
        for f in self.table.blind_indexed() {
            binds.push(self.index_bind(f, doc.get(f))?);
        }
        binds.push(Bind::Text(Some(stamp.clone())));
        binds.push(Bind::Text(Some(stamp)));
        Ok(binds)
    }

    /// Sets the fields present in a validated patch; returns the updated row. Runs in the
    /// caller's transaction.
    pub fn update(
        &self,
        conn: &mut Conn,
        id: &str,
        owner: Option<&str>,
        patch: &Map<String, Value>,
        mask: &ReadMask,
    ) -> Result<Row, StoreError> {
        let update = self.prepare_update(id, owner, patch)?;
        let stored = self.run_update(conn, &update)?;
        self.reveal(&stored, mask, None)
    }

    /// The update of a validated patch: its SQL (the set of changed fields varies, so it is
    /// prepared for its call only and the statement cache stays bounded) and binds, with
    /// encrypted values and blind indexes.
    pub fn prepare_update(
        &self,
        id: &str,
        owner: Option<&str>,
        patch: &Map<String, Value>,
    ) -> Result<Update, StoreError> {
        let mut sets = Vec::new();
        let mut binds = Vec::new();
        for c in &self.table.columns {
            if let Some(v) = patch.get(&c.name) {
                binds.push(self.field_bind(id, &c.name, c.kind, Some(v))?);
                sets.push(format!(
                    "{} = {}",
                    quote(&c.name),
                    self.ph(binds.len(), c.kind)
                ));
                if self.table.is_blind_indexed(&c.name) {
                    binds.push(self.index_bind(&c.name, Some(v))?);
                    sets.push(format!(
                        "{} = {}",
                        quote(&index_column(&c.name)),
                        self.ph(binds.len(), Kind::Text)
                    ));
                }
            }
        }
        binds.push(Bind::Text(Some(now())));
        sets.push(format!(
            "{} = {}",
            quote("updated_at"),
            self.ph(binds.len(), Kind::Text)
        ));
        let (cond, more) = self.by_id(binds.len() + 1, id, owner);
        binds.extend(more);
        let sql = format!(
            "UPDATE {} SET {} WHERE {cond}{}",
            quote(&self.table.name),
            sets.join(", "),
            returning(self.pg, &self.row_json)
        );
        Ok(Update {
            id: id.to_string(),
            sql,
            binds,
        })
    }

    /// Runs a prepared update; returns the row as the database renders it, or `NotFound`.
    pub fn run_update(&self, conn: &mut Conn, update: &Update) -> Result<Stored, StoreError> {
        let rows = if self.pg {
            self.fetch(conn, &update.sql, &update.binds, false)?
        } else {
            match conn.execute(&update.sql, &update.binds)? {
                0 => return Err(StoreError::NotFound),
                _ => self.read_back(conn, &update.id)?,
            }
        };
        rows.into_iter().next().ok_or(StoreError::NotFound)
    }

    /// The row just written, as the database renders it: SQLite's stand-in for `RETURNING`
    /// (see [`returning`]), in the writer's transaction.
    fn read_back(&self, conn: &mut Conn, id: &str) -> Result<Vec<Stored>, StoreError> {
        self.fetch(
            conn,
            &self.get_sql,
            &[Bind::Text(Some(id.to_string()))],
            true,
        )
    }

    /// Deletes one row (of `owner` when given). Runs in the caller's transaction.
    pub fn delete(&self, conn: &mut Conn, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let mut binds = vec![Bind::Text(Some(id.to_string()))];
        let sql = match owner {
            Some(owner) => {
                binds.push(Bind::Text(Some(owner.to_string())));
                &self.delete_own_sql
            }
            None => &self.delete_sql,
        };
        match conn.execute_cached(sql, &binds)? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    pub(super) fn ph(&self, n: usize, kind: Kind) -> String {
        placeholder(self.pg, n, kind)
    }

    /// `"id" = ? [AND "owner" = ?]`, with its binds.
    fn by_id(&self, first: usize, id: &str, owner: Option<&str>) -> (String, Vec<Bind>) {
        let mut sql = format!("{} = {}", quote("id"), self.ph(first, Kind::Text));
        let mut binds = vec![Bind::Text(Some(id.to_string()))];
        match owner {
            // A table without owners has no row anyone owns: fail closed.
            Some(_) if !self.table.owner => sql += " AND 1 = 0",
            Some(owner) => {
                sql += &format!(
                    " AND {} = {}",
                    quote("owner"),
                    self.ph(first + 1, Kind::Text)
                );
                binds.push(Bind::Text(Some(owner.to_string())));
            }
            None => {}
        }
        (sql, binds)
    }

    /// The SQL and binds of one list page (one row more than the limit, to know whether
    /// another page follows). The keyset condition is a row-value comparison, which both
    /// databases answer from the `(field, id)` indexes the DDL creates.
    pub fn list_sql(&self, q: &ListQuery) -> Result<(String, Vec<Bind>), StoreError> {
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        let kind_of = |col: &str| self.table.column(col).map_or(Kind::Text, |c| c.kind);
        if q.owner.is_some() && !self.table.owner {
            conds.push("1 = 0".to_string());
        } else if let Some(owner) = &q.owner {
            binds.push(Bind::Text(Some(owner.clone())));
            conds.push(format!(
                "{} = {}",
                quote("owner"),
                self.ph(binds.len(), Kind::Text)
            ));
        }
        for (col, v) in &q.filters {
            if self.table.is_blind_indexed(col) {
                // Equality on the HMAC under every key: rows not yet rotated still match.
                let plain = v.as_str().unwrap_or_default();
                let mut phs = Vec::new();
                for index in self.ring()?.blind_indexes(&self.table.name, col, plain) {
                    binds.push(Bind::Text(Some(index)));
                    phs.push(self.ph(binds.len(), Kind::Text));
                }
                conds.push(format!(
                    "{} IN ({})",
                    quote(&index_column(col)),
                    phs.join(", ")
                ));
                continue;
            }
            let kind = kind_of(col);
            binds.push(to_bind(kind, v));
            conds.push(format!("{} = {}", quote(col), self.ph(binds.len(), kind)));
        }
        let (op, dir) = if q.desc { ("<", "DESC") } else { (">", "ASC") };
        let id = quote("id");
        if let Some(after) = &q.after {
            if q.sort == "id" {
                binds.push(Bind::Text(Some(after.id.clone())));
                conds.push(format!("{id} {op} {}", self.ph(binds.len(), Kind::Text)));
            } else {
                let kind = kind_of(&q.sort);
                binds.push(to_bind(kind, &after.value));
                let a = self.ph(binds.len(), kind);
                binds.push(Bind::Text(Some(after.id.clone())));
                let b = self.ph(binds.len(), Kind::Text);
                conds.push(format!("({}, {id}) {op} ({a}, {b})", quote(&q.sort)));
            }
        }
        binds.push(Bind::Int(Some(q.limit as i64 + 1)));
        // `LIMIT ? + 0`, not `LIMIT ?`: SQLite peeks at a bare bound LIMIT while planning and
        // then marks the statement to be prepared again whenever the value is bound anew,
        // that is on every call; an expression keeps the cached statement.
        let limit = format!("{} + 0", self.ph(binds.len(), Kind::Int));
        let order = if q.sort == "id" {
            format!("{id} {dir}")
        } else {
            format!("{} {dir}, {id} {dir}", quote(&q.sort))
        };
        let conds = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        Ok((
            format!(
                "SELECT {} FROM {}{conds} ORDER BY {order} LIMIT {limit}",
                self.row_select,
                quote(&self.table.name)
            ),
            binds,
        ))
    }

    /// One page in keyset order; the cursor of the next page when there is one.
    pub fn list(
        &self,
        conn: &mut Conn,
        q: &ListQuery,
        mask: &ReadMask,
    ) -> Result<(Vec<Row>, Option<String>), StoreError> {
        let (sql, binds) = self.list_sql(q)?;
        // Pages with at most one filter are a bounded set of texts per resource (sort ×
        // direction × cursor × owner × filter): kept prepared. More filters combine into
        // too many texts to cache.
        let rows = self.fetch(conn, &sql, &binds, q.filters.len() <= 1)?;
        let key = (q.sort != "id").then_some(q.sort.as_str());
        let mut items = rows
            .iter()
            .map(|r| self.reveal(r, mask, key))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().and_then(|last| {
                self.encode_cursor(&Cursor {
                    sort: q.sort.clone(),
                    desc: q.desc,
                    value: match &last.key {
                        Some(v) => v.clone(),
                        None => Value::String(last.id().to_string()),
                    },
                    id: last.id().to_string(),
                })
            })
        } else {
            None
        };
        Ok((items, next))
    }

    /// The key ids the stored values of this resource's encrypted fields name.
    pub fn stored_kids(&self, conn: &mut Conn) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for field in self.table.encrypted() {
            let col = quote(field);
            // `nf1:<kid>:…`: the text between the first and second colon after the prefix.
            let kid = if self.pg {
                format!("split_part({col}, ':', 2)")
            } else {
                format!("substr({col}, 5, instr(substr({col}, 5), ':') - 1)")
            };
            let sql = format!(
                "SELECT DISTINCT {} AS j FROM {} WHERE {col} IS NOT NULL",
                json_row(self.pg, &[format!("'kid', {kid}")]),
                quote(&self.table.name)
            );
            for text in conn.query_json(&sql, &[])? {
                if let Ok(v) = serde_json::from_str::<Value>(&text)
                    && let Some(kid) = v.get("kid").and_then(Value::as_str)
                    && !out.iter().any(|k| k == kid)
                {
                    out.push(kid.to_string());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sqlite_values_render_as_their_kind() {
        let json = |kind, v| {
            let mut out = String::new();
            Member::of(kind, v).unwrap().push_to(&mut out);
            out
        };
        assert_eq!(json(Kind::Bool, SqlValue::Int(1)), "true");
        assert_eq!(json(Kind::Bool, SqlValue::Int(0)), "false");
        assert_eq!(json(Kind::Bool, SqlValue::Null), "null");
        assert_eq!(json(Kind::Int, SqlValue::Int(-42)), "-42");
        assert_eq!(json(Kind::Real, SqlValue::Real(1.5)), "1.5");
        assert_eq!(json(Kind::Real, SqlValue::Real(f64::NAN)), "null");
        assert_eq!(json(Kind::Text, SqlValue::Text("a\"b")), r#""a\"b""#);
        assert_eq!(json(Kind::Json, SqlValue::Text(r#"["x",1]"#)), r#"["x",1]"#);
        // A damaged JSON column or a boolean holding text is reported, never passed on.
        assert!(matches!(
            Member::of(Kind::Json, SqlValue::Text("[1,")),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            Member::of(Kind::Bool, SqlValue::Text("yes")),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_json_string_is_read_borrowed_when_it_has_no_escape() {
        let plain = r#""nf1:k1:AAEC+/==""#;
        assert!(matches!(
            json_text(plain).unwrap(),
            Cow::Borrowed("nf1:k1:AAEC+/==")
        ));
        assert_eq!(json_text(r#""a\"b\u00e9""#).unwrap(), "a\"bé");
        assert!(json_text("12").is_err());
    }
}
