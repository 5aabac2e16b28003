//! Telemetry, end to end: `/metrics` on the server and on the worker after real traffic, and
//! OpenTelemetry spans from the real binaries arriving at an OTLP/gRPC receiver.

use std::time::Duration;

use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, assert_code, authed, eventually, unique},
    mail_harness::{SmtpSink, TestWorker},
};
use tally::proto::tally_v1 as pb;

const WAIT: Duration = Duration::from_secs(60);

async fn scrape(addr: std::net::SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The sample line of `name` carrying every `labels` pair, if the scrape has one.
fn sample<'a>(text: &'a str, name: &str, labels: &[(&str, &str)]) -> Option<&'a str> {
    text.lines().find(|line| {
        !line.starts_with('#')
            && (line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
            && labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
    })
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn post_json(app: &TestApp, path: &str, token: &str, body: &Json) -> (u16, Json) {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", app.addr))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("http call");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Json::Null))
}

#[tokio::test]
async fn metrics_count_calls_transfers_pool_outbox_queue_and_jobs_by_their_labels() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;

    // A sign-up whose mail the worker sends.
    let banker = app.signed_in(&unique("banker"), &["banker"]).await;
    assert_eq!(smtp.wait_for(1, WAIT).await.len(), 1);
    let alice = app.signed_in(&unique("alice"), &[]).await;
    let from = app.open_account(&alice.access_token, "USD").await;
    let to = app.open_account(&alice.access_token, "USD").await;
    app.deposit(&banker.access_token, &from.account_id, 500)
        .await;
    // A transfer that succeeds and one refused for funds, over JSON.
    let transfer = |amount: i64| {
        json!({
            "transferId": Uuid::new_v4().to_string(),
            "fromAccountId": from.account_id,
            "toAccountId": to.account_id,
            "amount": amount.to_string(),
            "currency": "USD",
        })
    };
    let (status, _) = post_json(&app, "/v1/transfers", &alice.access_token, &transfer(200)).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(
        &app,
        "/v1/transfers",
        &alice.access_token,
        &transfer(10_000),
    )
    .await;
    assert_eq!(
        status, 400,
        "insufficient funds is FAILED_PRECONDITION, HTTP 400"
    );
    // A gRPC error: an account nobody has.
    assert_code(
        app.accounts()
            .get_account(authed(
                &alice.access_token,
                pb::GetAccountRequest {
                    account_id: Uuid::new_v4().to_string(),
                },
            ))
            .await,
        tonic::Code::NotFound,
    );

    let text = scrape(app.addr).await;
    let create = "tally.v1.TransferService/CreateTransfer";
    for (name, labels) in [
        (
            "tally_rpc_requests_total",
            &[("method", create), ("code", "OK")][..],
        ),
        (
            "tally_rpc_requests_total",
            &[("method", create), ("code", "FAILED_PRECONDITION")][..],
        ),
        (
            "tally_rpc_requests_total",
            &[
                ("method", "tally.v1.AccountService/GetAccount"),
                ("code", "NOT_FOUND"),
            ][..],
        ),
        (
            "tally_rpc_requests_total",
            &[
                ("method", "tally.v1.UserService/CreateUser"),
                ("code", "OK"),
            ][..],
        ),
        (
            "tally_rpc_duration_seconds_bucket",
            &[("method", create), ("le", "+Inf")][..],
        ),
        (
            "tally_rpc_duration_seconds_count",
            &[("method", create)][..],
        ),
        (
            "tally_transfers_total",
            &[("kind", "transfer"), ("outcome", "succeeded")][..],
        ),
        (
            "tally_transfers_total",
            &[("kind", "transfer"), ("outcome", "failed")][..],
        ),
        (
            "tally_transfers_total",
            &[("kind", "deposit"), ("outcome", "succeeded")][..],
        ),
        ("tally_transfer_retries_total", &[][..]),
        ("tally_transfer_aborts_total", &[][..]),
        ("tally_db_pool_connections", &[("state", "in_use")][..]),
        ("tally_db_pool_connections", &[("state", "idle")][..]),
        ("tally_db_pool_connections_max", &[][..]),
        ("tally_mail_outbox_backlog", &[][..]),
        ("tally_mail_queue_depth", &[][..]),
    ] {
        let line = sample(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics:\n{text}"));
        assert!(value(line) >= 0.0, "{line}");
    }
    let ok = sample(
        &text,
        "tally_rpc_requests_total",
        &[("method", create), ("code", "OK")],
    )
    .unwrap();
    assert!(value(ok) >= 1.0, "{ok}");
    assert!(text.contains("# TYPE tally_rpc_duration_seconds histogram"));
    // Plain HTTP is not an RPC: no series for /metrics itself.
    assert!(!text.contains("method=\"metrics\""));

    // The worker's own endpoint has its jobs by outcome.
    let seen = eventually(WAIT, || async {
        let text = scrape(worker.metrics_addr).await;
        sample(&text, "tally_mail_jobs_total", &[("outcome", "sent")]).is_some()
            && sample(&text, "tally_mail_queue_depth", &[]).is_some()
    })
    .await;
    assert!(
        seen.is_some(),
        "worker /metrics:\n{}",
        scrape(worker.metrics_addr).await
    );
    worker.stop().await;
}
