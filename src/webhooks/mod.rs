//! Webhooks: endpoints that receive the change feed's events. This is the registry (who may
//! register what, and where a delivery may go); `tally worker` delivers (`relay::webhooks`).
//!
//! Deny by default: an endpoint gets one account's events (as that account's watchers see
//! them) when its owner may read the account, or every event for bankers and admins. Its URL
//! may not point at a private, loopback, link-local or otherwise internal address (a webhook
//! would otherwise let any customer make the worker call the cluster's own services), checked
//! when it is registered and again, on the resolved address actually connected to, at every
//! delivery; `TALLY_WEBHOOK_ALLOW_PRIVATE` lifts that for development and tests.

use std::{net::IpAddr, net::SocketAddr, str::FromStr as _, sync::Arc};

use base64::Engine as _;
use reqwest::Url;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    auth::{Permission, Principal},
    error::{Error, Reason, Result},
    ledger::Ledger,
    store::{
        self,
        events::EventType,
        webhooks::{NewWebhook, WebhookRow},
    },
    validate,
};

/// Webhooks one user may register.
pub const WEBHOOKS_PER_OWNER_MAX: i64 = 20;
/// The longest URL (the migration's CHECK says the same).
pub const URL_CHARS_MAX: usize = 2_048;
/// Random bytes of a signing secret (Standard Webhooks: 24 to 64).
const SECRET_BYTES: usize = 32;
/// The prefix of a signing secret, as Standard Webhooks writes them.
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook as its owner sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    pub account_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub delivered_through: i64,
    pub last_error: Option<String>,
}

impl From<WebhookRow> for Webhook {
    fn from(row: WebhookRow) -> Self {
        Webhook {
            id: row.id,
            url: row.url,
            event_types: row.event_types,
            account_id: row.account_id,
            created_at: row.created_at,
            delivered_through: row.delivered_through,
            last_error: row.last_error,
        }
    }
}

pub struct Webhooks {
    pool: PgPool,
    ledger: Arc<Ledger>,
    allow_private: bool,
}

impl Webhooks {
    pub fn new(pool: PgPool, ledger: Arc<Ledger>, allow_private: bool) -> Self {
        Self {
            pool,
            ledger,
            allow_private,
        }
    }

    /// Registers an endpoint; answers it and its signing secret (shown only here).
    pub async fn create(
        &self,
        principal: &Principal,
        url: &str,
        event_types: &[String],
        account_id: Option<&str>,
    ) -> Result<(Webhook, String)> {
        // Who may ask first: a caller who may not learns nothing about their input.
        let account_id = match account_id {
            Some(id) => Some(self.ledger.get_account(principal, id).await?.id),
            None => {
                principal.require(Permission::AccountsReadAny)?;
                None
            }
        };
        let url = parse_url(url)?;
        let event_types = parse_event_types(event_types)?;
        check_destination(&url, self.allow_private)
            .await
            .map_err(|message| Error::invalid("url", message))?;
        let secret = format!(
            "{SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; SECRET_BYTES]>())
        );
        let mut tx = crate::db::begin(&self.pool).await?;
        // The owner's row lock makes the count and the insert one step.
        if !store::users::lock_id(&mut tx, principal.user_id).await? {
            return Err(Error::NotFound("user"));
        }
        if store::webhooks::count_owned(&mut tx, principal.user_id).await? >= WEBHOOKS_PER_OWNER_MAX
        {
            return Err(Error::refused(
                Reason::WebhookLimit,
                format!("a user may register at most {WEBHOOKS_PER_OWNER_MAX} webhooks"),
            ));
        }
        let row = store::webhooks::insert(
            &mut tx,
            NewWebhook {
                id: Uuid::now_v7(),
                owner_id: principal.user_id,
                url: url.as_str(),
                event_types: &event_types,
                account_id,
                secret: &secret,
            },
        )
        .await?;
        tx.commit().await?;
        Ok((row.into(), secret))
    }

    pub async fn list(&self, principal: &Principal) -> Result<Vec<Webhook>> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        Ok(store::webhooks::owned(&mut conn, principal.user_id)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Deletes one of the caller's webhooks (anyone else's looks missing).
    pub async fn delete(&self, principal: &Principal, webhook_id: &str) -> Result<()> {
        let id = validate::uuid("webhook_id", webhook_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        if store::webhooks::delete_owned(&mut conn, id, principal.user_id).await? {
            Ok(())
        } else {
            Err(Error::NotFound("webhook"))
        }
    }
}

fn parse_url(text: &str) -> Result<Url> {
    let invalid = |message: &str| Error::invalid("url", message);
    if text.chars().count() > URL_CHARS_MAX {
        return Err(invalid("is longer than 2048 characters"));
    }
    let url = Url::parse(text).map_err(|e| Error::invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "must not carry credentials: verify the webhook-signature instead",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a #fragment"));
    }
    Ok(url)
}

fn parse_event_types(types: &[String]) -> Result<Vec<String>> {
    let mut known = Vec::with_capacity(types.len());
    for t in types {
        let parsed = EventType::from_str(t).map_err(|_| {
            Error::invalid(
                "event_types",
                format!(
                    "{t:?} is not an event type (transfer.created, transfer.posted, \
                     transfer.voided, transfer.expired, account.opened, account.closed)"
                ),
            )
        })?;
        if !known.iter().any(|k: &String| k == parsed.as_str()) {
            known.push(parsed.as_str().to_owned());
        }
    }
    Ok(known)
}

/// Whether a delivery may go to `ip`: not loopback, private, link-local (cloud metadata
/// lives there), shared (CGNAT), unspecified, broadcast, multicast or documentation space,
/// nor an IPv6 form of one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// The addresses a delivery to `url` may connect to: all its host resolves to, each public
/// unless `allow_private`; else why not.
pub async fn check_destination(
    url: &Url,
    allow_private: bool,
) -> std::result::Result<Vec<SocketAddr>, String> {
    let host = url.host_str().ok_or("has no host")?;
    let port = url.port_or_known_default().ok_or("has no port")?;
    // `[::1]` comes with its brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a private, loopback or link-local address; webhooks go \
             to public addresses only (TALLY_WEBHOOK_ALLOW_PRIVATE allows others)",
            bad.ip()
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(parse_url("https://example.com/hook").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "https://example.com/#x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url(&format!("https://example.com/{}", "a".repeat(2_100))).is_err());
    }
}
