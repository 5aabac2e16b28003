//! The change feed against the real server, PostgreSQL and Redis: one event per committed
//! transfer on the Redis stream, in sequence order, none for rolled-back attempts (forced
//! 40001s), none lost while Redis is down; `WatchAccount` over gRPC and Server-Sent Events
//! replays, streams, resumes after a cursor or `Last-Event-ID` without gap or duplicate, hides
//! other customers' accounts, and cuts a slow consumer with a cursor to resume from.

use std::time::Duration;

use futures_util::StreamExt as _;
use tally::proto::tally_v1::{self as pb, event_service_client::EventServiceClient};
use tonic::{Code, Streaming, transport::Channel};

use crate::helpers::*;

/// What an event may take to reach the stream or a watcher in these tests (the bench measures
/// the real lag).
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);

fn events(app: &TestApp) -> EventServiceClient<Channel> {
    EventServiceClient::new(app.channel.clone())
}

async fn watch(
    app: &TestApp,
    token: &str,
    account_id: &str,
    after_sequence: u64,
) -> Result<Streaming<pb::WatchAccountResponse>, tonic::Status> {
    let request = pb::WatchAccountRequest {
        account_id: account_id.into(),
        after_sequence,
    };
    events(app)
        .watch_account(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

/// The next event of a watch (heartbeats skipped), within [`ARRIVES_WITHIN`].
async fn next_event(stream: &mut Streaming<pb::WatchAccountResponse>) -> pb::LedgerEvent {
    loop {
        let item = tokio::time::timeout(ARRIVES_WITHIN, stream.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("no error");
        if let Some(event) = item.event {
            assert_eq!(item.sequence, event.sequence);
            return event;
        }
    }
}

fn transfer_of(event: &pb::LedgerEvent) -> &pb::Transfer {
    match &event.subject {
        Some(pb::ledger_event::Subject::Transfer(t)) => t,
        other => panic!("not a transfer event: {other:?}"),
    }
}

/// The stream's entries: (entry id, sequence field, type field, payload JSON).
async fn entries_of(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<(String, i64, String, serde_json::Value)> {
    let reply: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|(id, fields)| {
            let field = |name: &str| -> String {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .map(|kv| kv[1].clone())
                    .unwrap_or_else(|| panic!("entry {id} has no {name}"))
            };
            let payload = serde_json::from_str(&field("payload")).unwrap();
            (
                id.clone(),
                field("sequence").parse().unwrap(),
                field("type"),
                payload,
            )
        })
        .collect()
}

/// A Redis server of the test's own, which it may stop and start (its data on disk, as a
/// production Redis keeps it with an append-only file).
struct PrivateRedis {
    port: u16,
    dir: std::path::PathBuf,
    process: Option<tokio::process::Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("tally-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            port,
            dir,
            process: None,
        };
        redis.resume().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let process = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (scripts/services.sh installs it)");
        self.process = Some(process);
        let url = self.url();
        let up = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else {
                    return false;
                };
                client.get_multiplexed_async_connection().await.is_ok()
            }
        })
        .await;
        assert!(up.is_some(), "the private Redis started");
    }

    async fn halt(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.unwrap();
        }
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the stream holds as many entries as the database has events.
async fn stream_caught_up(app: &TestApp, conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let expected = app.count("ledger_events").await;
    assert!(
        stream_reaches(conn, &events_stream(&app.db), expected).await,
        "the stream caught up with {expected} events"
    );
    expected
}

/// Whether `stream` holds `expected` entries within 30 s.
async fn stream_reaches(
    conn: &redis::aio::MultiplexedConnection,
    stream: &str,
    expected: i64,
) -> bool {
    let reached = eventually(Duration::from_secs(30), || {
        let mut conn = conn.clone();
        async move {
            let len: i64 = redis::cmd("XLEN")
                .arg(stream)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            len >= expected
        }
    })
    .await;
    reached.is_some()
}

/// Every event of the database is on the stream once, in sequence order, under its sequence,
/// with the type and payload of the event.
async fn assert_stream_mirrors_events(app: &TestApp, conn: &mut redis::aio::MultiplexedConnection) {
    let stream = events_stream(&app.db);
    let entries = entries_of(conn, &stream).await;
    let stored: Vec<(i64, String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT sequence, type, transfer_id FROM ledger_events ORDER BY sequence")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(entries.len(), stored.len(), "one entry per event");
    for ((id, sequence, kind, payload), (stored_seq, stored_kind, transfer)) in
        entries.iter().zip(&stored)
    {
        assert_eq!((*sequence, kind), (*stored_seq, stored_kind));
        assert_eq!(id, &format!("{sequence}-0"));
        assert_eq!(payload["sequence"], sequence.to_string(), "{payload}");
        assert_eq!(&payload["type"], kind.as_str());
        if let Some(transfer) = transfer {
            assert_eq!(payload["transfer"]["transferId"], transfer.to_string());
        }
    }
}

/// Checks `value` against a schema of the server's OpenAPI document (the JSON Schema keywords
/// it uses: `$ref`, `type`, `properties`, `required`, `additionalProperties`, `items`, `anyOf`,
/// `enum`); the paths where it does not hold.
fn schema_errors(
    doc: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
) -> Vec<String> {
    use serde_json::Value as J;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if !target.is_object() {
            return vec![format!("{at}: no schema {name}")];
        }
        return schema_errors(doc, target, value, at);
    }
    if let Some(options) = schema["anyOf"].as_array() {
        return if options
            .iter()
            .any(|o| schema_errors(doc, o, value, at).is_empty())
        {
            Vec::new()
        } else {
            vec![format!("{at}: matches none of anyOf")]
        };
    }
    let mut errors = Vec::new();
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("null") => value.is_null(),
        _ => true,
    };
    if !type_ok {
        return vec![format!("{at}: {value} is not of type {}", schema["type"])];
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (J::Object(object), Some(properties)) = (value, schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap()) {
                errors.push(format!("{at}: {required} is missing"));
            }
        }
        for (key, v) in object {
            match properties.get(key) {
                Some(p) => errors.extend(schema_errors(doc, p, v, &format!("{at}.{key}"))),
                None if schema["additionalProperties"] == false => {
                    errors.push(format!("{at}: {key} is not in the schema"));
                }
                None => {}
            }
        }
    }
    if let (J::Array(items), Some(item)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            errors.extend(schema_errors(doc, item, v, &format!("{at}[{i}]")));
        }
    }
    errors
}

#[tokio::test]
async fn the_stream_has_one_event_per_committed_transfer_and_none_for_rolled_back_attempts() {
    let app = TestApp::spawn().await;
    let (banker, owner, accounts) = app
        .customer_with_accounts::<4>("feed", [10_000, 10_000, 10_000, 10_000])
        .await;
    // One batch attempt in five fails at its event insert (after the events took their
    // sequences) with a serialization failure: the engine retries it, leaving gaps.
    sqlx::raw_sql(
        "CREATE FUNCTION test_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF random() < 0.2 THEN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END IF; \
           RETURN NULL; END $$; \
         CREATE TRIGGER test_conflict AFTER INSERT ON ledger_events \
           FOR EACH STATEMENT EXECUTE FUNCTION test_conflict();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let (app_channel, owner, accounts) =
                (app.channel.clone(), owner.clone(), accounts.clone());
            tokio::spawn(async move {
                let mut client =
                    tally::proto::tally_v1::transfer_service_client::TransferServiceClient::new(
                        app_channel,
                    );
                let mut answered = 0;
                for i in 0..1_000 / 16 + usize::from(task < 1_000 % 16) {
                    let from = (task + i) % 4;
                    let (from, to) = (&accounts[from], &accounts[(from + 1 + i % 3) % 4]);
                    let request = transfer_request(from, to, 1 + (i as i64 % 50));
                    // A refusal (insufficient funds) is recorded too; only the call must work.
                    match client.create_transfer(authed(&owner, request)).await {
                        Ok(_) => answered += 1,
                        Err(s) if s.code() == Code::FailedPrecondition => answered += 1,
                        Err(s) => panic!("transfer failed: {s:?}"),
                    }
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await.unwrap();
    }
    sqlx::raw_sql("DROP TRIGGER test_conflict ON ledger_events")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(answered, 1_000);
    let _ = banker;

    // In the database: one transfer.created per recorded transfer, nothing else of them.
    let (transfers, created, distinct, last): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transfers), \
                (SELECT count(*) FROM ledger_events WHERE type = 'transfer.created'), \
                (SELECT count(DISTINCT transfer_id) FROM ledger_events \
                   WHERE type = 'transfer.created' \
                     AND transfer_id IN (SELECT id FROM transfers)), \
                (SELECT max(sequence) FROM ledger_events)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((created, distinct), (transfers, transfers));
    let events = app.count("ledger_events").await;
    assert!(
        last > events,
        "rolled-back attempts took sequences ({last} > {events}) and left no event"
    );

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    stream_caught_up(&app, &mut conn).await;
    assert_stream_mirrors_events(&app, &mut conn).await;
    // Every payload is a tally.v1.LedgerEvent as the server's OpenAPI document describes it.
    let doc: serde_json::Value = reqwest::get(format!("http://{}/openapi.json", app.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = serde_json::json!({"$ref": "#/components/schemas/tally.v1.LedgerEvent"});
    // A payload that is not one fails (the check can fail).
    let wrong = serde_json::json!({"sequence": 1, "type": "x", "extra": true});
    assert!(schema_errors(&doc, &schema, &wrong, "$").len() >= 2);
    for (id, _, _, payload) in entries_of(&mut conn, &events_stream(&app.db)).await {
        let errors = schema_errors(&doc, &schema, &payload, "$");
        assert!(errors.is_empty(), "entry {id}: {errors:?}\n{payload}");
    }
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
}

#[tokio::test]
async fn a_watch_replays_streams_and_resumes_after_its_cursor_without_gap_or_duplicate() {
    let app = TestApp::spawn().await;
    let (banker, owner, [mine, other]) = app.customer_with_accounts::<2>("fw", [0, 0]).await;
    for amount in [100, 200, 300] {
        app.deposit(&banker, &mine, amount).await;
    }
    // From the start: the opening, then the three deposits, each with this account's position.
    let mut stream = watch(&app, &owner, &mine, 0).await.unwrap();
    let opened = next_event(&mut stream).await;
    assert_eq!(opened.r#type, "account.opened");
    let mut balances = Vec::new();
    let mut last = opened.sequence;
    for _ in 0..3 {
        let event = next_event(&mut stream).await;
        assert_eq!(event.r#type, "transfer.created");
        assert!(event.sequence > last);
        last = event.sequence;
        assert_eq!(
            event.positions.len(),
            1,
            "only the watched account's position"
        );
        assert_eq!(event.positions[0].account_id, mine);
        balances.push(event.positions[0].balance);
    }
    assert_eq!(balances, [100, 300, 600]);
    // Live: a transfer out shows at once, with the balance after it.
    app.transfer(&owner, &mine, &other, 50).await.unwrap();
    let live = next_event(&mut stream).await;
    assert_eq!(transfer_of(&live).amount, 50);
    assert_eq!(
        (
            live.positions[0].balance,
            live.positions[0].available_balance
        ),
        (550, 550)
    );
    drop(stream);

    // Two more while away; reconnecting after the last one seen gives exactly those two.
    app.transfer(&owner, &mine, &other, 1).await.unwrap();
    app.deposit(&banker, &mine, 2).await;
    let mut resumed = watch(&app, &owner, &mine, live.sequence).await.unwrap();
    let (a, b) = (
        next_event(&mut resumed).await,
        next_event(&mut resumed).await,
    );
    assert_eq!(
        (transfer_of(&a).amount, transfer_of(&b).amount),
        (1, 2),
        "{a:?} {b:?}"
    );
    assert!(live.sequence < a.sequence && a.sequence < b.sequence);
    let quiet = tokio::time::timeout(Duration::from_millis(500), resumed.next()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");

    // Closing an account is an event on its watch.
    let mut closing = watch(&app, &owner, &other, 0).await.unwrap();
    app.transfer(&owner, &other, &mine, 51).await.unwrap();
    app.accounts()
        .close_account(authed(
            &owner,
            pb::CloseAccountRequest {
                account_id: other.clone(),
            },
        ))
        .await
        .unwrap();
    let closed = loop {
        let event = next_event(&mut closing).await;
        if event.r#type == "account.closed" {
            break event;
        }
    };
    match closed.subject {
        Some(pb::ledger_event::Subject::Account(account)) => {
            assert_eq!((account.account_id, account.balance), (other.clone(), 0));
            assert!(account.closed_at.is_some());
        }
        other => panic!("not an account: {other:?}"),
    }
    // Another customer's account looks missing, like one that does not exist.
    let stranger = app.signed_in(&unique("fx"), &[]).await.access_token;
    let denied = watch(&app, &stranger, &mine, 0).await;
    assert_code(denied, Code::NotFound);
    let missing = watch(&app, &owner, &uuid::Uuid::now_v7().to_string(), 0).await;
    assert_code(missing, Code::NotFound);
    // A banker may watch anyone's account.
    let mut banked = watch(&app, &banker, &mine, b.sequence - 1).await.unwrap();
    assert_eq!(next_event(&mut banked).await.sequence, b.sequence);
}

#[tokio::test]
async fn a_failed_transfer_into_an_account_is_not_shown_to_its_watcher() {
    let app = TestApp::spawn().await;
    let (_, owner, [poor]) = app.customer_with_accounts::<1>("fp", [10]).await;
    let (_, payee, [target]) = app.customer_with_accounts::<1>("fq", [0]).await;
    let mut theirs = watch(&app, &payee, &target, 0).await.unwrap();
    assert_eq!(next_event(&mut theirs).await.r#type, "account.opened");
    let mut mine = watch(&app, &owner, &poor, 0).await.unwrap();
    let refused = app.transfer(&owner, &poor, &target, 1_000).await;
    assert_code(refused, Code::FailedPrecondition);
    app.transfer(&owner, &poor, &target, 5).await.unwrap();
    // The sender sees the failure and then the transfer; the payee only the transfer.
    let mut seen = Vec::new();
    loop {
        let event = next_event(&mut mine).await;
        if event.r#type == "transfer.created" {
            seen.push(transfer_of(&event).status);
            if seen.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(
        seen,
        [
            pb::TransferStatus::Succeeded as i32, // the funding deposit
            pb::TransferStatus::Failed as i32,
            pb::TransferStatus::Succeeded as i32
        ]
    );
    let event = next_event(&mut theirs).await;
    assert_eq!(transfer_of(&event).amount, 5, "{event:?}");
    assert_eq!(event.positions[0].balance, 5);
}

#[tokio::test]
async fn over_http_the_watch_is_server_sent_events_and_last_event_id_resumes() {
    let app = TestApp::spawn_with(&["--stream-heartbeat-ms", "300"]).await;
    let (banker, owner, [mine]) = app.customer_with_accounts::<1>("fs", [0]).await;
    app.deposit(&banker, &mine, 7).await;
    let url = format!("http://{}/v1/accounts/{mine}:watch", app.addr);

    // curl -N, as a user would run it: `id:` lines carry the sequences.
    let sse = |last_event_id: Option<String>| {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["-sS", "-N", "-H", "accept: text/event-stream", "-H"])
            .arg(format!("authorization: Bearer {owner}"));
        if let Some(id) = last_event_id {
            curl.arg("-H").arg(format!("last-event-id: {id}"));
        }
        let mut child = curl
            .arg(&url)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    use tokio::io::AsyncBufReadExt as _;
    /// The next (id, data) of an event with an event (heartbeats carry no `event`).
    async fn next_sse(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) -> (String, serde_json::Value) {
        let mut id = String::new();
        loop {
            let line = tokio::time::timeout(ARRIVES_WITHIN, lines.next_line())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("curl still streams");
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let json: serde_json::Value = serde_json::from_str(data).unwrap();
                if !json["event"].is_null() {
                    assert_eq!(json["sequence"], id.as_str(), "id: is the sequence");
                    return (id, json);
                }
            }
        }
    }
    let (_curl, mut lines) = sse(None);
    let (opened, json) = next_sse(&mut lines).await;
    assert_eq!(json["event"]["type"], "account.opened", "{json}");
    let (deposit, json) = next_sse(&mut lines).await;
    assert_eq!(json["event"]["transfer"]["amount"], "7", "{json}");
    assert_eq!(json["event"]["positions"][0]["balance"], "7");
    drop(lines);

    // A reconnecting EventSource sends the last id it saw: the stream resumes after it.
    let (_curl, mut lines) = sse(Some(opened.clone()));
    let (again, _) = next_sse(&mut lines).await;
    assert_eq!(again, deposit, "resumes right after Last-Event-ID");
    app.deposit(&banker, &mine, 8).await;
    let (_, json) = next_sse(&mut lines).await;
    assert_eq!(json["event"]["transfer"]["amount"], "8");

    // NDJSON without `Accept: text/event-stream`; a query's after_sequence wins over the header.
    let mut response = reqwest::Client::new()
        .get(format!("{url}?after_sequence={deposit}"))
        .header("last-event-id", "0")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let chunk = tokio::time::timeout(ARRIVES_WITHIN, response.chunk())
        .await
        .expect("a first line")
        .unwrap()
        .expect("a chunk");
    let first: serde_json::Value =
        serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["event"]["transfer"]["amount"], "8", "{first}");
    // A Last-Event-ID that is no sequence is a 400 before any stream.
    let bad = reqwest::Client::new()
        .get(&url)
        .header("last-event-id", "yesterday")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_watch_that_reads_too_slowly_is_cut_with_a_cursor_to_resume_from() {
    let app = TestApp::spawn().await;
    let (_, owner, [a, b]) = app.customer_with_accounts::<2>("fl", [1_000_000, 0]).await;
    // A client with HTTP/2's default 64 KiB windows (hyper's are megabytes, which would take
    // all these events in before the server's buffer fills).
    let narrow = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let request = pb::WatchAccountRequest {
        account_id: a.clone(),
        after_sequence: 0,
    };
    let stream = EventServiceClient::new(narrow)
        .watch_account(authed(&owner, request))
        .await
        .unwrap()
        .into_inner();
    // Far more events than a watcher buffers, while its client reads nothing.
    let n = tally::feed::hub::WATCH_EVENTS_BUFFERED_MAX * 3;
    for _ in 0..3 {
        let transfers = (0..n / 3).map(|_| transfer_request(&a, &b, 1)).collect();
        app.transfers()
            .create_transfers(authed(
                &owner,
                pb::CreateTransfersRequest {
                    transfers,
                    atomic: false,
                },
            ))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stream = stream;
    let mut last = 0;
    let cut = loop {
        match tokio::time::timeout(ARRIVES_WITHIN, stream.next())
            .await
            .unwrap_or_else(|_| panic!("the stream moves (after {last})"))
        {
            Some(Ok(item)) => {
                assert!(item.sequence > last);
                last = item.sequence;
            }
            Some(Err(status)) => break status,
            None => panic!("the stream ended without cutting the slow reader"),
        }
    };
    assert_eq!(cut.code(), Code::ResourceExhausted);
    assert_eq!(reason(&cut).as_deref(), Some("SLOW_CONSUMER"), "{cut:?}");
    assert!(
        cut.message().contains(&format!("after_sequence = {last}")),
        "{cut:?}"
    );
    // Resuming there misses nothing: the events of `a` (its opening, its deposit and the n
    // transfers) before the cut and after it add up, each once.
    let before: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_events \
         WHERE (account_id = $1::uuid OR counterparty_id = $1::uuid) AND sequence <= $2",
    )
    .bind(&a)
    .bind(last as i64)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut resumed = watch(&app, &owner, &a, last).await.unwrap();
    let mut previous = last;
    for _ in 0..(n + 2 - before as usize) {
        let event = next_event(&mut resumed).await;
        assert!(event.sequence > previous);
        previous = event.sequence;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(500), resumed.next()).await;
    assert!(quiet.is_err(), "nothing more: {quiet:?}");
    assert!(before > 2, "the cut came after some events: {before}");
}

#[tokio::test]
async fn events_committed_while_redis_is_down_all_arrive_once_it_is_back() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(&["--redis-url", &url]).await;
    let (_, owner, [a, b]) = app.customer_with_accounts::<2>("fr", [1_000_000, 0]).await;
    let mut conn = redis.connection().await;
    stream_caught_up(&app, &mut conn).await;
    drop(conn);

    // 200 transfers; Redis goes away after the first 50 and comes back after the next 100.
    for i in 0..200 {
        if i == 50 {
            redis.halt().await;
        }
        if i == 150 {
            redis.resume().await;
        }
        app.transfer(&owner, &a, &b, 1).await.unwrap();
    }
    let mut conn = redis.connection().await;
    let events = stream_caught_up(&app, &mut conn).await;
    // Two openings, the funding deposit, the 200 transfers.
    assert_eq!(events, 3 + 200);
    assert_stream_mirrors_events(&app, &mut conn).await;
}

#[tokio::test]
async fn the_workers_sweep_publishes_what_no_server_did() {
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let app = TestApp::spawn_with(&["--redis-url", &url]).await;
    // Redis is away while the server commits, and the server is gone before it is back.
    redis.halt().await;
    let (_, owner, [a, b]) = app.customer_with_accounts::<2>("fk", [100, 0]).await;
    app.transfer(&owner, &a, &b, 40).await.unwrap();
    let pool = app.db.pool().await;
    let db = app.db.clone();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    app.stop().await.unwrap();
    redis.resume().await;

    let stream = events_stream(&db);
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["worker", "--database-url", &db.url, "--redis-url", &url])
        .args(["--events-stream", &stream, "--metrics-addr", "127.0.0.1:0"])
        .args(["--smtp-url", "smtp://127.0.0.1:9"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tally worker");
    let mut conn = redis.connection().await;
    let arrived = stream_reaches(&conn, &stream, events).await;
    worker.kill().await.unwrap();
    assert!(arrived, "the sweep published all {events} events");
    let entries = entries_of(&mut conn, &stream).await;
    let sequences: Vec<i64> = entries.iter().map(|e| e.1).collect();
    let stored: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM ledger_events ORDER BY 1")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(sequences, stored);
}

#[tokio::test]
async fn a_balance_monitor_fires_once_on_crossing_and_again_only_after_crossing_back() {
    let app = TestApp::spawn().await;
    let (banker, owner, [mine, other]) = app.customer_with_accounts::<2>("fm", [0, 0]).await;
    let monitor = events(&app)
        .create_balance_monitor(authed(
            &owner,
            pb::CreateBalanceMonitorRequest {
                account_id: mine.clone(),
                condition: pb::BalanceMonitorCondition::Above as i32,
                threshold: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!monitor.triggered);
    let mut stream = watch(&app, &owner, &mine, 0).await.unwrap();
    app.deposit(&banker, &mine, 150).await; // 150: crosses above — fires
    app.deposit(&banker, &mine, 10).await; // 160: still above — nothing
    app.transfer(&owner, &mine, &other, 100).await.unwrap(); // 60: back below — armed
    app.deposit(&banker, &mine, 50).await; // 110: crosses again — fires
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let event = next_event(&mut stream).await;
        let balance = event.positions[0].balance;
        seen.push((event.r#type.clone(), balance));
        if let Some(pb::ledger_event::Subject::BalanceMonitor(m)) = &event.subject {
            assert_eq!(
                (m.monitor_id.as_str(), m.threshold),
                (monitor.monitor_id.as_str(), 100)
            );
        }
    }
    let kinds: Vec<(&str, i64)> = seen.iter().map(|(t, b)| (t.as_str(), *b)).collect();
    assert_eq!(
        kinds,
        [
            ("account.opened", 0),
            ("transfer.created", 150),
            ("balance_monitor.triggered", 150),
            ("transfer.created", 160),
            ("transfer.created", 60),
            ("transfer.created", 110),
            ("balance_monitor.triggered", 110),
        ]
    );
    let listed = events(&app)
        .list_balance_monitors(authed(
            &owner,
            pb::ListBalanceMonitorsRequest {
                account_id: mine.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .monitors;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].triggered, "its condition holds now");
    // Bad input writes nothing; another customer's account looks missing.
    let stranger = app.signed_in(&unique("fn"), &[]).await.access_token;
    let create = |token: &str, condition: pb::BalanceMonitorCondition| {
        let request = pb::CreateBalanceMonitorRequest {
            account_id: mine.clone(),
            condition: condition as i32,
            threshold: 5,
        };
        let token = token.to_owned();
        let mut client = events(&app);
        async move { client.create_balance_monitor(authed(&token, request)).await }
    };
    assert_code(
        create(&owner, pb::BalanceMonitorCondition::Unspecified).await,
        Code::InvalidArgument,
    );
    assert_code(
        create(&stranger, pb::BalanceMonitorCondition::Below).await,
        Code::NotFound,
    );
    let denied = events(&app)
        .delete_balance_monitor(authed(
            &stranger,
            pb::DeleteBalanceMonitorRequest {
                monitor_id: monitor.monitor_id.clone(),
            },
        ))
        .await;
    assert_code(denied, Code::NotFound);
    assert_eq!(app.count("balance_monitors").await, 1);
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
}
