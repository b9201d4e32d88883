//! The integration suite, one crate linked once (like ripgrep's `tests/tests.rs`): each module
//! drives the real `nestflux` binary over real HTTP, a real SQLite file (and PostgreSQL with
//! `--features postgres`) and, for tokens, the real `oidc-provider`.
//!
//! `common` is the harness, `fixtures` the notes schema and routes every module shares,
//! `oidc` the real OpenID provider, and `regression` one named test per fixed bug.

// Tests may unwrap: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod agent;
mod audit;
mod common;
mod fixtures;
mod oidc;
mod redis_server;
mod regression;

mod abuse;
mod auth_attacks;
mod auth_oidc;
mod backup;
mod browser;
mod config_check;
mod encryption;
mod explain;
mod first_run;
mod health;
mod http_core;
mod metrics;
mod openapi;
mod ratelimit;
mod rbac;
mod reload;
mod resources;
mod scaleout;
mod sessions;
mod writes;
