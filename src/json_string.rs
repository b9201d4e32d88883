//! JSON string literals, escaped exactly as serde_json escapes them, but without its
//! byte-by-byte loop and its `io::Write` detour. Every row a list returns (`store::crud`)
//! and every access and audit line (`logging`) goes through here: most of that text (ids,
//! timestamps, sealed values, hashes) has nothing to escape, so the scan for a byte that
//! needs it tests eight bytes at a time.

/// Appends `s` to `out` as a JSON string, quotes included.
#[inline]
pub fn push(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut rest = s;
    while let Some(at) = first_to_escape(rest.as_bytes()) {
        // Every byte escaped is ASCII, so `at` and `at + 1` are char boundaries.
        let (clean, tail) = rest.split_at(at);
        out.push_str(clean);
        out.push_str(escape(tail.as_bytes()[0]));
        rest = &tail[1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// The escape of a byte [`first_to_escape`] found: `"`, `\\` or a control byte.
fn escape(b: u8) -> &'static str {
    match b {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        _ => CONTROL[usize::from(b & 0x1f)],
    }
}

/// The escapes of the bytes below 0x20, as serde_json writes them.
const CONTROL: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// The index of the first byte JSON must escape in a string: `"`, `\\` or a control byte.
#[inline]
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // A byte below 0x20, or equal to '"' or '\\' (the zero-byte test on x XOR the byte);
        // may flag a byte that is none of them (a borrow from the byte below), never miss one.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        let flags = (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')));
        if flags != 0
            && let Some(i) = chunk.iter().position(|&b| needs(b))
        {
            return Some(at + i);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs(b))
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..0x80).map(char::from).collect();
        every_ascii.push_str("é ☃ 𝄞 \u{2028} end");
        let mut cases: Vec<String> = ["", "plain", "a\"b\\c", "\u{1}\u{1f}\u{7f}", &every_ascii]
            .map(String::from)
            .to_vec();
        // Each escaped byte at every offset of the 8-byte scan, among near misses (`!`, `#`,
        // `[`, `]`, 0x20) and multi-byte characters.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..20 {
                let mut s: String = "!# []é".chars().cycle().take(19).collect();
                s.insert(
                    s.char_indices().nth(at).map_or(s.len(), |(i, _)| i),
                    special,
                );
                cases.push(s);
            }
        }
        for s in &cases {
            let expected = format!("x{}", serde_json::to_string(s).unwrap());
            let mut out = String::from("x");
            push(&mut out, s);
            assert_eq!(out, expected, "{s:?}");
        }
    }
}
