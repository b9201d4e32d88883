//! OpenAPI 3.1 of a compiled [`Plan`]: every route with its parameters, body, success and
//! problem+json responses, security requirement and needed permission — and never a secret.
//!
//! ```text
//! Plan ─ document(&plan) → serde_json::Value ─ render(&plan) → pretty JSON text
//!                                                ├─ `nestflux openapi` prints it
//!                                                └─ the `openapi` action serves the same text
//! ```
//!
//! Request bodies come from the same compiled validators that check requests
//! ([`crate::validate::Schema::json_schema`]), so the document promises what the server
//! enforces. Only what a client may know goes in: no issuer secrets, keys, key hashes or
//! database URL, and no bind address (the document is the same wherever it is served).
//!
//! ```text
//! mod       the document, its constants and the builder
//! security  the security schemes a plan declares
//! paths     one operation per route: parameters, body, responses, access
//! schemas   the record component of a resource, nullable and guarded fields
//! problems  problem+json: the Problem schema, the shared error responses and headers
//! ```

mod paths;
mod problems;
mod schemas;
mod security;

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::plan::Plan;
use crate::plan::data::ResourcePlan;
use crate::plan::routes::RoutePlan;
use crate::validate::Schema;
use problems::{header_components, problem_responses, problem_schema};
use schemas::fresh_name;
use security::Schemes;

/// The `openapi` field of every document.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Where `$ref`s into `components` point.
const SCHEMAS: &str = "#/components/schemas/";
const RESPONSES: &str = "#/components/responses/";
const HEADERS: &str = "#/components/headers/";

/// The OpenAPI 3.1 document of `plan`.
pub fn document(plan: &Plan) -> Value {
    Builder::new(plan).build()
}

/// The document as the pretty-printed JSON text that is both printed and served.
pub fn render(plan: &Plan) -> String {
    format!("{:#}", document(plan))
}

/// Builds one document: components first, then one operation per route.
struct Builder<'a> {
    plan: &'a Plan,
    schemes: Schemes,
    /// `components.schemas`, starting with every declared schema's `Create` form.
    schemas: Map<String, Value>,
    /// The `Problem` component's name (renamed if a declared schema took it).
    problem: String,
    paths: Map<String, Value>,
    operation_ids: BTreeSet<String>,
}

impl<'a> Builder<'a> {
    fn new(plan: &'a Plan) -> Self {
        let mut schemas = plan.schemas.components();
        let problem = fresh_name(&schemas, "Problem");
        schemas.insert(problem.clone(), problem_schema());
        Self {
            plan,
            schemes: Schemes::of(plan),
            schemas,
            problem,
            paths: Map::new(),
            operation_ids: BTreeSet::new(),
        }
    }

    fn build(mut self) -> Value {
        for route in &self.plan.routes {
            let op = self.operation(route);
            let item = self
                .paths
                .entry(route.path.clone())
                .or_insert_with(|| json!({}));
            if let Value::Object(item) = item {
                item.insert(route.method.as_str().to_ascii_lowercase(), op);
            }
        }
        let mut components = Map::new();
        components.insert("schemas".into(), Value::Object(self.schemas.clone()));
        components.insert(
            "responses".into(),
            Value::Object(problem_responses(&self.problem)),
        );
        components.insert("headers".into(), Value::Object(header_components()));
        let schemes = self.schemes.components();
        if !schemes.is_empty() {
            components.insert("securitySchemes".into(), Value::Object(schemes));
        }
        json!({
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "description": env!("CARGO_PKG_DESCRIPTION"),
            },
            "paths": Value::Object(self.paths),
            "components": Value::Object(components),
        })
    }

    /// The resource a route acts on and its schema, when both are declared.
    fn target(&self, route: &RoutePlan) -> Option<(&'a ResourcePlan, &'a Schema)> {
        let res = self.plan.resources.get(route.resource.as_ref()?)?;
        let schema = self.plan.schemas.get(&res.schema)?;
        Some((res, schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str) -> Plan {
        let raw: crate::config::RawConfig = toml::from_str(toml).expect("config parses");
        match crate::plan::compile(&raw, crate::plan::Profile::Development) {
            Ok(plan) => plan,
            Err(e) => panic!("config compiles: {:?}", e.errors),
        }
    }

    #[test]
    fn query_parameters_drop_null_and_default() {
        let p = plan(
            r#"
[schemas.T]
state = { type = "enum", values = ["a", "b"], nullable = true, default = "a" }
n = { type = "integer", optional = true, nullable = true }

[resources.t]
schema = "T"

[[routes]]
method = "GET"
path = "/t"
action = "list"
resource = "t"
public = true
"#,
        );
        let doc = document(&p);
        let params = doc["paths"]["/t"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let state = params
            .iter()
            .find(|p| p["name"] == "state")
            .expect("state filter");
        assert_eq!(state["schema"]["enum"], json!(["a", "b"]));
        assert_eq!(state["schema"]["type"], json!("string"));
        assert!(state["schema"].get("default").is_none());
        let n = params.iter().find(|p| p["name"] == "n").expect("n filter");
        assert_eq!(n["schema"]["type"], json!("integer"));
        let sort = params.iter().find(|p| p["name"] == "sort").expect("sort");
        // Nullable and optional fields cannot be sorted on.
        assert!(
            !sort["schema"]["enum"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("n")))
        );
        assert!(
            !sort["schema"]["enum"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("state")))
        );
        // The record lets optional fields come back as null but keeps nullable ones nullable.
        let record = &doc["components"]["schemas"]["TRecord"];
        assert_eq!(
            record["properties"]["n"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(
            record["properties"]["state"]["enum"],
            json!(["a", "b", null])
        );
        assert!(record["properties"]["state"].get("default").is_none());
    }

    #[test]
    fn a_declared_problem_schema_keeps_its_name() {
        let p = plan(
            r#"
[schemas.Problem]
x = { type = "string" }

[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true
"#,
        );
        let doc = document(&p);
        let schemas = &doc["components"]["schemas"];
        assert_eq!(schemas["Problem"]["properties"]["x"]["type"], "string");
        assert!(schemas["Problem_2"]["properties"]["request_id"].is_object());
        assert_eq!(
            doc["components"]["responses"]["BadRequest"]["content"]["application/problem+json"]["schema"]
                ["$ref"],
            "#/components/schemas/Problem_2"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let p = plan(
            r#"
[[routes]]
method = "GET"
path = "/health"
action = "health"
public = true

[[routes]]
method = "GET"
path = "/ready"
action = "health"
public = true
"#,
        );
        let doc = document(&p);
        assert_eq!(doc["paths"]["/health"]["get"]["operationId"], "health");
        assert_eq!(doc["paths"]["/ready"]["get"]["operationId"], "health_2");
        assert_eq!(doc["paths"]["/ready"]["get"]["security"], json!([]));
        assert!(doc["components"].get("securitySchemes").is_none());
    }
}
