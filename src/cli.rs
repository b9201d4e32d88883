//! The command line: `serve` (default), `check`, `explain`, `routes`, `openapi`, `migrate`,
//! `token`, `keys`, `backup`, `restore`, `config schema`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigSource, LoadError, SourceMap};
use crate::plan::report::{self, Severity};
use crate::plan::{self, Code, Diagnostic, Plan, Profile};

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
    /// Load, compile and serve (the default). SIGHUP reloads the file while serving.
    Serve {
        /// Also reload when the file changes (checked every half second).
        #[arg(long)]
        watch: bool,
    },
    /// Ask the running server to reload its file (SIGHUP to the pid in its pid file). The
    /// server logs the outcome: applied, refused with every error, or refused as needing a
    /// restart.
    Reload,
    /// Load and compile only; print a summary, or every error and exit 1.
    Check {
        /// The file to check (instead of --config).
        file: Option<PathBuf>,
        /// `human` (cargo-like, with lines and carets) or `json` (one JSON object per line:
        /// severity, code, path, file, line, column, message, suggestion).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print the decision a request would get, step by step, without serving or writing:
    /// route, limits, authentication, permission (and through which role), own rows,
    /// field rules, body. Exit 0 when the request would be allowed, 2 when refused.
    Explain {
        /// The HTTP method, e.g. GET.
        method: String,
        /// The request path, e.g. /api/notes/0190c7a2-…; a query string is ignored.
        path: String,
        /// The caller's subject, as a token would carry it (not verified).
        #[arg(long, conflicts_with_all = ["token", "api_key"])]
        sub: Option<String>,
        /// A role of the caller (with --sub); repeat for several.
        #[arg(long = "role", requires = "sub")]
        roles: Vec<String>,
        /// A bearer token, verified as `serve` verifies it (a provider's token needs the
        /// provider reachable for its keys; a development token reads the stored key).
        #[arg(long, conflicts_with = "api_key")]
        token: Option<String>,
        /// An API key, looked up as `serve` looks it up.
        #[arg(long)]
        api_key: Option<String>,
        /// A JSON body to validate against the route's schema.
        #[arg(long)]
        body: Option<String>,
    },
    /// Print the compiled route table.
    Routes,
    /// Print the OpenAPI 3.1 document of the compiled API (compile only: no serve checks).
    Openapi,
    /// Apply the internal migrations and the declared-resource DDL; print what changed.
    Migrate,
    /// Copy the SQLite database while `serve` runs (a consistent snapshot), verify the copy
    /// and write FILE.manifest.json beside it. On PostgreSQL: how to use pg_dump, and a
    /// check that the key ring reads the stored encrypted fields.
    Backup {
        /// The backup file to create (never overwritten).
        file: PathBuf,
    },
    /// Replace the SQLite database with a backup, after checking its manifest, its hash and
    /// that the key ring decrypts it; refused while any process has the database open.
    /// The replaced database is kept as DB.pre-restore-<time>. On PostgreSQL: how to use
    /// pg_restore, and the key-ring check.
    Restore {
        /// The backup file (with FILE.manifest.json beside it).
        file: PathBuf,
    },
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
    /// The audit log: verify its hash chain, export it, prune it.
    Audit {
        /// The audit subcommand.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `nestflux audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain from its first row to its head; print the first broken row
    /// (changed, missing, reordered) with its seq and exit 1, or say it is valid.
    Verify,
    /// Write rows as JSON lines (oldest first) to stdout, for archiving.
    Export {
        /// Only rows at or after this time: RFC 3339 (`2026-11-01T00:00:00Z`) or an age
        /// (`7d`: the last seven days).
        #[arg(long)]
        since: Option<String>,
        /// Only rows before this time (same forms).
        #[arg(long)]
        until: Option<String>,
    },
    /// Delete rows older than `[audit] retain` (or than --before), leaving an anchor row so
    /// `verify` still passes.
    Prune {
        /// Delete rows before this time instead (RFC 3339 or an age such as `400d`).
        #[arg(long)]
        before: Option<String>,
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

/// How `check` prints diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// cargo-like text: `error[code]: path: message`, `--> FILE:LINE:COL`, the line, a caret.
    Human,
    /// One JSON object per line.
    Json,
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
    match cli.command.unwrap_or(Command::Serve { watch: false }) {
        Command::Serve { watch } => serve(&cli.config, watch),
        Command::Reload => reload(&cli.config),
        Command::Check { file, format } => check(file.as_deref().unwrap_or(&cli.config), format),
        Command::Explain {
            method,
            path,
            sub,
            roles,
            token,
            api_key,
            body,
        } => {
            let identity = match (sub, token, api_key) {
                (Some(sub), _, _) => crate::explain::Identity::Claimed { sub, roles },
                (_, Some(t), _) => crate::explain::Identity::Token(t),
                (_, _, Some(k)) => crate::explain::Identity::ApiKey(k),
                _ => crate::explain::Identity::Anonymous,
            };
            explain(&cli.config, &method, &path, identity, body.as_deref())
        }
        Command::Routes => routes(&cli.config),
        Command::Openapi => openapi(&cli.config),
        Command::Migrate => migrate(&cli.config),
        Command::Backup { file } => backup(&cli.config, &file),
        Command::Restore { file } => restore(&cli.config, &file),
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
        Command::Audit { command } => audit(&cli.config, command),
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

/// A file that did not compile: every error and warning, and where they point.
struct Failed {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    source: Option<Box<ConfigSource>>,
}

/// Loads and compiles `path` under `NESTFLUX_PROFILE`, gathering every problem: a bad
/// profile, unknown keys, unreadable values and every compile finding come out together.
fn compile_file(path: &Path) -> Result<(Plan, ConfigSource, config::RawConfig), Failed> {
    let mut errors = Vec::new();
    let profile = match Profile::parse(std::env::var("NESTFLUX_PROFILE").ok().as_deref()) {
        Ok(p) => p,
        Err(e) => {
            errors.push(Diagnostic::new("", e).with_code(Code::InvalidProfile));
            Profile::Development
        }
    };
    let loaded = match config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            let (diag, source) = load_failure(path, e);
            errors.push(diag);
            return Err(Failed {
                errors,
                warnings: Vec::new(),
                source,
            });
        }
    };
    match plan::compile_loaded(&loaded, profile) {
        Ok(plan) if errors.is_empty() => Ok((plan, loaded.source, loaded.raw)),
        Ok(plan) => Err(Failed {
            errors,
            warnings: plan.warnings,
            source: Some(Box::new(loaded.source)),
        }),
        Err(e) => {
            errors.extend(e.errors);
            Err(Failed {
                errors,
                warnings: e.warnings,
                source: Some(Box::new(loaded.source)),
            })
        }
    }
}

/// A file that could not be read at all, as a diagnostic (and, for a syntax error, the
/// text and span to show it in).
fn load_failure(path: &Path, e: LoadError) -> (Diagnostic, Option<Box<ConfigSource>>) {
    match e {
        LoadError::Syntax {
            text,
            message,
            span,
        } => {
            let source = ConfigSource {
                path: path.into(),
                map: span.map(|s| SourceMap::single("", s)).unwrap_or_default(),
                text,
                ..ConfigSource::default()
            };
            let message = format!("not valid TOML: {}", message.trim());
            (
                Diagnostic::new("", message).with_code(Code::Syntax),
                Some(Box::new(source)),
            )
        }
        LoadError::File { .. } | LoadError::SecretFile { .. } => (
            Diagnostic::new("", e.to_string()).with_code(Code::Unreadable),
            None,
        ),
        LoadError::Merge(_) => (Diagnostic::new("", e.to_string()), None),
    }
}

fn color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints a failure to stderr: warnings, errors (each with its place), then the count.
fn report_failure(path: &Path, f: &Failed) {
    let c = color(&std::io::stderr());
    let src = f.source.as_deref();
    eprint!(
        "{}",
        report::human_all(&f.warnings, Severity::Warning, src, c)
    );
    eprint!("{}", report::human_all(&f.errors, Severity::Error, src, c));
    let n = f.errors.len();
    eprintln!(
        "{}: {n} error{} found",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
}

/// Loads and compiles, printing every error; `None` when the config is unusable.
fn load_plan(path: &Path) -> Option<Plan> {
    match compile_file(path) {
        Ok((plan, _, _)) => Some(plan),
        Err(f) => {
            report_failure(path, &f);
            None
        }
    }
}

/// Outside production with encrypted fields and no `NESTFLUX_ENCRYPTION__KEYS`: loads (or
/// creates, once) the development key beside the database and puts it in the plan.
/// Returns the warnings to give loudly.
fn attach_dev_key(plan: &mut Plan) -> Result<Vec<String>, String> {
    let Some(file) = plan.encryption.dev_key.clone() else {
        return Ok(Vec::new());
    };
    if plan.encryption.ring.is_some() {
        return Ok(Vec::new());
    }
    let key = crate::crypto::dev_key::load_or_create(&file).map_err(|e| e.to_string())?;
    let mut warnings = vec![format!(
        "DEVELOPMENT ENCRYPTION KEY IN USE: NESTFLUX_ENCRYPTION__KEYS is not set, so encrypted fields are sealed with the key in {} ({}). Anyone who can read that file can decrypt them. Fine for trying NestFlux; before real data goes in, move to a real key: NESTFLUX_ENCRYPTION__KEYS=\"$(nestflux keys generate),$(cat {})\" nestflux keys rotate. Production refuses to start without NESTFLUX_ENCRYPTION__KEYS.",
        file.display(),
        if key.created {
            "created now"
        } else {
            "created earlier"
        },
        file.display(),
    )];
    if key.too_open {
        warnings.push(format!(
            "the development key file {} is readable by other users: chmod 600 it",
            file.display()
        ));
    }
    plan.encryption.key_ids = key.ring.kids().map(str::to_string).collect();
    plan.encryption.ring = Some(std::sync::Arc::new(key.ring));
    Ok(warnings)
}

fn check(path: &Path, format: Format) -> ExitCode {
    let (plan, source, _) = match compile_file(path) {
        Ok(ok) => ok,
        Err(f) => {
            if format == Format::Json {
                let src = f.source.as_deref();
                for (list, sev) in [
                    (&f.warnings, Severity::Warning),
                    (&f.errors, Severity::Error),
                ] {
                    let mut sorted = list.clone();
                    report::sort(&mut sorted, src);
                    for d in &sorted {
                        println!("{}", report::json_line(d, sev, src));
                    }
                }
            } else {
                report_failure(path, &f);
            }
            return ExitCode::FAILURE;
        }
    };
    let unenforced = plan.unenforced();
    if format == Format::Json {
        let mut warnings = plan.warnings.clone();
        warnings.extend(unenforced);
        report::sort(&mut warnings, Some(&source));
        for d in &warnings {
            println!("{}", report::json_line(d, Severity::Warning, Some(&source)));
        }
        return ExitCode::SUCCESS;
    }
    print!(
        "{}",
        report::human_all(
            &plan.warnings,
            Severity::Warning,
            Some(&source),
            color(&std::io::stdout())
        )
    );
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
    println!("config hash: {}", plan.config_hash);
    if !unenforced.is_empty() {
        println!("`nestflux serve` will refuse this file until the features above are enforced");
    }
    ExitCode::SUCCESS
}

/// `nestflux explain`: exit 0 when the request would reach its action, 2 when refused.
fn explain(
    path: &Path,
    method: &str,
    target: &str,
    identity: crate::explain::Identity,
    body: Option<&str>,
) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let method = match actix_web::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => return fail(&format!("`{method}` is not an HTTP method")),
    };
    let body = match body.map(serde_json::from_str::<serde_json::Value>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return fail(&format!("--body is not JSON: {e}")),
    };
    for u in plan.unenforced() {
        eprintln!("note: `nestflux serve` refuses this file: {u}");
    }
    let path_only = target
        .split(['?', '#'])
        .next()
        .unwrap_or(target)
        .to_string();
    if !path_only.starts_with('/') {
        return fail("the path must start with /");
    }
    let needs_dev_key = matches!(&identity, crate::explain::Identity::Token(_))
        && plan.auth.as_ref().is_some_and(|a| a.dev_issuer);
    let request = crate::explain::Request {
        method,
        path: path_only,
        body,
        identity,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    let result = runtime.block_on(async {
        let mut auth = crate::auth::Authenticator::build(&plan).map_err(|e| e.to_string())?;
        if needs_dev_key {
            match crate::auth::dev::DevKey::read_only(&plan.database) {
                Ok(Some(key)) => {
                    auth = auth.with_dev_key(&plan, &key).map_err(|e| e.to_string())?
                }
                Ok(None) => eprintln!(
                    "note: no development key is stored yet, so no development token can verify"
                ),
                Err(e) => eprintln!("note: the development key could not be read: {e}"),
            }
        }
        if matches!(request.identity, crate::explain::Identity::Token(_))
            && let Some(jwks) = auth.bearer().map(|b| b.jwks().clone())
        {
            // The provider's keys, fetched once as the refresher would.
            match jwks.fetch().await {
                Ok(set) => {
                    jwks.install(set);
                }
                Err(e) => eprintln!("note: the issuer's keys could not be fetched: {e}"),
            }
        }
        Ok::<_, String>(crate::explain::explain(&plan, &auth, &request).await)
    });
    match result {
        Ok(x) => {
            print!("{}", x.render());
            if x.allowed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => fail(&e),
    }
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

/// Loads and compiles the file as `serve` runs it: refuses protections this build does
/// not enforce, attaches the development key. `Err` holds every problem.
fn prepare(path: &Path) -> Result<(Plan, config::RawConfig, Vec<String>), Failed> {
    let (mut plan, source, raw) = compile_file(path)?;
    let unenforced = plan.unenforced();
    if !unenforced.is_empty() {
        let mut errors: Vec<Diagnostic> = unenforced
            .iter()
            .map(|u| Diagnostic::new("", u.to_string()))
            .collect();
        errors.push(Diagnostic::new(
            "",
            "refusing to serve: the file declares protections this build does not enforce yet (remove them or upgrade nestflux)",
        ));
        return Err(Failed {
            errors,
            warnings: Vec::new(),
            source: Some(Box::new(source)),
        });
    }
    let mut loud = match attach_dev_key(&mut plan) {
        Ok(w) => w,
        Err(e) => {
            return Err(Failed {
                errors: vec![Diagnostic::new(
                    "",
                    format!("development encryption key: {e}"),
                )],
                warnings: Vec::new(),
                source: None,
            });
        }
    };
    if !loud.is_empty() {
        // Said louder below.
        plan.warnings.retain(|w| w.code != Code::EncryptionKeys);
    }
    loud.extend(plan.warnings.iter().map(|w| w.to_string()));
    Ok((plan, raw, loud))
}

fn serve(path: &Path, watch: bool) -> ExitCode {
    crate::logging::init();
    let (plan, raw, warnings) = match prepare(path) {
        Ok(p) => p,
        Err(f) => {
            report_failure(path, &f);
            return ExitCode::FAILURE;
        }
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    let file = path.to_path_buf();
    let reloading = crate::server::reload::Reloading {
        load: Box::new(move || match prepare(&file) {
            Ok((plan, raw, warnings)) => {
                for w in warnings {
                    tracing::warn!(target: "nestflux::reload", "{w}");
                }
                Ok(crate::server::reload::Loaded {
                    plan,
                    raw: serde_json::to_value(&raw).unwrap_or_default(),
                })
            }
            Err(f) => Err(f.errors),
        }),
        raw: serde_json::to_value(&raw).unwrap_or_default(),
        watch: watch.then(|| path.to_path_buf()),
        pid_file: Some(crate::pidfile::path(&plan.database, path)),
    };
    let system = actix_web::rt::System::new();
    match system.block_on(crate::server::run(plan, Some(reloading))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server: {e}")),
    }
}

/// `nestflux reload`: SIGHUP to the server running on this file's state. Needs only the
/// database location from the file (which may have errors: the server reports those).
fn reload(path: &Path) -> ExitCode {
    let loaded = match config::load(path) {
        Ok(l) => l,
        Err(e) => {
            return fail(&format!(
                "{}: cannot find the server's pid file: {e}",
                path.display()
            ));
        }
    };
    let mut d = plan::Diagnostics::default();
    let db = plan::data::compile_database(&loaded.raw.database, &mut d);
    let file = crate::pidfile::path(&db, path);
    match crate::pidfile::signal_reload(&file) {
        Ok(pid) => {
            println!(
                "sent SIGHUP to nestflux (pid {pid}); the server logs whether the new configuration was applied"
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
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
    let plan = match load_plan_with_dev_key(path) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    let Some(ring) = plan.encryption.ring.clone() else {
        return fail(
            "NESTFLUX_ENCRYPTION__KEYS is not set: list the new key first, then every old one",
        );
    };
    let result = crate::store::open(&plan).and_then(|opened| {
        let resources: Vec<_> = opened.resources.into_values().collect();
        let mut conn = opened.store.conn()?;
        let mut progress = Vec::new();
        let done = crate::store::rotate::rotate_all(&mut conn, &resources, batch_size, |r| {
            println!(
                "{}: batch {} committed, {} rows so far",
                r.resource, r.batches, r.rows
            );
            progress.retain(|p: &crate::store::rotate::Rotated| p.resource != r.resource);
            progress.push(r.clone());
        });
        // The run is recorded whether it finished or stopped (with how far it got).
        let event = crate::audit::Event::now("cli", "keys.rotate", if done.is_ok() { "ok" } else { "failed" })
            .details(&serde_json::json!({
                "active_kid": ring.active_kid(),
                "resources": progress
                    .iter()
                    .map(|r| serde_json::json!({ "resource": r.resource, "rows": r.rows, "batches": r.batches }))
                    .collect::<Vec<_>>(),
            }));
        match conn.transaction(|c| crate::store::audit::append(c, std::slice::from_ref(&event))) {
            Ok(rows) => crate::audit::sink::trace(&rows),
            Err(e) => eprintln!("warning: the rotation run could not be written to the audit log: {e}"),
        }
        done
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

/// A time given as RFC 3339 or as an age before now, in the stored form.
fn instant(text: &str) -> Result<String, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')) {
        return Ok(humantime::format_rfc3339_micros(t).to_string());
    }
    let age = crate::plan::units::duration(text)?;
    std::time::SystemTime::now()
        .checked_sub(age)
        .map(|t| humantime::format_rfc3339_micros(t).to_string())
        .ok_or_else(|| format!("`{text}` reaches before 1970"))
}

fn audit(path: &Path, command: AuditCommand) -> ExitCode {
    let Some(plan) = load_plan(path) else {
        return ExitCode::FAILURE;
    };
    let mut conn = match crate::store::Store::open(&plan.database).and_then(|(s, _)| s.conn()) {
        Ok(c) => c,
        Err(e) => return fail(&format!("database: {e}")),
    };
    match command {
        AuditCommand::Verify => match crate::audit::verify::verify(&mut conn) {
            Ok(crate::audit::verify::Verdict::Valid { rows, first, head }) => {
                match (first, head) {
                    (Some(f), Some(h)) => {
                        println!("audit chain valid: {rows} rows, seq {f} to {h}")
                    }
                    _ => println!("audit chain valid: no rows yet"),
                }
                ExitCode::SUCCESS
            }
            Ok(crate::audit::verify::Verdict::Broken { seq, why }) => {
                println!("audit chain broken at row {seq}: {why}");
                ExitCode::FAILURE
            }
            Err(e) => fail(&format!("database: {e}")),
        },
        AuditCommand::Export { since, until } => {
            let (since, until) = match (
                since.as_deref().map(instant).transpose(),
                until.as_deref().map(instant).transpose(),
            ) {
                (Ok(s), Ok(u)) => (s, u),
                (Err(e), _) | (_, Err(e)) => return fail(&e),
            };
            let mut after = i64::MIN;
            let mut out = std::io::stdout().lock();
            loop {
                let page = match crate::store::audit::walk(&mut conn, after, 1000) {
                    Ok(p) => p,
                    Err(e) => return fail(&format!("database: {e}")),
                };
                let Some(last) = page.last() else { break };
                after = last.seq;
                for row in page.iter().filter(|r| {
                    since.as_ref().is_none_or(|s| r.event.at >= *s)
                        && until.as_ref().is_none_or(|u| r.event.at < *u)
                }) {
                    if writeln!(out, "{}", row.json_line()).is_err() {
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        AuditCommand::Prune { before } => {
            let cutoff = match (before, plan.audit.retain) {
                (Some(b), _) => instant(&b),
                (None, Some(retain)) => instant(&format!("{}s", retain.as_secs())),
                (None, None) => Err("no retention: set [audit] retain or give --before".into()),
            };
            let cutoff = match cutoff {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match conn.transaction(|c| crate::audit::retention::prune_before(c, &cutoff)) {
                Ok(Some(anchor)) => {
                    println!(
                        "pruned audit rows through seq {} (before {cutoff}); anchor row {}",
                        anchor.event.record_id, anchor.seq
                    );
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!("no audit rows before {cutoff}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("database: {e}")),
            }
        }
    }
}

/// The key ring `backup` and `restore` check with: the configured one, else the
/// development key if one exists (never created here: these commands change nothing).
fn existing_ring(plan: &Plan) -> Result<Option<std::sync::Arc<crate::crypto::KeyRing>>, String> {
    if let Some(ring) = &plan.encryption.ring {
        return Ok(Some(ring.clone()));
    }
    match &plan.encryption.dev_key {
        Some(file) => crate::crypto::dev_key::load_existing(file)
            .map(|k| k.map(|k| std::sync::Arc::new(k.ring)))
            .map_err(|e| format!("development encryption key: {e}")),
        None => Ok(None),
    }
}

/// Prints a refusal line by line under `what`, and says nothing changed.
fn refused(what: &str, e: &crate::backup::BackupError) -> ExitCode {
    let mut lines = e.to_string();
    if lines.is_empty() {
        lines = "failed".into();
    }
    let mut it = lines.lines();
    eprintln!("error: {what}: {}", it.next().unwrap_or_default());
    for line in it {
        eprintln!("{line}");
    }
    eprintln!("nothing was changed");
    ExitCode::FAILURE
}

/// PostgreSQL: what to run instead, and the key-ring check against the database as it is.
fn postgres_advice(plan: &Plan, ring: Option<&crate::crypto::KeyRing>, restore: bool) -> ExitCode {
    if restore {
        println!(
            "The database is PostgreSQL: restore it with pg_restore, with every nestflux instance stopped:"
        );
        println!(
            "  pg_restore --clean --if-exists --no-owner --single-transaction --dbname=\"$NESTFLUX_DATABASE__URL\" FILE"
        );
        println!(
            "then run `nestflux restore FILE` again to check that the key ring reads the restored data."
        );
    } else {
        println!(
            "The database is PostgreSQL: back it up with pg_dump (consistent while nestflux runs):"
        );
        println!("  pg_dump --format=custom --file=FILE \"$NESTFLUX_DATABASE__URL\"");
        println!("Keep the key ids below with the dump: the keys themselves are never in it.");
    }
    match crate::backup::check_postgres(plan, ring) {
        Ok(report) => key_report(&report),
        Err(e) => refused("cannot check the key ring", &e),
    }
}

fn key_report(report: &crate::backup::keycheck::KeyReport) -> ExitCode {
    let needed: Vec<&str> = report.needed.iter().map(String::as_str).collect();
    println!(
        "key ids the stored encrypted fields need: {}",
        if needed.is_empty() {
            "none".to_string()
        } else {
            needed.join(", ")
        }
    );
    if report.problems.is_empty() {
        println!(
            "key ring check: ok ({} sampled values decrypted)",
            report.decrypted
        );
        ExitCode::SUCCESS
    } else {
        for p in &report.problems {
            eprintln!("error: {p}");
        }
        eprintln!("error: the configured key ring cannot read the stored encrypted fields");
        ExitCode::FAILURE
    }
}

/// What `backup` and `restore` share: the plan, the key ring that exists (never a new
/// development key), or the whole answer when the database is PostgreSQL (the
/// `pg_dump`/`pg_restore` advice and the key-ring check) or nothing could be loaded.
fn backup_setup(
    path: &Path,
    restore: bool,
) -> Result<(Plan, Option<std::sync::Arc<crate::crypto::KeyRing>>), ExitCode> {
    let plan = load_plan(path).ok_or(ExitCode::FAILURE)?;
    let ring = existing_ring(&plan).map_err(|e| fail(&e))?;
    if matches!(
        plan.database.url,
        crate::plan::data::DatabaseUrl::Postgres(_)
    ) {
        return Err(postgres_advice(&plan, ring.as_deref(), restore));
    }
    Ok((plan, ring))
}

fn backup(path: &Path, file: &Path) -> ExitCode {
    let (plan, ring) = match backup_setup(path, false) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    match crate::backup::backup(&plan, ring.as_deref(), file) {
        Ok(taken) => {
            let m = &taken.manifest;
            println!(
                "backup written: {} ({} bytes, {})",
                taken.file.display(),
                m.bytes,
                m.sha256
            );
            println!(
                "manifest: {}",
                crate::backup::manifest::path_of(&taken.file).display()
            );
            println!("taken at {}; integrity_check ok", m.created_at);
            let counts: Vec<String> = m
                .row_counts
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            println!("rows: {}", counts.join(", "));
            println!(
                "key ids needed to read it: {}",
                if m.key_ids.is_empty() {
                    "none".to_string()
                } else {
                    m.key_ids.join(", ")
                }
            );
            for p in &taken.key_problems {
                eprintln!("warning: {p}");
            }
            if let Err(e) = crate::backup::record(&plan, taken.event("cli")) {
                eprintln!("warning: the backup could not be written to the audit log: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => refused("backup not taken", &e),
    }
}

fn restore(path: &Path, file: &Path) -> ExitCode {
    let (plan, ring) = match backup_setup(path, true) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    match crate::backup::restore(&plan, ring.as_deref(), file) {
        Ok(done) => {
            let m = &done.manifest;
            println!(
                "restored {} (taken {}) into {}",
                file.display(),
                m.created_at,
                done.database.display()
            );
            if let Some(prev) = &done.previous {
                println!("the replaced database is kept as {}", prev.display());
            }
            if m.config_hash != plan.config_hash {
                println!(
                    "note: the backup was taken under another configuration ({}; now {})",
                    m.config_hash, plan.config_hash
                );
            }
            println!(
                "checked: SHA-256, integrity_check, row counts, schema version, key ring ({} sampled values decrypted)",
                done.decrypted
            );
            let event = crate::audit::Event::now("cli", "backup.restored", "ok").details(
                &serde_json::json!({
                    "file": file.display().to_string(),
                    "sha256": m.sha256,
                    "taken_at": m.created_at,
                    "previous": done.previous.as_ref().map(|p| p.display().to_string()),
                }),
            );
            if let Err(e) = crate::backup::record(&plan, event) {
                eprintln!("warning: the restore could not be written to the audit log: {e}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => refused("restore refused", &e),
    }
}

/// [`load_plan`], then the development encryption key attached as `serve` would (its
/// warnings printed): for the commands that open the data.
fn load_plan_with_dev_key(path: &Path) -> Result<Plan, ExitCode> {
    let mut plan = load_plan(path).ok_or(ExitCode::FAILURE)?;
    let warnings =
        attach_dev_key(&mut plan).map_err(|e| fail(&format!("development encryption key: {e}")))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(plan)
}

fn migrate(path: &Path) -> ExitCode {
    let plan = match load_plan_with_dev_key(path) {
        Ok(plan) => plan,
        Err(code) => return code,
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
