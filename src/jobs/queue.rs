//! The Redis mail queue: apalis' Redis storage under a pinned queue name.
//!
//! Connections are lazy and every call is bounded, so a Redis outage makes pushes fail fast
//! (the outbox keeps the mail) instead of hanging a caller.

use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::TaskSink as _;
use apalis_redis::{Config, RedisStorage};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::MailJob;
use crate::config::QueueSettings;

/// A push waits this long for Redis before giving up (the sweep tries again).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Connecting and every command are bounded so a dead Redis cannot stall a relay.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The connection manager's own reconnect attempts per failed command; the callers retry too.
const REDIS_RECONNECT_RETRIES: usize = 2;
/// The heartbeat of a storage that only pushes (in `serve`); it never consumes.
pub const PUSH_ONLY_HEARTBEAT: Duration = Duration::from_secs(30);

pub type MailStorage = RedisStorage<MailJob, ConnectionManager>;

/// A storage on `settings.queue` that connects on first use. `batch_size` is how many jobs a
/// worker fetches at once (keep it at the worker's concurrency so a stopping worker holds few
/// unstarted jobs). An idle consumer looks for new jobs every `poll`: apalis' Redis backend
/// parks after an empty fetch until its next heartbeat, so the heartbeat is the poll.
pub fn storage(
    settings: &QueueSettings,
    batch_size: usize,
    poll: Duration,
) -> anyhow::Result<MailStorage> {
    let client = redis::Client::open(settings.redis_url.as_str()).context("REDIS_URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_number_of_retries(REDIS_RECONNECT_RETRIES);
    let conn = ConnectionManager::new_lazy_with_config(client, config)
        .context("creating the Redis connection manager")?;
    // The queue name is pinned: apalis would otherwise derive it from the Rust type path.
    let config = Config::default()
        .queue(&settings.queue)
        .batch_size(batch_size.max(1))
        .heartbeat_interval(poll);
    Ok(RedisStorage::new(conn).with_config(config))
}

/// Pushes one job, bounded by [`PUSH_TIMEOUT`].
pub async fn push(storage: &mut MailStorage, job: MailJob) -> anyhow::Result<()> {
    tokio::time::timeout(PUSH_TIMEOUT, storage.push(job))
        .await
        .context("pushing to the Redis mail queue timed out")?
        .map_err(|err| anyhow::anyhow!("pushing to the Redis mail queue: {err}"))
}
