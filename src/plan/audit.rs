//! `[audit]`: how long audit rows are kept. (The `config.loaded` event records the plan's
//! `config_hash`, the one `check` prints.)

use std::time::Duration;

use super::Profile;
use super::diag::Diagnostics;
use crate::config::RawConfig;

/// The shortest retention accepted: pruning younger rows would defeat the log.
pub const MIN_RETAIN: Duration = Duration::from_secs(24 * 3600);

/// What the audit log needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct AuditPlan {
    /// Rows older than this are pruned (behind an anchor row); `None` keeps every row.
    pub retain: Option<Duration>,
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
    AuditPlan { retain }
}
