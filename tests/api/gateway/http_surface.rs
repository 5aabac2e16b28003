//! What only the HTTP side has: error statuses and shapes, the client address, the OpenAPI
//! routes and docs page, CORS, and gRPC-web beside JSON.

use bytes::BufMut as _;
use serde_json::{Value as Json, json};

use super::http_json;
use crate::helpers::*;

#[tokio::test]
async fn http_errors_have_the_json_shape_and_the_right_status() {
    let app = TestApp::spawn_with(&["--max-message-bytes", "2048"]).await;
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::new();
    let check = |status: u16, code: i64| {
        move |(s, body): (u16, Json)| {
            assert_eq!(s, status, "{body}");
            assert_eq!(body["code"], code, "{body}");
            assert!(
                body["message"].is_string() && body["details"].is_array(),
                "{body}"
            );
        }
    };
    let send = |r: reqwest::RequestBuilder| async move {
        let response = r.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Json>().await.unwrap_or(Json::Null))
    };
    check(404, 5)(send(client.get(format!("{base}/v1/nowhere"))).await);
    check(405, 12)(send(client.put(format!("{base}/v1/users/bob"))).await);
    let json_post = |body: String| {
        client
            .post(format!("{base}/v1/users"))
            .header("content-type", "application/json")
            .body(body)
    };
    check(400, 3)(send(json_post("{\"username\":".into())).await);
    check(400, 3)(send(json_post("{\"noSuchField\": 1}".into())).await);
    check(400, 3)(send(json_post("[1, 2]".into())).await);
    // Trailing content after the JSON value (grpc-gateway reads the first value and goes on).
    check(400, 3)(
        send(json_post(
            "{\"fullName\": \"x\"} {\"fullName\": \"y\"}".into(),
        ))
        .await,
    );
    check(413, 8)(
        send(json_post(format!(
            "{{\"fullName\": \"{}\"}}",
            "x".repeat(4096)
        )))
        .await,
    );
    check(415, 3)(
        send(
            client
                .post(format!("{base}/v1/users"))
                .header("content-type", "application/xml")
                .body("<user/>"),
        )
        .await,
    );
    // A query parameter naming a field the route cannot take from the query.
    check(400, 3)(
        send(
            client
                .post(format!("{base}/v1/users?username=x"))
                .json(&json!({})),
        )
        .await,
    );
    // Plain HTTP routes still answer through the gateway.
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn json_calls_keep_the_client_address_user_agent_and_both_field_spellings() {
    let app = TestApp::spawn().await;
    let me = unique("ca");
    app.create_user(&me).await;
    let client = reqwest::Client::builder()
        .user_agent("gateway-test/1")
        .build()
        .unwrap();
    let login = client
        .post(format!("http://{}/v1/sessions", app.addr))
        // proto field names are accepted beside lowerCamelCase
        .json(&json!({"username": me, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Json>()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("token").to_owned();
    let (status, sessions) = http_json(
        &app,
        "GET",
        &format!("/v1/users/{me}/sessions"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{sessions}");
    let session = &sessions["sessions"][0];
    assert_eq!(session["userAgent"], "gateway-test/1");
    assert_eq!(session["clientAddress"], "127.0.0.1");

    let (status, user) = http_json(
        &app,
        "PATCH",
        &format!("/v1/users/{me}"),
        Some(&json!({"full_name": "Snake Case"})),
        Some(&token),
    )
    .await;
    assert_eq!(
        (status, user["fullName"].clone()),
        (200, json!("Snake Case")),
        "{user}"
    );
}

#[tokio::test]
async fn every_route_in_openapi_json_answers_and_docs_are_served() {
    let app = TestApp::spawn().await;
    let base = format!("http://{}", app.addr);
    let doc: Json = reqwest::get(format!("{base}/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let client = reqwest::Client::new();
    let mut routes = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let id = "0196f3a0-0000-7000-8000-000000000009";
        let concrete = path
            .split('/')
            .map(|s| match (s.starts_with('{'), s.split_once("}:")) {
                (true, Some((_, verb))) => format!("{id}:{verb}"),
                (true, None) => id.to_owned(),
                _ => s.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ops.as_object().unwrap().keys() {
            let response = client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    format!("{base}{concrete}"),
                )
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            // Routed (never "wrong method", never "no route") and no server error.
            assert_ne!(status, 405, "{method} {concrete}");
            assert!(
                status < 500 || status == 501,
                "{method} {concrete}: {status}"
            );
            let body: Json = response.json().await.unwrap();
            assert_ne!(
                body["message"], "no route for this path",
                "{method} {concrete}"
            );
            routes += 1;
        }
    }
    assert!(routes >= 22, "only {routes} routes");
    let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    // The explorer (Swagger UI) over /openapi.json: its scripts are files, never inline.
    let html = docs.text().await.unwrap();
    assert!(html.contains("href=\"/openapi.json\""), "{html}");
    assert!(html.contains("<script src=\"/docs/assets/"), "{html}");
    assert!(!html.contains("<script>"), "an inline script: {html}");
}

#[tokio::test]
async fn grpc_web_still_works_beside_json_and_cors_is_opt_in() {
    let app = TestApp::spawn_with(&["--cors-allowed-origins", "https://app.example"]).await;
    let base = format!("http://{}", app.addr);
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/roles"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // A gRPC-web call (HTTP/1.1, base64-free binary framing): RoleService/ListRoles anonymously.
    let mut frame = vec![0u8];
    frame.put_u32(0);
    let response = client
        .post(format!("{base}/tally.v1.RoleService/ListRoles"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://app.example")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(response.headers()["grpc-status"], "16");
}

#[tokio::test]
async fn response_metadata_reaches_http_clients_as_grpc_metadata_headers() {
    let app = TestApp::spawn().await;
    let banker = app.signed_in(&unique("bk"), &["banker"]).await.access_token;
    let user = app.signed_in(&unique("md"), &[]).await.access_token;
    let from = app.open_account(&user, "USD").await.account_id;
    let to = app.open_account(&user, "USD").await.account_id;
    app.deposit(&banker, &from, 100).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/transfers", app.addr))
        .bearer_auth(&user)
        .json(&serde_json::json!({
            "transferId": uuid::Uuid::new_v4().to_string(),
            "fromAccountId": from, "toAccountId": to, "amount": "5", "currency": "USD",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let attempts = response.headers()["grpc-metadata-tally-attempts"]
        .to_str()
        .unwrap();
    assert!(attempts.parse::<u32>().unwrap() >= 1);
    assert!(
        response
            .headers()
            .get("grpc-metadata-grpc-status")
            .is_none()
    );
}
