//! The `tally` command line: its subcommands, their arguments (every flag with an environment
//! twin, see `crate::config`) and what each runs. The top of the module graph: it may use any
//! module, and none uses it.

use clap::{Parser, Subcommand};

use crate::{
    app::Application,
    config::{DatabaseArgs, GlobalArgs, WorkerArgs},
    db,
    jobs::worker::Worker,
    relay::{self, RelaySettings},
};

pub mod admin;
pub mod bench;
mod serve;

pub use serve::ServeArgs;

#[derive(Debug, Parser)]
#[command(name = "tally", version, about = "A gRPC-first money ledger service")]
// A repeated flag overrides the earlier one (scripts append to a base command line).
#[command(args_override_self = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC, gRPC-web and HTTP on one listener.
    Serve(Box<ServeArgs>),
    /// Drain the mail job queue: send verification mail, retry, dead-letter.
    Worker(Box<WorkerArgs>),
    /// Apply, revert or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Recompute every balance from its entries and check the ledger's invariants; exits
    /// non-zero on any mismatch.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Load generator: transfers over gRPC against a running server (see the README).
    Bench(Box<bench::BenchArgs>),
    /// Operator commands that talk to the database directly (bootstrap the first admin).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the most recently applied migration.
    Down,
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Create a user (with the customer role) without going through the API.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "")]
        full_name: String,
        /// The password; read from standard input when omitted (first line).
        #[arg(long)]
        password: Option<String>,
    },
    /// Grant a role (customer, banker, admin) to a user.
    GrantRole { username: String, role: String },
    /// Revoke a role from a user.
    RevokeRole { username: String, role: String },
    /// List mail that failed every attempt (dead letters), newest first.
    DeadLetters {
        /// Also list dead letters that were requeued already.
        #[arg(long)]
        all: bool,
        /// At most this many lines.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Put a dead letter back into the mail outbox with a fresh attempt budget.
    RequeueDeadLetter { id: uuid::Uuid },
    /// List webhook events that failed every delivery attempt, newest first.
    WebhookDeadLetters {
        /// Also list dead letters that were requeued already.
        #[arg(long)]
        all: bool,
        /// At most this many lines.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// Have the worker deliver a webhook dead letter once more (out of order: its endpoint has
    /// moved on; the message keeps its webhook-id).
    RequeueWebhook { id: uuid::Uuid },
}

/// Runs the parsed command to its end.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings(cli.global.environment)?;
            let app = Application::build(settings).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Worker(args) => {
            let settings = args.settings(cli.global.environment)?;
            let worker = Worker::build(settings).await?;
            // The change feed's sweep: publishes what no server's relay did (none running, or
            // Redis was away when they tried).
            let (stop, stopping) = tokio::sync::watch::channel(false);
            let sweep = tokio::spawn(relay::run(
                worker.pool().clone(),
                RelaySettings {
                    redis_url: worker.settings().queue.redis_url.clone(),
                    stream: worker.settings().events_stream.clone(),
                    stream_max_len: worker.settings().events_stream_max_len,
                    interval: relay::SWEEP_INTERVAL,
                },
                None,
                stopping.clone(),
            ));
            let w = worker.settings();
            let webhooks = tokio::spawn(relay::webhooks::run(
                worker.pool().clone(),
                relay::webhooks::DeliverySettings {
                    attempts_max: w.webhook_attempts_max,
                    backoff_base: w.webhook_backoff_base,
                    backoff_max: w.webhook_backoff_max,
                    timeout: w.webhook_timeout,
                    concurrency: w.webhook_concurrency,
                    allow_private: w.webhook_allow_private,
                },
                stopping,
            ));
            let drain = w.shutdown_drain.max(w.webhook_timeout);
            let stopped = worker.run_until_stopped(shutdown_signal()).await;
            // Deliveries in flight finish (or time out) before the process exits.
            let _ = stop.send(true);
            let _ = tokio::time::timeout(drain, async {
                let _ = sweep.await;
                let _ = webhooks.await;
            })
            .await;
            stopped
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
            let report = crate::ledger::verify::run(&pool).await?;
            println!("{report:#?}");
            if report.is_consistent() {
                println!("ledger consistent");
                Ok(())
            } else {
                anyhow::bail!("ledger INCONSISTENT: see the counts above")
            }
        }
        Command::Bench(args) => bench::run(*args).await,
        Command::Admin { action, database } => {
            let pool = db::connect(&database.settings()?).await?;
            admin::run(pool, action).await
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
