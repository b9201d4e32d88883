//! What a bucket is counted by: an IPv4 address, an IPv6 /64, a user or an API key.

use std::net::IpAddr;

use crate::auth::{Caller, CallerKind};
use crate::plan::ratelimit::LimitKey;

/// The key of one bucket within one policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// An IPv4 client.
    V4(u32),
    /// An IPv6 client by its /64: one host commonly owns a whole /64, so a finer key would
    /// hand it 2^64 buckets.
    V6(u64),
    /// An authenticated subject.
    User(Box<str>),
    /// A declared API key, by name.
    ApiKey(Box<str>),
    /// The one bucket shared by new keys once a policy holds its maximum number of keys.
    Overflow,
}

impl BucketKey {
    /// The key of a client address (IPv4-mapped IPv6 counts as IPv4).
    pub fn ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }

    /// The key `kind` picks for a request from `ip` made by `caller`; callers without the
    /// identity the policy counts by (anonymous, or not an API key) are counted by ip.
    pub fn for_request(kind: LimitKey, ip: IpAddr, caller: Option<&Caller>) -> Self {
        match (kind, caller) {
            (LimitKey::User, Some(c)) => Self::User(c.subject.as_str().into()),
            (
                LimitKey::ApiKey,
                Some(Caller {
                    kind: CallerKind::ApiKey(name),
                    ..
                }),
            ) => Self::ApiKey(name.as_str().into()),
            _ => Self::ip(ip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = BucketKey::ip(ip("2001:db8:1:2:aaaa::1"));
        let b = BucketKey::ip(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = BucketKey::ip(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a, BucketKey::V6(0x2001_0db8_0001_0002));
    }

    #[test]
    fn ipv4_is_exact_and_mapped_ipv4_is_ipv4() {
        assert_ne!(
            BucketKey::ip(ip("192.0.2.1")),
            BucketKey::ip(ip("192.0.2.2"))
        );
        assert_eq!(
            BucketKey::ip(ip("::ffff:192.0.2.1")),
            BucketKey::ip(ip("192.0.2.1"))
        );
    }

    fn caller(subject: &str, kind: CallerKind) -> Caller {
        Caller {
            subject: subject.into(),
            roles: Vec::new(),
            kind,
        }
    }

    #[test]
    fn keys_by_kind_with_ip_fallback() {
        let addr = ip("192.0.2.1");
        let user = caller("alice", CallerKind::Bearer);
        let key = caller("apikey:ci", CallerKind::ApiKey("ci".into()));
        let by_ip = BucketKey::ip(addr);
        assert_eq!(
            BucketKey::for_request(LimitKey::Ip, addr, Some(&user)),
            by_ip
        );
        assert_eq!(
            BucketKey::for_request(LimitKey::User, addr, Some(&user)),
            BucketKey::User("alice".into())
        );
        assert_eq!(BucketKey::for_request(LimitKey::User, addr, None), by_ip);
        assert_eq!(
            BucketKey::for_request(LimitKey::ApiKey, addr, Some(&key)),
            BucketKey::ApiKey("ci".into())
        );
        assert_eq!(
            BucketKey::for_request(LimitKey::ApiKey, addr, Some(&user)),
            by_ip
        );
        assert_eq!(BucketKey::for_request(LimitKey::ApiKey, addr, None), by_ip);
        // An API key's subject never collides with a user of the same name.
        assert_ne!(
            BucketKey::for_request(LimitKey::User, addr, Some(&key)),
            BucketKey::ApiKey("apikey:ci".into())
        );
    }
}
