//! The audit trail: every call of tally's services leaves an event, written off the request
//! path, that only an admin reads.

use std::time::Duration;

use tally::proto::tally_v1::{self as pb, audit_service_client::AuditServiceClient};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

async fn events(
    app: &TestApp,
    token: &str,
    request: pb::ListAuditEventsRequest,
) -> Result<Vec<pb::AuditEvent>, tonic::Status> {
    AuditServiceClient::new(app.channel.clone())
        .list_audit_events(authed(token, request))
        .await
        .map(|r| r.into_inner().events)
}

/// The trail of `username`'s calls as an admin reads it, once their `CreateAccount` and
/// `GetAccount` calls have reached it (written off the request path, they arrive shortly).
async fn trail_once_written(app: &TestApp, admin: &str, username: &str) -> Vec<pb::AuditEvent> {
    let mine = pb::ListAuditEventsRequest {
        username: username.into(),
        ..Default::default()
    };
    let found = eventually(Duration::from_secs(5), || {
        let mine = mine.clone();
        async move {
            let events = events(app, admin, mine).await.unwrap();
            events.iter().any(|e| e.method.ends_with("/GetAccount"))
                && events.iter().any(|e| e.method.ends_with("/CreateAccount"))
        }
    })
    .await;
    assert!(found.is_some(), "the holder's calls reached the trail");
    events(app, admin, mine).await.unwrap()
}

/// Asserts what the trail of `name` records of the NOT_FOUND read of `missing` (sent with
/// request id `req-audit-1`) and of the account opening before it.
fn assert_the_read_and_the_opening_are_recorded(
    trail: &[pb::AuditEvent],
    name: &str,
    missing: &str,
) {
    // Newest first: the NOT_FOUND read came after the account was opened.
    let read = trail
        .iter()
        .position(|e| e.method == "/tally.v1.AccountService/GetAccount")
        .unwrap();
    let opened = trail
        .iter()
        .position(|e| e.method == "/tally.v1.AccountService/CreateAccount")
        .unwrap();
    assert!(read < opened, "{trail:#?}");
    let event = &trail[read];
    assert_eq!(event.username, name);
    assert_eq!(event.outcome, "NOT_FOUND");
    assert_eq!(event.resource_ids, [missing]);
    assert_eq!(event.client_address, "127.0.0.1");
    assert_eq!(event.request_id, "req-audit-1");
    assert!(event.latency_micros > 0);
    let at = event.time.as_ref().expect("a time");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - 60..=now + 1).contains(&at.seconds), "{at:?}");
    assert_eq!(trail[opened].outcome, "OK");
    assert!(!trail[opened].request_id.is_empty(), "the server chose one");
    assert!(trail.iter().all(|e| e.username == name), "the filter held");
}

/// Asserts the filters: the anonymous failed login of `nobody_audited` by method and outcome,
/// and nothing in a time range that ends before everything.
async fn assert_the_filters_select(app: &TestApp, admin: &str) {
    let anonymous = events(
        app,
        admin,
        pb::ListAuditEventsRequest {
            username: "anonymous".into(),
            method: "/tally.v1.SessionService/Login".into(),
            outcome: "unauthenticated".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!anonymous.is_empty());
    assert!(anonymous.iter().all(|e| e.username.is_empty()
        && e.outcome == "UNAUTHENTICATED"
        && e.resource_ids == ["nobody_audited"]));
    // A time range that ends before everything: nothing.
    let before_all = events(
        app,
        admin,
        pb::ListAuditEventsRequest {
            end_time: Some(prost_types::Timestamp {
                seconds: 1_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(before_all.is_empty());
}

/// Asserts that `holder` may not read the trail and that `admin` reads `name`'s events over
/// JSON too, one to a page.
async fn assert_only_an_admin_reads_it(app: &TestApp, admin: &str, holder: &str, name: &str) {
    assert_code(
        events(app, holder, pb::ListAuditEventsRequest::default()).await,
        Code::PermissionDenied,
    );
    let json = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/auditEvents?username={name}&pageSize=1",
            app.addr
        ))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200);
    let body: serde_json::Value = json.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        !body["nextPageToken"].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn every_call_leaves_an_audit_event_that_only_an_admin_reads() {
    let app = TestApp::spawn().await;
    let admin = app
        .signed_in(&unique("auditor"), &["admin"])
        .await
        .access_token;
    let name = unique("audited");
    let holder = app.signed_in(&name, &[]).await.access_token;
    app.open_account(&holder, "USD").await;
    let missing = Uuid::new_v4().to_string();
    let mut request = authed(
        &holder,
        pb::GetAccountRequest {
            account_id: missing.clone(),
        },
    );
    request
        .metadata_mut()
        .insert("x-request-id", "req-audit-1".parse().unwrap());
    assert_code(app.accounts().get_account(request).await, Code::NotFound);
    // An anonymous call.
    assert_code(
        app.login("nobody_audited", PASSWORD).await,
        Code::Unauthenticated,
    );

    let trail = trail_once_written(&app, &admin, &name).await;
    assert_the_read_and_the_opening_are_recorded(&trail, &name, &missing);
    // Filters: anonymous calls, by method and outcome.
    assert_the_filters_select(&app, &admin).await;
    // Only admins read it, over gRPC and JSON.
    assert_only_an_admin_reads_it(&app, &admin, &holder, &name).await;
}

#[tokio::test]
async fn the_worker_prunes_events_past_retention() {
    let app = TestApp::spawn().await;
    app.login("nobody_old", PASSWORD).await.unwrap_err();
    let pool = app.pool.clone();
    let written = eventually(Duration::from_secs(5), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_events")
                .fetch_one(&pool)
                .await
                .unwrap()
                > 0
        }
    })
    .await;
    assert!(written.is_some());
    // Age every event past a day; one written now stays.
    sqlx::query("UPDATE audit_events SET at = at - interval '2 days'")
        .execute(&app.pool)
        .await
        .unwrap();
    let kept = app.count("audit_events").await;
    sqlx::query(
        "INSERT INTO audit_events (id, at, method, outcome, latency_micros) \
         VALUES (gen_random_uuid(), now(), '/x', 'OK', 1)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let deleted = tally::jobs::worker::prune_audit(&app.pool, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(deleted as i64, kept);
    assert_eq!(app.count("audit_events").await, 1);
}

#[tokio::test]
async fn a_call_whose_id_holds_a_nul_byte_is_audited_and_loses_no_other_event() {
    let app = TestApp::spawn().await;
    let admin = app.signed_in(&unique("an"), &["admin"]).await.access_token;
    let name = unique("nul");
    let token = app.signed_in(&name, &[]).await.access_token;
    // PostgreSQL text cannot hold NUL: a resource id carrying one must not fail the batch of
    // events written with it.
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/accounts/a%00b", app.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.get_user(&token, &name).await.unwrap();
    let mine = pb::ListAuditEventsRequest {
        username: name.clone(),
        ..Default::default()
    };
    let written = eventually(Duration::from_secs(5), || async {
        let methods: Vec<String> = events(&app, &admin, mine.clone())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.method)
            .collect();
        methods.iter().any(|m| m.ends_with("/GetAccount"))
            && methods.iter().any(|m| m.ends_with("/GetUser"))
    })
    .await;
    assert!(written.is_some(), "both events reach the trail");
}
