//! Telemetry, end to end: `/metrics` on the server and on the worker after real traffic, and
//! OpenTelemetry spans from the real binaries arriving at an OTLP/gRPC receiver.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, assert_code, eventually, unique},
    mail_harness::{SmtpSink, TestWorker},
};

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

const CREATE_TRANSFER: &str = "tally.v1.TransferService/CreateTransfer";

/// The samples (name and labels) the server's `/metrics` must have after the traffic of
/// [`traffic_for_metrics`].
const SERVER_SAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "tally_rpc_requests_total",
        &[("method", CREATE_TRANSFER), ("code", "OK")],
    ),
    (
        "tally_rpc_requests_total",
        &[("method", CREATE_TRANSFER), ("code", "FAILED_PRECONDITION")],
    ),
    (
        "tally_rpc_requests_total",
        &[
            ("method", "tally.v1.AccountService/GetAccount"),
            ("code", "NOT_FOUND"),
        ],
    ),
    (
        "tally_rpc_requests_total",
        &[
            ("method", "tally.v1.UserService/CreateUser"),
            ("code", "OK"),
        ],
    ),
    (
        "tally_rpc_duration_seconds_bucket",
        &[("method", CREATE_TRANSFER), ("le", "+Inf")],
    ),
    (
        "tally_rpc_duration_seconds_count",
        &[("method", CREATE_TRANSFER)],
    ),
    (
        "tally_transfers_total",
        &[("kind", "transfer"), ("outcome", "succeeded")],
    ),
    (
        "tally_transfers_total",
        &[("kind", "transfer"), ("outcome", "failed")],
    ),
    (
        "tally_transfers_total",
        &[("kind", "deposit"), ("outcome", "succeeded")],
    ),
    ("tally_transfer_retries_total", &[]),
    ("tally_transfer_aborts_total", &[]),
    ("tally_transfer_batch_postings_bucket", &[("le", "+Inf")]),
    ("tally_transfer_queue_wait_seconds_count", &[]),
    ("tally_db_pool_connections", &[("state", "in_use")]),
    ("tally_db_pool_connections", &[("state", "idle")]),
    ("tally_db_pool_connections", &[("state", "waiting")]),
    ("tally_db_pool_connections_max", &[]),
    ("tally_mail_outbox_backlog", &[]),
    ("tally_mail_queue_depth", &[]),
];

/// Traffic of every kind the server counts: a banker's sign-up whose mail the worker sends
/// (to `smtp`), a deposit, over JSON a transfer that succeeds and one refused for funds, and a
/// gRPC NOT_FOUND.
async fn traffic_for_metrics(app: &TestApp, smtp: &SmtpSink) {
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
    let (status, _) = post_json(app, "/v1/transfers", &alice.access_token, &transfer(200)).await;
    assert_eq!(status, 200);
    let (status, _) = post_json(app, "/v1/transfers", &alice.access_token, &transfer(10_000)).await;
    assert_eq!(
        status, 400,
        "insufficient funds is FAILED_PRECONDITION, HTTP 400"
    );
    // A gRPC error: an account nobody has.
    assert_code(
        app.get_account(&alice.access_token, &Uuid::new_v4().to_string())
            .await,
        tonic::Code::NotFound,
    );
}

#[tokio::test]
async fn metrics_count_calls_transfers_pool_outbox_queue_and_jobs_by_their_labels() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;
    traffic_for_metrics(&app, &smtp).await;

    let text = scrape(app.addr).await;
    for (name, labels) in SERVER_SAMPLES {
        let line = sample(&text, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in /metrics:\n{text}"));
        assert!(value(line) >= 0.0, "{line}");
    }
    let ok = sample(
        &text,
        "tally_rpc_requests_total",
        &[("method", CREATE_TRANSFER), ("code", "OK")],
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

/// A span as it reached the receiver.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    service: String,
}

type Spans = std::sync::Arc<std::sync::Mutex<Vec<Received>>>;

/// The OpenTelemetry collector's OTLP/gRPC trace service, keeping every span it is sent.
struct Receiver(Spans);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        service: service.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the receiver on a free port; returns its address and what it collects.
async fn start_receiver() -> (std::net::SocketAddr, Spans) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Spans::default();
    let service = TraceServiceServer::new(Receiver(spans.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, spans)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary with `args`, exporting its spans to `endpoint`.
fn spawn_traced(args: &[String], endpoint: &str) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("start tally {}: {err}", args[0]))
}

/// Sends SIGTERM and waits for a clean exit (which flushes the span exporter).
async fn terminate(child: &mut tokio::process::Child, what: &str) {
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} exits after SIGTERM"))
        .unwrap();
    assert!(status.success(), "{what} exit status {status:?}");
}

/// Signs a user up over JSON at `base` (its verification mail reaching `smtp`), logs in and
/// opens two USD accounts; returns the access token and the two account ids.
async fn sign_up_with_two_accounts_over_json(
    http: &reqwest::Client,
    base: &str,
    smtp: &SmtpSink,
) -> (String, Vec<String>) {
    let name = unique("traced");
    let created = http
        .post(format!("{base}/v1/users"))
        .json(&json!({
            "username": name,
            "fullName": "Traced Tester",
            "email": format!("{name}@example.com"),
            "password": crate::helpers::PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_eq!(smtp.wait_for(1, WAIT).await.len(), 1);
    let login: Json = http
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"username": name, "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned();
    let mut accounts = Vec::new();
    for _ in 0..2 {
        let account: Json = http
            .post(format!("{base}/v1/accounts"))
            .bearer_auth(&token)
            .json(&json!({"currency": "USD"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        accounts.push(account["accountId"].as_str().unwrap().to_owned());
    }
    (token, accounts)
}

/// Asserts that the CreateTransfer span continues the caller's trace `trace_id` under its span
/// `parent_id`, with a `ledger.transaction` span under it in the same trace.
fn assert_the_rpc_continues_the_callers_trace(spans: &[Received], trace_id: &str, parent_id: &str) {
    let find = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let rpc = find(CREATE_TRANSFER)
        .next()
        .unwrap_or_else(|| panic!("no CreateTransfer span among {spans:#?}"));
    assert_eq!(
        rpc.trace_id, trace_id,
        "the RPC continues the caller's trace"
    );
    assert_eq!(
        rpc.parent_span_id, parent_id,
        "the caller's span is its parent"
    );
    let transaction = find("ledger.transaction")
        .find(|s| s.parent_span_id == rpc.span_id)
        .unwrap_or_else(|| panic!("no ledger.transaction under the RPC among {spans:#?}"));
    assert_eq!(transaction.trace_id, trace_id);
}

/// Asserts that the worker's `mail.job` span, and the outbox relay's push, are in the trace of
/// the sign-up call that queued the mail, the job under one of its spans.
fn assert_the_job_continues_the_sign_up_trace(spans: &[Received]) {
    let find = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let sign_up = find("tally.v1.UserService/CreateUser")
        .next()
        .unwrap_or_else(|| panic!("no CreateUser span among {spans:#?}"));
    let job = find("mail.job")
        .find(|s| s.trace_id == sign_up.trace_id)
        .unwrap_or_else(|| panic!("no mail.job in the CreateUser trace among {spans:#?}"));
    assert!(
        job.service.contains("tally"),
        "the job span comes from the worker: {job:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.span_id == job.parent_span_id && s.trace_id == sign_up.trace_id),
        "the job's parent is a span of the sign-up call: {job:?} in {spans:#?}"
    );
    assert!(
        find("outbox.relay").any(|s| s.trace_id == sign_up.trace_id),
        "the outbox relay push is in the sign-up's trace: {spans:#?}"
    );
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_continuing_traceparent_and_the_trace_that_queued_a_job() {
    // The real binaries: the tracer provider is global to a process, so each process under
    // test gets its own, pointed at this test's receiver.
    let (receiver, spans) = start_receiver().await;
    let endpoint = format!("http://{receiver}");
    let app = TestApp::spawn().await; // its database and queue; its own server stays quiet
    let smtp = SmtpSink::start(&[]).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let serve_args = [
        "serve",
        "--listen-addr",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        &app.db.url,
        "--redis-url",
        &app.settings.queue.redis_url,
        "--mail-queue",
        &app.settings.queue.queue,
    ]
    .map(str::to_owned);
    let mut serve = spawn_traced(&serve_args, &endpoint);
    let worker_args = crate::mail_harness::worker_argv(&app, &smtp.url());
    let mut worker = spawn_traced(&worker_args[1..], &endpoint);
    let http = reqwest::Client::new();
    let up = eventually(WAIT, || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(up.is_some(), "tally serve answers /healthz");

    // A sign-up over JSON; its verification mail goes through the worker.
    let (token, accounts) = sign_up_with_two_accounts_over_json(&http, &base, &smtp).await;
    // A transfer over JSON inside the caller's trace (refused for funds: it still runs its
    // transaction and records the failure).
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let transfer = http
        .post(format!("{base}/v1/transfers"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{parent_id}-01"))
        .json(&json!({
            "transferId": Uuid::new_v4().to_string(),
            "fromAccountId": accounts[0],
            "toAccountId": accounts[1],
            "amount": "100",
            "currency": "USD",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(transfer.status(), 400);

    // SIGTERM flushes both exporters.
    terminate(&mut serve, "tally serve").await;
    terminate(&mut worker, "tally worker").await;

    let spans = spans.lock().unwrap().clone();
    eprintln!("spans received:");
    for s in &spans {
        eprintln!(
            "  {} trace={} span={} parent={}",
            s.name, s.trace_id, s.span_id, s.parent_span_id
        );
    }
    assert_the_rpc_continues_the_callers_trace(&spans, trace_id, parent_id);
    assert_the_job_continues_the_sign_up_trace(&spans);
}

#[test]
fn the_grafana_dashboard_is_json_with_a_panel_for_every_series() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/tally.json"
    ))
    .expect("deploy/grafana/tally.json");
    let dashboard: Json = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    for series in [
        "tally_rpc_requests_total",
        "tally_rpc_duration_seconds_bucket",
        "tally_transfers_total",
        "tally_transfer_retries_total",
        "tally_transfer_aborts_total",
        "tally_holds_expired_total",
        "tally_transfer_batch_postings_bucket",
        "tally_transfer_queue_wait_seconds_bucket",
        "tally_db_pool_connections",
        "tally_db_pool_connections_max",
        "tally_mail_outbox_backlog",
        "tally_mail_queue_depth",
        "tally_mail_jobs_total",
        "tally_mail_outbox_relayed_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(&format!("{series}{{"))),
            "no panel queries {series}"
        );
    }
}
