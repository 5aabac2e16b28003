//! Where HTTP JSON clients expect grpc-gateway, tally behaves like it: every response field
//! emitted, errors from any layer as JSON with their HTTP status, curl's and fetch's default
//! content types read as JSON, unknown query parameters and bodies on GET ignored, resources
//! read and sent back accepted, `WWW-Authenticate` on 401. One test per behaviour, and one per
//! class of request (success shapes, int64 as string or number, enums, URL-encoded paths,
//! repeated query parameters, the error codes with their statuses), so the gateway cannot drift.
//! Path, query and body forms on a schema of their own are in `src/gateway/tests.rs`.
//!
//! Where tally is deliberately stricter than grpc-gateway (misspelt body fields, a key twice,
//! trailing garbage), the tests say so.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value as Json, json};

use super::{assert_every_field_present, output_of};
use crate::helpers::*;

/// Sends one JSON call; the HTTP status, the content type and the body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<(&str, String)>,
    token: Option<&str>,
) -> (StatusCode, String, Json) {
    let mut request = Client::new().request(method, format!("http://{}{path}", app.addr));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, body)) = body {
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        request = request.body(body);
    }
    let response = request.send().await.expect("http call");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    (
        status,
        content_type,
        serde_json::from_str(&text).unwrap_or(Json::Null),
    )
}

fn json_body(value: Json) -> Option<(&'static str, String)> {
    Some(("application/json", value.to_string()))
}

/// The error body of every non-2xx answer: the gRPC code, a message, the details.
fn assert_error(answer: &(StatusCode, String, Json), status: u16, code: i64, context: &str) {
    let (got, content_type, body) = answer;
    assert_eq!(got.as_u16(), status, "{context}: {body}");
    assert_eq!(content_type, "application/json", "{context}");
    assert_eq!(body["code"], code, "{context}: {body}");
    assert!(
        body["message"].is_string() && body["details"].is_array(),
        "{context}: {body}"
    );
}

#[tokio::test]
async fn every_response_field_is_emitted_with_its_default_and_unset_messages_as_null() {
    let app = TestApp::spawn().await;
    let me = unique("ge");
    let login = app.signed_in(&me, &[]).await;
    let token = login.access_token.as_str();
    let account = app.open_account(token, "USD").await.account_id;

    let app = &app;
    let get = |path: String| async move { call(app, Method::GET, &path, None, Some(token)).await };
    let (_, _, user) = get(format!("/v1/users/{me}")).await;
    assert_eq!(user["emailVerified"], false, "{user}");
    assert_every_field_present(&output_of("tally.v1.UserService/GetUser"), &user, "GetUser");

    let (_, _, fresh) = get(format!("/v1/accounts/{account}")).await;
    for (field, value) in [
        ("balance", json!("0")),
        ("pendingDebits", json!("0")),
        ("availableBalance", json!("0")),
        ("overdraftLimit", json!("0")),
        ("closedAt", Json::Null),
    ] {
        assert_eq!(fresh[field], value, "{field} of {fresh}");
    }
    let (_, _, entries) = get(format!("/v1/accounts/{account}/entries")).await;
    assert_eq!(entries, json!({"entries": [], "nextPageToken": ""}));
    let (_, _, sessions) = get(format!("/v1/users/{me}/sessions")).await;
    assert_eq!(
        sessions["sessions"][0]["revokedAt"],
        Json::Null,
        "{sessions}"
    );
    assert_every_field_present(
        &output_of("tally.v1.SessionService/ListSessions"),
        &sessions,
        "ListSessions",
    );
}

#[tokio::test]
async fn a_client_deadline_answers_json_504_and_no_json_route_ever_answers_grpc() {
    let app = TestApp::spawn_with(&["--rate-auth-per-minute", "100000"]).await;
    // Deadlines around the time a login takes (a password hash): some calls finish, some
    // time out in the gateway, in the handler's layers or exactly at tonic's own timer.
    let me = unique("dl");
    app.create_user(&me).await;
    let mut timed_out = 0;
    for micros in (1..=60).map(|i| i * 997) {
        let response = Client::new()
            .post(format!("http://{}/v1/sessions", app.addr))
            .header("grpc-timeout", format!("{micros}u"))
            .json(&json!({"username": me, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Json = response.json().await.unwrap();
        assert_eq!(
            content_type, "application/json",
            "{micros} µs: {status} {body}"
        );
        match status {
            504 => {
                assert_eq!(body["code"], 4, "{body}");
                timed_out += 1;
            }
            200 => assert!(body["accessToken"].is_string(), "{body}"),
            other => panic!("{micros} µs: HTTP {other} {body}"),
        }
    }
    assert!(timed_out > 0, "no deadline was short enough to time out");

    // A gRPC method path called with JSON, and a path no rule or route knows.
    let answer = call(
        &app,
        Method::POST,
        "/tally.v1.UserService/GetUser",
        json_body(json!({})),
        None,
    )
    .await;
    assert_ne!(answer.0.as_u16(), 200, "{answer:?}");
    assert_eq!(answer.1, "application/json", "{answer:?}");
    assert!(answer.2["code"].is_i64(), "{answer:?}");
    assert_error(
        &call(&app, Method::GET, "/v1/nowhere", None, None).await,
        404,
        5,
        "unknown path",
    );
}

#[tokio::test]
async fn bodies_curl_and_fetch_send_by_default_are_read_as_json_and_other_formats_are_415() {
    let app = TestApp::spawn().await;
    for content_type in [
        "",
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
    ] {
        let name = unique("ct");
        let body = json!({"username": name, "fullName": "C T", "email": format!("{name}@example.com"),
                          "password": PASSWORD});
        let (status, _, user) = call(
            &app,
            Method::POST,
            "/v1/users",
            Some((content_type, body.to_string())),
            None,
        )
        .await;
        assert_eq!(
            (status.as_u16(), &user["username"]),
            (200, &json!(name)),
            "{content_type:?}: {user}"
        );
    }
    for content_type in [
        "application/xml",
        "multipart/form-data; boundary=x",
        "image/png",
    ] {
        let answer = call(
            &app,
            Method::POST,
            "/v1/users",
            Some((content_type, "{}".into())),
            None,
        )
        .await;
        assert_error(&answer, 415, 3, content_type);
    }
    // Read as JSON, a form-encoded body that is not JSON is a 400 naming the JSON error.
    let answer = call(
        &app,
        Method::POST,
        "/v1/users",
        Some(("application/x-www-form-urlencoded", "username=bob".into())),
        None,
    )
    .await;
    assert_error(&answer, 400, 3, "form body");
    assert!(
        answer.2["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn query_parameters_naming_no_field_are_ignored_and_counted_but_unusable_fields_are_refused()
{
    let app = TestApp::spawn().await;
    let token = app.signed_in(&unique("qp"), &[]).await.access_token;
    let ignored = || async {
        let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .filter(|l| l.starts_with("tally_gateway_query_parameters_ignored_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = ignored().await;
    let (status, _, body) = call(
        &app,
        Method::GET,
        "/v1/accounts?pageSize=5&utm_source=mail&utm_campaign=x&_=1733000000",
        None,
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ignored().await - before, 3.0);
    // Real fields the route cannot take from the query: named in the refusal.
    let answer = call(
        &app,
        Method::POST,
        "/v1/users?username=x",
        json_body(json!({})),
        None,
    )
    .await;
    assert_error(&answer, 400, 3, "a body field in the query");
    assert!(
        answer.2["message"].as_str().unwrap().contains("username"),
        "{answer:?}"
    );
    let answer = call(
        &app,
        Method::GET,
        "/v1/accounts?pageSize=many",
        None,
        Some(&token),
    )
    .await;
    assert_error(&answer, 400, 3, "a malformed value");
    assert!(
        answer.2["message"].as_str().unwrap().contains("page_size"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_body_on_get_or_delete_is_ignored() {
    let app = TestApp::spawn().await;
    let me = unique("gb");
    let login = app.signed_in(&me, &[]).await;
    let token = login.access_token.as_str();
    for body in ["{}", "{\"bogus\": 1}", "not json at all"] {
        let (status, _, roles) = call(
            &app,
            Method::GET,
            "/v1/roles",
            Some(("application/json", body.into())),
            Some(token),
        )
        .await;
        assert_eq!(status, 200, "{body}: {roles}");
        assert!(roles["roles"].is_array());
    }
    let path = format!("/v1/sessions/{}", login.session_id);
    let (status, _, answer) = call(
        &app,
        Method::DELETE,
        &path,
        json_body(json!({})),
        Some(token),
    )
    .await;
    assert_eq!((status.as_u16(), answer), (200, json!({})));
}

#[tokio::test]
async fn a_resource_read_changed_and_patched_back_is_accepted_and_misspellings_still_refused() {
    let app = TestApp::spawn().await;
    let me = unique("rw");
    let token = app.signed_in(&me, &[]).await.access_token;
    let user_path = format!("/v1/users/{me}");
    let (_, _, mut user) = call(&app, Method::GET, &user_path, None, Some(&token)).await;
    user["fullName"] = json!("Read Modify Write");
    let (status, _, updated) = call(
        &app,
        Method::PATCH,
        &user_path,
        json_body(user.clone()),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["fullName"], "Read Modify Write");
    // Output-only fields sent back are ignored, not applied: the roles stay.
    user["roles"] = json!(["admin"]);
    let (_, _, updated) = call(
        &app,
        Method::PATCH,
        &user_path,
        json_body(user),
        Some(&token),
    )
    .await;
    assert_eq!(updated["roles"], json!(["customer"]), "{updated}");
    // Unlike grpc-gateway, a misspelt field is refused by name, not dropped.
    let answer = call(
        &app,
        Method::PATCH,
        &user_path,
        json_body(json!({"fulName": "x"})),
        Some(&token),
    )
    .await;
    assert_error(&answer, 400, 3, "misspelt field");
    assert!(
        answer.2["message"].as_str().unwrap().contains("fulName"),
        "{answer:?}"
    );

    // An account: a customer renames it by sending it back whole, the overdraft limit included
    // (unchanged, so no banker permission needed); the currency does not change.
    let id = app.open_account(&token, "USD").await.account_id;
    let path = format!("/v1/accounts/{id}");
    let (_, _, mut account) = call(&app, Method::GET, &path, None, Some(&token)).await;
    account["name"] = json!("Renamed");
    account["currency"] = json!("EUR");
    let (status, _, renamed) =
        call(&app, Method::PATCH, &path, json_body(account), Some(&token)).await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(
        (&renamed["name"], &renamed["currency"]),
        (&json!("Renamed"), &json!("USD"))
    );
    // Changing the limit still needs the permission.
    let answer = call(
        &app,
        Method::PATCH,
        &path,
        json_body(json!({"overdraftLimit": "500"})),
        Some(&token),
    )
    .await;
    assert_error(&answer, 403, 7, "a customer raising the limit");
}

#[tokio::test]
async fn every_401_names_the_bearer_scheme_and_says_when_the_token_was_refused() {
    let app = TestApp::spawn().await;
    let challenge = |token: Option<&'static str>| {
        let app = &app;
        async move {
            let mut request = Client::new().get(format!("http://{}/v1/roles", app.addr));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401);
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(challenge(None).await, r#"Bearer realm="tally""#);
    assert_eq!(
        challenge(Some("v4.local.garbage")).await,
        r#"Bearer realm="tally", error="invalid_token""#
    );
    let forbidden = Client::new()
        .post(format!("http://{}/v1/users/somebody/roles", app.addr))
        .bearer_auth(app.signed_in(&unique("wa"), &[]).await.access_token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    assert!(forbidden.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn int64_as_string_or_number_enums_by_name_url_encoded_paths_and_repeated_query_parameters() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let me = unique("c_x");
    let token = app.signed_in(&me, &[]).await.access_token;
    let account = app.open_account(&token, "USD").await.account_id;
    let deposit = |amount: Json| {
        let path = format!("/v1/accounts/{account}:deposit");
        let body = json!({"requestId": uuid::Uuid::new_v4().to_string(), "amount": amount});
        let banker = banker.clone();
        let app = &app;
        async move { call(app, Method::POST, &path, json_body(body), Some(&banker)).await }
    };
    for amount in [json!("150"), json!(150)] {
        let (status, _, transfer) = deposit(amount.clone()).await;
        assert_eq!(status, 200, "{amount}: {transfer}");
        // int64 out as a string, enums out by name.
        assert_eq!(transfer["amount"], "150");
        assert_eq!(transfer["status"], "TRANSFER_STATUS_SUCCEEDED");
        assert_eq!(transfer["kind"], "TRANSFER_KIND_DEPOSIT");
    }
    let (status, _, body) = deposit(json!(1.5)).await;
    assert_eq!(status, 400, "a fraction is no int64: {body}");

    // `_` percent-encoded in the path is the same user.
    let encoded = me.replace('_', "%5F");
    let (status, _, user) = call(
        &app,
        Method::GET,
        &format!("/v1/users/{encoded}"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!((status.as_u16(), &user["username"]), (200, &json!(me)));

    // A repeated field from repeated query parameters (the audit trail's resource ids).
    let admin = app.signed_in(&unique("ad"), &["admin"]).await.access_token;
    let path = format!("/v1/auditEvents?resourceIds={account}&resourceIds=nothing&pageSize=50");
    let (status, _, events) = call(&app, Method::GET, &path, None, Some(&admin)).await;
    assert_eq!(status, 200, "{events}");
    assert!(events["events"].is_array(), "{events}");
}

/// One request of the error-code table and what it must answer.
struct Probe {
    status: u16,
    code: i64,
    /// The ErrorInfo reason, or "" when the answer carries none.
    reason: &'static str,
    method: Method,
    path: String,
    body: Option<(&'static str, String)>,
    signed_in: bool,
    grpc_timeout: Option<&'static str>,
}

fn probe(status: u16, code: i64, reason: &'static str, method: Method, path: &str) -> Probe {
    Probe {
        status,
        code,
        reason,
        method,
        path: path.to_owned(),
        body: None,
        signed_in: false,
        grpc_timeout: None,
    }
}

impl Probe {
    fn json(mut self, body: &Json) -> Self {
        self.body = Some(("application/json", body.to_string()));
        self
    }
    fn raw(mut self, content_type: &'static str, body: &str) -> Self {
        self.body = Some((content_type, body.to_owned()));
        self
    }
    fn signed_in(mut self) -> Self {
        self.signed_in = true;
        self
    }
    fn grpc_timeout(mut self, value: &'static str) -> Self {
        self.grpc_timeout = Some(value);
        self
    }

    /// Sends the request and checks the status, the JSON error body and the reason.
    async fn check(self, app: &TestApp, token: &str) {
        let mut request =
            Client::new().request(self.method, format!("http://{}{}", app.addr, self.path));
        if self.signed_in {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = self.body {
            request = request.header("content-type", content_type).body(body);
        }
        if let Some(timeout) = self.grpc_timeout {
            request = request.header("grpc-timeout", timeout);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let answer = (status, content_type, response.json::<Json>().await.unwrap());
        let context = format!("HTTP {} ({})", self.status, self.path);
        assert_error(&answer, self.status, self.code, &context);
        if !self.reason.is_empty() {
            // The stable reason programs branch on, in an ErrorInfo.
            let reasons: Vec<&Json> = answer.2["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|detail| &detail["reason"])
                .collect();
            assert!(
                reasons.contains(&&json!(self.reason)),
                "{context}: {}",
                answer.2
            );
        }
    }
}

#[tokio::test]
async fn every_error_code_reaches_json_with_its_http_status_and_body() {
    let app = TestApp::spawn_with(&[
        "--max-message-bytes",
        "2048",
        "--rate-auth-per-minute",
        "100000",
    ])
    .await;
    let me = unique("er");
    app.create_user(&me).await;
    let token = app.login(&me, PASSWORD).await.unwrap().access_token;
    let account = app.open_account(&token, "USD").await.account_id;
    let other = app.open_account(&token, "USD").await.account_id;
    let sign_up = |name: &str| {
        json!({"username": name, "fullName": "E R", "email": format!("{name}@example.com"),
               "password": PASSWORD})
    };
    let transfer = json!({"transferId": uuid::Uuid::new_v4().to_string(), "fromAccountId": account,
                          "toAccountId": other, "amount": "100", "currency": "USD"});
    let deposit = json!({"requestId": uuid::Uuid::new_v4().to_string(), "amount": "1"});
    let deposit_path = format!("/v1/accounts/{account}:deposit");
    let too_long = json!({"fullName": "x".repeat(4096)});
    let probes = [
        probe(400, 3, "INVALID_ARGUMENT", Method::POST, "/v1/users").json(&sign_up("NO")),
        probe(401, 16, "UNAUTHENTICATED", Method::GET, "/v1/roles"),
        probe(403, 7, "PERMISSION_DENIED", Method::POST, &deposit_path)
            .json(&deposit)
            .signed_in(),
        probe(404, 5, "NOT_FOUND", Method::GET, "/v1/users/nobody_here").signed_in(),
        probe(409, 6, "USERNAME_TAKEN", Method::POST, "/v1/users").json(&sign_up(&me)),
        // FAILED_PRECONDITION: the rule refused it (no funds), recorded FAILED.
        probe(400, 9, "INSUFFICIENT_FUNDS", Method::POST, "/v1/transfers")
            .json(&transfer)
            .signed_in(),
        probe(405, 12, "", Method::PUT, "/v1/roles").signed_in(),
        probe(413, 8, "", Method::POST, "/v1/users").json(&too_long),
        probe(415, 3, "", Method::POST, "/v1/users").raw("application/xml", "<a/>"),
        probe(504, 4, "", Method::GET, "/v1/roles")
            .signed_in()
            .grpc_timeout("0n"),
    ];
    for probe in probes {
        probe.check(&app, &token).await;
    }
}
