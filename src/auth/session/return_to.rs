//! Where the browser goes after login (`/auth/login?return_to=…`), without an open
//! redirect: a path on this server, or a URL on an origin listed in `[cors]`. Anything else
//! (another site, `//host`, `/\host`, their percent-encoded forms, control characters,
//! non-ASCII) becomes `/`.

/// The longest `return_to` accepted.
const MAX_LEN: usize = 2048;
/// Percent-decoding rounds checked: a value encoded more deeply than this is refused.
const DECODE_ROUNDS: usize = 4;

/// The checked target: a path (with query and fragment) on `own` (this server's origin,
/// e.g. `https://api.example.com`), an absolute URL on one of the `allowed` origins, or `/`.
pub fn checked(raw: Option<&str>, own: &url::Url, allowed: &[String]) -> String {
    raw.and_then(|r| check(r, own, allowed))
        .unwrap_or_else(|| "/".to_string())
}

fn check(raw: &str, own: &url::Url, allowed: &[String]) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    if raw.starts_with('/') {
        return relative(raw, own);
    }
    let url = url::Url::parse(raw).ok()?;
    let origin = url.origin().ascii_serialization();
    let listed = allowed.contains(&origin) || origin == own.origin().ascii_serialization();
    (matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && listed)
        .then(|| url.to_string())
}

/// A path on this server. Browsers read `\` as `/` and `//host` as another host, and some
/// servers and proxies decode `%2F` and `%5C` before routing: every decoding of the value
/// must still be a plain absolute path.
fn relative(raw: &str, own: &url::Url) -> Option<String> {
    let plain = |t: &str| {
        t.starts_with('/')
            && !t.starts_with("//")
            && !t.contains('\\')
            && !t.bytes().any(|b| b.is_ascii_control())
    };
    let mut text = raw.to_string();
    let mut settled = false;
    for _ in 0..=DECODE_ROUNDS {
        if !plain(&text) {
            return None;
        }
        let decoded = percent_decode(&text)?;
        if decoded == text {
            settled = true;
            break;
        }
        text = decoded;
    }
    if !settled {
        return None;
    }
    // Belt and braces: resolved against this server, it must stay on this server.
    let joined = own.join(raw).ok()?;
    if joined.origin() != own.origin() {
        return None;
    }
    let mut out = joined.path().to_string();
    if let Some(q) = joined.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = joined.fragment() {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

/// One round of percent-decoding; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let raw = text.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let pair = (
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        );
        match (raw[i], pair) {
            (b'%', (Some(h), Some(l))) => {
                out.push(h * 16 + l);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(raw: &str) -> String {
        let own = url::Url::parse("https://api.example.com").unwrap();
        checked(Some(raw), &own, &["http://localhost:5173".to_string()])
    }

    #[test]
    fn paths_on_this_server_are_kept() {
        assert_eq!(go("/"), "/");
        assert_eq!(go("/app"), "/app");
        assert_eq!(go("/app/notes?x=1&y=%20#top"), "/app/notes?x=1&y=%20#top");
        assert_eq!(go("/a/../b"), "/b");
        assert_eq!(go("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(
            checked(None, &url::Url::parse("https://a.example").unwrap(), &[]),
            "/"
        );
    }

    #[test]
    fn listed_origins_are_kept() {
        assert_eq!(go("http://localhost:5173/app"), "http://localhost:5173/app");
        assert_eq!(go("https://api.example.com/x"), "https://api.example.com/x");
    }

    #[test]
    fn open_redirects_become_the_root() {
        for evil in [
            "https://evil.example/",
            "http://localhost:5174/",
            "https://api.example.com.evil.example/",
            "https://user@api.example.com/",
            "//evil.example",
            "//evil.example/path",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/%2Fevil.example",
            "/%2fevil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/%252Fevil.example",
            "/%25252F%25252Fevil.example",
            "/%2525252F%2525252Fevil.example",
            "/x\nLocation: https://evil.example",
            "/x\r\n",
            "/x%0d%0aSet-Cookie:a=b",
            "/x%00",
            "/ evil",
            "/\tevil",
            "/über",
            "javascript:alert(1)",
            "data:text/html,hi",
            "evil.example",
            "",
        ] {
            assert_eq!(go(evil), "/", "{evil:?}");
        }
        assert_eq!(go(&format!("/{}", "a".repeat(MAX_LEN))), "/");
    }
}
