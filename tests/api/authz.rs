//! The authorization matrix: every RPC, called anonymously and as each role, against the
//! outcome the contract (ARCHITECTURE.md) prescribes. The expectations are written out here,
//! not derived from the server's policy table, so a wrong policy fails this test.

use prost::Message as _;
use tally::proto::tally_v1 as pb;
use tonic::{Code, Request, Status, client::Grpc, transport::Channel};

use crate::helpers::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// `UNAUTHENTICATED`.
    Unauth,
    /// `PERMISSION_DENIED`.
    Denied,
    /// Past the access check: any other answer (OK, INVALID_ARGUMENT, NOT_FOUND, ...).
    Allowed,
}
use Outcome::*;

/// (method, anonymous, customer, banker, admin)
const MATRIX: &[(&str, [Outcome; 4])] = &[
    (
        "tally.v1.AuditService/ListAuditEvents",
        [Unauth, Denied, Denied, Allowed],
    ),
    (
        "tally.v1.UserService/CreateUser",
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.UserService/GetUser",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.UserService/UpdateUser",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.UserService/VerifyEmail",
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.UserService/ResendVerification",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.SessionService/Login",
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.SessionService/RefreshSession",
        [Allowed, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.SessionService/ListSessions",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.SessionService/RevokeSession",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.RoleService/ListRoles",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.RoleService/GrantRole",
        [Unauth, Denied, Denied, Allowed],
    ),
    (
        "tally.v1.RoleService/RevokeRole",
        [Unauth, Denied, Denied, Allowed],
    ),
    (
        "tally.v1.AccountService/CreateAccount",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/GetAccount",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/ListAccounts",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/ListEntries",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/UpdateAccount",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/CloseAccount",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/GetAccountBalance",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/Deposit",
        [Unauth, Denied, Allowed, Allowed],
    ),
    (
        "tally.v1.AccountService/Withdraw",
        [Unauth, Denied, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/CreateTransfer",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/CreateTransfers",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/PostTransfer",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/VoidTransfer",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/ReverseTransfer",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/GetTransfer",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.TransferService/ListTransfers",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.ExchangeService/SetRate",
        [Unauth, Denied, Allowed, Allowed],
    ),
    (
        "tally.v1.ExchangeService/ListRates",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.ExchangeService/WatchRates",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.ExchangeService/CreateQuote",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    // Anyone signed in with `transfers.own` (every user holds `customer`) converts between
    // their own accounts; nobody converts for another.
    (
        "tally.v1.ExchangeService/Convert",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.ExchangeService/ListLiquidityAccounts",
        [Unauth, Denied, Allowed, Allowed],
    ),
    // Signed in; which account is the domain's check (tests/api/feed.rs).
    (
        "tally.v1.EventService/WatchAccount",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    // Which account: the domain's check (tests/api/feed.rs).
    (
        "tally.v1.EventService/CreateBalanceMonitor",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.EventService/ListBalanceMonitors",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.EventService/DeleteBalanceMonitor",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    // Without an account, every event: bankers and admins only.
    (
        "tally.v1.WebhookService/CreateWebhook",
        [Unauth, Denied, Allowed, Allowed],
    ),
    (
        "tally.v1.WebhookService/ListWebhooks",
        [Unauth, Allowed, Allowed, Allowed],
    ),
    (
        "tally.v1.WebhookService/DeleteWebhook",
        [Unauth, Allowed, Allowed, Allowed],
    ),
];

/// Methods that answer a stream: called as such, and judged by the answer's head (the stream
/// itself never ends on its own).
const STREAMING: &[&str] = &[
    "tally.v1.ExchangeService/WatchRates",
    "tally.v1.EventService/WatchAccount",
];

/// Calls `path` with an empty message (valid for every proto3 request type).
async fn call(channel: &Channel, path: &str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let request = match token {
        Some(t) => authed(t, ()),
        None => Request::new(()),
    };
    let streaming = STREAMING.contains(&path);
    let path = http::uri::PathAndQuery::try_from(format!("/{path}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if streaming {
        return grpc
            .server_streaming(request, path, codec)
            .await
            .map(|_| ());
    }
    grpc.unary(request, path, codec).await.map(|_| ())
}

fn outcome(result: &Result<(), Status>) -> Outcome {
    match result {
        Err(s) if s.code() == Code::Unauthenticated => Unauth,
        Err(s) if s.code() == Code::PermissionDenied => Denied,
        _ => Allowed,
    }
}

#[tokio::test]
async fn every_rpc_answers_each_role_as_the_contract_says() {
    // The matrix covers every method the protos define.
    let set = prost_types::FileDescriptorSet::decode(tally::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut defined: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "tally.v1")
        .flat_map(|f| f.service.iter())
        .flat_map(|s| {
            s.method
                .iter()
                .map(move |m| format!("tally.v1.{}/{}", s.name(), m.name()))
        })
        .collect();
    defined.sort();
    let mut covered: Vec<String> = MATRIX.iter().map(|(m, _)| m.to_string()).collect();
    covered.sort();
    assert_eq!(defined, covered);

    let app = TestApp::spawn().await;
    let customer = app.signed_in(&unique("cust"), &[]).await.access_token;
    let banker = app
        .signed_in(&unique("bank"), &["banker"])
        .await
        .access_token;
    let admin = app.signed_in(&unique("adm"), &["admin"]).await.access_token;
    let callers: [(&str, Option<&str>); 4] = [
        ("anonymous", None),
        ("customer", Some(&customer)),
        ("banker", Some(&banker)),
        ("admin", Some(&admin)),
    ];

    let mut mismatches = Vec::new();
    for (method, expected) in MATRIX {
        for ((who, token), want) in callers.iter().zip(expected) {
            let result = call(&app.channel, method, *token).await;
            if outcome(&result) != *want {
                mismatches.push(format!("{method} as {who}: want {want:?}, got {result:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[tokio::test]
async fn unknown_methods_are_denied_and_infrastructure_is_public() {
    let app = TestApp::spawn().await;
    let customer = app.signed_in(&unique("cust"), &[]).await.access_token;
    let unknown = call(
        &app.channel,
        "tally.v1.UserService/DeleteEverything",
        Some(&customer),
    )
    .await;
    assert_eq!(unknown.unwrap_err().code(), Code::PermissionDenied);
    let health = call(&app.channel, "grpc.health.v1.Health/Check", None).await;
    assert!(health.is_ok(), "{health:?}");
}

#[tokio::test]
async fn a_customer_cannot_grant_roles_nor_see_another_user() {
    let app = TestApp::spawn().await;
    let kim = unique("kim");
    let lee = unique("lee");
    let kim_login = app.signed_in(&kim, &[]).await;
    app.create_user(&lee).await;

    let grant = app
        .roles()
        .grant_role(authed(
            &kim_login.access_token,
            pb::GrantRoleRequest {
                username: kim.clone(),
                role: "admin".into(),
            },
        ))
        .await;
    assert_code(grant, Code::PermissionDenied);

    let other = app
        .users()
        .get_user(authed(
            &kim_login.access_token,
            pb::GetUserRequest {
                username: lee.clone(),
            },
        ))
        .await;
    let missing = app
        .users()
        .get_user(authed(
            &kim_login.access_token,
            pb::GetUserRequest {
                username: unique("ghost"),
            },
        ))
        .await;
    // Another user and no user at all look the same.
    let (other, missing) = (
        assert_code(other, Code::NotFound),
        assert_code(missing, Code::NotFound),
    );
    assert_eq!(other.message(), missing.message());

    let update = app
        .users()
        .update_user(authed(
            &kim_login.access_token,
            pb::UpdateUserRequest {
                username: lee.clone(),
                full_name: Some("Hijacked".into()),
                ..Default::default()
            },
        ))
        .await;
    assert_code(update, Code::NotFound);
}

#[tokio::test]
async fn granted_and_revoked_roles_take_effect_on_issued_tokens_within_five_seconds() {
    let app = TestApp::spawn().await;
    let admin = app
        .signed_in(&unique("boss"), &["admin"])
        .await
        .access_token;
    let mia = unique("mia");
    let mia_token = app.signed_in(&mia, &[]).await.access_token;
    // Mia's token is cached as a customer's on this server.
    assert_code(
        app.roles()
            .grant_role(authed(
                &mia_token,
                pb::GrantRoleRequest {
                    username: mia.clone(),
                    role: "banker".into(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );

    let user = app
        .roles()
        .grant_role(authed(
            &admin,
            pb::GrantRoleRequest {
                username: mia.clone(),
                role: "admin".into(),
            },
        ))
        .await
        .expect("admin grants")
        .into_inner();
    assert_eq!(user.roles, vec!["admin", "customer"]);
    let took = eventually(std::time::Duration::from_secs(5), || {
        let channel = app.channel.clone();
        let token = mia_token.clone();
        async move {
            call(&channel, "tally.v1.RoleService/GrantRole", Some(&token))
                .await
                .map_err(|s| s.code())
                != Err(Code::PermissionDenied)
        }
    })
    .await;
    assert!(
        took.is_some(),
        "a granted role did not reach the issued token within 5 s"
    );

    app.roles()
        .revoke_role(authed(
            &admin,
            pb::RevokeRoleRequest {
                username: mia.clone(),
                role: "admin".into(),
            },
        ))
        .await
        .expect("admin revokes");
    let took = eventually(std::time::Duration::from_secs(5), || {
        let channel = app.channel.clone();
        let token = mia_token.clone();
        async move {
            call(&channel, "tally.v1.RoleService/GrantRole", Some(&token))
                .await
                .map_err(|s| s.code())
                == Err(Code::PermissionDenied)
        }
    })
    .await;
    assert!(took.is_some(), "a revoked role still worked after 5 s");
}

#[tokio::test]
async fn the_last_admin_keeps_the_admin_role() {
    let app = TestApp::spawn().await;
    let only = unique("only");
    let admin = app.signed_in(&only, &["admin"]).await.access_token;
    let status = assert_code(
        app.roles()
            .revoke_role(authed(
                &admin,
                pb::RevokeRoleRequest {
                    username: only.clone(),
                    role: "admin".into(),
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status).as_deref(), Some("LAST_ADMIN"));

    let roles = app
        .roles()
        .list_roles(authed(&admin, pb::ListRolesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .roles;
    let names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["customer", "banker", "admin"]);
    assert!(roles[2].permissions.contains(&"roles.manage".to_string()));
}
