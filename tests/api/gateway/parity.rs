//! Every RPC answers the same over JSON and gRPC; auth is identical over JSON.

use serde_json::{Value as Json, json};

use super::{
    Answer, answer_of, assert_every_field_present, grpc, http_json, normalise, output_of, pool,
};
use crate::helpers::*;

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

fn fill_id(json: &Json, id: &str) -> Json {
    serde_json::from_str(&json.to_string().replace("{id}", id)).unwrap()
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

/// What the cases refer to: a customer (`me`) with a funded account, a second and a spare
/// one, a transfer and a hold between them; another user; an admin.
struct Fixture {
    me: String,
    other: String,
    tok: String,
    admin_tok: String,
    checking: String,
    savings: String,
    spare: String,
    first_transfer: String,
    hold: String,
    /// An id nothing has.
    missing: &'static str,
}

/// Makes the users, accounts, transfer and hold the cases use, over gRPC.
async fn fixture(app: &TestApp) -> Fixture {
    let me = unique("gw");
    let other = unique("gwo");
    let admin = unique("gwa");
    let customer = app.signed_in(&me, &[]).await;
    app.create_user(&other).await;
    let root = app.signed_in(&admin, &["admin"]).await;
    let (tok, admin_tok) = (customer.access_token.as_str(), root.access_token.as_str());
    // A funded account, a second one, and a transfer between them, made over gRPC.
    let checking = app.open_account(tok, "USD").await.account_id;
    let savings = app.open_account(tok, "USD").await.account_id;
    app.deposit(admin_tok, &checking, 1_000).await;
    let first_transfer = app
        .transfer(tok, &checking, &savings, 10)
        .await
        .unwrap()
        .transfer_id;
    let missing = "0196f3a0-0000-7000-8000-000000000001";
    let spare = app.open_account(tok, "USD").await.account_id;
    let hold = app
        .hold(
            tok,
            &checking,
            &savings,
            20,
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap()
        .transfer_id;
    Fixture {
        me,
        other,
        tok: tok.to_owned(),
        admin_tok: admin_tok.to_owned(),
        checking,
        savings,
        spare,
        first_transfer,
        hold,
        missing,
    }
}

/// The cases of UserService.
fn user_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        me,
        other,
        tok,
        missing,
        ..
    } = f;
    vec![
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
            json!({"verificationId": missing, "code": "abc"}),
        ),
        case(
            "tally.v1.UserService/VerifyEmail",
            "GET",
            format!("/v1/verify_email?verificationId={missing}&code=abc"),
            json!({"verificationId": missing, "code": "abc"}),
        ),
        case(
            "tally.v1.UserService/ResendVerification",
            "POST",
            format!("/v1/users/{me}:resendVerification"),
            json!({"username": me}),
        )
        .token(tok),
    ]
}

/// The cases of SessionService and RoleService.
fn session_and_role_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        me,
        other,
        tok,
        admin_tok,
        missing,
        ..
    } = f;
    vec![
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
            format!("/v1/sessions/{missing}"),
            json!({"sessionId": missing}),
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
    ]
}

/// The cases of AccountService: accounts.
fn account_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        checking,
        savings,
        missing,
        ..
    } = f;
    vec![
        case(
            "tally.v1.AccountService/CreateAccount",
            "POST",
            "/v1/accounts".into(),
            json!({"currency": "USD", "name": "parity"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/CreateAccount",
            "POST",
            "/v1/accounts".into(),
            json!({"currency": "XXX"}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/GetAccount",
            "GET",
            format!("/v1/accounts/{checking}"),
            json!({"accountId": checking}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/GetAccount",
            "GET",
            format!("/v1/accounts/{missing}"),
            json!({"accountId": missing}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/ListAccounts",
            "GET",
            "/v1/accounts?pageSize=1".into(),
            json!({"pageSize": 1}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/ListEntries",
            "GET",
            format!("/v1/accounts/{checking}/entries?pageSize=5"),
            json!({"accountId": checking, "pageSize": 5}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/UpdateAccount",
            "PATCH",
            format!("/v1/accounts/{savings}"),
            json!({"accountId": savings, "name": "renamed"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/UpdateAccount",
            "PATCH",
            format!("/v1/accounts/{savings}"),
            json!({"accountId": savings, "overdraftLimit": "5"}),
        )
        .token(tok),
    ]
}

/// The cases of AccountService: deposits, withdrawals, entries and balances.
fn account_money_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        admin_tok,
        checking,
        spare,
        ..
    } = f;
    vec![
        case(
            "tally.v1.AccountService/CloseAccount",
            "POST",
            format!("/v1/accounts/{spare}:close"),
            json!({"accountId": spare}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/CloseAccount",
            "POST",
            format!("/v1/accounts/{checking}:close"),
            json!({"accountId": checking}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/GetAccountBalance",
            "GET",
            format!("/v1/accounts/{checking}/balance?asOf=2001-09-09T01:46:40Z"),
            json!({"accountId": checking, "asOf": "2001-09-09T01:46:40Z"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.AccountService/GetAccountBalance",
            "GET",
            format!("/v1/accounts/{checking}/balance?asOf=2999-01-01T00:00:00Z"),
            json!({"accountId": checking, "asOf": "2999-01-01T00:00:00Z"}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/Deposit",
            "POST",
            format!("/v1/accounts/{checking}:deposit"),
            json!({"accountId": checking, "requestId": "{id}", "amount": "100", "memo": "parity"}),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.AccountService/Deposit",
            "POST",
            format!("/v1/accounts/{checking}:deposit"),
            json!({"accountId": checking, "requestId": "{id}", "amount": "100"}),
        )
        .token(tok),
        case(
            "tally.v1.AccountService/Withdraw",
            "POST",
            format!("/v1/accounts/{checking}:withdraw"),
            json!({"accountId": checking, "requestId": "{id}", "amount": "50"}),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.AccountService/Withdraw",
            "POST",
            format!("/v1/accounts/{checking}:withdraw"),
            json!({"accountId": checking, "requestId": "{id}", "amount": "0"}),
        )
        .token(admin_tok),
    ]
}

/// The cases of TransferService: single transfers and batches.
fn transfer_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        checking,
        savings,
        hold,
        ..
    } = f;
    vec![
        case(
            "tally.v1.TransferService/CreateTransfer",
            "POST",
            "/v1/transfers".into(),
            json!({
                "transferId": "{id}", "fromAccountId": checking, "toAccountId": savings,
                "amount": "5", "currency": "USD", "memo": "parity",
            }),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/CreateTransfer",
            "POST",
            "/v1/transfers".into(),
            json!({
                "transferId": "{id}", "fromAccountId": checking, "toAccountId": savings,
                "amount": "999999999", "currency": "USD",
            }),
        )
        .token(tok),
        case(
            "tally.v1.TransferService/CreateTransfers",
            "POST",
            "/v1/transfers:batchCreate".into(),
            json!({"transfers": [
                {
                    "transferId": "{id}", "fromAccountId": checking, "toAccountId": savings,
                    "amount": "7", "currency": "USD",
                },
                {
                    "transferId": "not-a-uuid", "fromAccountId": checking,
                    "toAccountId": savings, "amount": "1", "currency": "USD",
                },
            ]}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/CreateTransfers",
            "POST",
            "/v1/transfers:batchCreate".into(),
            json!({"transfers": []}),
        )
        .token(tok),
        // gRPC posts the hold; the same post over JSON answers the same transfer.
        case(
            "tally.v1.TransferService/PostTransfer",
            "POST",
            format!("/v1/transfers/{hold}:post"),
            json!({"transferId": hold, "amount": "3"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/VoidTransfer",
            "POST",
            format!("/v1/transfers/{hold}:void"),
            json!({"transferId": hold}),
        )
        .token(tok),
    ]
}

/// The cases of TransferService: holds, reversals, and AuditService.
fn transfer_settle_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        admin_tok,
        checking,
        first_transfer,
        missing,
        ..
    } = f;
    vec![
        case(
            "tally.v1.TransferService/ReverseTransfer",
            "POST",
            format!("/v1/transfers/{first_transfer}:reverse"),
            json!({"transferId": first_transfer, "reversalId": "{id}", "amount": "1"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/ReverseTransfer",
            "POST",
            format!("/v1/transfers/{first_transfer}:reverse"),
            json!({"transferId": first_transfer, "reversalId": "{id}", "amount": "1000"}),
        )
        .token(tok),
        case(
            "tally.v1.TransferService/GetTransfer",
            "GET",
            format!("/v1/transfers/{first_transfer}"),
            json!({"transferId": first_transfer}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/ListTransfers",
            "GET",
            format!("/v1/accounts/{checking}/transfers?pageSize=3"),
            json!({"accountId": checking, "pageSize": 3}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.TransferService/ListTransfers",
            "GET",
            format!("/v1/accounts/{missing}/transfers"),
            json!({"accountId": missing}),
        )
        .token(tok),
        // The trail grows with every call, so the OK case asks for a time range before any.
        case(
            "tally.v1.AuditService/ListAuditEvents",
            "GET",
            "/v1/auditEvents?endTime=2001-09-09T01:46:40Z&pageSize=5".into(),
            json!({"endTime": "2001-09-09T01:46:40Z", "pageSize": 5}),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.AuditService/ListAuditEvents",
            "GET",
            "/v1/auditEvents".into(),
            json!({}),
        )
        .token(tok),
    ]
}

/// The cases of ExchangeService (its unary methods).
/// The change feed's unary RPCs: balance monitors and webhooks (WatchAccount is a stream:
/// tests/api/feed.rs).
fn feed_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        checking,
        missing,
        ..
    } = f;
    let monitors = format!("/v1/accounts/{checking}/balanceMonitors");
    vec![
        case(
            "tally.v1.EventService/CreateBalanceMonitor",
            "POST",
            monitors.clone(),
            json!({"accountId": checking, "condition": "BALANCE_MONITOR_CONDITION_ABOVE",
                   "threshold": "100"}),
        )
        .token(tok)
        .ok(),
        // No condition: the same INVALID_ARGUMENT both ways.
        case(
            "tally.v1.EventService/CreateBalanceMonitor",
            "POST",
            monitors.clone(),
            json!({"accountId": checking, "threshold": "100"}),
        )
        .token(tok),
        case(
            "tally.v1.EventService/ListBalanceMonitors",
            "GET",
            monitors,
            json!({"accountId": checking}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.EventService/DeleteBalanceMonitor",
            "DELETE",
            format!("/v1/balanceMonitors/{missing}"),
            json!({"monitorId": missing}),
        )
        .token(tok),
        // A loopback URL: refused (SSRF) the same way over both.
        case(
            "tally.v1.WebhookService/CreateWebhook",
            "POST",
            "/v1/webhooks".into(),
            json!({"url": "http://127.0.0.1:9/hook", "accountId": checking}),
        )
        .token(tok),
        case(
            "tally.v1.WebhookService/ListWebhooks",
            "GET",
            "/v1/webhooks".into(),
            json!({}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.WebhookService/DeleteWebhook",
            "DELETE",
            format!("/v1/webhooks/{missing}"),
            json!({"webhookId": missing}),
        )
        .token(tok),
    ]
}

fn exchange_cases(f: &Fixture) -> Vec<Case> {
    let Fixture {
        tok,
        admin_tok,
        checking,
        savings,
        missing,
        ..
    } = f;
    let rate = json!({"baseCurrency": "USD", "quoteCurrency": "EUR", "rate": "0.92"});
    vec![
        case(
            "tally.v1.ExchangeService/SetRate",
            "POST",
            "/v1/rates".into(),
            rate.clone(),
        )
        .token(admin_tok)
        .ok(),
        case(
            "tally.v1.ExchangeService/SetRate",
            "POST",
            "/v1/rates".into(),
            rate,
        )
        .token(tok),
        case(
            "tally.v1.ExchangeService/SetRate",
            "POST",
            "/v1/rates".into(),
            json!({"baseCurrency": "USD", "quoteCurrency": "EUR", "rate": "1e3"}),
        )
        .token(admin_tok),
        case(
            "tally.v1.ExchangeService/ListRates",
            "GET",
            "/v1/rates".into(),
            json!({}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.ExchangeService/CreateQuote",
            "POST",
            "/v1/quotes".into(),
            json!({"fromCurrency": "USD", "toCurrency": "EUR", "fromAmount": "10000"}),
        )
        .token(tok)
        .ok(),
        case(
            "tally.v1.ExchangeService/CreateQuote",
            "POST",
            "/v1/quotes".into(),
            json!({"fromCurrency": "USD", "toCurrency": "JPY", "toAmount": "500"}),
        )
        .token(tok),
        // A quote that does not exist: the same NOT_FOUND both ways.
        case(
            "tally.v1.ExchangeService/Convert",
            "POST",
            "/v1/conversions".into(),
            json!({"conversionId": "{id}", "quoteId": missing, "fromAccountId": checking,
                   "toAccountId": savings}),
        )
        .token(tok),
        case(
            "tally.v1.ExchangeService/ListLiquidityAccounts",
            "GET",
            "/v1/liquidityAccounts".into(),
            json!({}),
        )
        .token(admin_tok)
        .ok(),
    ]
}

#[tokio::test]
async fn every_rpc_answers_the_same_over_json_and_grpc() {
    let app = TestApp::spawn().await;
    let f = fixture(&app).await;
    let cases: Vec<Case> = [
        user_cases(&f),
        session_and_role_cases(&f),
        account_cases(&f),
        account_money_cases(&f),
        transfer_cases(&f),
        transfer_settle_cases(&f),
        exchange_cases(&f),
        feed_cases(&f),
    ]
    .into_iter()
    .flatten()
    .collect();

    // Every RPC of the descriptor set has at least one case (streams are compared message by
    // message in their own tests: tests/api/exchange.rs).
    for service in pool().services().filter(|s| s.package_name() == "tally.v1") {
        for method in service.methods().filter(|m| !m.is_server_streaming()) {
            let rpc = format!("{}/{}", service.full_name(), method.name());
            assert!(
                cases.iter().any(|c| c.rpc == rpc),
                "{rpc} has no parity case"
            );
        }
    }

    for case in &cases {
        check_case(&app, case).await;
    }
}

/// Calls one case over gRPC and over JSON and compares the answers.
async fn check_case(app: &TestApp, case: &Case) {
    let (g, j) = (unique("pg"), unique("pj"));
    // `{id}`: a fresh UUID per transport (idempotency keys).
    let (gid, jid) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let over_grpc = grpc(
        app,
        case.rpc,
        &fill(&fill_id(&case.request, &gid), &g),
        case.token.as_deref(),
    )
    .await;
    let request = fill(&fill_id(&case.request, &jid), &j);
    let (status, body) = http_json(
        app,
        case.http_method,
        &case.path.replace("{u}", &j),
        http_body(case, &request).as_ref(),
        case.token.as_deref(),
    )
    .await;
    let output = output_of(case.rpc);
    if status == 200 {
        assert_every_field_present(&output, &body, case.rpc);
    }
    let over_json = answer_of(status, body.clone(), &output);
    if let Answer::Err { code, .. } = &over_json {
        let expected = tally::error::http_status(tonic::Code::from_i32(*code)).as_u16();
        assert_eq!(status, expected, "{}: HTTP status of {body}", case.rpc);
    }
    let over_grpc = normalise(over_grpc, &[(&g, "{u}"), (&gid, "{id}")]);
    let over_json = normalise(over_json, &[(&j, "{u}"), (&jid, "{id}")]);
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

    // Another user's account is indistinguishable from a missing one, and a customer cannot
    // deposit (403) even into their own account.
    let other_login = app.login(&other, PASSWORD).await.unwrap();
    let theirs = app
        .open_account(&other_login.access_token, "USD")
        .await
        .account_id;
    let mine = app.open_account(tok, "USD").await.account_id;
    let (status, foreign) = http_json(
        &app,
        "GET",
        &format!("/v1/accounts/{theirs}"),
        None,
        Some(tok),
    )
    .await;
    assert_eq!(status, 404, "{foreign}");
    let (_, missing) = http_json(
        &app,
        "GET",
        "/v1/accounts/0196f3a0-0000-7000-8000-00000000abcd",
        None,
        Some(tok),
    )
    .await;
    assert_eq!(foreign, missing);
    let deposit = json!({"requestId": uuid::Uuid::new_v4().to_string(), "amount": "100"});
    let (status, body) = http_json(
        &app,
        "POST",
        &format!("/v1/accounts/{mine}:deposit"),
        Some(&deposit),
        Some(tok),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (403, json!(7)), "{body}");
}
