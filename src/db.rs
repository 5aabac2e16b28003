//! The PostgreSQL pool and the embedded, reversible migrations.
//!
//! `serve` refuses a database whose schema is behind the binary (or ahead of it, or dirty)
//! unless asked to migrate, so a deployment never runs half-migrated.

use sqlx::{
    PgPool, Postgres, Transaction,
    migrate::{Migrate, MigrateError, Migrator},
    pool::PoolConnection,
    postgres::PgPoolOptions,
};

use crate::config::DatabaseSettings;

/// Every migration in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Idle connections are closed after this long, so a quiet server lets PostgreSQL breathe.
const POOL_IDLE_TIMEOUT_SECS: u64 = 300;

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(settings.connections_max)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(std::time::Duration::from_secs(POOL_IDLE_TIMEOUT_SECS))
        .connect(&settings.url)
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to DATABASE_URL: {err}"))?;
    Ok(pool)
}

/// One line of `tally migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// The schema state relative to this binary's migrations.
pub async fn status(pool: &PgPool) -> Result<Vec<MigrationStatus>, MigrateError> {
    let mut conn = pool.acquire().await?;
    conn.ensure_migrations_table("_sqlx_migrations").await?;
    let applied = conn.list_applied_migrations("_sqlx_migrations").await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.iter().any(|a| a.version == m.version),
        })
        .collect())
}

pub async fn migrate_up(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the most recently applied migration; returns its version, or `None` when nothing
/// is applied.
pub async fn migrate_down(pool: &PgPool) -> Result<Option<i64>, MigrateError> {
    let mut applied: Vec<i64> = status(pool)
        .await?
        .into_iter()
        .filter(|m| m.applied)
        .map(|m| m.version)
        .collect();
    applied.sort_unstable();
    let Some(latest) = applied.pop() else {
        return Ok(None);
    };
    // `undo` reverts everything above `target`: the previous applied version, or 0.
    let target = applied.last().copied().unwrap_or(0);
    MIGRATOR.undo(pool, target).await?;
    Ok(Some(latest))
}

/// Fails unless every migration of this binary is applied and nothing unknown or dirty is.
pub async fn ensure_migrated(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    conn.ensure_migrations_table("_sqlx_migrations").await?;
    if let Some(version) = conn.dirty_version("_sqlx_migrations").await? {
        anyhow::bail!(
            "migration {version} failed part-way; repair the database, then run `tally migrate up`"
        );
    }
    let applied = conn.list_applied_migrations("_sqlx_migrations").await?;
    let pending: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .map(|m| m.version)
        .collect();
    if !pending.is_empty() {
        anyhow::bail!(
            "the database is not migrated ({} pending migration(s), first {}): run `tally migrate \
             up` or start with --migrate (TALLY_MIGRATE=true)",
            pending.len(),
            pending[0]
        );
    }
    if let Some(unknown) = applied.iter().find(|a| !MIGRATOR.version_exists(a.version)) {
        anyhow::bail!(
            "the database has migration {} that this binary does not know: it is newer than \
             this build",
            unknown.version
        );
    }
    Ok(())
}

/// Counts callers waiting for a pooled connection (the `waiting` state of
/// `tally_db_pool_connections`; sqlx exposes no waiter count). Decremented on drop, so a call
/// cancelled while it waits is not left counted.
struct Waiting;

impl Waiting {
    fn enter() -> Self {
        metrics::gauge!("tally_db_pool_connections", "state" => "waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("tally_db_pool_connections", "state" => "waiting").decrement(1.0);
    }
}

/// A pooled connection, counted as waiting until the pool hands one out.
pub async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let _waiting = Waiting::enter();
    pool.acquire().await
}

/// A transaction on a pooled connection, counted as waiting until it has begun (the BEGIN round
/// trip is part of the wait).
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let _waiting = Waiting::enter();
    pool.begin().await
}

/// [`begin`] with an explicit `BEGIN` statement (isolation level, read only).
pub async fn begin_with(
    pool: &PgPool,
    statement: &'static str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let _waiting = Waiting::enter();
    pool.begin_with(statement).await
}
