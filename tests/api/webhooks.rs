//! Webhooks against the real server, the real `tally worker` and a real HTTP receiver: signed
//! per Standard Webhooks (the receiver checks each signature with the secret), delivered in
//! sequence order, retried after failures (a receiver answering 500 twice gets the event on
//! the third attempt, under the same `webhook-id`), dead-lettered and requeued, refused for
//! private addresses unless allowed, and delivered under one id per event across a killed and
//! restarted worker.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use tally::proto::tally_v1::{self as pb, webhook_service_client::WebhookServiceClient};
use tonic::{Code, transport::Channel};

use crate::helpers::*;

/// What a delivery may take in these tests.
const DELIVERED_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

/// An HTTP endpoint that records every request, answering 500 to the first `fail_first`.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize, delay: Duration) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let failing = Arc::new(AtomicUsize::new(fail_first));
        let (log, left) = (received.clone(), failing.clone());
        let handler = move |headers: http::HeaderMap, body: String| {
            let (log, left) = (log.clone(), left.clone());
            async move {
                tokio::time::sleep(delay).await;
                let fail = left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let answered = if fail { 500 } else { 204 };
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                log.lock().unwrap().push(Received {
                    id: header("webhook-id"),
                    timestamp: header("webhook-timestamp"),
                    signature: header("webhook-signature"),
                    body,
                    answered,
                });
                http::StatusCode::from_u16(answered).unwrap()
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            received,
            fail_first: failing,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The events accepted (2xx), in the order they came.
    fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.answered < 300)
            .collect()
    }
}

/// What a receiver does with each message: recompute the signature with the secret.
fn signature_holds(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Runs the verification shell that `page` shows after its `<!-- webhook-verify -->` marker
/// on a received message; what it prints.
fn shell_verifies(page: &str, secret: &str, r: &Received) -> String {
    let text = std::fs::read_to_string(page).unwrap();
    let (_, after) = text
        .split_once("<!-- webhook-verify -->\n```sh\n")
        .unwrap_or_else(|| panic!("{page} shows the webhook verification"));
    let script = after.split("\n```").next().unwrap();
    let output = std::process::Command::new("bash")
        .args(["-c", script])
        .env("SECRET", secret)
        .env("ID", &r.id)
        .env("TS", &r.timestamp)
        .env("SIG", &r.signature)
        .env("BODY", &r.body)
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn webhooks(app: &TestApp) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(app.channel.clone())
}

async fn create_webhook(
    app: &TestApp,
    token: &str,
    url: &str,
    account_id: Option<&str>,
    event_types: &[&str],
) -> Result<pb::CreateWebhookResponse, tonic::Status> {
    let request = pb::CreateWebhookRequest {
        url: url.into(),
        event_types: event_types.iter().map(|t| t.to_string()).collect(),
        account_id: account_id.map(Into::into),
    };
    webhooks(app)
        .create_webhook(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

/// `tally worker` on the app's database and Redis, delivering to private addresses, with
/// short backoffs.
fn start_worker(app: &TestApp, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["worker", "--database-url", &app.db.url])
        .args(["--redis-url", &app.settings.queue.redis_url])
        .args(["--mail-queue", &app.settings.queue.queue])
        .args(["--events-stream", &events_stream(&app.db)])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--smtp-url",
            "smtp://127.0.0.1:9",
        ])
        .args(["--webhook-allow-private", "true"])
        .args([
            "--webhook-backoff-base-ms",
            "50",
            "--webhook-backoff-max-ms",
            "200",
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tally worker")
}

fn json(r: &Received) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test]
async fn a_webhook_gets_signed_events_in_order_and_a_failing_receiver_the_third_attempt() {
    let app = TestApp::spawn_with(&["--webhook-allow-private", "true"]).await;
    let (banker, owner, [mine, other]) = app.customer_with_accounts::<2>("wh", [0, 0]).await;
    let receiver = Receiver::start(2, Duration::ZERO).await;
    let created = create_webhook(&app, &owner, &receiver.url(), Some(&mine), &[])
        .await
        .unwrap();
    assert!(created.secret.starts_with("whsec_"));
    let mut worker = start_worker(&app, &[]);
    app.deposit(&banker, &mine, 100).await;
    app.transfer(&owner, &mine, &other, 30).await.unwrap();
    app.deposit(&banker, &other, 5).await; // not this account's: never delivered

    let delivered = eventually(DELIVERED_WITHIN, || async {
        receiver.accepted().len() >= 2
    })
    .await;
    assert!(delivered.is_some(), "{:?}", receiver.received());
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.kill().await.unwrap();
    let all = receiver.received();
    // The first event: 500, 500, then accepted, all three under the same id and signed.
    assert_eq!(
        all.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 500, 204, 204],
        "{all:?}"
    );
    assert!(
        all[..3]
            .iter()
            .all(|r| r.id == all[0].id && r.body == all[0].body)
    );
    assert!(
        all.iter().all(|r| signature_holds(&created.secret, r)),
        "{all:?}"
    );
    let forged = Received {
        body: all[3].body.replace("\"30\"", "\"3000\""),
        ..all[3].clone()
    };
    assert!(!signature_holds(&created.secret, &forged));
    // The shell of README.md and docs/events.md says the same, with openssl.
    for page in ["README.md", "docs/events.md"] {
        assert_eq!(
            shell_verifies(page, &created.secret, &all[3]),
            "signature ok"
        );
        assert_eq!(
            shell_verifies(page, &created.secret, &forged),
            "signature BAD"
        );
    }
    // In sequence order, as the account's watchers see them.
    let (first, second) = (json(&all[2]), json(&all[3]));
    assert_eq!(first["type"], "transfer.created");
    assert_eq!(first["transfer"]["amount"], "100");
    assert_eq!(second["transfer"]["amount"], "30");
    assert_eq!(second["positions"].as_array().unwrap().len(), 1);
    assert_eq!(second["positions"][0]["balance"], "70");
    let seq = |v: &serde_json::Value| v["sequence"].as_str().unwrap().parse::<i64>().unwrap();
    assert!(seq(&first) < seq(&second));
    assert_eq!(all[2].id, format!("evt_{}", seq(&first)));
    // The registry shows how far it got, never the secret.
    let listed = webhooks(&app)
        .list_webhooks(authed(&owner, pb::ListWebhooksRequest {}))
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].delivered_through >= seq(&second) as u64);
    assert!(!format!("{listed:?}").contains(&created.secret));
}

#[tokio::test]
async fn webhooks_are_refused_for_private_addresses_and_what_the_caller_may_not_see() {
    let app = TestApp::spawn().await;
    let (banker, owner, [mine]) = app.customer_with_accounts::<1>("wr", [0]).await;
    let stranger = app.signed_in(&unique("ws"), &[]).await.access_token;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://10.0.0.1/",
        "http://localhost/hook",
    ] {
        let refused = create_webhook(&app, &owner, url, Some(&mine), &[]).await;
        let status = assert_code(refused, Code::InvalidArgument);
        assert!(status.message().contains("private"), "{url}: {status:?}");
    }
    for (token, account, code) in [
        (&stranger, Some(mine.as_str()), Code::NotFound), // another's account looks missing
        (&owner, None, Code::PermissionDenied),           // every event: bankers and admins
    ] {
        let refused = create_webhook(&app, token, "https://example.com/", account, &[]).await;
        assert_code(refused, code);
    }
    let bad = create_webhook(&app, &owner, "ftp://example.com/", Some(&mine), &[]).await;
    assert_code(bad, Code::InvalidArgument);
    let bad = create_webhook(&app, &owner, "https://example.com/", Some(&mine), &["nope"]).await;
    assert_code(bad, Code::InvalidArgument);
    assert_eq!(app.count("webhooks").await, 0, "nothing written");

    // With private addresses allowed (tests, development) the same URL is taken.
    let allowed = app.replica(&["--webhook-allow-private", "true"]).await;
    let created = create_webhook(&allowed, &banker, "http://127.0.0.1:9/hook", None, &[])
        .await
        .unwrap();
    let id = created.webhook.unwrap().webhook_id;
    // Only its owner deletes it; anyone else finds it missing.
    let request = || pb::DeleteWebhookRequest {
        webhook_id: id.clone(),
    };
    let denied = webhooks(&app)
        .delete_webhook(authed(&owner, request()))
        .await;
    assert_code(denied, Code::NotFound);
    webhooks(&app)
        .delete_webhook(authed(&banker, request()))
        .await
        .unwrap();
    assert_eq!(app.count("webhooks").await, 0);
}

#[tokio::test]
async fn a_killed_worker_restarted_delivers_every_event_under_one_id() {
    let app = TestApp::spawn_with(&["--webhook-allow-private", "true"]).await;
    let (banker, owner, [mine, other]) = app.customer_with_accounts::<2>("wk", [1_000, 0]).await;
    let receiver = Receiver::start(0, Duration::from_millis(100)).await;
    let created = create_webhook(&app, &banker, &receiver.url(), None, &["transfer.created"])
        .await
        .unwrap();
    let transfers = 20;
    for _ in 0..transfers {
        app.transfer(&owner, &mine, &other, 1).await.unwrap();
    }
    let mut worker = start_worker(&app, &[]);
    let some = eventually(DELIVERED_WITHIN, || async {
        receiver.accepted().len() >= 5
    })
    .await;
    assert!(some.is_some());
    worker.kill().await.unwrap(); // SIGKILL, mid-delivery
    let before = receiver.accepted().len();
    assert!(before < transfers, "killed before the end ({before})");
    let mut worker = start_worker(&app, &[]);
    let all = eventually(DELIVERED_WITHIN, || async {
        let ids: std::collections::HashSet<String> =
            receiver.accepted().into_iter().map(|r| r.id).collect();
        ids.len() >= transfers
    })
    .await;
    worker.kill().await.unwrap();
    assert!(all.is_some(), "{:?}", receiver.received().len());
    let accepted = receiver.accepted();
    let mut by_id: std::collections::BTreeMap<String, Vec<&Received>> = Default::default();
    for r in &accepted {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), transfers, "one id per event");
    for copies in by_id.values() {
        // At most the one in flight at the kill came twice, with the same id and body.
        assert!(copies.iter().all(|r| r.body == copies[0].body));
        assert!(signature_holds(&created.secret, copies[0]));
    }
    assert!(
        accepted.len() <= transfers + 1,
        "{} deliveries",
        accepted.len()
    );
}

#[tokio::test]
async fn an_event_that_fails_every_attempt_is_dead_lettered_then_requeued_by_an_admin() {
    let app = TestApp::spawn_with(&["--webhook-allow-private", "true"]).await;
    let (banker, _, [mine]) = app.customer_with_accounts::<1>("wd", [0]).await;
    let receiver = Receiver::start(3, Duration::ZERO).await;
    create_webhook(&app, &banker, &receiver.url(), Some(&mine), &[])
        .await
        .unwrap();
    let mut worker = start_worker(&app, &["--webhook-attempts-max", "3"]);
    app.deposit(&banker, &mine, 1).await; // fails 3 times: dead
    app.deposit(&banker, &mine, 2).await; // the endpoint moves on: delivered
    let moved_on = eventually(DELIVERED_WITHIN, || async {
        receiver.accepted().len() == 1
    })
    .await;
    assert!(moved_on.is_some(), "{:?}", receiver.received());
    assert_eq!(json(&receiver.accepted()[0])["transfer"]["amount"], "2");
    let admin = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["admin", "--database-url", &app.db.url])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = admin(&["webhook-dead-letters"]);
    assert!(listed.contains("attempts=3"), "{listed}");
    let id = listed.split_whitespace().next().unwrap().to_owned();
    admin(&["requeue-webhook", &id]);
    let requeued = eventually(DELIVERED_WITHIN, || async {
        receiver.accepted().len() == 2
    })
    .await;
    worker.kill().await.unwrap();
    assert!(requeued.is_some(), "{:?}", receiver.received());
    let again = &receiver.accepted()[1];
    assert_eq!(json(again)["transfer"]["amount"], "1");
    assert_eq!(
        again.id,
        receiver.received()[0].id,
        "the same webhook-id as before"
    );
    assert!(admin(&["webhook-dead-letters"]).contains("no webhook dead letters"));
    assert_eq!(receiver.fail_first.load(Ordering::SeqCst), 0);
}
