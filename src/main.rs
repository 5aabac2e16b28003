//! The `tally` binary: parse configuration, start logging, run the subcommand.

use clap::Parser;
use tally::{
    app::Application,
    config::{Cli, Command, MigrateAction},
    db,
    jobs::worker::Worker,
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
    let result = run(cli).await;
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.global.environment)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Worker(args) => {
            let settings = args.settings(cli.global.environment)?;
            let worker = Worker::build(settings).await?;
            worker.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate { action, database } => {
            let pool = db::connect(&database.settings()?).await?;
            match action {
                MigrateAction::Up => {
                    db::migrate_up(&pool).await?;
                    println!("migrations applied");
                }
                MigrateAction::Down => match db::migrate_down(&pool).await? {
                    Some(version) => println!("reverted migration {version}"),
                    None => println!("nothing to revert"),
                },
                MigrateAction::Status => {
                    for m in db::status(&pool).await? {
                        let state = if m.applied { "applied" } else { "pending" };
                        println!("{} {:<8} {}", m.version, state, m.description);
                    }
                }
            }
            Ok(())
        }
        Command::Verify { database } => {
            let pool = db::connect(&database.settings()?).await?;
            db::ensure_migrated(&pool).await?;
            let report = tally::ledger::verify::run(&pool).await?;
            println!("{report:#?}");
            if report.is_consistent() {
                println!("ledger consistent");
                Ok(())
            } else {
                anyhow::bail!("ledger INCONSISTENT: see the counts above")
            }
        }
        Command::Bench(args) => tally::bench::run(*args).await,
        Command::Admin { action, database } => {
            let pool = db::connect(&database.settings()?).await?;
            tally::admin::run(pool, action).await
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
