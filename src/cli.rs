//! The command line: `serve` (default), `check`, `routes`, `config schema`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;
use crate::plan::{self, Plan, Profile};

/// The parsed command line.
#[derive(Debug, Parser)]
#[command(
    name = "nestflux",
    version,
    about = "A secure HTTP API declared in one file"
)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "NESTFLUX_CONFIG",
        default_value = "nestflux.toml"
    )]
    pub config: PathBuf,
    /// What to do; `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load, compile and serve (the default).
    Serve,
    /// Load and compile only; print a summary, or every error and exit 1.
    Check {
        /// The file to check (instead of --config).
        file: Option<PathBuf>,
    },
    /// Print the compiled route table.
    Routes,
    /// Print the OpenAPI 3.1 document of the compiled API (compile only: no serve checks).
    Openapi,
    /// Apply the internal migrations and the declared-resource DDL; print what changed.
    Migrate,
    /// Mint a token from the development issuer (`[auth.dev] enabled = true`).
    Token {
        /// The subject (`sub`).
        #[arg(long)]
        sub: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime, e.g. 30m, 1h.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Configuration tooling.
    Config {
        /// The configuration subcommand.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Key tooling.
    Keys {
        /// The key subcommand.
        #[command(subcommand)]
        command: KeysCommand,
    },
}

/// `nestflux keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random API key and the hash that declares it in [auth.api_keys.NAME].
    ApiKey {
        /// The key's name in nestflux.toml (lowercase).
        name: String,
    },
    /// Print a new random AES-256 key as `kid:base64`, for NESTFLUX_ENCRYPTION__KEYS.
    Generate,
    /// Re-encrypt every encrypted value and blind index with the active (first) key.
    /// Resumable: rows already on the active key are skipped, so rerun it after a crash.
    Rotate {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
}

/// `nestflux config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the JSON Schema of nestflux.toml, for editors.
    Schema,
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Check { file } => check(file.as_deref().unwrap_or(&cli.config)),
        Command::Routes => routes(&cli.config),
        Command::Openapi => openapi(&cli.config),
        Command::Migrate => migrate(&cli.config),
        Command::Token { sub, roles, ttl } => token(&cli.config, &sub, &roles, &ttl),
        Command::Keys {
            command: KeysCommand::ApiKey { name },
        } => api_key(&name),
        Command::Keys {
            command: KeysCommand::Generate,
        } => match crate::crypto::generate_key() {
            Ok(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        Command::Keys {
            command: KeysCommand::Rotate { batch_size },
        } => rotate(&cli.config, batch_size as usize),
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            let schema = schemars::schema_for!(config::RawConfig);
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot render the schema: {e}")),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Loads and compiles, printing every error; `None` when the config is unusable.
fn load_plan(path: &Path) -> Option<Plan> {
    let profile = match Profile::parse(std::env::var("NESTFLUX_PROFILE").ok().as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return None;
        }
    };
    let raw = match config::load(path) {
        Ok((raw, _source)) => raw,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            eprintln!("{}: the configuration could not be read", path.display());
            return None;
        }
    };
    match plan::compile(&raw, profile) {
        Ok(plan) => Some(plan),
        Err(errs) => {
            for w in &errs.warnings {
                eprintln!("warning: {w}");
            }
            for e in &errs.errors {
                eprintln!("error: {e}");
            }
            let n = errs.errors.len();
            eprintln!(
                "{}: {n} error{} found",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    for w in &plan.warnings {
        println!("warning: {w}");
    }
    let unenforced = plan.unenforced();
    for u in &unenforced {
        println!("not yet enforced: {u}");
    }
    println!(
        "{}: ok (profile {}): {} routes, {} roles, {} rate-limit policies, {} schemas, {} resources, {}",
        path.display(),
        plan.profile.name(),
        plan.routes.len(),
        plan.roles.closures.len(),
        plan.rate_limits.declared(),
        plan.schemas.len(),
        plan.resources.len(),
        match &plan.server.tls {
            Some(_) => format!("https on {}", plan.server.bind),
            None => format!("http on {}", plan.server.bind),
        },
    );
    if !unenforced.is_empty() {
        println!("`nestflux serve` will refuse this file until the features above are enforced");
    }
    ExitCode::SUCCESS
}

fn routes(path: &Path) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let rows: Vec<[String; 6]> = plan
        .routes
        .iter()
        .map(|r| {
            [
                r.method.to_string(),
                r.path.clone(),
                match &r.resource {
                    Some(res) => format!("{} {}", r.action.name(), res.0),
                    None => r.action.name().to_string(),
                },
                r.access.to_string(),
                r.rate_limit.as_ref().map_or("-".into(), |p| p.0.clone()),
                r.body_schema.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["METHOD", "PATH", "ACTION", "WHO", "RATE LIMIT", "BODY"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    ExitCode::SUCCESS
}

/// `nestflux openapi`: the document `GET /openapi.json` serves, from the compiled plan alone,
/// so it also works for a file `serve` would refuse.
fn openapi(path: &Path) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    println!("{}", crate::openapi::render(&plan));
    ExitCode::SUCCESS
}

fn serve(path: &Path) -> ExitCode {
    crate::logging::init();
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let unenforced = plan.unenforced();
    if !unenforced.is_empty() {
        for u in &unenforced {
            eprintln!("error: {u}");
        }
        eprintln!(
            "{}: refusing to serve: the file declares protections this build does not enforce yet (remove them or upgrade nestflux)",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let system = actix_web::rt::System::new();
    match system.block_on(crate::server::run(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server: {e}")),
    }
}

/// `nestflux keys api-key NAME`: the key goes to its holder, only the hash into the file.
fn api_key(name: &str) -> ExitCode {
    if !plan::is_name(name) {
        return fail(&format!(
            "`{name}` is not a key name: lowercase letters, digits, `_` or `-`, starting with a letter"
        ));
    }
    match crate::auth::api_key::generate() {
        Ok(new) => {
            println!("key:  {}", new.key);
            println!("hash: {}", new.hash);
            println!();
            println!("# Give the key to its holder (shown only now); the file gets the hash:");
            println!("[auth.api_keys.{name}]");
            println!("hash = \"{}\"", new.hash);
            println!("roles = []");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("no randomness from the operating system: {e}")),
    }
}

/// `nestflux keys rotate`: every encrypted value and blind index to the active key, one
/// committed batch at a time, with a progress line per batch and a count per resource.
fn rotate(path: &Path, batch_size: usize) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let Some(ring) = plan.encryption.ring.clone() else {
        return fail(
            "NESTFLUX_ENCRYPTION__KEYS is not set: list the new key first, then every old one",
        );
    };
    let result = crate::store::open(&plan).and_then(|opened| {
        let resources: Vec<_> = opened.resources.into_values().collect();
        crate::store::rotate::rotate_all(&mut opened.store.conn()?, &resources, batch_size, |r| {
            println!(
                "{}: batch {} committed, {} rows so far",
                r.resource, r.batches, r.rows
            );
        })
    });
    match result {
        Ok(done) => {
            for r in &done {
                println!(
                    "{}: {} rows re-encrypted to key {}",
                    r.resource,
                    r.rows,
                    ring.active_kid()
                );
            }
            if done.is_empty() {
                println!("no resource declares encrypted fields");
            }
            println!(
                "rotation complete: every encrypted value is on key {}",
                ring.active_kid()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            eprintln!("rotation stopped; committed batches are kept, rerun to resume");
            ExitCode::FAILURE
        }
    }
}

fn migrate(path: &Path) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let result = crate::store::open(&plan).map(|opened| (opened.migrations, opened.changes));
    match result {
        Ok((applied, changes)) => {
            for m in &applied {
                println!("applied internal migration {m}");
            }
            for c in &changes {
                println!("{c}");
            }
            if applied.is_empty() && changes.is_empty() {
                println!("nothing to change");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn token(path: &Path, sub: &str, roles: &[String], ttl: &str) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let Some(auth) = plan.auth.as_ref().filter(|a| a.dev_issuer) else {
        return fail(
            "the development issuer is off: set [auth.dev] enabled = true (never in production)",
        );
    };
    let ttl = match crate::plan::units::duration(ttl) {
        Ok(t) if !t.is_zero() && t <= std::time::Duration::from_secs(30 * 86_400) => t,
        Ok(_) => return fail("--ttl must be between 1s and 30 days"),
        Err(e) => return fail(&format!("--ttl: {e}")),
    };
    if sub.is_empty() {
        return fail("--sub must not be empty");
    }
    for role in roles {
        if !plan
            .roles
            .closures
            .contains_key(&crate::plan::roles::RoleId(role.clone()))
        {
            eprintln!("warning: role \"{role}\" is not declared in [roles]; it will be ignored");
        }
    }
    let minted = crate::store::Store::open(&plan.database)
        .map_err(crate::auth::dev::DevError::from)
        .and_then(|(store, _)| crate::auth::dev::DevKey::open(&store))
        .and_then(|key| key.mint(auth, sub, roles, ttl));
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}
