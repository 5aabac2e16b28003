//! Attack traffic, on loopback only and bounded in count and time: what an anonymous caller
//! can make the server spend.

use std::time::Duration;

use tally::proto::tally_v1::{
    self as pb, session_service_client::SessionServiceClient,
    user_service_client::UserServiceClient,
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

/// Concurrent anonymous calls of each kind below.
const ATTACKERS: usize = 200;
/// The server's peak RSS must stay under this through the attack.
const RSS_KIB_MAX: u64 = 256 * 1024;

#[tokio::test]
async fn two_hundred_sign_ups_with_a_taken_name_and_two_hundred_logins_stay_under_256_mib() {
    let server = ServerProcess::spawn(&[]).await;
    let users = UserServiceClient::new(server.channel.clone());
    let sessions = SessionServiceClient::new(server.channel.clone());
    let taken = unique("taken");
    users
        .clone()
        .create_user(pb::CreateUserRequest {
            username: taken.clone(),
            full_name: "First Comer".into(),
            email: format!("{taken}@example.com"),
            password: PASSWORD.into(),
        })
        .await
        .expect("the first sign-up");

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let mut users = users.clone();
        let taken = taken.clone();
        calls.spawn(async move {
            users
                .create_user(pb::CreateUserRequest {
                    username: taken,
                    full_name: "Second Comer".into(),
                    email: format!("attacker{i}@example.com"),
                    password: PASSWORD.into(),
                })
                .await
                .map(|_| ())
        });
        let mut sessions = sessions.clone();
        calls.spawn(async move {
            sessions
                .login(pb::LoginRequest {
                    username: format!("nobody_{i}"),
                    password: "wrong password 123".into(),
                })
                .await
                .map(|_| ())
        });
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answer) = calls.join_next().await {
        let code = answer
            .expect("task")
            .expect_err("no attack call succeeds")
            .code();
        assert!(
            matches!(
                code,
                Code::AlreadyExists
                    | Code::Unauthenticated
                    | Code::Unavailable
                    | Code::ResourceExhausted
            ),
            "unexpected answer {code:?}"
        );
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    // Every sign-up met the taken name, and without hashing (so none waited for a turn).
    assert_eq!(codes.get("AlreadyExists"), Some(&ATTACKERS), "{codes:?}");
    let peak = server.peak_rss_kib();
    assert!(
        peak < RSS_KIB_MAX,
        "the server's RSS peaked at {peak} KiB (answers: {codes:?})"
    );
}

/// Streams the attack opens per connection (the server allows 256).
const STALLED_STREAMS_PER_CONNECTION: usize = 250;

/// Opens a CreateUser stream on `client` with its headers and a 5-byte message prefix that
/// promises 100 bytes, and sends nothing more.
fn stalled_create_user(
    mut client: h2::client::SendRequest<bytes::Bytes>,
    addr: std::net::SocketAddr,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let request = http::Request::post(format!("http://{addr}/tally.v1.UserService/CreateUser"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100]), false)
        .unwrap();
    (response, send)
}

/// Opens `STALLED_STREAMS_PER_CONNECTION` CreateUser streams on a new connection, each with its
/// headers and a 5-byte message prefix promising 100 bytes, then sends nothing more. The
/// returned handles keep the streams open.
async fn stall_streams(addr: std::net::SocketAddr) -> Vec<Box<dyn std::any::Any + Send>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    held.push(Box::new(tokio::spawn(connection)));
    for _ in 0..STALLED_STREAMS_PER_CONNECTION {
        let client = client.clone().ready().await.unwrap();
        held.push(Box::new(stalled_create_user(client, addr)));
    }
    held.push(Box::new(client));
    held
}

#[tokio::test]
async fn five_hundred_stalled_streams_on_two_connections_leave_health_and_other_calls_answering() {
    // Fewer slots than stalled streams, and a read timeout longer than the test: if a stalled
    // stream held a slot, every slot would be taken for the whole test.
    let app = TestApp::spawn_with(&[
        "--concurrency-max",
        "64",
        "--request-read-timeout-ms",
        "60000",
    ])
    .await;
    let user = unique("bystander");
    let token = app.signed_in(&user, &[]).await.access_token;

    let _first = stall_streams(app.addr).await;
    let _second = stall_streams(app.addr).await;

    let within = Duration::from_secs(1);
    let mut health = HealthClient::new(app.channel.clone());
    let serving = tokio::time::timeout(within, health.check(HealthCheckRequest::default()))
        .await
        .expect("gRPC health answered within 1 s")
        .expect("health check")
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);
    let healthz =
        tokio::time::timeout(within, reqwest::get(format!("http://{}/healthz", app.addr)))
            .await
            .expect("/healthz answered within 1 s")
            .expect("/healthz");
    assert_eq!(healthz.status(), 200);
    // Another user's calls, over a connection of their own, still get slots.
    for _ in 0..20 {
        let read = tokio::time::timeout(
            within,
            app.users().get_user(authed(
                &token,
                pb::GetUserRequest {
                    username: user.clone(),
                },
            )),
        )
        .await
        .expect("GetUser answered within 1 s")
        .expect("GetUser");
        assert_eq!(read.into_inner().username, user);
    }
}

#[tokio::test]
async fn a_stalled_request_is_answered_deadline_exceeded_after_the_read_timeout() {
    let app = TestApp::spawn_with(&["--request-read-timeout-ms", "300"]).await;
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let client = client.ready().await.unwrap();
    let (response, _send) = stalled_create_user(client, app.addr);
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered after the read timeout, not the call's")
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn calls_beyond_the_slots_are_shed_with_retry_info_over_grpc_and_retry_after_over_json() {
    // One slot, taken by a sign-up that is hashing: the next calls find none.
    let app = TestApp::spawn_with(&["--concurrency-max", "1"]).await;
    let busy = {
        let mut users = app.users();
        let name = unique("slow");
        tokio::spawn(async move {
            users
                .create_user(pb::CreateUserRequest {
                    username: name.clone(),
                    full_name: "Slow Hasher".into(),
                    email: format!("{name}@example.com"),
                    password: PASSWORD.into(),
                })
                .await
        })
    };
    let mut shed_grpc = None;
    let mut shed_json = None;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (shed_grpc.is_none() || shed_json.is_none()) && tokio::time::Instant::now() < deadline {
        if shed_grpc.is_none()
            && let Err(status) = app
                .users()
                .get_user(pb::GetUserRequest {
                    username: "anyone".into(),
                })
                .await
            && status.code() == Code::Unavailable
        {
            shed_grpc = Some(status);
        }
        if shed_json.is_none() {
            let response = client
                .get(format!("http://{}/v1/users/anyone", app.addr))
                .send()
                .await
                .unwrap();
            if response.status() == 503 {
                shed_json = Some(response);
            }
        }
    }
    busy.await
        .unwrap()
        .expect("the call holding the slot finishes");
    let status = shed_grpc.expect("a gRPC call was shed while the slot was taken");
    assert_eq!(reason(&status).as_deref(), Some("OVERLOADED"));
    use tonic_types::StatusExt as _;
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(retry >= Duration::from_secs(1), "{retry:?}");
    let response = shed_json.expect("a JSON call was shed while the slot was taken");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 14, "{body}");
}
