//! The listener: reflection, health, gRPC-web and plain HTTP on one port, limits, shutdown.

use std::time::Duration;

use prost::Message as _;
use tally::proto::tally_v1 as pb;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::*;

async fn reflected_services(app: &TestApp) -> Result<Vec<String>, tonic::Status> {
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let response = stream.next().await.expect("one response")?;
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            Ok(names)
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_lists_the_five_services_and_health_and_can_be_switched_off() {
    let app = TestApp::spawn().await;
    let names = reflected_services(&app).await.unwrap();
    for expected in tally::proto::TALLY_SERVICES
        .iter()
        .chain(&["grpc.health.v1.Health"])
    {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let off = TestApp::spawn_with(&["--reflection", "false"]).await;
    assert!(reflected_services(&off).await.is_err());
}

#[tokio::test]
async fn health_serves_and_http_probes_answer_on_the_same_port() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "tally.v1.UserService", "tally.v1.TransferService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let http = reqwest::Client::new();
    let healthz = http
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = http
        .get(format!("http://{}/readyz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let unknown = http
        .get(format!("http://{}/nope", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_works_with_the_same_auth() {
    let app = TestApp::spawn().await;
    let name = unique("webby");
    let login = app.signed_in(&name, &[]).await;
    let message = pb::GetUserRequest {
        username: name.clone(),
    }
    .encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);

    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let call = |token: Option<String>| {
        let mut request = http
            .post(format!("http://{}/tally.v1.UserService/GetUser", app.addr))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(frame.clone());
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        request.send()
    };

    let response = call(Some(login.access_token.clone())).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "a data frame comes first");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let user = pb::User::decode(&body[5..5 + len]).unwrap();
    assert_eq!(user.username, name);
    let trailers = String::from_utf8_lossy(&body[5 + len + 5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    let denied = call(None).await.unwrap();
    assert_eq!(
        denied.headers()["grpc-status"],
        "16",
        "unauthenticated over gRPC-web too"
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let app = TestApp::spawn_with(&["--max-message-bytes", "1024"]).await;
    let result = app
        .users()
        .create_user(pb::CreateUserRequest {
            username: unique("big"),
            full_name: "x".repeat(4096),
            email: "big@example.com".into(),
            password: PASSWORD.into(),
        })
        .await;
    let status = result.expect_err("too large");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_returns_after_draining() {
    let app = TestApp::spawn().await;
    let channel = app.channel.clone();
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "tally.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let stopping = tokio::spawn(app.stop());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
    if let Ok(Some(Ok(update))) = next {
        assert_eq!(update.status, ServingStatus::NotServing as i32);
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("drained within the bound")
        .unwrap()
        .expect("stopped cleanly");
}

#[tokio::test]
async fn while_draining_readiness_is_not_serving_but_liveness_stays_serving() {
    let app = TestApp::spawn().await;
    let health = HealthClient::new(app.channel.clone());
    let watch = |service: &str| {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let mut health = health.clone();
        async move { health.watch(request).await.unwrap().into_inner() }
    };
    let mut readiness = watch("").await;
    let mut liveness = watch("grpc.health.v1.Health").await;
    for stream in [&mut readiness, &mut liveness] {
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32);
    }
    // The open watches hold the drain open (up to TALLY_SHUTDOWN_DRAIN_SECS).
    let stopping = tokio::spawn(app.stop());
    let update = tokio::time::timeout(Duration::from_secs(5), readiness.next())
        .await
        .expect("readiness changes at shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(update.status, ServingStatus::NotServing as i32);
    let liveness_update = tokio::time::timeout(Duration::from_secs(2), liveness.next()).await;
    assert!(
        !matches!(&liveness_update, Ok(Some(Ok(u))) if u.status != ServingStatus::Serving as i32),
        "liveness must not go NOT_SERVING while draining: {liveness_update:?}"
    );
    drop((readiness, liveness));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("drained within the bound")
        .unwrap()
        .expect("stopped cleanly");
}

#[tokio::test]
async fn the_binary_exits_zero_on_sigterm() {
    let ServerProcess { mut child, _db, .. } = ServerProcess::spawn(&[]).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exited within 30 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
