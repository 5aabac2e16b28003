//! The `tally` binary: parse the command line, start logging, run the subcommand
//! (`tally::cli`).

use clap::Parser;
use tally::{
    cli::{self, Cli},
    telemetry,
};

/// mimalloc rather than glibc's malloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = match telemetry::init(&cli.global) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = cli::run(cli).await;
    // Spans buffered for the collector go out before the process ends (serve and worker).
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
