//! The `nestflux` binary: parse the command line and dispatch.

use std::process::ExitCode;

fn main() -> ExitCode {
    nestflux::cli::run()
}
