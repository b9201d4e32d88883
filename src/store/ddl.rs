//! The declared resources' DDL: missing tables and indexes are created and additive changes
//! applied; a change that would drop, rename or retype a column, or change an index, is
//! refused and nothing is altered.

use std::collections::BTreeMap;

use super::dialect::{Bind, Kind, placeholder, quote, to_bind};
use super::table::{INDEX_SUFFIX, Table, index_column};
use super::{Conn, StoreError};
use crate::plan::data::SERVER_COLUMNS;

/// Creates missing tables and applies additive changes for every resource, or refuses
/// (listing every destructive change) and alters nothing. Returns what changed.
pub fn sync(conn: &mut Conn, tables: &[Table]) -> Result<Vec<String>, StoreError> {
    let pg = conn.is_postgres();
    let mut problems = Vec::new();
    let mut statements: Vec<(String, Vec<Bind>)> = Vec::new();
    let mut changes = Vec::new();
    for t in tables {
        let actual: BTreeMap<String, String> = conn
            .columns(&t.name)?
            .into_iter()
            .map(|c| (c.name, c.ty))
            .collect();
        let table = quote(&t.name);
        if actual.is_empty() {
            let mut cols = vec![format!(
                "{} {} PRIMARY KEY NOT NULL",
                quote("id"),
                Kind::Text.sql_type(pg)
            )];
            if t.owner {
                cols.push(format!("{} {}", quote("owner"), Kind::Text.sql_type(pg)));
            }
            for c in &t.columns {
                cols.push(format!("{} {}", quote(&c.name), c.kind.sql_type(pg)));
            }
            for f in t.blind_indexed() {
                cols.push(format!(
                    "{} {}",
                    quote(&index_column(f)),
                    Kind::Text.sql_type(pg)
                ));
            }
            cols.push(format!(
                "{} {} NOT NULL",
                quote("created_at"),
                Kind::Text.sql_type(pg)
            ));
            cols.push(format!(
                "{} {} NOT NULL",
                quote("updated_at"),
                Kind::Text.sql_type(pg)
            ));
            statements.push((
                format!("CREATE TABLE {table} ({})", cols.join(", ")),
                vec![],
            ));
            changes.push(format!(
                "created table {} ({} fields)",
                t.name,
                t.columns.len()
            ));
        } else {
            let declared = |name: &str| {
                SERVER_COLUMNS.contains(&name) && (name != "owner" || t.owner)
                    || t.column(name).is_some()
                    || name
                        .strip_suffix(INDEX_SUFFIX)
                        .is_some_and(|f| t.is_blind_indexed(f))
            };
            for name in actual.keys() {
                if !declared(name) {
                    problems.push(format!(
                        "resources.{}: column `{name}` exists but is no longer declared; removing or renaming a field would drop its data (migrate it by hand, then restart)",
                        t.name
                    ));
                }
            }
            for c in &t.columns {
                match actual.get(&c.name) {
                    Some(ty) if !ty.eq_ignore_ascii_case(c.kind.sql_type(pg)) => problems.push(format!(
                        "resources.{}: field `{}` would change type from {ty} to {}; existing data would not fit",
                        t.name,
                        c.name,
                        c.kind.sql_type(pg)
                    )),
                    Some(_) => {}
                    None if !c.may_be_absent => problems.push(format!(
                        "resources.{}: new field `{}` is required and has no default; existing rows would be invalid (make it optional or give it a default)",
                        t.name, c.name
                    )),
                    None => {
                        statements.push((
                            format!("ALTER TABLE {table} ADD COLUMN {} {}", quote(&c.name), c.kind.sql_type(pg)),
                            vec![],
                        ));
                        // An encrypted field's default is never written unencrypted: existing
                        // rows keep NULL there.
                        if let Some(default) = c.default.as_ref().filter(|_| !t.is_encrypted(&c.name)) {
                            let value = to_bind(c.kind, default);
                            statements.push((
                                format!("UPDATE {table} SET {} = {}", quote(&c.name), placeholder(pg, 1, c.kind)),
                                vec![value],
                            ));
                        }
                        changes.push(format!("added field {}.{}", t.name, c.name));
                    }
                }
            }
            for f in t.blind_indexed() {
                let col = index_column(f);
                if !actual.contains_key(&col) {
                    // Existing rows get their index from `nestflux keys rotate`.
                    statements.push((
                        format!(
                            "ALTER TABLE {table} ADD COLUMN {} {}",
                            quote(&col),
                            Kind::Text.sql_type(pg)
                        ),
                        vec![],
                    ));
                    changes.push(format!(
                        "added blind index {}.{col} (run `nestflux keys rotate` to index existing rows)",
                        t.name
                    ));
                }
            }
            if t.owner && !actual.contains_key("owner") {
                statements.push((
                    format!(
                        "ALTER TABLE {table} ADD COLUMN {} {}",
                        quote("owner"),
                        Kind::Text.sql_type(pg)
                    ),
                    vec![],
                ));
                changes.push(format!("added owner column to {}", t.name));
            }
        }
        // Indexes may be added, never silently dropped or changed: an index of ours that
        // exists with other columns is refused like a retyped column. Indexes nobody
        // declared are left alone.
        let existing = if actual.is_empty() {
            BTreeMap::new()
        } else {
            conn.indexes(&t.name)?
        };
        for (name, cols) in t.indexes() {
            match existing.get(&name) {
                Some(have) if *have == cols => {}
                Some(have) => problems.push(format!(
                    "resources.{}: index `{name}` exists on ({}) but must be on ({}); drop or rename it by hand, then restart",
                    t.name,
                    have.join(", "),
                    cols.join(", ")
                )),
                None => {
                    let quoted: Vec<String> = cols.iter().map(|c| quote(c)).collect();
                    statements.push((
                        format!(
                            "CREATE INDEX IF NOT EXISTS {} ON {table} ({})",
                            quote(&name),
                            quoted.join(", ")
                        ),
                        vec![],
                    ));
                    if !actual.is_empty() {
                        changes.push(format!("added index {name}"));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(StoreError::Drift(problems.join("\n")));
    }
    conn.transaction(|c| {
        for (sql, binds) in &statements {
            c.execute(sql, binds)?;
        }
        Ok(())
    })?;
    Ok(changes)
}
