//! Diagnostics as a person or a tool reads them: cargo-like text (`FILE:LINE:COL`, the line,
//! a caret, `help: did you mean …`) rendered by annotate-snippets, or JSON lines with the
//! same facts. A value set by a variable names the variable instead of a line.

use std::fmt::Write as _;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Group, Level, Origin as SnippetOrigin, Renderer, Snippet};
use serde_json::json;

use super::diag::{Code, Diagnostic};
use crate::config::{ConfigSource, Origin};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Refuses the file.
    Error,
    /// Worth a look.
    Warning,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// Where a diagnostic points, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A range of the file, with 1-based line and column (in characters) of its start and end.
    File {
        /// Byte range.
        span: Range<usize>,
        /// Line of the start.
        line: usize,
        /// Column of the start.
        column: usize,
        /// Line of the end.
        end_line: usize,
        /// Column just after the end.
        end_column: usize,
    },
    /// A variable.
    Env(String),
    /// Nowhere in particular (a default).
    None,
}

/// 1-based line and column (in characters) of byte `at` of `text`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Where `d` points in `source`.
pub fn place(d: &Diagnostic, source: Option<&ConfigSource>) -> Place {
    let Some(source) = source else {
        return Place::None;
    };
    match source.origin(&d.path, d.code == Code::UnknownKey) {
        Origin::File(span) => {
            // A table header span ends with its newline; point at the header only.
            let mut span = span;
            while span.end > span.start
                && source
                    .text
                    .as_bytes()
                    .get(span.end - 1)
                    .is_some_and(|b| b.is_ascii_whitespace())
            {
                span.end -= 1;
            }
            let (line, column) = line_col(&source.text, span.start);
            let (end_line, end_column) = line_col(&source.text, span.end);
            Place::File {
                span,
                line,
                column,
                end_line,
                end_column,
            }
        }
        Origin::Env { var, .. } => Place::Env(var),
        Origin::Default => Place::None,
    }
}

/// Orders diagnostics by where they point in the file (variables and defaults last),
/// keeping the order found among equals.
pub fn sort(diags: &mut [Diagnostic], source: Option<&ConfigSource>) {
    diags.sort_by_cached_key(|d| match place(d, source) {
        Place::File { span, .. } => (0, span.start),
        Place::Env(_) => (1, 0),
        Place::None => (2, 0),
    });
}

/// The file name to print: the path as given.
fn file_name(source: &ConfigSource) -> String {
    source.path.display().to_string()
}

/// One diagnostic as cargo-like text, followed by a blank line. `color` adds ANSI styles.
pub fn human(
    d: &Diagnostic,
    severity: Severity,
    source: Option<&ConfigSource>,
    color: bool,
) -> String {
    let level = match severity {
        Severity::Error => Level::ERROR,
        Severity::Warning => Level::WARNING,
    };
    let title = title(d);
    let place = place(d, source);
    let help = d
        .suggestion
        .as_ref()
        .map(|s| format!("did you mean `{s}`?"));
    let file = source.map(file_name).unwrap_or_default();
    let label = match d.code {
        Code::UnknownKey => "unknown key",
        _ => "",
    };
    let mut group = Group::with_title(level.primary_title(title.as_str()).id(d.code.as_str()));
    // A secret found in the file is shown masked: the report goes to terminals and CI logs.
    let masked;
    let text = match (&place, source) {
        (Place::File { span, .. }, Some(src)) if d.code == Code::SecretInFile => {
            masked = mask(&src.text, span.clone());
            masked.as_str()
        }
        (_, Some(src)) => src.text.as_str(),
        (_, None) => "",
    };
    match (&place, source) {
        (Place::File { span, .. }, Some(_)) => {
            group = group.element(
                Snippet::source(text)
                    .path(file.as_str())
                    .annotation(AnnotationKind::Primary.span(span.clone()).label(label)),
            );
        }
        (Place::Env(var), _) => {
            group = group.element(SnippetOrigin::path(format!("environment variable {var}")));
        }
        _ => {}
    }
    if let Some(h) = &help {
        group = group.element(Level::HELP.message(h.as_str()));
    }
    let report: [Group<'_>; 1] = [group];
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    // A blank line between diagnostics, as cargo prints them.
    let mut out = renderer.render(&report);
    out.push_str("\n\n");
    out
}

/// `text` with every character inside `span` (but a surrounding pair of quotes) replaced by
/// `*` bytes, so byte offsets stay where they were.
fn mask(text: &str, span: Range<usize>) -> String {
    let Some(value) = text.get(span.clone()) else {
        return text.to_string();
    };
    let inner = match value.as_bytes() {
        [q, .., e] if matches!(q, b'"' | b'\'') && q == e => 1..value.len() - 1,
        _ => 0..value.len(),
    };
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..span.start + inner.start]);
    for c in value[inner.clone()].chars() {
        out.extend(std::iter::repeat_n('*', c.len_utf8()));
    }
    out.push_str(&text[span.start + inner.end..]);
    out
}

/// `path: message`, the headline of a rendered diagnostic.
fn title(d: &Diagnostic) -> String {
    if d.path.is_empty() {
        d.message.clone()
    } else {
        format!("{}: {}", d.path, d.message)
    }
}

/// One diagnostic as a JSON line: severity, code, path, file, line, column (and end),
/// variable, message, suggestion.
pub fn json_line(d: &Diagnostic, severity: Severity, source: Option<&ConfigSource>) -> String {
    let (file, line, column, end_line, end_column, variable) = match place(d, source) {
        Place::File {
            line,
            column,
            end_line,
            end_column,
            ..
        } => (
            source.map(file_name),
            Some(line),
            Some(column),
            Some(end_line),
            Some(end_column),
            None,
        ),
        Place::Env(var) => (None, None, None, None, None, Some(var)),
        Place::None => (source.map(file_name), None, None, None, None, None),
    };
    json!({
        "severity": severity.name(),
        "code": d.code.as_str(),
        "path": d.path,
        "file": file,
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "variable": variable,
        "message": d.message,
        "suggestion": d.suggestion,
    })
    .to_string()
}

/// Several diagnostics, sorted by place, as text.
pub fn human_all(
    diags: &[Diagnostic],
    severity: Severity,
    source: Option<&ConfigSource>,
    color: bool,
) -> String {
    let mut sorted = diags.to_vec();
    sort(&mut sorted, source);
    let mut out = String::new();
    for d in &sorted {
        let _ = write!(out, "{}", human(d, severity, source, color));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceMap;

    fn source(text: &str) -> ConfigSource {
        ConfigSource {
            path: "nestflux.toml".into(),
            text: text.into(),
            map: SourceMap::of(toml_edit::ImDocument::parse(text.to_string()).unwrap()),
            ..ConfigSource::default()
        }
    }

    #[test]
    fn a_secret_in_the_file_is_masked_in_the_snippet() {
        let text = "[auth.session]\nclient_secret = \"hunter2é\"\n";
        let src = source(text);
        let d = Diagnostic::new("auth.session.client_secret", "must not be in the file")
            .with_code(Code::SecretInFile);
        let out = human(&d, Severity::Error, Some(&src), false);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("client_secret = \"*********\""), "{out}");
    }

    #[test]
    fn lines_and_columns_count_characters() {
        assert_eq!(line_col("ab\ncdé f", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé f", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé f", 7), (2, 4));
    }

    #[test]
    fn cargo_like_text_and_json_lines() {
        let text = "[[routes]]\nmethod = \"GET\"\nrate_limit = \"write\"\n";
        let src = source(text);
        let d = Diagnostic::new("routes[0].rate_limit", "no policy named \"write\"")
            .with_code(Code::UnknownPolicy)
            .with_suggestion(Some("writes".into()));
        let out = human(&d, Severity::Error, Some(&src), false);
        assert!(
            out.starts_with(
                "error[unknown-policy]: routes[0].rate_limit: no policy named \"write\"\n"
            ),
            "{out}"
        );
        assert!(out.contains("--> nestflux.toml:3:14"), "{out}");
        assert!(out.contains("3 | rate_limit = \"write\""), "{out}");
        assert!(out.contains("^^^^^^^"), "{out}");
        assert!(out.contains("help: did you mean `writes`?"), "{out}");

        let line: serde_json::Value =
            serde_json::from_str(&json_line(&d, Severity::Error, Some(&src))).unwrap();
        assert_eq!(line["line"], 3);
        assert_eq!(line["column"], 14);
        assert_eq!(line["end_column"], 21);
        assert_eq!(line["code"], "unknown-policy");
        assert_eq!(line["suggestion"], "writes");
        assert_eq!(line["file"], "nestflux.toml");
    }

    #[test]
    fn a_route_without_a_key_points_at_its_header() {
        let text = "[[routes]]\nmethod = \"GET\"\n\n[[routes]]\nmethod = \"POST\"\n";
        let src = source(text);
        let d = Diagnostic::new("routes[1]", "declares none").with_code(Code::NoAccessRule);
        let Place::File {
            line, column, span, ..
        } = place(&d, Some(&src))
        else {
            panic!("no place");
        };
        assert_eq!((line, column), (4, 1));
        assert_eq!(&text[span], "[[routes]]");
    }
}
