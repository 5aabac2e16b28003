//! Delivers the change feed to webhooks, in `tally worker`: each endpoint gets its events in
//! sequence order, one at a time, as a Standard Webhooks message (the JSON of a LedgerEvent,
//! with `webhook-id` = `evt_<sequence>`, `webhook-timestamp` and `webhook-signature` =
//! `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the endpoint's secret).
//!
//! A round locks one due endpoint (`FOR UPDATE SKIP LOCKED`: workers share the endpoints and
//! never deliver one's events twice at once), finds its next event after its cursor, POSTs it,
//! and in the same transaction moves the cursor on a 2xx, or counts the failure and sets the
//! next attempt (exponential backoff with full jitter); after `attempts_max` failures the
//! event is dead-lettered and the endpoint moves on. A worker killed mid-delivery leaves the
//! cursor where it was, so the event goes again with the same `webhook-id`: at least once,
//! de-duplicated by the receiver on that id. Redirects are not followed and every delivery
//! connects only to addresses the SSRF check passed.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use reqwest::Url;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    feed::{self, Event},
    store::{self, webhooks::WebhookRow},
    webhooks::{SECRET_PREFIX, check_destination},
};

/// Events one round reads looking for an endpoint's next one.
const EVENTS_PER_READ_MAX: i64 = 100;
/// How long an idle delivery loop waits before looking again.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The most of a failure's text kept on the endpoint and its dead letters.
const ERROR_CHARS_MAX: usize = 500;

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub attempts_max: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// One delivery's whole HTTP exchange.
    pub timeout: Duration,
    /// Endpoints delivered to at once (each holds a database connection while it waits).
    pub concurrency: usize,
    pub allow_private: bool,
}

/// Delivers until `stop` turns true.
pub async fn run(pool: PgPool, settings: DeliverySettings, stop: watch::Receiver<bool>) {
    metrics::counter!("tally_webhook_deliveries_total", "outcome" => "delivered").increment(0);
    metrics::counter!("tally_webhook_deliveries_total", "outcome" => "failed").increment(0);
    metrics::counter!("tally_webhook_dead_letters_total").increment(0);
    let loops: Vec<_> = (0..settings.concurrency.max(1))
        .map(|_| tokio::spawn(delivery_loop(pool.clone(), settings.clone(), stop.clone())))
        .collect();
    for one in loops {
        let _ = one.await;
    }
}

async fn delivery_loop(pool: PgPool, settings: DeliverySettings, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match deliver_one(&pool, &settings).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => tracing::warn!(error = format!("{err:#}"), "webhook delivery round failed"),
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// One round: a requeued dead letter, else the next event of one due endpoint. Whether there
/// was anything to do.
pub async fn deliver_one(pool: &PgPool, settings: &DeliverySettings) -> anyhow::Result<bool> {
    if redeliver_one(pool, settings).await? {
        return Ok(true);
    }
    let mut tx = crate::db::begin(pool).await?;
    let Some(webhook) = store::webhooks::lock_due(&mut tx).await? else {
        return Ok(false);
    };
    // Read first: an event at or below it has committed (sequence order is commit order), so
    // the read below sees every one of them.
    let newest = store::events::last_sequence(&mut tx).await?;
    let rows = match webhook.account_id {
        Some(account) => {
            store::events::after_for_account(
                &mut tx,
                account,
                webhook.delivered_through,
                EVENTS_PER_READ_MAX,
            )
            .await?
        }
        None => {
            store::events::after(&mut tx, webhook.delivered_through, EVENTS_PER_READ_MAX).await?
        }
    };
    let full = rows.len() as i64 == EVENTS_PER_READ_MAX;
    let last_read = rows.last().map(|r| r.sequence);
    let events = feed::load(&mut tx, rows).await?;
    let Some(event) = events.into_iter().find_map(|e| wanted(&webhook, e)) else {
        // Nothing of this endpoint's up to what was read (or up to `newest`, when the read
        // reached the end).
        let through = match (full, last_read) {
            (true, Some(last)) => last,
            (_, last) => last.unwrap_or(0).max(newest),
        };
        store::webhooks::advance(&mut tx, webhook.id, through).await?;
        tx.commit().await?;
        return Ok(true);
    };
    let sequence = event.sequence;
    match post(&webhook, event, settings).await {
        Ok(()) => {
            metrics::counter!("tally_webhook_deliveries_total", "outcome" => "delivered")
                .increment(1);
            store::webhooks::advance(&mut tx, webhook.id, sequence).await?;
        }
        Err(error) => {
            metrics::counter!("tally_webhook_deliveries_total", "outcome" => "failed").increment(1);
            let error: String = error.chars().take(ERROR_CHARS_MAX).collect();
            let attempts = webhook.attempts.saturating_add(1);
            if attempts as u32 >= settings.attempts_max {
                metrics::counter!("tally_webhook_dead_letters_total").increment(1);
                tracing::warn!(webhook = %webhook.id, sequence, attempts, error,
                    "webhook event dead-lettered");
                store::webhooks::dead_letter(&mut tx, webhook.id, sequence, attempts, &error)
                    .await?;
            } else {
                let next = OffsetDateTime::now_utc() + backoff(settings, attempts as u32);
                store::webhooks::failed(&mut tx, webhook.id, attempts, next, &error).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// Delivers one requeued dead letter again (out of order: the endpoint has moved on); on
/// failure it is a dead letter again, waiting for another requeue.
async fn redeliver_one(pool: &PgPool, settings: &DeliverySettings) -> anyhow::Result<bool> {
    let mut tx = crate::db::begin(pool).await?;
    let Some((letter, sequence, webhook)) = store::webhooks::lock_requeued(&mut tx).await? else {
        return Ok(false);
    };
    let rows = store::events::after(&mut tx, sequence - 1, 1).await?;
    let event = feed::load(&mut tx, rows)
        .await?
        .into_iter()
        .find(|e| e.sequence == sequence)
        .and_then(|e| wanted(&webhook, e))
        .context("a dead letter's event is not stored")?;
    match post(&webhook, event, settings).await {
        Ok(()) => store::webhooks::mark_redelivered(&mut tx, letter).await?,
        Err(error) => {
            let error: String = error.chars().take(ERROR_CHARS_MAX).collect();
            store::webhooks::unrequeue(&mut tx, letter, &error).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// The event as `webhook` receives it, if it is one of its types and its to see.
fn wanted(webhook: &WebhookRow, event: Event) -> Option<Event> {
    let event = match webhook.account_id {
        Some(account) => event.for_account(account)?,
        None => event,
    };
    (webhook.event_types.is_empty() || webhook.event_types.iter().any(|t| t == event.kind.as_str()))
        .then_some(event)
}

/// The Standard Webhooks signature of one message: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the secret's bytes.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .context("a webhook secret is base64")?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).context("an HMAC key")?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// POSTs `event` to the endpoint; the failure's description otherwise.
async fn post(
    webhook: &WebhookRow,
    event: Event,
    settings: &DeliverySettings,
) -> Result<(), String> {
    let url = Url::parse(&webhook.url).map_err(|e| format!("the URL does not parse: {e}"))?;
    let addrs: Vec<SocketAddr> = check_destination(&url, settings.allow_private).await?;
    let id = format!("evt_{}", event.sequence);
    let body = super::payload(event).map_err(|e| format!("{e:#}"))?;
    let timestamp = OffsetDateTime::now_utc().unix_timestamp();
    let signature = sign(&webhook.secret, &id, timestamp, &body).map_err(|e| format!("{e:#}"))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    // Connect only to the addresses just checked (no second lookup that could answer
    // otherwise), and never follow a redirect elsewhere.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .resolve_to_addrs(&host, &addrs)
        .user_agent(concat!("tally-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))?;
    let response = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered HTTP {}", response.status()))
    }
}

/// Full jitter: uniformly random in [0, min(max, base · 2^(attempt−1))].
fn backoff(settings: &DeliverySettings, attempt: u32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(settings.backoff_max).mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
