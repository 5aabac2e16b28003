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
    // The per-address rate limits raised: this test is about what hashing may hold.
    let server = ServerProcess::spawn(&["--rate-auth-per-minute", "1000000"]).await;
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

/// A wrong-password login, over gRPC with `x-forwarded-for` when given.
async fn grpc_login(app: &TestApp, forwarded_for: Option<&str>) -> tonic::Status {
    login_from(app, "nobody_here", "wrong password 123", forwarded_for)
        .await
        .expect_err("no such user")
}

/// A wrong-password login over HTTP JSON.
async fn json_login(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/v1/sessions", app.addr))
        .json(&serde_json::json!({"username": "nobody_here", "password": "wrong password 123"}));
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_auth_budget_per_address_answers_resource_exhausted_with_retry_info_and_429() {
    // Five a minute: the banker's sign-up and login, then three failed logins.
    let app = TestApp::spawn_with(&["--rate-auth-per-minute", "5"]).await;
    let banker = app.banker().await;
    for _ in 0..3 {
        assert_eq!(grpc_login(&app, None).await.code(), Code::Unauthenticated);
    }
    let limited = grpc_login(&app, None).await;
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(reason(&limited).as_deref(), Some("RATE_LIMITED"));
    use tonic_types::StatusExt as _;
    let wait = limited
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    // 3 a minute: the next one is due 20 s after the first.
    assert!(
        wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );

    let response = json_login(&app, None).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5..=12).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 8, "{body}");
    // Reads are not rate limited.
    for _ in 0..20 {
        app.accounts()
            .list_accounts(authed(&banker, pb::ListAccountsRequest::default()))
            .await
            .expect("reads pass");
    }
}

#[tokio::test]
async fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    // Untrusted: every call is 127.0.0.1's, whatever the header says.
    let open = TestApp::spawn_with(&["--rate-auth-per-minute", "2"]).await;
    grpc_login(&open, Some("198.51.100.1")).await;
    grpc_login(&open, Some("198.51.100.2")).await;
    assert_eq!(
        grpc_login(&open, Some("198.51.100.3")).await.code(),
        Code::ResourceExhausted,
        "a client cannot buy a fresh budget with a header"
    );

    // Trusted: each forwarded address has its own budget, over gRPC and JSON alike.
    let proxied = TestApp::spawn_with(&[
        "--rate-auth-per-minute",
        "2",
        "--trusted-proxies",
        "127.0.0.0/8",
    ])
    .await;
    assert_eq!(
        grpc_login(&proxied, Some("198.51.100.1")).await.code(),
        Code::Unauthenticated
    );
    assert_eq!(
        json_login(&proxied, Some("198.51.100.1")).await.status(),
        401
    );
    assert_eq!(
        json_login(&proxied, Some("198.51.100.1")).await.status(),
        429
    );
    assert_eq!(
        grpc_login(&proxied, Some("198.51.100.1")).await.code(),
        Code::ResourceExhausted
    );
    // The attacker's spent budget is not the victim's.
    assert_eq!(
        grpc_login(&proxied, Some("203.0.113.9")).await.code(),
        Code::Unauthenticated
    );
    // A forged first hop does not move the client: the proxy appended the real one.
    assert_eq!(
        json_login(&proxied, Some("203.0.113.50, 198.51.100.1"))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn writes_are_limited_per_user() {
    let app = TestApp::spawn_with(&["--rate-writes-per-second", "2"]).await;
    let token = app.signed_in(&unique("writer"), &[]).await.access_token;
    let open = || {
        let mut accounts = app.accounts();
        let token = token.clone();
        async move {
            accounts
                .create_account(authed(
                    &token,
                    pb::CreateAccountRequest {
                        currency: "USD".into(),
                        owner: None,
                        name: None,
                        overdraft_limit: None,
                    },
                ))
                .await
        }
    };
    let before = app.count("accounts").await;
    open().await.expect("first write");
    open().await.expect("second write");
    let limited = assert_code(open().await, Code::ResourceExhausted);
    assert_eq!(reason(&limited).as_deref(), Some("RATE_LIMITED"));
    assert_eq!(
        app.count("accounts").await,
        before + 2,
        "the refused write wrote nothing"
    );
}

/// A login with `password` for `username`, from `address` as a trusted proxy names it (if
/// given).
async fn login_from(
    app: &TestApp,
    username: &str,
    password: &str,
    address: Option<&str>,
) -> Result<pb::LoginResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::LoginRequest {
        username: username.into(),
        password: password.into(),
    });
    if let Some(address) = address {
        request
            .metadata_mut()
            .insert("x-forwarded-for", address.parse().unwrap());
    }
    app.sessions().login(request).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn an_attacker_exhausting_the_login_throttle_does_not_lock_the_victim_out_elsewhere() {
    let app = TestApp::spawn_with(&[
        "--trusted-proxies",
        "127.0.0.0/8",
        "--login-failures-max",
        "3",
        "--login-failures-per-address-max",
        "5",
    ])
    .await;
    let victim = unique("victim");
    app.create_user(&victim).await;
    let attacker = Some("198.51.100.66");
    for _ in 0..3 {
        let status = login_from(&app, &victim, "wrong password 123", attacker)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // From the attacker's address even the right password is now refused ...
    let locked = login_from(&app, &victim, PASSWORD, attacker)
        .await
        .unwrap_err();
    assert_eq!(reason(&locked).as_deref(), Some("LOGIN_RATE_LIMITED"));
    // ... but the victim, from their own address, logs in.
    login_from(&app, &victim, PASSWORD, Some("203.0.113.10"))
        .await
        .expect("the victim is not locked out");

    // A spray over many usernames from one address stops at the per-address limit.
    let sprayer = Some("198.51.100.77");
    for i in 0..5 {
        let status = login_from(&app, &format!("nobody_{i}"), "wrong password 123", sprayer)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let stopped = login_from(&app, &victim, PASSWORD, sprayer)
        .await
        .unwrap_err();
    assert_eq!(reason(&stopped).as_deref(), Some("LOGIN_RATE_LIMITED"));
    assert!(
        stopped.message().contains("from this address"),
        "{stopped:?}"
    );
}

#[tokio::test]
async fn json_with_a_key_twice_or_a_field_under_both_names_and_odd_emails_are_refused() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let sign_up = |body: String| {
        let client = client.clone();
        let url = format!("http://{}/v1/users", app.addr);
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let name = unique("strict");
    let fields = format!(
        r#""fullName": "Strict Tester", "email": "{name}@example.com", "password": "{PASSWORD}""#
    );
    for body in [
        format!(r#"{{"username": "{name}", "username": "other_{name}", {fields}}}"#),
        format!(r#"{{"username": "{name}", {fields}, "full_name": "Someone Else"}}"#),
    ] {
        let response = sign_up(body).await;
        assert_eq!(response.status(), 400);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["code"], 3, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("given twice"),
            "{answer}"
        );
    }
    assert_eq!(app.count("users").await, 0, "nothing was written");
    // The same sign-up, well formed, works.
    assert_eq!(
        sign_up(format!(r#"{{"username": "{name}", {fields}}}"#))
            .await
            .status(),
        200
    );

    // A domain that grows when lower-cased, and a DNS label over 63 octets: refused, not 500.
    for email in [
        "bob@İ.com".to_owned(),
        format!("bob@{}.com", "a".repeat(64)),
    ] {
        let status = app
            .users()
            .create_user(pb::CreateUserRequest {
                username: unique("odd"),
                full_name: "Odd Email".into(),
                email,
                password: PASSWORD.into(),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
}

/// One unary gRPC call over a raw HTTP/2 connection: `frame` is the whole request body, sent
/// with `extra` headers; returns the response head (a rejection carries its status there).
async fn raw_call(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    frame: &'static [u8],
) -> http::Response<h2::RecvStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let (response, mut send) = client
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    send.send_data(bytes::Bytes::from_static(frame), true)
        .unwrap();
    response.await.unwrap()
}

/// How many calls of `method` answered `code` `/metrics` counts so far. (The recorder is one
/// per test process, so the tests below compare before and after their own call.)
async fn rpc_count(app: &TestApp, method: &str, code: &str) -> f64 {
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let code = format!("code=\"{code}\"");
    counter(
        &metrics
            .lines()
            .filter(|l| l.contains(method) && l.contains(&code))
            .collect::<Vec<_>>()
            .join("\n"),
        "tally_rpc_requests_total",
    )
}

#[tokio::test]
async fn a_message_that_is_not_protobuf_is_invalid_argument_in_the_answer_and_the_metrics() {
    let app = TestApp::spawn().await;
    let before = rpc_count(&app, "UserService/CreateUser", "INVALID_ARGUMENT").await;
    // A frame of three bytes that are no protobuf message (a truncated varint).
    let response = raw_call(
        app.addr,
        "/tally.v1.UserService/CreateUser",
        &[],
        &[0, 0, 0, 0, 3, 0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(response.headers()["grpc-status"], "3", "INVALID_ARGUMENT");
    let message = response.headers()["grpc-message"].to_str().unwrap();
    assert!(!message.contains("Protobuf"), "no library text: {message}");
    assert!(rpc_count(&app, "UserService/CreateUser", "INVALID_ARGUMENT").await > before);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn a_call_past_its_deadline_is_deadline_exceeded_in_the_answer_and_the_metrics() {
    let app = TestApp::spawn().await;
    let before = rpc_count(&app, "SessionService/Login", "DEADLINE_EXCEEDED").await;
    // A login (a password hash: tens of milliseconds) with a deadline of one millisecond.
    let response = raw_call(
        app.addr,
        "/tally.v1.SessionService/Login",
        &[("grpc-timeout", "1m")],
        // LoginRequest { username: "nobody_x", password: "wrong password 123" }
        b"\x00\x00\x00\x00\x1e\x0a\x08nobody_x\x12\x12wrong password 123",
    )
    .await;
    assert_eq!(response.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED");
    assert!(rpc_count(&app, "SessionService/Login", "DEADLINE_EXCEEDED").await > before);
}

#[tokio::test]
async fn a_full_page_of_transfers_with_long_multibyte_memos_fits_the_response_limit() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let holder = app.signed_in(&unique("memos"), &[]).await.access_token;
    let from = app.open_account(&holder, "USD").await.account_id;
    let to = app.open_account(&holder, "USD").await.account_id;
    app.deposit(&banker, &from, 1_000_000).await;
    // 256 four-byte characters: the longest memo, 1 KiB; a thousand of them are more than the
    // 1 MiB response limit.
    let memo = "𝄞".repeat(256);
    const TRANSFERS: usize = 1_000;
    for _ in 0..4 {
        let transfers = (0..TRANSFERS / 4)
            .map(|_| pb::CreateTransferRequest {
                memo: Some(memo.clone()),
                ..transfer_request(&from, &to, 1)
            })
            .collect();
        app.transfers()
            .create_transfers(authed(
                &holder,
                pb::CreateTransfersRequest {
                    transfers,
                    atomic: false,
                },
            ))
            .await
            .expect("a batch of 250");
    }
    // Pages of the largest size answer (no RESOURCE_EXHAUSTED), shorter than asked, and
    // together hold every transfer once.
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .transfers()
            .list_transfers(authed(
                &holder,
                pb::ListTransfersRequest {
                    account_id: to.clone(),
                    page_size: 1_000,
                    page_token: token,
                },
            ))
            .await
            .expect("a full page fits the response limit")
            .into_inner();
        pages += 1;
        assert!(page.transfers.len() < TRANSFERS, "cut by bytes");
        for t in page.transfers {
            assert!(seen.insert(t.transfer_id), "no transfer twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), TRANSFERS);
    assert!(pages > 1);
}

#[tokio::test]
async fn a_peer_beyond_its_connection_cap_is_closed_and_let_in_again_once_one_closes() {
    let app = TestApp::spawn_with(&["--connections-per-peer-max", "3"]).await;
    // The test's own channel may hold one connection; two more reach the cap.
    let _ = app
        .users()
        .get_user(pb::GetUserRequest {
            username: "anyone".into(),
        })
        .await;
    let handshake = || async {
        let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await?;
        let driver = tokio::spawn(connection);
        // A request proves the server kept the connection.
        let mut client = client.ready().await?;
        let request = http::Request::get(format!("http://{}/healthz", app.addr))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true)?;
        response.await?;
        Ok::<_, h2::Error>((client, driver))
    };
    let first = handshake().await.expect("under the cap");
    let second = handshake().await.expect("at the cap");
    assert!(
        handshake().await.is_err(),
        "beyond the cap: closed on accept"
    );
    drop(first);
    let again = eventually(Duration::from_secs(5), || async {
        handshake().await.is_ok()
    })
    .await;
    assert!(again.is_some(), "a closed connection frees its place");
    drop(second);
}

/// A counter's value in a Prometheus text exposition (0 when absent).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_caller_that_hangs_up_while_waiting_for_a_hashing_turn_starts_no_hash() {
    // Its own process, so its metrics count only these calls; one hash at a time.
    let server = ServerProcess::spawn(&[
        "--hash-concurrency-max",
        "1",
        "--rate-auth-per-minute",
        "1000000",
    ])
    .await;
    let users = UserServiceClient::new(server.channel.clone());
    let mut calls = tokio::task::JoinSet::new();
    // Every client hangs up at the same instant, long before one hash can end.
    let give_up = tokio::time::Instant::now() + Duration::from_millis(25);
    for i in 0..10 {
        let mut users = users.clone();
        calls.spawn(async move {
            let request = pb::CreateUserRequest {
                username: format!("hangup_{i}"),
                full_name: "Hangs Up".into(),
                email: format!("hangup_{i}@example.com"),
                password: PASSWORD.into(),
            };
            // The client gives up (drops the call: RST_STREAM) well before one hash ends, and
            // sends no deadline, so only the hang-up can stop the server: the first call is
            // hashing and the rest are waiting for the turn when their clients go.
            tokio::time::timeout_at(give_up, users.create_user(request))
                .await
                .map(|_| ())
                .map_err(|_| ())
        });
    }
    while let Some(answer) = calls.join_next().await {
        assert!(answer.unwrap().is_err(), "every client gave up");
    }
    // Give the server time to finish the one hash it started (and any it wrongly started).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let port = server.channel_port();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The one that held the turn when the clients went (none, if its uniqueness check was
    // still running), and at most one more whose hang-up the server had not read yet when the
    // turn came free; with a turn per caller, up to ten.
    let hashes = counter(&metrics, "tally_password_hashes_total");
    assert!(hashes <= 2.0, "{hashes} hashes started");
}

#[tokio::test]
async fn a_malformed_chunked_json_body_answers_400_without_the_transport_s_words() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn().await;
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/users HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("could not read the request body"),
        "{answer}"
    );
    assert!(
        !answer.to_lowercase().contains("chunk"),
        "no transport text: {answer}"
    );
    assert_eq!(app.count("users").await, 0);
}
