//! Who the client is at the network level: the peer address, or — only when the peer is a
//! declared trusted proxy — the rightmost untrusted address its forwarding headers report.
//!
//! Forwarding headers are client-writable, so they are read only from trusted peers, and
//! only from the right: each trusted proxy appends the address it saw, so the first
//! untrusted address from the right is the last one a proxy we trust vouched for. Anything
//! malformed on that walk falls back to the peer. `X-Forwarded-For` is read when present
//! (nginx, HAProxy, Envoy, Caddy, Traefik, cloud load balancers all maintain it); RFC 7239
//! `Forwarded` only when it is absent — a proxy that emits only `Forwarded` must strip any
//! incoming `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The resolved client address, stored in the request extensions for later stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Hops read from the right before a chain counts as malformed: no real deployment has
/// more trusted proxies than this, and the walk must stay cheap on hostile input.
const MAX_HOPS: usize = 32;

/// The client address for a request from `peer` carrying `headers`.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = if headers.contains_key(X_FORWARDED_FOR) {
        forwarded_for_hops(headers)
    } else if headers.contains_key(FORWARDED) {
        forwarded_hops(headers)
    } else {
        return peer;
    };
    let Some(hops) = hops else {
        return peer;
    };
    rightmost_untrusted(&hops, trusted).unwrap_or(peer)
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// Walks the hops right to left: the first untrusted address wins; a chain of only trusted
/// addresses yields its leftmost; an unreadable hop or an overlong chain yields `None`.
fn rightmost_untrusted(hops: &[Option<IpAddr>], trusted: &[IpNet]) -> Option<IpAddr> {
    let mut leftmost_trusted = None;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let ip = (*hop)?.to_canonical();
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
        leftmost_trusted = Some(ip);
    }
    if hops.len() > MAX_HOPS {
        return None;
    }
    leftmost_trusted
}

/// Every `X-Forwarded-For` entry, in order across header lines; `None` when a line is not
/// visible ASCII.
fn forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        let line = line.to_str().ok()?;
        hops.extend(line.split(',').map(|entry| parse_node(entry.trim())));
    }
    Some(hops)
}

/// The `for=` node of every `Forwarded` element, in order across header lines; an element
/// without `for=` is an unreadable hop.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in headers.get_all(FORWARDED) {
        let line = line.to_str().ok()?;
        for element in split_unquoted(line, ',') {
            let node = split_unquoted(element, ';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| unquote(value.trim()))
            });
            hops.push(node.flatten().and_then(|n| parse_node(&n)));
        }
    }
    Some(hops)
}

/// Splits on `sep` outside RFC 9110 quoted strings.
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&s[i + c.len_utf8()..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// A token as is, a quoted string unescaped; `None` for an unterminated quote.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`;
/// anything else (`unknown`, obfuscated `_ids`, garbage) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "10.0.0.1";
    const TRUSTED: &[&str] = &["10.0.0.0/8", "2001:db8:ffff::/48"];

    /// (peer, headers, expected client)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static str,
    );

    #[test]
    fn resolution_table() {
        let cases: &[Case] = &[
            // Untrusted peer: headers are ignored, whatever they say.
            (
                "203.0.113.9",
                &[("x-forwarded-for", "198.51.100.1")],
                "203.0.113.9",
            ),
            (
                "203.0.113.9",
                &[("forwarded", "for=198.51.100.1")],
                "203.0.113.9",
            ),
            // No header from a trusted proxy: the proxy itself.
            (PROXY, &[], PROXY),
            // One trusted proxy.
            (
                PROXY,
                &[("x-forwarded-for", "198.51.100.1")],
                "198.51.100.1",
            ),
            // Client-spoofed entries to the left of the real one are never reached.
            (
                PROXY,
                &[("x-forwarded-for", "1.1.1.1, 198.51.100.1")],
                "198.51.100.1",
            ),
            (
                PROXY,
                &[("x-forwarded-for", "garbage, 198.51.100.1")],
                "198.51.100.1",
            ),
            // Trusted chain: rightmost untrusted.
            (
                PROXY,
                &[(
                    "x-forwarded-for",
                    "1.1.1.1, 198.51.100.1, 10.0.0.7, 10.0.0.8",
                )],
                "198.51.100.1",
            ),
            // Chain split over several header lines, in order.
            (
                PROXY,
                &[
                    ("x-forwarded-for", "1.1.1.1, 198.51.100.1"),
                    ("x-forwarded-for", "10.0.0.7"),
                ],
                "198.51.100.1",
            ),
            // All trusted: the leftmost.
            (
                PROXY,
                &[("x-forwarded-for", "10.0.0.5, 10.0.0.7")],
                "10.0.0.5",
            ),
            // Ports and brackets.
            (
                PROXY,
                &[("x-forwarded-for", "198.51.100.1:4711")],
                "198.51.100.1",
            ),
            (
                PROXY,
                &[("x-forwarded-for", "[2001:db8::1]:443")],
                "2001:db8::1",
            ),
            (PROXY, &[("x-forwarded-for", "2001:db8::1")], "2001:db8::1"),
            // IPv4-mapped IPv6 is the IPv4 client.
            (
                PROXY,
                &[("x-forwarded-for", "::ffff:198.51.100.1")],
                "198.51.100.1",
            ),
            (
                "::ffff:203.0.113.9",
                &[("x-forwarded-for", "198.51.100.1")],
                "203.0.113.9",
            ),
            // Garbage where the trusted proxy writes: fall back to the peer.
            (PROXY, &[("x-forwarded-for", "not-an-ip")], PROXY),
            (PROXY, &[("x-forwarded-for", "198.51.100.1, ")], PROXY),
            (PROXY, &[("x-forwarded-for", "")], PROXY),
            (
                PROXY,
                &[("x-forwarded-for", "198.51.100.1, 10.0.0.7, bogus")],
                PROXY,
            ),
            // Forwarded (RFC 7239).
            (PROXY, &[("forwarded", "for=198.51.100.1")], "198.51.100.1"),
            (
                PROXY,
                &[("forwarded", "For=\"198.51.100.1:8080\";proto=https")],
                "198.51.100.1",
            ),
            (
                PROXY,
                &[("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")],
                "2001:db8:cafe::17",
            ),
            (
                PROXY,
                &[("forwarded", "for=\"[2001:db8:cafe::17]\";by=10.0.0.1")],
                "2001:db8:cafe::17",
            ),
            (
                PROXY,
                &[(
                    "forwarded",
                    "for=1.1.1.1, for=198.51.100.1;proto=http, for=10.0.0.7",
                )],
                "198.51.100.1",
            ),
            (
                PROXY,
                &[("forwarded", "for=1.1.1.1"), ("forwarded", "for=10.0.0.7")],
                "1.1.1.1",
            ),
            // A quoted comma does not split elements.
            (
                PROXY,
                &[("forwarded", "for=1.1.1.1;x=\"a,b\", for=198.51.100.1")],
                "198.51.100.1",
            ),
            // Obfuscated, unknown, missing `for`, unterminated quote: the peer.
            (PROXY, &[("forwarded", "for=unknown")], PROXY),
            (PROXY, &[("forwarded", "for=_hidden")], PROXY),
            (PROXY, &[("forwarded", "proto=https")], PROXY),
            (PROXY, &[("forwarded", "for=\"198.51.100.1")], PROXY),
            (PROXY, &[("forwarded", "for=\"[2001:db8::1\"")], PROXY),
            // X-Forwarded-For wins over Forwarded.
            (
                PROXY,
                &[
                    ("forwarded", "for=1.1.1.1"),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
                "198.51.100.1",
            ),
        ];
        let trusted = nets(TRUSTED);
        for (peer, pairs, want) in cases {
            let got = resolve(ip(peer), &headers(pairs), &trusted);
            assert_eq!(got, ip(want), "peer {peer}, headers {pairs:?}");
        }
    }

    #[test]
    fn nothing_trusted_means_the_peer() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(resolve(ip(PROXY), &h, &[]), ip(PROXY));
    }

    #[test]
    fn trusted_ipv6_proxy() {
        let h = headers(&[("x-forwarded-for", "198.51.100.1, 2001:db8:ffff::2")]);
        let got = resolve(ip("2001:db8:ffff::1"), &h, &nets(TRUSTED));
        assert_eq!(got, ip("198.51.100.1"));
    }

    #[test]
    fn an_overlong_trusted_chain_is_malformed() {
        let chain = vec!["10.0.0.9"; MAX_HOPS + 1].join(", ");
        let h = headers(&[("x-forwarded-for", &chain)]);
        assert_eq!(resolve(ip(PROXY), &h, &nets(TRUSTED)), ip(PROXY));
        let chain = vec!["10.0.0.9"; MAX_HOPS].join(", ");
        let h = headers(&[("x-forwarded-for", &chain)]);
        assert_eq!(resolve(ip(PROXY), &h, &nets(TRUSTED)), ip("10.0.0.9"));
    }

    #[test]
    fn non_ascii_header_falls_back_to_the_peer() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1\xff").unwrap(),
        );
        assert_eq!(resolve(ip(PROXY), &h, &nets(TRUSTED)), ip(PROXY));
    }
}
