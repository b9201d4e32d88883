//! `[audit]`: how long audit rows are kept, and the fingerprint of the effective
//! configuration (secrets removed) that the `config.loaded` event records.

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Profile;
use super::diag::Diagnostics;
use crate::config::RawConfig;
use crate::config::source::may_hold_secret;

/// The shortest retention accepted: pruning younger rows would defeat the log.
pub const MIN_RETAIN: Duration = Duration::from_secs(24 * 3600);

/// What the audit log needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct AuditPlan {
    /// Rows older than this are pruned (behind an anchor row); `None` keeps every row.
    pub retain: Option<Duration>,
    /// SHA-256 (hex) of the effective configuration as canonical JSON, every key that can
    /// hold a secret removed.
    pub config_sha256: String,
}

/// Compiles `[audit]`.
pub fn compile_audit(raw: &RawConfig, _profile: Profile, d: &mut Diagnostics) -> AuditPlan {
    let retain = raw
        .audit
        .as_ref()
        .and_then(|a| a.retain.as_deref())
        .and_then(|text| match super::units::duration(text) {
            Ok(t) if t >= MIN_RETAIN => Some(t),
            Ok(_) => {
                d.error(
                    "audit.retain",
                    "must be at least 1d: audit rows younger than a day are never pruned",
                );
                None
            }
            Err(e) => {
                d.error("audit.retain", e);
                None
            }
        });
    AuditPlan {
        retain,
        config_sha256: fingerprint(raw),
    }
}

/// SHA-256 of the configuration as JSON (keys sorted, no whitespace) without any key that
/// can hold a secret (`may_hold_secret`: URLs, keys, client secrets, hashes, passwords).
pub fn fingerprint(raw: &RawConfig) -> String {
    let mut v = serde_json::to_value(raw).unwrap_or(Value::Null);
    strip_secrets(&mut v);
    let text = v.to_string();
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn strip_secrets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !may_hold_secret(k));
            map.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_ignores_secrets_and_follows_everything_else() {
        let mut a = RawConfig::default();
        let base = fingerprint(&a);
        a.database.url = "postgres://u:hunter2@db/x".into();
        assert_eq!(fingerprint(&a), base, "the URL may hold a password");
        a.database.pool_size += 1;
        assert_ne!(fingerprint(&a), base);
    }
}
