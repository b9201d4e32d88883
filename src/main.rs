//! The `nestflux` binary: parse the command line and dispatch.

use std::process::ExitCode;

/// mimalloc instead of the C library's malloc: see bench/RESULTS.md for what it measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    nestflux::cli::run()
}
