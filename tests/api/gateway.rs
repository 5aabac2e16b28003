//! The HTTP JSON gateway against the real server: every RPC answers the same over JSON as over
//! gRPC (compared as decoded messages, error codes and ErrorInfo reasons included), auth is
//! identical, the HTTP error shapes and statuses, and `/openapi.json` routes all answer.
//!
//! The gRPC side is driven by the descriptor set too (prost-reflect builds the request from
//! the same JSON), so one table of cases covers every RPC. To add a case once an RPC is
//! implemented, add a row to `cases`.

use bytes::{Buf as _, BufMut as _};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{Value as Json, json};
use tally::proto::FILE_DESCRIPTOR_SET;
use tonic::{
    Request,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::MetadataValue,
};

use crate::helpers::*;

/// Passes already-encoded messages through tonic's client untouched.
#[derive(Default, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// An answer in a transport-neutral form: the message as proto3 JSON, or the error's code,
/// message and ErrorInfo reasons.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Ok(Json),
    Err {
        code: i32,
        message: String,
        reasons: Vec<String>,
    },
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// Calls `method` (`tally.v1.UserService/GetUser`) over gRPC with the request given as JSON.
async fn grpc(app: &TestApp, method: &str, request: &Json, token: Option<&str>) -> Answer {
    let pool = pool();
    let (service, name) = method.split_once('/').expect("service/method");
    let descriptor = pool
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == name))
        .expect("method exists");
    let message = DynamicMessage::deserialize(descriptor.input(), request.clone())
        .expect("the case's request is valid proto3 JSON");
    let mut call = Request::new(message.encode_to_vec());
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        call.metadata_mut().insert("authorization", value);
    }
    let mut client = tonic::client::Grpc::new(app.channel.clone());
    client.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::try_from(format!("/{method}")).unwrap();
    match client.unary(call, path, RawCodec).await {
        Ok(response) => {
            let decoded =
                DynamicMessage::decode(descriptor.output(), response.into_inner().as_slice())
                    .expect("response decodes");
            Answer::Ok(serde_json::to_value(&decoded).unwrap())
        }
        Err(status) => Answer::Err {
            code: status.code() as i32,
            message: status.message().to_owned(),
            reasons: reason(&status).into_iter().collect(),
        },
    }
}

/// Calls the JSON route; returns the HTTP status and the answer.
pub async fn http_json(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Option<&Json>,
    token: Option<&str>,
) -> (u16, Json) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{path}", app.addr);
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("http call");
    let status = response.status().as_u16();
    let json = response.json::<Json>().await.unwrap_or(Json::Null);
    (status, json)
}

fn answer_of(status: u16, json: Json) -> Answer {
    if status == 200 {
        return Answer::Ok(json);
    }
    let reasons = json["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .filter_map(|d| d["reason"].as_str().map(str::to_owned))
        .collect();
    Answer::Err {
        code: json["code"].as_i64().unwrap_or(-1) as i32,
        message: json["message"].as_str().unwrap_or("").to_owned(),
        reasons,
    }
}

/// Values that differ between two calls by nature (tokens, ids, clocks) are blanked.
fn normalise(answer: Answer, names: &[(&str, &str)]) -> Answer {
    const VOLATILE: &[&str] = &[
        "sessionId",
        "accessToken",
        "refreshToken",
        "accessTokenExpiresAt",
        "refreshTokenExpiresAt",
        "createdAt",
        "passwordChangedAt",
        "expiresAt",
    ];
    fn walk(v: &mut Json, names: &[(&str, &str)]) {
        match v {
            Json::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if VOLATILE.contains(&key.as_str()) {
                        *value = json!("<volatile>");
                    } else {
                        walk(value, names);
                    }
                }
            }
            Json::Array(items) => items.iter_mut().for_each(|i| walk(i, names)),
            Json::String(s) => {
                for (from, to) in names {
                    *s = s.replace(from, to);
                }
            }
            _ => {}
        }
    }
    match answer {
        Answer::Ok(mut json) => {
            walk(&mut json, names);
            Answer::Ok(json)
        }
        err => err,
    }
}

/// One RPC called both ways. `{u}` in the request and path is replaced by a fresh value per
/// transport (for calls that change state), then mapped back before comparing.
struct Case {
    rpc: &'static str,
    http_method: &'static str,
    path: String,
    request: Json,
    token: Option<String>,
    /// Set when the RPC must succeed (not merely agree) in this scenario.
    expect_ok: bool,
}

fn case(rpc: &'static str, http_method: &'static str, path: String, request: Json) -> Case {
    Case {
        rpc,
        http_method,
        path,
        request,
        token: None,
        expect_ok: false,
    }
}

impl Case {
    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }
    fn ok(mut self) -> Self {
        self.expect_ok = true;
        self
    }
}

fn fill(json: &Json, placeholder: &str) -> Json {
    serde_json::from_str(&json.to_string().replace("{u}", placeholder)).unwrap()
}

/// The body the HTTP rule takes: everything but the path-bound fields for `body: "*"`
/// (sending them again is allowed, but the plain form is what clients send), none for GET.
fn http_body(case: &Case, request: &Json) -> Option<Json> {
    match case.http_method {
        "GET" | "DELETE" => None,
        _ => Some(request.clone()),
    }
}

#[tokio::test]
async fn every_rpc_answers_the_same_over_json_and_grpc() {
    let app = TestApp::spawn().await;
    let me = unique("gw");
    let other = unique("gwo");
    let admin = unique("gwa");
    let customer = app.signed_in(&me, &[]).await;
    app.create_user(&other).await;
    let root = app.signed_in(&admin, &["admin"]).await;
    let (tok, admin_tok) = (customer.access_token.as_str(), root.access_token.as_str());
    let account = "0196f3a0-0000-7000-8000-000000000001";
    let ledger_request = json!({
        "accountId": account, "requestId": "0196f3a0-0000-7000-8000-000000000002",
        "amount": "100", "memo": "parity"
    });

    let cases = vec![
        case(
            "tally.v1.UserService/CreateUser",
            "POST",
            "/v1/users".into(),
            json!({
                "username": "{u}", "fullName": "Parity", "email": "{u}@example.com",
                "password": PASSWORD,
            }),
        )
        .ok(),
        case(
            "tally.v1.UserService/CreateUser",
            "POST",
            "/v1/users".into(),
            json!({"username": "X!", "password": "short"}),
        ),
        case(
            "tally.v1.UserService/GetUser",
            "GET",
            format!("/v1/users/{me}"),
            json!({"username": me}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.UserService/GetUser",
            "GET",
            format!("/v1/users/{other}"),
            json!({"username": other}),
        )
        .token(tok),
        case(
            "tally.v1.UserService/UpdateUser",
            "PATCH",
            format!("/v1/users/{me}"),
            json!({"username": me, "fullName": "Renamed"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.UserService/VerifyEmail",
            "POST",
            "/v1/users:verifyEmail".into(),
            json!({"verificationId": account, "code": "abc"}),
        ),
        case(
            "tally.v1.UserService/VerifyEmail",
            "GET",
            format!("/v1/verify_email?verificationId={account}&code=abc"),
            json!({"verificationId": account, "code": "abc"}),
        ),
        case(
            "tally.v1.UserService/ResendVerification",
            "POST",
            format!("/v1/users/{me}:resendVerification"),
            json!({"username": me}),
        )
        .token(tok),
        case(
            "tally.v1.SessionService/Login",
            "POST",
            "/v1/sessions".into(),
            json!({"username": me, "password": PASSWORD}),
        )
        .ok(),
        case(
            "tally.v1.SessionService/Login",
            "POST",
            "/v1/sessions".into(),
            json!({"username": me, "password": "wrong password!!"}),
        ),
        case(
            "tally.v1.SessionService/RefreshSession",
            "POST",
            "/v1/sessions:refresh".into(),
            json!({"refreshToken": "not-a-token"}),
        ),
        case(
            "tally.v1.SessionService/ListSessions",
            "GET",
            format!("/v1/users/{me}/sessions"),
            json!({"username": me}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.SessionService/RevokeSession",
            "DELETE",
            format!("/v1/sessions/{account}"),
            json!({"sessionId": account}),
        )
        .token(tok),
        case(
            "tally.v1.RoleService/ListRoles",
            "GET",
            "/v1/roles".into(),
            json!({}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.RoleService/GrantRole",
            "POST",
            format!("/v1/users/{other}/roles"),
            json!({"username": other, "role": "banker"}),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.RoleService/GrantRole",
            "POST",
            format!("/v1/users/{other}/roles"),
            json!({"username": other, "role": "banker"}),
        )
        .token(tok),
        case(
            "tally.v1.RoleService/RevokeRole",
            "DELETE",
            format!("/v1/users/{other}/roles/banker"),
            json!({"username": other, "role": "banker"}),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.AccountService/CreateAccount",
            "POST",
            "/v1/accounts".into(),
            json!({"currency": "USD", "name": "parity"}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/GetAccount",
            "GET",
            format!("/v1/accounts/{account}"),
            json!({"accountId": account}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/ListAccounts",
            "GET",
            "/v1/accounts?pageSize=10".into(),
            json!({"pageSize": 10}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/ListEntries",
            "GET",
            format!("/v1/accounts/{account}/entries?pageSize=5"),
            json!({"accountId": account, "pageSize": 5}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/Deposit",
            "POST",
            format!("/v1/accounts/{account}:deposit"),
            ledger_request.clone(),
        )
        .token(admin_tok),
        case(
            "tally.v1.AccountService/Withdraw",
            "POST",
            format!("/v1/accounts/{account}:withdraw"),
            ledger_request.clone(),
        )
        .token(admin_tok),
        case(
            "tally.v1.TransferService/CreateTransfer",
            "POST",
            "/v1/transfers".into(),
            json!({
                "transferId": "0196f3a0-0000-7000-8000-000000000003", "fromAccountId": account,
                "toAccountId": "0196f3a0-0000-7000-8000-000000000004", "amount": "5",
                "currency": "USD",
            }),
        )
        .token(tok),
        case(
            "tally.v1.TransferService/GetTransfer",
            "GET",
            format!("/v1/transfers/{account}"),
            json!({"transferId": account}),
        )
        .token(tok),
        case(
            "tally.v1.TransferService/ListTransfers",
            "GET",
            format!("/v1/accounts/{account}/transfers"),
            json!({"accountId": account}),
        )
        .token(tok),
    ];

    // Every RPC of the descriptor set has at least one case.
    for service in pool().services().filter(|s| s.package_name() == "tally.v1") {
        for method in service.methods() {
            let rpc = format!("{}/{}", service.full_name(), method.name());
            assert!(
                cases.iter().any(|c| c.rpc == rpc),
                "{rpc} has no parity case"
            );
        }
    }

    for case in &cases {
        let (g, j) = (unique("pg"), unique("pj"));
        let over_grpc = grpc(
            &app,
            case.rpc,
            &fill(&case.request, &g),
            case.token.as_deref(),
        )
        .await;
        let request = fill(&case.request, &j);
        let (status, body) = http_json(
            &app,
            case.http_method,
            &case.path.replace("{u}", &j),
            http_body(case, &request).as_ref(),
            case.token.as_deref(),
        )
        .await;
        let over_json = answer_of(status, body.clone());
        if let Answer::Err { code, .. } = &over_json {
            let expected = tally::error::http_status(tonic::Code::from_i32(*code)).as_u16();
            assert_eq!(status, expected, "{}: HTTP status of {body}", case.rpc);
        }
        let over_grpc = normalise(over_grpc, &[(&g, "{u}")]);
        let over_json = normalise(over_json, &[(&j, "{u}")]);
        assert_eq!(
            over_json, over_grpc,
            "{} {}: JSON and gRPC differ",
            case.http_method, case.path
        );
        if case.expect_ok {
            assert!(
                matches!(over_json, Answer::Ok(_)),
                "{}: expected OK, got {over_json:?}",
                case.rpc
            );
        }
    }
}

#[tokio::test]
async fn auth_over_json_answers_401_403_and_404_like_grpc() {
    let app = TestApp::spawn().await;
    let (me, other) = (unique("au"), unique("ao"));
    let customer = app.signed_in(&me, &[]).await;
    app.create_user(&other).await;
    let tok = customer.access_token.as_str();

    let (status, body) = http_json(&app, "GET", "/v1/roles", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], 16);
    assert_eq!(body["details"][0]["reason"], "UNAUTHENTICATED");

    let grant = json!({"role": "admin"});
    let path = format!("/v1/users/{me}/roles");
    let (status, body) = http_json(&app, "POST", &path, Some(&grant), Some(tok)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], 7);
    assert_eq!(body["details"][0]["reason"], "PERMISSION_DENIED");

    // Another user's profile is indistinguishable from a missing one.
    let (status, foreign) =
        http_json(&app, "GET", &format!("/v1/users/{other}"), None, Some(tok)).await;
    assert_eq!(status, 404, "{foreign}");
    let (_, missing) = http_json(&app, "GET", "/v1/users/nobody_here", None, Some(tok)).await;
    assert_eq!(foreign, missing);

    let (status, body) = http_json(&app, "GET", "/v1/roles", None, Some("v4.local.garbage")).await;
    assert_eq!((status, body["code"].clone()), (401, json!(16)));
}

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
                .header("content-type", "text/plain")
                .body("hello"),
        )
        .await,
    );
    check(400, 3)(send(client.get(format!("{base}/v1/accounts?noSuchParam=1"))).await);
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
    let html = docs.text().await.unwrap();
    assert!(html.contains("/v1/users/{username}") && !html.contains("<script"));
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
