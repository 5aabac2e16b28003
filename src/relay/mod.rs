//! Publishes the change feed to a Redis Stream, `tally:events:v1`, in sequence order and at
//! least once (in practice once: see below), each entry carrying its sequence so consumers
//! de-duplicate by it.
//!
//! Every `tally serve` runs a relay, woken by its own commits and polling for the others'; the
//! worker runs one too, on a slower beat, for anything left behind. They take turns: a round
//! locks the relay's cursor row (`ledger_event_cursors`, `FOR UPDATE SKIP LOCKED`; a relay that
//! finds it locked skips the round), reads the events after it, adds them to the stream and
//! moves the cursor, in one transaction. The entries are added by one Lua script, atomically,
//! with the sequence as the entry id (`<sequence>-0`), skipping any sequence at or below the
//! stream's newest: so a round that added its entries but lost its database commit is
//! repeated without duplicates. A Redis outage leaves the cursor where it was: the events wait
//! in the database (nothing is lost) and go out, in order, once Redis is back.

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{feed, proto::tally_v1 as pb, store};

pub mod webhooks;

/// The stream's key unless `TALLY_EVENTS_STREAM` says otherwise. Pinned: a consumer's
/// `XREAD` names it, and the `v1` is the payload's version (a change that is not backward
/// compatible gets a new stream).
pub use crate::config::EVENTS_STREAM_DEFAULT as STREAM_DEFAULT;
/// How often the worker's sweep looks for events no server published.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Events one round publishes.
pub const EVENTS_PER_ROUND_MAX: i64 = 500;
/// Bounds on one Redis call, so a stalled Redis does not hold the cursor's row lock for long.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two rounds of one relay. Under load a round takes every event that
/// committed meanwhile, so this bounds the rounds (each a few statements, PostgreSQL's CPU that
/// transfers would have had) to 20 a second, and adds at most itself to the stream's lag.
const ROUND_SPACING: Duration = Duration::from_millis(50);
/// Waits after a failed round (Redis or the database away), doubling up to the maximum.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Adds the events given as (sequence, type, payload) triples after `ARGV[1]` (the stream's
/// approximate maximum length), skipping sequences at or below the stream's newest entry.
/// Returns the number added.
const ADD_SCRIPT: &str = r"
local newest = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then newest = tonumber(string.match(top[1][1], '^(%d+)')) end
local added = 0
for i = 2, #ARGV, 3 do
  local sequence = tonumber(ARGV[i])
  if sequence > newest then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i] .. '-0',
      'sequence', ARGV[i], 'type', ARGV[i + 1], 'payload', ARGV[i + 2])
    newest = sequence
    added = added + 1
  end
end
return added
";

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub redis_url: String,
    /// The stream's key.
    pub stream: String,
    pub stream_max_len: u64,
    /// How often a relay looks for events when nothing woke it.
    pub interval: Duration,
}

/// The relay's cursor row in `ledger_event_cursors`: one per stream.
fn cursor_name(stream: &str) -> String {
    format!("redis:{stream}")
}

/// Relays until `stop` turns true. `commits` is this process's commit signal (none in the
/// worker).
pub async fn run(
    pool: PgPool,
    settings: RelaySettings,
    mut commits: Option<watch::Receiver<u64>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(settings.redis_url.as_str()).context("REDIS_URL")?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_number_of_retries(1);
    let mut redis = ConnectionManager::new_lazy_with_config(client, config)
        .context("creating the Redis connection manager")?;
    metrics::counter!("tally_feed_events_published_total").increment(0);
    let mut failures: u32 = 0;
    // Whether this relay's cursor row exists: created once, not looked for every round.
    let mut cursor_ready = false;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let round = async {
            if !cursor_ready {
                let mut conn = pool.acquire().await?;
                store::events::create_cursor(&mut conn, &cursor_name(&settings.stream)).await?;
                cursor_ready = true;
            }
            publish_round(&pool, &mut redis, &settings).await
        };
        let pause = match round.await {
            Ok(n) if n as i64 == EVENTS_PER_ROUND_MAX => {
                failures = 0;
                continue; // more are waiting
            }
            Ok(_) => {
                failures = 0;
                settings.interval
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    error = format!("{err:#}"),
                    failures,
                    "could not publish the change feed to Redis; the events wait in the database"
                );
                RETRY_BASE
                    .saturating_mul(1 << failures.min(8))
                    .min(RETRY_MAX)
            }
        };
        // At least ROUND_SPACING between rounds: under load a round takes every event that
        // committed meanwhile, rather than one round trip set per commit.
        tokio::time::sleep(ROUND_SPACING.min(pause)).await;
        let woken = async {
            match &mut commits {
                Some(commits) => {
                    let _ = commits.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(pause.saturating_sub(ROUND_SPACING)) => {}
            () = woken, if failures == 0 => {}
        }
    }
}

/// One round: the events after the cursor, added to the stream, and the cursor moved; how many
/// were read (0 when another relay holds the cursor).
pub async fn publish_round(
    pool: &PgPool,
    redis: &mut ConnectionManager,
    settings: &RelaySettings,
) -> anyhow::Result<usize> {
    let name = cursor_name(&settings.stream);
    let mut tx = crate::db::begin(pool).await?;
    let rows = store::events::lock_cursor_and_read(&mut tx, &name, EVENTS_PER_ROUND_MAX).await?;
    let Some(last) = rows.last().map(|r| r.sequence) else {
        return Ok(0); // nothing new, or another relay is publishing
    };
    let read = rows.len();
    let events = feed::load(&mut tx, rows).await?;
    let mut script = redis::cmd("EVAL");
    script
        .arg(ADD_SCRIPT)
        .arg(1)
        .arg(&settings.stream)
        .arg(settings.stream_max_len);
    let mut oldest = None;
    for event in events {
        oldest.get_or_insert(event.occurred_at);
        script
            .arg(event.sequence)
            .arg(event.kind.as_str())
            .arg(payload(event)?);
    }
    let added: i64 = script
        .query_async(redis)
        .await
        .context("adding the events to the Redis stream")?;
    store::events::advance_cursor(&mut tx, &name, last).await?;
    tx.commit().await?;
    metrics::counter!("tally_feed_events_published_total").increment(added.max(0) as u64);
    if let Some(oldest) = oldest {
        // From the oldest event's transaction to its XADD: the stream's lag.
        let lag = (OffsetDateTime::now_utc() - oldest)
            .as_seconds_f64()
            .max(0.0);
        metrics::histogram!("tally_feed_publish_lag_seconds").record(lag);
    }
    Ok(read)
}

/// An event as the stream carries it: the JSON of `tally.v1.LedgerEvent`, exactly as the HTTP
/// gateway writes it (every field present).
pub fn payload(event: feed::Event) -> anyhow::Result<String> {
    let message: pb::LedgerEvent = event.into();
    crate::gateway::json_string("tally.v1.LedgerEvent", &message)
}
