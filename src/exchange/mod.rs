//! Exchange between currencies: the rates bankers set, watched live, and the quotes users take
//! at them. Rates and amounts are exact ([`rate`]); a quote is priced once, rounded against
//! its requester by less than one minor unit, and held for `TALLY_QUOTE_TTL_MS`.
//!
//! Every currency still sums to zero on its own: exchange never moves value between currency
//! ledgers except through the liquidity accounts of each currency.

pub mod hub;
pub mod rate;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use self::{
    hub::{Hub, Snapshot},
    rate::{ConvertError, Pricing, Rate},
};
use crate::{
    auth::Principal,
    error::{Error, Reason, Result},
    ledger::{
        Account, Ledger,
        conversions::{ConversionLegs, ConversionRequest},
    },
    store, validate,
};

/// What `tally serve` configures.
#[derive(Debug, Clone)]
pub struct ExchangeSettings {
    /// The spread of a rate set without one, in basis points.
    pub spread_bps_default: u32,
    /// How long a quote holds.
    pub quote_ttl: Duration,
    /// How often each replica reads the rates changed elsewhere.
    pub rates_poll_interval: Duration,
    /// A stream with nothing to send sends an empty message this often.
    pub heartbeat_interval: Duration,
    /// Live streams (watches) one user may hold at once, per replica.
    pub streams_per_user_max: usize,
}

/// One pair's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateView {
    pub base_currency: String,
    pub quote_currency: String,
    pub rate: Rate,
    pub spread_bps: u32,
    pub version: i64,
    pub updated_at: OffsetDateTime,
}

impl TryFrom<store::exchange::RateRow> for RateView {
    type Error = Error;

    fn try_from(row: store::exchange::RateRow) -> Result<Self> {
        Ok(Self {
            rate: Rate::parse(&row.rate)
                .map_err(|e| Error::internal(anyhow::anyhow!("stored rate {:?}: {e}", row.rate)))?,
            spread_bps: u32::try_from(row.spread_bps).unwrap_or(0),
            base_currency: row.base_currency,
            quote_currency: row.quote_currency,
            version: row.version,
            updated_at: row.updated_at,
        })
    }
}

/// One message of a rates watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatesUpdate {
    /// The rates that changed; every rate when `snapshot`; none on a heartbeat.
    pub rates: Vec<RateView>,
    pub snapshot: bool,
    pub sent_at: OffsetDateTime,
}

/// A stream of rates updates; it ends when the server shuts down.
pub type RatesStream = Pin<Box<dyn Stream<Item = RatesUpdate> + Send>>;

/// What a quote is asked for: the amount paid or the amount received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteAmount {
    From(i64),
    To(i64),
}

/// A priced quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub id: Uuid,
    pub from_currency: String,
    pub to_currency: String,
    pub from_amount: i64,
    pub to_amount: i64,
    /// Major units of `to_currency` per major unit of `from_currency`, spread included.
    pub rate: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

impl From<store::exchange::QuoteRow> for Quote {
    fn from(row: store::exchange::QuoteRow) -> Self {
        Self {
            id: row.id,
            from_currency: row.from_currency,
            to_currency: row.to_currency,
            from_amount: row.from_amount,
            to_amount: row.to_amount,
            rate: row.rate,
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

/// A conversion as recorded: its quote and its two legs.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub id: Uuid,
    pub quote: Quote,
    pub legs: ConversionLegs,
}

pub struct Exchange {
    pool: PgPool,
    ledger: Arc<Ledger>,
    settings: ExchangeSettings,
    hub: Hub,
    streams: crate::streams::StreamSlots,
    /// Flips to `true` when the server begins to shut down: every watch ends.
    stopping: watch::Sender<bool>,
}

impl Exchange {
    /// Starts the rates poller (needs a tokio runtime); [`Exchange::bootstrap`] loads the rates.
    /// Conversions go through `ledger`, which must be bootstrapped (its liquidity accounts).
    /// `streams` bounds the live streams of each user (shared with the other watches).
    pub fn new(
        pool: PgPool,
        ledger: Arc<Ledger>,
        settings: ExchangeSettings,
        streams: crate::streams::StreamSlots,
    ) -> Self {
        Self {
            hub: Hub::spawn(pool.clone(), settings.rates_poll_interval),
            streams,
            stopping: watch::channel(false).0,
            pool,
            ledger,
            settings,
        }
    }

    /// Reads the rates, so the first watch starts with all of them.
    pub async fn bootstrap(&self) -> Result<()> {
        self.hub.load(&self.pool).await
    }

    /// Ends every watch (the server is shutting down): each stream finishes cleanly.
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// Sets the rate of `base`/`quote` (replacing the pair's earlier rate). The caller's policy
    /// (`rates.manage`) is the auth layer's.
    pub async fn set_rate(
        &self,
        principal: &Principal,
        base: &str,
        quote: &str,
        rate: &str,
        spread_bps: Option<i32>,
    ) -> Result<RateView> {
        let (base, quote) = self.pair("base_currency", base, "quote_currency", quote)?;
        let rate = Rate::parse(rate).map_err(|message| Error::invalid("rate", message))?;
        let spread = match spread_bps {
            None => self.settings.spread_bps_default,
            Some(bps) => u32::try_from(bps)
                .ok()
                .filter(|bps| *bps <= rate::SPREAD_BPS_MAX)
                .ok_or_else(|| {
                    Error::invalid(
                        "spread_bps",
                        format!("must be 0 to {}", rate::SPREAD_BPS_MAX),
                    )
                })?,
        };
        let mut conn = crate::db::acquire(&self.pool).await?;
        let row = store::exchange::upsert_rate(
            &mut conn,
            &base,
            &quote,
            &rate.to_string(),
            // At most SPREAD_BPS_MAX: fits.
            spread as i32,
            principal.user_id,
        )
        .await?;
        drop(conn);
        tracing::info!(%base, %quote, %rate, spread_bps = spread, "exchange rate set");
        let view = RateView::try_from(row)?;
        self.hub.publish(view.clone());
        Ok(view)
    }

    /// Every rate set, by pair (as this replica last read them: at most `TALLY_RATES_POLL_MS`
    /// old for a rate set on another replica).
    pub fn list_rates(&self) -> Vec<RateView> {
        self.hub.snapshot().rates.into_values().collect()
    }

    /// Every rate, then each change, and a heartbeat while nothing changes; `STREAM_LIMIT` when
    /// the caller already holds `TALLY_STREAMS_PER_USER_MAX` streams here.
    pub fn watch_rates(&self, principal: &Principal) -> Result<RatesStream> {
        let slot = self.streams.acquire(principal.user_id)?;
        // Subscribed before the snapshot is read, so no change falls between the two.
        let changes = self.hub.subscribe();
        let snapshot = self.hub.snapshot();
        let state = WatchState {
            hub: self.hub.clone(),
            changes,
            generation: snapshot.generation,
            first: Some(snapshot),
            stopping: self.stopping.subscribe(),
            heartbeat: self.settings.heartbeat_interval,
            _slot: slot,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_update)))
    }

    /// Prices `from` into `to` at the current rate and keeps the quote for its requester.
    pub async fn create_quote(
        &self,
        principal: &Principal,
        from: &str,
        to: &str,
        amount: Option<QuoteAmount>,
    ) -> Result<Quote> {
        let (from, to) = self.pair("from_currency", from, "to_currency", to)?;
        let amount = amount.ok_or_else(|| {
            Error::invalid(
                "from_amount",
                "one of from_amount and to_amount is required",
            )
        })?;
        let (field, units) = match amount {
            QuoteAmount::From(units) => ("from_amount", units),
            QuoteAmount::To(units) => ("to_amount", units),
        };
        if units <= 0 {
            return Err(Error::invalid(
                field,
                "must be a positive number of minor units",
            ));
        }
        let mut conn = crate::db::acquire(&self.pool).await?;
        let Some((row, direct)) = store::exchange::rate_between(&mut conn, &from, &to).await?
        else {
            return Err(Error::refused(
                Reason::RateNotSet,
                format!("no exchange rate is set between {from} and {to}"),
            ));
        };
        let rate = RateView::try_from(row)?;
        let (from_exponent, to_exponent) = (self.exponent(&from)?, self.exponent(&to)?);
        let pricing = Pricing::new(
            rate.rate,
            direct,
            rate.spread_bps,
            from_exponent,
            to_exponent,
        )
        .map_err(|e| convert_error(field, e))?;
        let priced =
            |result: Result<i64, ConvertError>| result.map_err(|e| convert_error(field, e));
        let (from_amount, to_amount) = match amount {
            QuoteAmount::From(paid) => (paid, priced(pricing.receive(paid))?),
            QuoteAmount::To(received) => (priced(pricing.pay(received))?, received),
        };
        let shown = pricing.major_unit_rate(from_exponent, to_exponent);
        let quote = store::exchange::insert_quote(
            &mut conn,
            &store::exchange::NewQuote {
                id: Uuid::now_v7(),
                owner_id: principal.user_id,
                from_currency: &from,
                to_currency: &to,
                from_amount,
                to_amount,
                rate: &shown,
                ttl_ms: i64::try_from(self.settings.quote_ttl.as_millis()).unwrap_or(i64::MAX),
            },
        )
        .await?;
        Ok(quote.into())
    }

    /// Converts at the terms of the caller's quote between two of the caller's accounts (in the
    /// quote's currencies: another is `INVALID_ARGUMENT`, with nothing written). Another user's
    /// quote or account looks like a missing one.
    pub async fn convert(
        &self,
        principal: &Principal,
        conversion_id: &str,
        quote_id: &str,
        from_account_id: &str,
        to_account_id: &str,
    ) -> Result<Conversion> {
        let id = validate::uuid("conversion_id", conversion_id)?;
        let quote_id = validate::uuid("quote_id", quote_id)?;
        let from_account = validate::uuid("from_account_id", from_account_id)?;
        let to_account = validate::uuid("to_account_id", to_account_id)?;
        let mut conn = crate::db::acquire(&self.pool).await?;
        let quote = store::exchange::quote_of(&mut conn, quote_id, principal.user_id)
            .await?
            .ok_or(Error::NotFound("quote"))?;
        for (field, account, currency) in [
            ("from_account_id", from_account, &quote.from_currency),
            ("to_account_id", to_account, &quote.to_currency),
        ] {
            let row = store::accounts::by_id(&mut conn, account)
                .await?
                .filter(|row| row.owner_id == Some(principal.user_id))
                .ok_or(Error::NotFound("account"))?;
            if row.currency != *currency {
                return Err(Error::invalid(
                    field,
                    format!(
                        "is a {} account; the quote converts {} into {}",
                        row.currency, quote.from_currency, quote.to_currency
                    ),
                ));
            }
        }
        drop(conn);
        let request = ConversionRequest {
            conversion_id: id,
            quote_id,
            from_account,
            to_account,
            from_currency: quote.from_currency.clone(),
            to_currency: quote.to_currency.clone(),
            from_amount: quote.from_amount,
            to_amount: quote.to_amount,
        };
        let legs = self.ledger.convert(principal, &request).await?;
        Ok(Conversion {
            id,
            quote: quote.into(),
            legs,
        })
    }

    /// The liquidity account of every currency, as `principal` may read them (bankers).
    pub async fn liquidity_accounts(&self, principal: &Principal) -> Result<Vec<Account>> {
        let mut accounts = Vec::new();
        for (_, id) in self.ledger.liquidity_accounts() {
            accounts.push(self.ledger.get_account(principal, &id.to_string()).await?);
        }
        accounts.sort_by(|a, b| a.currency.cmp(&b.currency));
        Ok(accounts)
    }

    /// What `balances` (currency, minor units) are worth in `currency` at the mid rates this
    /// replica holds (no spread), each rounded toward zero; `None` for a currency with no rate
    /// to `currency` (or an amount too large to price).
    pub fn value(&self, currency: &str, balances: &[(String, i128)]) -> Result<Vec<Option<i128>>> {
        let to_exponent = self.exponent(currency)?;
        let rates = self.hub.snapshot().rates;
        balances
            .iter()
            .map(|(held, units)| {
                if held == currency {
                    return Ok(Some(*units));
                }
                let pair = rates
                    .get(&(held.clone(), currency.to_owned()))
                    .map(|r| (r, true))
                    .or_else(|| {
                        rates
                            .get(&(currency.to_owned(), held.clone()))
                            .map(|r| (r, false))
                    });
                let Some((rate, direct)) = pair else {
                    return Ok(None);
                };
                let pricing = Pricing::new(rate.rate, direct, 0, self.exponent(held)?, to_exponent);
                Ok(pricing.ok().and_then(|p| p.value(*units)))
            })
            .collect()
    }

    /// Two known, different currencies.
    fn pair(
        &self,
        first_field: &'static str,
        first: &str,
        second_field: &'static str,
        second: &str,
    ) -> Result<(String, String)> {
        let first = self.ledger.currencies().require(first_field, first)?;
        let second = self.ledger.currencies().require(second_field, second)?;
        if first == second {
            return Err(Error::invalid(
                second_field,
                format!("must differ from {first_field}"),
            ));
        }
        Ok((first, second))
    }

    fn exponent(&self, code: &str) -> Result<u8> {
        self.ledger
            .currencies()
            .exponent(code)
            .ok_or_else(|| Error::invalid("currency", "unknown currency"))
    }
}

fn convert_error(field: &'static str, error: ConvertError) -> Error {
    match error {
        ConvertError::TooSmall => Error::invalid(
            field,
            "is too small to convert at this rate: it would round to nothing",
        ),
        ConvertError::TooLarge => Error::invalid(field, "is too large to convert at this rate"),
    }
}

/// Where a rates watch is.
struct WatchState {
    hub: Hub,
    changes: broadcast::Receiver<hub::Changes>,
    /// The snapshot still to send first.
    first: Option<Snapshot>,
    /// The hub's generation the client holds: publications up to it are skipped.
    generation: u64,
    stopping: watch::Receiver<bool>,
    heartbeat: Duration,
    _slot: crate::streams::StreamSlot,
}

fn update(rates: Vec<RateView>, snapshot: bool) -> RatesUpdate {
    RatesUpdate {
        rates,
        snapshot,
        sent_at: OffsetDateTime::now_utc(),
    }
}

async fn next_update(mut state: WatchState) -> Option<(RatesUpdate, WatchState)> {
    if let Some(snapshot) = state.first.take() {
        let rates = snapshot.rates.into_values().collect();
        return Some((update(rates, true), state));
    }
    loop {
        if *state.stopping.borrow() {
            return None;
        }
        tokio::select! {
            _ = state.stopping.changed() => return None,
            received = state.changes.recv() => match received {
                Ok((generation, changed)) => {
                    if generation <= state.generation {
                        continue;
                    }
                    state.generation = generation;
                    return Some((update(changed, false), state));
                }
                // Fell behind: everything, as it is now, replaces what the client holds.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let snapshot = state.hub.snapshot();
                    state.generation = snapshot.generation;
                    let rates = snapshot.rates.into_values().collect();
                    return Some((update(rates, true), state));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = tokio::time::sleep(state.heartbeat) => {
                return Some((update(Vec::new(), false), state));
            }
        }
    }
}
