//! CRUD over one declared resource. Identifiers come from the plan; every request value is
//! a bound parameter. Rows come back as JSON built by the database itself.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};

use super::dialect::{Bind, Kind, json_row, pair, placeholder, quote, to_bind};
use super::table::{Table, index_column};
use super::{Conn, StoreError, now};
use crate::crypto::{Aad, CryptoError, KeyRing};

/// A position in a sorted list, handed to clients as an opaque string.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// The sort column.
    pub sort: String,
    /// Whether the sort is descending.
    pub desc: bool,
    /// The sort column's value in the last row.
    pub value: Value,
    /// The id of the last row (the tie-breaker).
    pub id: String,
}

impl Cursor {
    /// The opaque text handed to clients.
    pub fn encode(&self) -> String {
        let raw = json!({ "s": self.sort, "d": self.desc, "v": self.value, "i": self.id });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
    }

    /// `None` for anything that is not a cursor this server made.
    pub fn decode(text: &str) -> Option<Self> {
        if text.len() > 2048 {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            sort: v.get("s")?.as_str()?.to_string(),
            desc: v.get("d")?.as_bool()?,
            value: v.get("v")?.clone(),
            id: v.get("i")?.as_str()?.to_string(),
        })
    }
}

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

/// The SQL of one resource, built once from the plan.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The resource's table.
    pub table: Table,
    pg: bool,
    /// The expression rendering a row as JSON text.
    row_json: String,
    /// Seals and opens the encrypted fields; `None` when no keys are configured.
    ring: Option<Arc<KeyRing>>,
}

impl Resource {
    /// The SQL of `table` for the given dialect.
    pub fn new(table: Table, pg: bool) -> Self {
        let mut parts = vec![("id", Kind::Text)];
        if table.owner {
            parts.push(("owner", Kind::Text));
        }
        let mut exprs: Vec<String> = parts.iter().map(|(n, k)| pair(pg, n, *k)).collect();
        exprs.extend(table.columns.iter().map(|c| pair(pg, &c.name, c.kind)));
        exprs.push(pair(pg, "created_at", Kind::Text));
        exprs.push(pair(pg, "updated_at", Kind::Text));
        let row_json = json_row(pg, &exprs);
        Self {
            table,
            pg,
            row_json,
            ring: None,
        }
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

    /// Decrypts the encrypted fields of a row read back as JSON; any failure fails the
    /// whole row, so ciphertext or garbage never reaches a caller.
    fn reveal(&self, text: &str) -> Result<Value, StoreError> {
        let mut row: Value =
            serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if !self.table.has_encrypted() {
            return Ok(row);
        }
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(map) = row.as_object_mut() {
            for field in self.table.encrypted() {
                if let Some(Value::String(stored)) = map.get(field) {
                    let aad = Aad {
                        resource: &self.table.name,
                        field,
                        id: &id,
                    };
                    let plain = self
                        .ring()?
                        .open(&aad, stored)
                        .map_err(|e| self.crypto_error(field, &id, e))?;
                    map.insert(field.to_string(), Value::String(plain));
                }
            }
        }
        Ok(row)
    }

    pub(super) fn ph(&self, n: usize, kind: Kind) -> String {
        placeholder(self.pg, n, kind)
    }

    fn select_where(&self, conds: &str) -> String {
        format!(
            "SELECT {} AS j FROM {} WHERE {conds}",
            self.row_json,
            quote(&self.table.name)
        )
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

    /// One row, if it exists (and belongs to `owner` when given).
    pub fn get(&self, conn: &mut Conn, id: &str, owner: Option<&str>) -> Result<Value, StoreError> {
        let (cond, binds) = self.by_id(1, id, owner);
        let rows = conn.query_json(&self.select_where(&cond), &binds)?;
        let row = rows.into_iter().next().ok_or(StoreError::NotFound)?;
        self.reveal(&row)
    }

    /// Inserts a validated document; returns the stored row. The id is chosen here, before
    /// encrypting, because every ciphertext is bound to it.
    pub fn create(
        &self,
        conn: &mut Conn,
        owner: Option<&str>,
        doc: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let stamp = now();
        let mut cols = vec![quote("id")];
        let mut binds = vec![Bind::Text(Some(id.clone()))];
        if self.table.owner {
            cols.push(quote("owner"));
            binds.push(Bind::Text(owner.map(str::to_string)));
        }
        for c in &self.table.columns {
            cols.push(quote(&c.name));
            binds.push(self.field_bind(&id, &c.name, c.kind, doc.get(&c.name))?);
        }
        for f in self.table.blind_indexed() {
            cols.push(quote(&index_column(f)));
            binds.push(self.index_bind(f, doc.get(f))?);
        }
        cols.push(quote("created_at"));
        binds.push(Bind::Text(Some(stamp.clone())));
        cols.push(quote("updated_at"));
        binds.push(Bind::Text(Some(stamp)));
        let values: Vec<String> = binds
            .iter()
            .enumerate()
            .map(|(i, b)| self.ph(i + 1, b.kind()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(&self.table.name),
            cols.join(", "),
            values.join(", ")
        );
        conn.transaction(|c| {
            c.execute(&sql, &binds)?;
            self.get(c, &id, None)
        })
    }

    /// Sets the fields present in a validated patch; returns the updated row.
    pub fn update(
        &self,
        conn: &mut Conn,
        id: &str,
        owner: Option<&str>,
        patch: &Map<String, Value>,
    ) -> Result<Value, StoreError> {
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
            "UPDATE {} SET {} WHERE {cond}",
            quote(&self.table.name),
            sets.join(", ")
        );
        conn.transaction(|c| {
            if c.execute(&sql, &binds)? == 0 {
                return Err(StoreError::NotFound);
            }
            self.get(c, id, None)
        })
    }

    /// Deletes one row (of `owner` when given).
    pub fn delete(&self, conn: &mut Conn, id: &str, owner: Option<&str>) -> Result<(), StoreError> {
        let (cond, binds) = self.by_id(1, id, owner);
        let sql = format!("DELETE FROM {} WHERE {cond}", quote(&self.table.name));
        match conn.execute(&sql, &binds)? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    /// One page in keyset order; the cursor of the next page when there is one.
    pub fn list(
        &self,
        conn: &mut Conn,
        q: &ListQuery,
    ) -> Result<(Vec<Value>, Option<String>), StoreError> {
        let mut conds = vec!["1 = 1".to_string()];
        let mut binds = Vec::new();
        let kind_of = |col: &str| self.table.column(col).map_or(Kind::Text, |c| c.kind);
        if q.owner.is_some() && !self.table.owner {
            conds.push("1 = 0".into());
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
        if let Some(after) = &q.after {
            let id_ph = |n| self.ph(n, Kind::Text);
            if q.sort == "id" {
                binds.push(Bind::Text(Some(after.id.clone())));
                conds.push(format!("{} {op} {}", quote("id"), id_ph(binds.len())));
            } else {
                let kind = kind_of(&q.sort);
                let s = quote(&q.sort);
                binds.push(to_bind(kind, &after.value));
                let a = self.ph(binds.len(), kind);
                binds.push(to_bind(kind, &after.value));
                let b = self.ph(binds.len(), kind);
                binds.push(Bind::Text(Some(after.id.clone())));
                let c = id_ph(binds.len());
                conds.push(format!(
                    "({s} {op} {a} OR ({s} = {b} AND {} {op} {c}))",
                    quote("id")
                ));
            }
        }
        binds.push(Bind::Int(Some(q.limit as i64 + 1)));
        let limit = self.ph(binds.len(), Kind::Int);
        let order = if q.sort == "id" {
            format!("{} {dir}", quote("id"))
        } else {
            format!("{} {dir}, {} {dir}", quote(&q.sort), quote("id"))
        };
        let sql = format!(
            "{} ORDER BY {order} LIMIT {limit}",
            self.select_where(&conds.join(" AND "))
        );
        let rows = conn.query_json(&sql, &binds)?;
        let mut items = rows
            .iter()
            .map(|r| self.reveal(r))
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().map(|last| {
                Cursor {
                    sort: q.sort.clone(),
                    desc: q.desc,
                    value: last.get(&q.sort).cloned().unwrap_or(Value::Null),
                    id: last
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                }
                .encode()
            })
        } else {
            None
        };
        Ok((items, next))
    }
}
