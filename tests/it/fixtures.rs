//! The notes fixture (`tests/fixtures/notes.toml`: the reference `Note` schema, the `notes`
//! resource and its five CRUD routes, all public) and the small builders that derive every
//! variation a test or benchmark needs. Each step finds the text it changes or panics, so a
//! change to the fixture fails loudly instead of quietly testing something else.
//!
//! Benchmarks include this file with `#[path = "../tests/it/fixtures.rs"]`, and the validator's
//! unit tests include the TOML itself, so there is one copy of the notes schema and routes.

// Panicking is how a fixture says the text it was asked to change is not there.
#![allow(clippy::panic)]

use std::fmt;

/// `tests/fixtures/notes.toml`, as is.
pub const NOTES: &str = include_str!("../fixtures/notes.toml");

/// The reference service (`examples/reference/nestflux.toml`), as is.
pub const REFERENCE: &str = include_str!("../../examples/reference/nestflux.toml");

const SCHEMA: &str = "[schemas.Note]\n";
const RESOURCE: &str = "[resources.notes]\nschema = \"Note\"\n";
const ROUTES: &str = "[[routes]]\n";

/// The access of each notes route in the reference service, in place of `public = true`.
const REFERENCE_ACCESS: [(&str, &str); 5] = [
    ("list", "permission = \"notes:read\""),
    ("get", "permission = \"notes:read\""),
    (
        "create",
        "permission = \"notes:create\"\nrate_limit = \"writes\"",
    ),
    (
        "update",
        "permission = \"notes:update\"\nrate_limit = \"writes\"",
    ),
    ("delete", "permission = \"notes:delete\""),
];

/// The notes fixture, changed step by step; `Display` gives the TOML.
#[derive(Clone, Debug)]
pub struct Notes {
    text: String,
}

impl Default for Notes {
    fn default() -> Self {
        Self::new()
    }
}

impl Notes {
    /// The fixture as is.
    pub fn new() -> Self {
        Self {
            text: NOTES.to_string(),
        }
    }

    /// Adds `name = definition` as the last field of `[schemas.Note]`.
    pub fn field(mut self, name: &str, definition: &str) -> Self {
        let at = self.find(&format!("\n{RESOURCE}"));
        self.text
            .insert_str(at, &format!("{name} = {definition}\n"));
        self
    }

    /// Gives the field `name` a new definition, in place.
    pub fn retype(mut self, name: &str, definition: &str) -> Self {
        let line = self.field_line(name);
        self.text = self
            .text
            .replace(&line, &format!("{name} = {definition}\n"));
        self
    }

    /// Removes the field `name` from `[schemas.Note]`.
    pub fn without_field(mut self, name: &str) -> Self {
        let line = self.field_line(name);
        self.text = self.text.replace(&line, "");
        self
    }

    /// Adds a `key = value` line to `[resources.notes]`.
    pub fn resource(mut self, line: &str) -> Self {
        let at = self.find(RESOURCE) + RESOURCE.len();
        self.text.insert_str(at, &format!("{line}\n"));
        self
    }

    /// The route of `action` gets `access` (e.g. `permission = "notes:read"`) instead of
    /// `public = true`.
    pub fn access(mut self, action: &str, access: &str) -> Self {
        let public = format!("action = \"{action}\"\npublic = true\n");
        self.find(&public);
        self.text = self
            .text
            .replace(&public, &format!("action = \"{action}\"\n{access}\n"));
        self
    }

    /// Every route gets the reference service's permission (and, for writes, its `writes`
    /// rate limit) instead of `public = true`.
    pub fn reference_access(self) -> Self {
        REFERENCE_ACCESS
            .iter()
            .fold(self, |notes, (action, access)| notes.access(action, access))
    }

    /// One more notes route: `action` at `method path`, with `access`.
    pub fn route(mut self, method: &str, path: &str, action: &str, access: &str) -> Self {
        self.text += &format!(
            "\n[[routes]]\nmethod = \"{method}\"\npath = \"{path}\"\nresource = \"notes\"\naction = \"{action}\"\n{access}\n"
        );
        self
    }

    /// Byte offset of `needle`, which must occur exactly once.
    fn find(&self, needle: &str) -> usize {
        let found: Vec<usize> = self.text.match_indices(needle).map(|(i, _)| i).collect();
        match found[..] {
            [at] => at,
            _ => panic!(
                "the notes fixture holds {:?} {} times, not once:\n{}",
                needle,
                found.len(),
                self.text
            ),
        }
    }

    /// The whole line (with its newline) that declares the field `name`.
    fn field_line(&self, name: &str) -> String {
        let schema = &self.text[self.find(SCHEMA)..self.find(RESOURCE)];
        let lines: Vec<&str> = schema
            .split_inclusive('\n')
            .filter(|l| l.split('=').next().map(str::trim) == Some(name))
            .collect();
        match lines[..] {
            [line] => line.to_string(),
            _ => panic!("the notes fixture has no single field `{name}`:\n{schema}"),
        }
    }
}

impl fmt::Display for Notes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The fixture's `[schemas.Note]` table alone, named `[schemas.{name}]`.
pub fn note_schema(name: &str) -> String {
    let notes = Notes::new();
    let schema = &NOTES[notes.find(SCHEMA)..notes.find(RESOURCE)];
    schema.replacen("[schemas.Note]", &format!("[schemas.{name}]"), 1)
}

/// The fixture's five public CRUD routes, for the resource `name` at `/api/{name}`.
pub fn crud_routes(name: &str) -> String {
    let first = NOTES.find(ROUTES).unwrap_or(NOTES.len());
    NOTES[first..]
        .replace("path = \"/api/notes", &format!("path = \"/api/{name}"))
        .replace("resource = \"notes\"", &format!("resource = \"{name}\""))
}

/// The reference service as this build serves it: all of it, the audit route included. Its
/// provider (`auth.issuer`, for bearer tokens and browser login) need not run: development
/// tokens are served all the same.
pub fn servable_reference() -> String {
    REFERENCE.to_string()
}

/// `text` with `from`, which must occur exactly once, replaced by `to`.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert!(n == 1, "{from:?} occurs {n} times, not once, in:\n{text}");
    text.replacen(from, to, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> toml::Table {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn reference() -> toml::Table {
        parse(REFERENCE)
    }

    /// The fixture's Note schema is the reference's, and its routes with the reference's
    /// access are the reference's notes routes: the fixture cannot drift from the contract.
    #[test]
    fn the_fixture_is_the_reference_notes_api() {
        let reference = reference();
        let schema = parse(&note_schema("Note"));
        assert_eq!(schema["schemas"]["Note"], reference["schemas"]["Note"]);
        assert_eq!(
            parse(NOTES)["schemas"]["Note"],
            reference["schemas"]["Note"]
        );

        let notes_routes = |t: &toml::Table| -> Vec<toml::Value> {
            t["routes"]
                .as_array()
                .expect("routes")
                .iter()
                .filter(|r| r.get("resource").and_then(toml::Value::as_str) == Some("notes"))
                .cloned()
                .collect()
        };
        let ours = notes_routes(&parse(&Notes::new().reference_access().to_string()));
        assert_eq!(ours.len(), 5);
        assert_eq!(ours, notes_routes(&reference));
    }

    #[test]
    fn builders_change_only_what_they_name() {
        let t = parse(
            &Notes::new()
                .field("done", "{ type = \"boolean\", default = false }")
                .retype("priority", "{ type = \"string\" }")
                .without_field("secret")
                .resource("owner = true")
                .access("get", "permission = \"notes:read\"")
                .route("GET", "/x/{id}", "get", "authenticated = true")
                .to_string(),
        );
        let note = t["schemas"]["Note"].as_table().expect("Note");
        let mut fields: Vec<&str> = note.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["body", "done", "due", "priority", "tags", "title"]);
        assert_eq!(note["priority"]["type"].as_str(), Some("string"));
        assert_eq!(t["resources"]["notes"]["owner"].as_bool(), Some(true));
        let routes = t["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 6);
        assert_eq!(routes[1]["permission"].as_str(), Some("notes:read"));
        assert!(routes[1].get("public").is_none());
        assert_eq!(routes[5]["authenticated"].as_bool(), Some(true));

        let people = parse(&crud_routes("people"));
        for r in people["routes"].as_array().expect("routes") {
            assert_eq!(r["resource"].as_str(), Some("people"));
            assert!(
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/api/people"))
            );
        }
    }
}
