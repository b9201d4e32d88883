-- The audit log: one row per event, chained. `hash` = SHA-256(prev_hash || canonical
-- encoding of the event), defined in src/audit/chain.rs and docs/audit.md. Rows are only
-- ever appended (and, by retention, deleted from the oldest end behind an anchor event).
CREATE TABLE nestflux_audit (
    seq        INTEGER PRIMARY KEY NOT NULL,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    details    TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client_ip  TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX nestflux_audit_at ON nestflux_audit (at, seq);
CREATE INDEX nestflux_audit_actor ON nestflux_audit (actor, seq);
CREATE INDEX nestflux_audit_action ON nestflux_audit (action, seq);
CREATE INDEX nestflux_audit_record ON nestflux_audit (resource, record_id, seq);
