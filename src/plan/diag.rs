//! Compile diagnostics: every error and warning, each with the path of the key it is about.

use std::fmt;

use super::Profile;

/// One finding about the configuration, e.g. `routes[3].rate_limit: no policy named "write"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path of the key in the file, e.g. `routes[3].rate_limit` or `schemas.Note.title.max_length`.
    pub path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// A finding about the key at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects errors and warnings while compiling; compilation never stops at the first one.
#[derive(Debug, Default)]
pub struct Diagnostics {
    /// Findings that refuse the file.
    pub errors: Vec<Diagnostic>,
    /// Findings worth a look that do not refuse the file.
    pub warnings: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error about the key at `path`.
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(path, message));
    }

    /// Records a warning about the key at `path`.
    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(path, message));
    }

    /// The one rule for insecure choices: `refused` is an error under
    /// `NESTFLUX_PROFILE=production`, `tolerated` a warning in development. Each carries its
    /// own path and message, since the production error names what to fix.
    pub fn refuse_in_production(
        &mut self,
        profile: Profile,
        refused: Diagnostic,
        tolerated: Diagnostic,
    ) {
        match profile {
            Profile::Production => self.errors.push(refused),
            Profile::Development => self.warnings.push(tolerated),
        }
    }

    /// Whether any error was recorded.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }
}
