//! Exchange rates and quotes against the real server: who may set a rate, what is refused with
//! nothing written, quotes rounded against the caller, and `WatchRates` over gRPC, NDJSON and
//! Server-Sent Events (with curl): the snapshot, a change from this and from another replica
//! within a second, heartbeats for a minute, the per-user bound, and a clean end at shutdown.

use std::time::Duration;

use tally::proto::tally_v1::{self as pb, exchange_service_client::ExchangeServiceClient};
use tokio::io::AsyncBufReadExt as _;
use tonic::{Code, transport::Channel};

use crate::helpers::*;

/// What a change may take to reach a watcher (the bound).
const CHANGE_WITHIN: Duration = Duration::from_secs(1);

fn exchange(app: &TestApp) -> ExchangeServiceClient<Channel> {
    ExchangeServiceClient::new(app.channel.clone())
}

async fn set_rate(
    app: &TestApp,
    token: &str,
    base: &str,
    quote: &str,
    rate: &str,
    spread_bps: Option<i32>,
) -> Result<pb::Rate, tonic::Status> {
    let request = pb::SetRateRequest {
        base_currency: base.into(),
        quote_currency: quote.into(),
        rate: rate.into(),
        spread_bps,
    };
    exchange(app)
        .set_rate(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

async fn quote(
    app: &TestApp,
    token: &str,
    from: &str,
    to: &str,
    amount: pb::create_quote_request::Amount,
) -> Result<pb::Quote, tonic::Status> {
    let request = pb::CreateQuoteRequest {
        from_currency: from.into(),
        to_currency: to.into(),
        amount: Some(amount),
    };
    exchange(app)
        .create_quote(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

async fn rate_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM exchange_rates")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn bankers_set_rates_everyone_lists_them_and_bad_input_writes_nothing() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let customer = app.signed_in(&unique("xr"), &[]).await.access_token;

    let set = set_rate(&app, &banker, "USD", "EUR", "0.9200", Some(25))
        .await
        .unwrap();
    assert_eq!(
        (set.rate.as_str(), set.spread_bps, set.updated_at.is_some()),
        ("0.92", 25, true)
    );
    // Without a spread, the configured default (50 bps).
    let set = set_rate(&app, &banker, "BTC", "USD", "65000", None)
        .await
        .unwrap();
    assert_eq!(set.spread_bps, 50);
    let denied = set_rate(&app, &customer, "USD", "JPY", "150", None).await;
    assert_code(denied, Code::PermissionDenied);

    let before = rate_count(&app).await;
    for (base, quote, rate, spread, field) in [
        ("USD", "USD", "1", None, "quote_currency"),
        ("USD", "XYZ", "1", None, "quote_currency"),
        ("", "EUR", "1", None, "base_currency"),
        ("USD", "EUR", "0", None, "rate"),
        ("USD", "EUR", "-1.5", None, "rate"),
        ("USD", "EUR", "1e3", None, "rate"),
        ("USD", "EUR", "1.0000000000000000001", None, "rate"),
        ("USD", "EUR", "1", Some(5_001), "spread_bps"),
        ("USD", "EUR", "1", Some(-1), "spread_bps"),
    ] {
        let refused = set_rate(&app, &banker, base, quote, rate, spread).await;
        let status = assert_code(refused, Code::InvalidArgument);
        assert!(
            status.message().starts_with(field),
            "{base}/{quote} {rate}: {}",
            status.message()
        );
    }
    assert_eq!(
        rate_count(&app).await,
        before,
        "a refused rate wrote nothing"
    );

    let listed = exchange(&app)
        .list_rates(authed(&customer, pb::ListRatesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .rates;
    let pairs: Vec<(&str, &str, &str)> = listed
        .iter()
        .map(|r| {
            (
                r.base_currency.as_str(),
                r.quote_currency.as_str(),
                r.rate.as_str(),
            )
        })
        .collect();
    assert_eq!(pairs, [("BTC", "USD", "65000"), ("USD", "EUR", "0.92")]);
}

#[tokio::test]
async fn quotes_are_rounded_against_the_caller_either_way_and_expire() {
    use pb::create_quote_request::Amount;
    let app = TestApp::spawn_with(&["--quote-ttl-ms", "30000"]).await;
    let banker = app.banker().await;
    let customer = app.signed_in(&unique("xq"), &[]).await.access_token;
    set_rate(&app, &banker, "USD", "EUR", "0.92", Some(50))
        .await
        .unwrap();
    set_rate(&app, &banker, "BTC", "USD", "65000", Some(0))
        .await
        .unwrap();

    // 100.00 USD at 0.92 less 0.5%: 91.54 EUR exactly.
    let q = quote(&app, &customer, "USD", "EUR", Amount::FromAmount(10_000))
        .await
        .unwrap();
    assert_eq!(
        (q.from_amount, q.to_amount, q.rate.as_str()),
        (10_000, 9_154, "0.9154")
    );
    let (created, expires) = (q.created_at.unwrap(), q.expires_at.unwrap());
    assert_eq!(
        expires.seconds - created.seconds,
        30,
        "{created:?} {expires:?}"
    );
    // 1.00 EUR wanted: 100 / 0.9154 = 109.24... USD cents, rounded up.
    let q = quote(&app, &customer, "USD", "EUR", Amount::ToAmount(100))
        .await
        .unwrap();
    assert_eq!((q.from_amount, q.to_amount), (110, 100));
    // The pair the other way round: 91.54 EUR buy back at most 99.50 USD (the spread again).
    let q = quote(&app, &customer, "EUR", "USD", Amount::FromAmount(9_154))
        .await
        .unwrap();
    assert_eq!(q.to_amount, 9_900, "9154 / 0.92 × 0.995 = 9900.25: {q:?}");
    // Into satoshis: 650.00 USD buy 0.01 BTC.
    let q = quote(&app, &customer, "USD", "BTC", Amount::FromAmount(65_000))
        .await
        .unwrap();
    assert_eq!(q.to_amount, 1_000_000);

    let too_small = quote(&app, &customer, "USD", "EUR", Amount::FromAmount(1)).await;
    assert!(
        assert_code(too_small, Code::InvalidArgument)
            .message()
            .contains("too small")
    );
    let no_rate = quote(&app, &customer, "USD", "JPY", Amount::FromAmount(100)).await;
    let status = assert_code(no_rate, Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("RATE_NOT_SET"));
    let zero = quote(&app, &customer, "USD", "EUR", Amount::ToAmount(0)).await;
    assert_code(zero, Code::InvalidArgument);
    let none = exchange(&app)
        .create_quote(authed(
            &customer,
            pb::CreateQuoteRequest {
                from_currency: "USD".into(),
                to_currency: "EUR".into(),
                amount: None,
            },
        ))
        .await;
    assert_code(none, Code::InvalidArgument);
}

/// The next message of a watch within `within`, or a panic naming what was awaited.
async fn next_within(
    stream: &mut tonic::Streaming<pb::WatchRatesResponse>,
    within: Duration,
    awaited: &str,
) -> pb::WatchRatesResponse {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no {awaited} within {within:?}"))
        .expect("the stream is healthy")
        .unwrap_or_else(|| panic!("the stream ended before {awaited}"))
}

/// Skips heartbeats until a message with rates arrives.
async fn next_rates(
    stream: &mut tonic::Streaming<pb::WatchRatesResponse>,
    awaited: &str,
) -> pb::WatchRatesResponse {
    let deadline = tokio::time::Instant::now() + CHANGE_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = next_within(stream, left, awaited).await;
        if !message.rates.is_empty() {
            return message;
        }
    }
}

/// Reads messages until one carries `rate`, within [`CHANGE_WITHIN`] (what arrived before, a
/// snapshot the other replica had not refreshed yet, say, is skipped).
async fn until_rate(
    stream: &mut tonic::Streaming<pb::WatchRatesResponse>,
    rate: &str,
    awaited: &str,
) {
    let deadline = tokio::time::Instant::now() + CHANGE_WITHIN;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = next_within(stream, left, awaited).await;
        if message.rates.iter().any(|r| r.rate == rate) {
            return;
        }
    }
}

async fn watch(
    app: &TestApp,
    token: &str,
) -> Result<tonic::Streaming<pb::WatchRatesResponse>, tonic::Status> {
    exchange(app)
        .watch_rates(authed(token, pb::WatchRatesRequest {}))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_grpc_watch_gets_the_snapshot_then_changes_from_any_replica_and_ends_at_shutdown() {
    let flags = [
        "--stream-heartbeat-ms",
        "200",
        "--streams-per-user-max",
        "2",
    ];
    let app = TestApp::spawn_with(&flags).await;
    let other = app.replica(&flags).await;
    let banker = app.banker().await;
    let me = app.signed_in(&unique("xw"), &[]).await.access_token;
    set_rate(&app, &banker, "USD", "EUR", "0.92", None)
        .await
        .unwrap();

    let mut here = watch(&app, &me).await.unwrap();
    let first = next_within(&mut here, CHANGE_WITHIN, "the snapshot").await;
    assert!(first.snapshot, "{first:?}");
    assert_eq!(first.rates.len(), 1);
    assert_eq!(first.rates[0].rate, "0.92");
    // A second stream is allowed, a third is not (2 per user), and frees a place when gone.
    let mut elsewhere = watch(&other, &me).await.unwrap();
    let second = watch(&app, &me).await.unwrap();
    let status = assert_code(watch(&app, &me).await, Code::ResourceExhausted);
    assert_eq!(reason(&status).as_deref(), Some("STREAM_LIMIT"));
    drop(second);
    let third = eventually(Duration::from_secs(5), || async {
        watch(&app, &me).await.is_ok()
    })
    .await;
    assert!(third.is_some(), "a closed stream gives its place back");

    // A heartbeat while nothing changes: empty, not a snapshot.
    let beat = next_within(&mut here, Duration::from_secs(2), "a heartbeat").await;
    assert!(beat.rates.is_empty() && !beat.snapshot, "{beat:?}");

    // Set on this replica: here at once; on the other replica within its poll interval.
    set_rate(&app, &banker, "USD", "EUR", "0.93", None)
        .await
        .unwrap();
    let change = next_rates(&mut here, "the change here").await;
    assert_eq!(
        (change.rates[0].rate.as_str(), change.snapshot),
        ("0.93", false)
    );
    until_rate(&mut elsewhere, "0.93", "the change on the other replica").await;
    // And the other way: set there, seen here.
    set_rate(&other, &banker, "BTC", "USD", "65000", None)
        .await
        .unwrap();
    until_rate(&mut here, "65000", "a change made on the other replica").await;

    // Shutdown ends the stream cleanly (no error), well within the drain.
    app.stop().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match here.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended at shutdown");
    assert!(matches!(end, Ok(None)), "{end:?}");
}

#[tokio::test]
async fn over_http_the_watch_is_server_sent_events_with_curl_and_ndjson() {
    let app = TestApp::spawn_with(&["--stream-heartbeat-ms", "300"]).await;
    let banker = app.banker().await;
    let me = app.signed_in(&unique("xs"), &[]).await.access_token;
    set_rate(&app, &banker, "USD", "EUR", "0.92", None)
        .await
        .unwrap();

    // curl -N, as a user would run it.
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "-H", "accept: text/event-stream", "-H"])
        .arg(format!("authorization: Bearer {me}"))
        .arg(format!("http://{}/v1/rates:watch", app.addr))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs");
    let mut lines = tokio::io::BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut next_data = async || loop {
        let line = tokio::time::timeout(Duration::from_secs(2), lines.next_line())
            .await
            .expect("an event within 2 s")
            .unwrap()
            .expect("curl still streams");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str::<serde_json::Value>(data).unwrap();
        }
    };
    let snapshot = next_data().await;
    assert_eq!(snapshot["snapshot"], true, "{snapshot}");
    assert_eq!(snapshot["rates"][0]["rate"], "0.92");
    let beat = next_data().await;
    assert_eq!(beat["rates"], serde_json::json!([]), "{beat}");
    set_rate(&app, &banker, "USD", "EUR", "0.91", None)
        .await
        .unwrap();
    let change = loop {
        let event = next_data().await;
        if event["rates"].as_array().is_some_and(|r| !r.is_empty()) {
            break event;
        }
    };
    assert_eq!(change["rates"][0]["rate"], "0.91", "{change}");

    // Without `Accept: text/event-stream`: one JSON object per line.
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/rates:watch", app.addr))
        .bearer_auth(&me)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut response = response;
    let chunk = tokio::time::timeout(Duration::from_secs(2), response.chunk())
        .await
        .expect("the first line within 2 s")
        .unwrap()
        .expect("a first chunk");
    let first: serde_json::Value =
        serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["rates"][0]["rate"], "0.91", "{first}");
    // Without a token: the JSON 401, before any stream.
    let anonymous = reqwest::get(format!("http://{}/v1/rates:watch", app.addr))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_watch_lives_a_minute_on_heartbeats_and_still_delivers() {
    let app = TestApp::spawn_with(&["--stream-heartbeat-ms", "1000"]).await;
    let banker = app.banker().await;
    let me = app.signed_in(&unique("xl"), &[]).await.access_token;
    let mut stream = watch(&app, &me).await.unwrap();
    assert!(
        next_within(&mut stream, CHANGE_WITHIN, "the snapshot")
            .await
            .snapshot
    );
    let started = tokio::time::Instant::now();
    let mut beats = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let message = next_within(&mut stream, Duration::from_secs(3), "a heartbeat").await;
        assert!(message.rates.is_empty());
        beats += 1;
    }
    assert!(
        beats >= 55,
        "{beats} heartbeats in a minute at one a second"
    );
    set_rate(&app, &banker, "USD", "JPY", "150", None)
        .await
        .unwrap();
    let change = next_rates(&mut stream, "the change after a minute").await;
    assert_eq!(change.rates[0].quote_currency, "JPY");
}

/// A customer with a funded USD account and an empty EUR one, the rate USD/EUR 0.92 (50 bps),
/// and the EUR liquidity account funded with `liquidity` cents.
struct Market {
    banker: String,
    customer: String,
    username: String,
    usd: String,
    eur: String,
    eur_liquidity: String,
}

async fn market(app: &TestApp, usd: i64, liquidity: i64) -> Market {
    let banker = app.banker().await;
    let username = unique("cv");
    let customer = app.signed_in(&username, &[]).await.access_token;
    let usd_account = app.open_account(&customer, "USD").await.account_id;
    let eur_account = app.open_account(&customer, "EUR").await.account_id;
    app.deposit(&banker, &usd_account, usd).await;
    set_rate(app, &banker, "USD", "EUR", "0.92", Some(50))
        .await
        .unwrap();
    let liquidity_accounts = exchange(app)
        .list_liquidity_accounts(authed(&banker, pb::ListLiquidityAccountsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let eur_liquidity = liquidity_accounts
        .iter()
        .find(|a| a.currency == "EUR")
        .expect("an EUR liquidity account")
        .account_id
        .clone();
    if liquidity > 0 {
        app.deposit(&banker, &eur_liquidity, liquidity).await;
    }
    Market {
        banker,
        customer,
        username,
        usd: usd_account,
        eur: eur_account,
        eur_liquidity,
    }
}

async fn convert(
    app: &TestApp,
    token: &str,
    conversion_id: &str,
    quote_id: &str,
    from: &str,
    to: &str,
) -> Result<pb::Conversion, tonic::Status> {
    let request = pb::ConvertRequest {
        conversion_id: conversion_id.into(),
        quote_id: quote_id.into(),
        from_account_id: from.into(),
        to_account_id: to.into(),
    };
    exchange(app)
        .convert(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

async fn usd_quote(app: &TestApp, token: &str, cents: i64) -> pb::Quote {
    quote(
        app,
        token,
        "USD",
        "EUR",
        pb::create_quote_request::Amount::FromAmount(cents),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_quote_converts_once_and_expired_reused_or_foreign_quotes_are_refused() {
    let app = TestApp::spawn_with(&["--quote-ttl-ms", "1000"]).await;
    let m = market(&app, 30_000, 1_000_000).await;
    let q = usd_quote(&app, &m.customer, 10_000).await;
    let id = uuid::Uuid::new_v4().to_string();
    let done = convert(&app, &m.customer, &id, &q.quote_id, &m.usd, &m.eur)
        .await
        .unwrap();
    let (debit, credit) = (done.debit.unwrap(), done.credit.unwrap());
    assert_eq!((debit.amount, debit.currency.as_str()), (10_000, "USD"));
    assert_eq!((credit.amount, credit.currency.as_str()), (9_154, "EUR"));
    assert_eq!(debit.kind(), pb::TransferKind::Conversion);
    assert_eq!(app.balance(&m.customer, &m.usd).await, 20_000);
    assert_eq!(app.balance(&m.customer, &m.eur).await, 9_154);
    assert_eq!(
        app.balance(&m.banker, &m.eur_liquidity).await,
        1_000_000 - 9_154
    );
    // Resent with its id: the same conversion, nothing moves again.
    let again = convert(&app, &m.customer, &id, &q.quote_id, &m.usd, &m.eur)
        .await
        .unwrap();
    assert_eq!(again.debit.unwrap().transfer_id, debit.transfer_id);
    assert_eq!(app.balance(&m.customer, &m.usd).await, 20_000);

    // The same quote under a new conversion id: used.
    let reused = convert(
        &app,
        &m.customer,
        &uuid::Uuid::new_v4().to_string(),
        &q.quote_id,
        &m.usd,
        &m.eur,
    )
    .await;
    let status = assert_code(reused, Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("QUOTE_USED"));
    // Past its expiry: refused, recorded FAILED, and the replay answers the same.
    let stale = usd_quote(&app, &m.customer, 5_000).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let late = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let expired = convert(&app, &m.customer, &late, &stale.quote_id, &m.usd, &m.eur).await;
        let status = assert_code(expired, Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("QUOTE_EXPIRED"));
    }
    // Another user's quote looks missing; an account in the wrong currency is refused by name.
    let other = app.signed_in(&unique("cw"), &[]).await.access_token;
    let theirs = usd_quote(&app, &other, 1_000).await;
    let foreign = convert(
        &app,
        &m.customer,
        &uuid::Uuid::new_v4().to_string(),
        &theirs.quote_id,
        &m.usd,
        &m.eur,
    )
    .await;
    assert_code(foreign, Code::NotFound);
    let fresh = usd_quote(&app, &m.customer, 1_000).await;
    let wrong = convert(
        &app,
        &m.customer,
        &uuid::Uuid::new_v4().to_string(),
        &fresh.quote_id,
        &m.eur,
        &m.usd,
    )
    .await;
    let status = assert_code(wrong, Code::InvalidArgument);
    assert!(
        status.message().starts_with("from_account_id"),
        "{}",
        status.message()
    );
    assert_eq!(
        app.balance(&m.customer, &m.usd).await,
        20_000,
        "{}",
        m.username
    );
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
}

#[tokio::test]
async fn sixty_four_concurrent_conversions_against_thin_liquidity_pay_only_what_it_holds() {
    let app = TestApp::spawn().await;
    // Ten conversions of 100.00 USD (91.54 EUR each) and a little more.
    let m = market(&app, 64 * 10_000, 10 * 9_154 + 100).await;
    let mut quotes = Vec::new();
    for _ in 0..64 {
        quotes.push(usd_quote(&app, &m.customer, 10_000).await.quote_id);
    }
    let tasks: Vec<_> = quotes
        .into_iter()
        .map(|quote_id| {
            let (channel, token) = (app.channel.clone(), m.customer.clone());
            let (usd, eur) = (m.usd.clone(), m.eur.clone());
            tokio::spawn(async move {
                let request = pb::ConvertRequest {
                    conversion_id: uuid::Uuid::new_v4().to_string(),
                    quote_id,
                    from_account_id: usd,
                    to_account_id: eur,
                };
                ExchangeServiceClient::new(channel)
                    .convert(authed(&token, request))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let (mut converted, mut short) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => converted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status).as_deref(), Some("INSUFFICIENT_LIQUIDITY"));
                short += 1;
            }
        }
    }
    assert_eq!((converted, short), (10, 54));
    assert_eq!(app.balance(&m.banker, &m.eur_liquidity).await, 100);
    assert_eq!(app.balance(&m.customer, &m.eur).await, 10 * 9_154);
    assert_eq!(app.balance(&m.customer, &m.usd).await, 54 * 10_000);
    let report = app.verify().await;
    assert!(
        report.is_consistent(),
        "every currency sums to zero, nothing negative: {report:?}"
    );
}

#[tokio::test]
async fn list_accounts_values_the_wallet_in_one_currency_at_mid_rates() {
    let app = TestApp::spawn().await;
    let m = market(&app, 10_000, 0).await;
    app.deposit(&m.banker, &m.eur, 9_154).await;
    let yen = app.open_account(&m.customer, "JPY").await.account_id;
    app.deposit(&m.banker, &yen, 500).await;
    let listed = tally::proto::tally_v1::account_service_client::AccountServiceClient::new(
        app.channel.clone(),
    )
    .list_accounts(authed(
        &m.customer,
        pb::ListAccountsRequest {
            valuation_currency: "USD".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner();
    let valuation = listed.valuation.expect("asked for");
    // 100.00 USD, and 91.54 EUR at the mid rate 0.92 (no spread): 99.50 USD. No JPY rate.
    assert_eq!(
        (valuation.currency.as_str(), valuation.total),
        ("USD", 10_000 + 9_950)
    );
    assert_eq!(valuation.unpriced_currencies, ["JPY"]);
    let value_of = |id: &str| {
        valuation
            .accounts
            .iter()
            .find(|v| v.account_id == id)
            .map(|v| v.value)
    };
    assert_eq!(
        (value_of(&m.usd), value_of(&m.eur), value_of(&yen)),
        (Some(10_000), Some(9_950), None)
    );
    let unknown = tally::proto::tally_v1::account_service_client::AccountServiceClient::new(
        app.channel.clone(),
    )
    .list_accounts(authed(
        &m.customer,
        pb::ListAccountsRequest {
            valuation_currency: "XYZ".into(),
            ..Default::default()
        },
    ))
    .await;
    assert_code(unknown, Code::InvalidArgument);
}
