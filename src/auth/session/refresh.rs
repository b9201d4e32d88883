//! Exactly-once refresh of a session's tokens: one request per session and process does
//! it (the others go on with the still-valid token, or wait when it has expired), the
//! refresh is claimed in the database before the provider is called, and its result is
//! stored only while the row's generation is unchanged. Roles follow the new tokens.

use std::time::Duration;

use serde_json::{Map, Value};

use super::provider::ProviderError;
use super::{
    Failure, REFRESH_LEASE, REFRESH_MARGIN, REFRESH_POLL, SESSIONS, Sessions, aad, access_expired,
    id_token, millis, now_ms, refresh_due, roles_json,
};
use crate::auth::jwt::BearerVerifier;
use crate::crypto::KeyRing;
use crate::plan::roles::RoleId;
use crate::store::StoreError;
use crate::store::sessions::{self as rows, Refreshed, SessionRow};

impl Sessions {
    /// Records a failed session refresh in the audit log (through the sink).
    fn refresh_failed(&self, subject: &str, reason: &str) {
        self.audit.offer(
            crate::audit::Event::now(subject, "session.refresh_failed", "failed")
                .details(&serde_json::json!({ "reason": reason })),
        );
    }

    /// Refreshes a session whose access token is near expiry. Within this process one
    /// request per session does it while the others wait (expired token) or go on with the
    /// still-valid one; across processes the database lease decides.
    pub(super) async fn refresh(
        &self,
        id_hash: &str,
        key: [u8; 32],
        row: SessionRow,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let expired = access_expired(&row, now_ms());
        let lock = self.locks.get(key);
        let guard = if expired {
            Some(lock.clone().lock_owned().await)
        } else {
            lock.clone().try_lock_owned().ok()
        };
        let result = match guard {
            Some(_guard) => self.refresh_locked(id_hash, ring, bearer).await,
            // Another request of this process refreshes; this token is still good.
            None => Ok(row),
        };
        self.locks.release(key, lock);
        result
    }

    async fn refresh_locked(
        &self,
        id_hash: &str,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let deadline = now_ms() + millis(REFRESH_LEASE) + 5_000;
        loop {
            let row = self.load(id_hash).await?.ok_or(Failure::Ended)?;
            let now = now_ms();
            if !refresh_due(&row, now) {
                return Ok(row);
            }
            let lease = now + millis(REFRESH_LEASE);
            let (hash, generation) = (id_hash.to_string(), row.generation);
            let claimed = self
                .store
                .run(move |c| rows::claim_refresh(c, &hash, generation, now, lease))
                .await?;
            if claimed {
                return self.refresh_claimed(id_hash, row, ring, bearer).await;
            }
            if !access_expired(&row, now) {
                // Another instance refreshes; this token is still good.
                return Ok(row);
            }
            if now > deadline {
                return Err(Failure::Provider(ProviderError::Unavailable(
                    "a refresh in progress elsewhere did not finish".into(),
                )));
            }
            tokio::time::sleep(REFRESH_POLL).await;
        }
    }

    /// The refresh grant for a session whose refresh this request has claimed.
    async fn refresh_claimed(
        &self,
        id_hash: &str,
        row: SessionRow,
        ring: &KeyRing,
        bearer: Option<&BearerVerifier>,
    ) -> Result<SessionRow, Failure> {
        let sealed = row.refresh_token.clone().unwrap_or_default();
        let refresh_token = match ring.open(&aad(SESSIONS, "refresh_token", id_hash), &sealed) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target: "nestflux::auth", error = %e, "a session's refresh token does not decrypt; session ended");
                self.refresh_failed(&row.subject, "undecryptable");
                self.delete_quietly(id_hash).await;
                return Err(Failure::Ended);
            }
        };
        let tokens = match self.provider.refresh(refresh_token).await {
            Ok(t) => t,
            Err(ProviderError::Rejected(code)) => {
                tracing::info!(target: "nestflux::auth", subject = %row.subject, error = %code, "the provider refused the refresh; session ended");
                self.refresh_failed(&row.subject, "refused");
                self.delete_quietly(id_hash).await;
                return Err(Failure::Ended);
            }
            Err(e) => {
                tracing::warn!(target: "nestflux::auth", error = %e, "session refresh failed; will retry");
                self.refresh_failed(&row.subject, "provider-unreachable");
                let (hash, generation) = (id_hash.to_string(), row.generation);
                let _ = self
                    .store
                    .run(move |c| rows::release_refresh(c, &hash, generation))
                    .await;
                return if access_expired(&row, now_ms()) {
                    Err(Failure::Provider(e))
                } else {
                    Ok(row)
                };
            }
        };
        let verified = match &tokens.id_token {
            Some(t) => {
                let expect = id_token::Expect {
                    client_id: &self.plan.client_id,
                    nonce_sha256: None,
                    access_token: Some(&tokens.access_token),
                    subject: Some(&row.subject),
                    leeway_secs: self.leeway_secs,
                };
                match id_token::verify(&self.jwks, &self.allowed, t, &expect).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::warn!(target: "nestflux::auth", error = %e, "refreshed ID token refused; session ended");
                        self.refresh_failed(&row.subject, "id-token-refused");
                        self.delete_quietly(id_hash).await;
                        return Err(Failure::Ended);
                    }
                }
            }
            None => None,
        };
        let now = now_ms();
        let identity = self
            .identity(
                bearer,
                &tokens.access_token,
                &row.subject,
                verified.as_ref().map(|v| &v.claims),
            )
            .await;
        let roles = identity
            .roles
            .map(|r| roles_json(&r))
            .unwrap_or_else(|| row.roles.clone());
        let can_refresh = tokens.refresh_token.is_some() || row.refresh_token.is_some();
        let (access_expires_at, refresh_at) =
            expiries(now, tokens.expires_in, identity.exp_ms, can_refresh);
        let seal = |field: &str, value: &str| {
            ring.seal(&aad(SESSIONS, field, id_hash), value)
                .map_err(|e| Failure::Store(StoreError::Database(e.to_string())))
        };
        let refreshed = Refreshed {
            roles,
            access_token: seal("access_token", &tokens.access_token)?,
            refresh_token: match &tokens.refresh_token {
                Some(t) => Some(seal("refresh_token", t)?),
                None => row.refresh_token.clone(),
            },
            id_token: match &tokens.id_token {
                Some(t) => Some(seal("id_token", t)?),
                None => row.id_token.clone(),
            },
            access_expires_at,
            refresh_at,
        };
        let (hash, generation, stored) = (id_hash.to_string(), row.generation, refreshed.clone());
        let kept = self
            .store
            .run(move |c| rows::store_refresh(c, &hash, generation, &stored))
            .await?;
        if !kept {
            // Logged out (or ended) while the provider answered: it stays ended.
            return Err(Failure::Ended);
        }
        tracing::info!(target: "nestflux::auth", subject = %row.subject, rotated = tokens.refresh_token.is_some(), "session tokens refreshed");
        Ok(SessionRow {
            roles: refreshed.roles,
            access_token: refreshed.access_token,
            refresh_token: refreshed.refresh_token,
            id_token: refreshed.id_token,
            access_expires_at,
            refresh_at,
            generation: row.generation + 1,
            refresh_lease_until: None,
            ..row
        })
    }

    /// Roles (and the access token's expiry) from the access token when it is a JWT the
    /// bearer verifier accepts for the same subject, else roles from the ID token claims.
    pub(super) async fn identity(
        &self,
        bearer: Option<&BearerVerifier>,
        access_token: &str,
        subject: &str,
        id_claims: Option<&Map<String, Value>>,
    ) -> Identity {
        if let Some(b) = bearer
            // The token comes from the provider's token endpoint, not from the client:
            // nothing to charge to anyone's budget.
            && let Ok(v) = b.verify(access_token, &crate::auth::Unlimited).await
            && v.caller.subject == subject
        {
            return Identity {
                roles: Some(v.caller.roles.clone()),
                exp_ms: i64::try_from(v.exp).ok().map(|s| s.saturating_mul(1000)),
            };
        }
        Identity {
            roles: id_claims.map(|c| self.id_roles.roles(c)),
            exp_ms: None,
        }
    }
}

/// The roles and access-token expiry learnt from a token response.
pub(super) struct Identity {
    pub(super) roles: Option<Vec<RoleId>>,
    pub(super) exp_ms: Option<i64>,
}

/// When the access token expires and when to refresh it: `REFRESH_MARGIN` before, or at half
/// its life when that is shorter; never without a refresh token.
pub(super) fn expiries(
    now: i64,
    expires_in: Option<Duration>,
    jwt_exp_ms: Option<i64>,
    can_refresh: bool,
) -> (Option<i64>, Option<i64>) {
    let expires_at = expires_in
        .map(|d| now.saturating_add(millis(d)))
        .or(jwt_exp_ms);
    let Some(at) = expires_at else {
        return (None, None);
    };
    let life = (at - now).max(0);
    let margin = millis(REFRESH_MARGIN).min(life / 2);
    (Some(at), can_refresh.then_some(at - margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_a_minute_early_or_at_half_life() {
        let five_min = Some(Duration::from_secs(300));
        assert_eq!(
            expiries(1_000, five_min, None, true),
            (Some(301_000), Some(241_000))
        );
        assert_eq!(
            expiries(1_000, five_min, None, false),
            (Some(301_000), None)
        );
        assert_eq!(
            expiries(0, Some(Duration::from_secs(10)), None, true),
            (Some(10_000), Some(5_000))
        );
        assert_eq!(
            expiries(0, None, Some(120_000), true),
            (Some(120_000), Some(60_000))
        );
        assert_eq!(expiries(0, None, None, true), (None, None));
    }
}
