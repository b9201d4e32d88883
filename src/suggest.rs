//! Did-you-mean: the declared name nearest to a mistyped one, by edit distance, when one is
//! close enough to be the name meant (as rustc does: at most a third of the length).
//!
//! ```
//! use nestflux::suggest::closest;
//! assert_eq!(closest("write", ["writes", "global"]), Some("writes".to_string()));
//! assert_eq!(closest("permision", ["permission", "public"]), Some("permission".to_string()));
//! assert_eq!(closest("zebra", ["writes", "global"]), None);
//! ```

/// The candidate nearest to `name`, if it is close enough; ties go to the first.
pub fn closest<I, S>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let lower = name.to_ascii_lowercase();
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let c = c.as_ref();
        if c == name || c.is_empty() {
            continue;
        }
        let distance = if c.to_ascii_lowercase() == lower {
            // Only the case differs: as good as it gets.
            0
        } else {
            strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase())
        };
        if distance <= limit && best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((distance, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_only() {
        assert_eq!(
            closest("viewr", ["viewer", "editor", "admin"]).as_deref(),
            Some("viewer")
        );
        assert_eq!(closest("Viewer", ["viewer"]).as_deref(), Some("viewer"));
        assert_eq!(closest("bnd", ["bind", "workers"]).as_deref(), Some("bind"));
        assert_eq!(closest("nots", ["notes"]).as_deref(), Some("notes"));
        assert_eq!(closest("x", ["y"]).as_deref(), Some("y"));
        assert_eq!(closest("audit", ["notes"]), None);
        assert_eq!(
            closest("notes", ["notes"]),
            None,
            "an exact name is no suggestion"
        );
        let none: [&str; 0] = [];
        assert_eq!(closest("notes", none), None);
    }
}
