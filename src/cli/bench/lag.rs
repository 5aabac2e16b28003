//! How far the change feed trails the transfers of a bench run: from each event's transaction
//! (its `occurredAt`) to when a consumer here got it, on the Redis stream (`XREAD`) and on a
//! `WatchAccount` stream of one account of the pool. Events from before the run (a watch
//! replays the account's history first) are not counted.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use serde::Serialize;
use time::OffsetDateTime;
use tonic::transport::Channel;

use super::authed;
use crate::proto::tally_v1::{self as pb, event_service_client::EventServiceClient};

/// Entries one `XREAD` takes, and how long it blocks.
const XREAD_COUNT: usize = 1_000;
const XREAD_BLOCK_MS: u64 = 200;

/// Lags of one consumer, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lags {
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Lags {
    fn of(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let at = |p: f64| super::percentile(&micros, p);
        Lags {
            events: micros.len(),
            p50_ms: at(50.0),
            p99_ms: at(99.0),
            max_ms: micros.last().copied().unwrap_or(0) as f64 / super::MICROS_PER_MILLI,
        }
    }
}

fn lag_micros(occurred_at: OffsetDateTime, since: OffsetDateTime) -> Option<u64> {
    (occurred_at >= since).then(|| {
        let lag = OffsetDateTime::now_utc() - occurred_at;
        u64::try_from(lag.whole_microseconds()).unwrap_or(0)
    })
}

/// Reads `stream` from its end until `until`; the lag of every event of the run.
pub async fn stream(
    redis_url: String,
    stream: String,
    since: OffsetDateTime,
    until: Instant,
) -> anyhow::Result<Lags> {
    let client = redis::Client::open(redis_url).context("--feed-redis-url")?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut last = "$".to_owned();
    let mut lags = Vec::new();
    while Instant::now() < until {
        type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
        let reply: Reply = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(XREAD_BLOCK_MS)
            .arg("STREAMS")
            .arg(&stream)
            .arg(&last)
            .query_async(&mut conn)
            .await?;
        for (id, fields) in reply.into_iter().flatten().flat_map(|(_, entries)| entries) {
            last = id;
            let Some(payload) = fields.chunks(2).find(|kv| kv[0] == "payload") else {
                continue;
            };
            let event: serde_json::Value = serde_json::from_str(&payload[1])?;
            let occurred = event["occurredAt"].as_str().unwrap_or_default();
            let occurred =
                OffsetDateTime::parse(occurred, &time::format_description::well_known::Rfc3339)?;
            lags.extend(lag_micros(occurred, since));
        }
    }
    Ok(Lags::of(lags))
}

/// Watches `account` until `until`; the lag of every event of the run.
pub async fn watch(
    channel: Channel,
    token: String,
    account: String,
    since: OffsetDateTime,
    until: Instant,
) -> anyhow::Result<Lags> {
    let request = pb::WatchAccountRequest {
        account_id: account,
        after_sequence: 0,
    };
    let mut events = EventServiceClient::new(channel)
        .watch_account(authed(&token, request)?)
        .await?
        .into_inner();
    let mut lags = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(next) = tokio::time::timeout(left.min(Duration::from_secs(1)), events.next()).await
        else {
            continue;
        };
        let Some(item) = next.transpose()? else {
            break;
        };
        let Some(at) = item.event.and_then(|e| e.occurred_at) else {
            continue;
        };
        let occurred = OffsetDateTime::from_unix_timestamp(at.seconds)?
            + Duration::from_nanos(u64::try_from(at.nanos).unwrap_or(0));
        lags.extend(lag_micros(occurred, since));
    }
    Ok(Lags::of(lags))
}
