//! NestFlux: a secure HTTP API declared in one file.
//!
//! `config` parses `nestflux.toml`, `plan` compiles it into a checked [`plan::Plan`], and
//! `server` assembles Actix from that plan. Each layer of the request pipeline has its own
//! module, and dependencies run one way:
//!
//! ```text
//! config ← plan ← {auth, authz, ratelimit, store, crypto, validate} ← actions ← server ← cli
//! ```
//!
//! `problem`, `request_id`, `deadline`, `suggest` and `metrics` are shared by every layer and
//! depend on none; `explain` sits beside `actions`, walking one request through the same layers unserved.

pub mod actions;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod backup;
pub mod cli;
pub mod config;
pub mod cors;
pub mod crypto;
pub mod deadline;
pub mod explain;
pub mod headers;
pub mod json_string;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod pidfile;
pub mod plan;
pub mod problem;
pub mod ratelimit;
pub mod request_id;
pub mod server;
pub mod store;
pub mod suggest;
pub mod validate;
