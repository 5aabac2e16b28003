//! Who may see and move what, and the validation of every ledger field.

use tally::proto::tally_v1 as pb;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

/// `ListAccounts` of `owner` (None: the caller's) as the holder of `token`.
async fn accounts_of(
    app: &TestApp,
    token: &str,
    owner: Option<&str>,
) -> Result<Vec<pb::Account>, Status> {
    app.accounts()
        .list_accounts(authed(
            token,
            pb::ListAccountsRequest {
                owner: owner.map(Into::into),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().accounts)
}

/// The first page of `account`'s transfers as the holder of `token`.
async fn transfers_of(
    app: &TestApp,
    token: &str,
    account: &str,
) -> Result<Vec<pb::Transfer>, Status> {
    app.transfers()
        .list_transfers(authed(
            token,
            pb::ListTransfersRequest {
                account_id: account.into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().transfers)
}

/// The ids of the first page of `account`'s transfers as the holder of `token`.
async fn transfer_ids(app: &TestApp, token: &str, account: &str) -> Vec<String> {
    transfers_of(app, token, account)
        .await
        .expect("list transfers")
        .into_iter()
        .map(|t| t.transfer_id)
        .collect()
}

/// The refusals `snoop` gets for the account `id` by method: reading it, its entries and its
/// transfers, and moving 1 out of it into `mine`. Panics on an answer that is not a refusal.
async fn refusals_for(
    app: &TestApp,
    snoop: &str,
    id: &str,
    mine: &str,
) -> [(&'static str, Status); 4] {
    [
        (
            "GetAccount",
            app.get_account(snoop, id).await.expect_err("hidden"),
        ),
        (
            "ListEntries",
            app.entries(snoop, id).await.expect_err("hidden"),
        ),
        (
            "ListTransfers",
            transfers_of(app, snoop, id).await.expect_err("hidden"),
        ),
        (
            "CreateTransfer",
            app.transfer(snoop, id, mine, 1)
                .await
                .expect_err("cannot move"),
        ),
    ]
}

#[tokio::test]
async fn a_customer_gets_the_identical_not_found_for_a_hundred_accounts_not_theirs() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let victim = app.signed_in(&unique("victim"), &[]).await.access_token;
    let snoop = app.signed_in(&unique("snoop"), &[]).await.access_token;
    let mine = app.open_account(&snoop, "USD").await.account_id;

    let mut ids = Vec::new();
    for _ in 0..50 {
        let account = app.open_account(&victim, "USD").await.account_id;
        ids.push(account);
    }
    app.deposit(&banker, &ids[0], 1_000).await;
    let victim_transfer = app
        .transfer(&victim, &ids[0], &ids[1], 10)
        .await
        .unwrap()
        .transfer_id;
    ids.extend((0..50).map(|_| Uuid::new_v4().to_string()));

    let mut answers: Vec<(&str, Status)> = Vec::new();
    for id in &ids {
        answers.extend(refusals_for(&app, &snoop, id, &mine).await);
    }
    for (method, status) in &answers {
        assert_eq!(status.code(), Code::NotFound, "{method}: {status:?}");
        assert_eq!(status.message(), answers[0].1.message(), "{method}");
    }
    let foreign = app.get_transfer(&snoop, &victim_transfer).await;
    let random = app.get_transfer(&snoop, &Uuid::new_v4().to_string()).await;
    let (foreign, random) = (
        assert_code(foreign, Code::NotFound),
        assert_code(random, Code::NotFound),
    );
    assert_eq!(foreign.message(), random.message());
    assert_code(
        accounts_of(&app, &snoop, Some("someone_else")).await,
        Code::NotFound,
    );

    // A banker reads and deposits anywhere; a customer cannot deposit at all.
    assert_eq!(app.balance(&banker, &ids[0]).await, 990);
    app.get_transfer(&banker, &victim_transfer)
        .await
        .expect("bankers read every transfer");
    app.deposit(&banker, &ids[1], 5).await;
    assert_code(
        app.try_deposit(&snoop, &mine, 1_000_000).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.balance(&snoop, &mine).await, 0);
}

/// A JPY transfer request with a fresh id.
fn yen(from: &str, to: &str, amount: i64) -> pb::CreateTransferRequest {
    pb::CreateTransferRequest {
        currency: "JPY".into(),
        ..transfer_request(from, to, amount)
    }
}

#[tokio::test]
async fn owners_see_their_accounts_and_transfers_and_bankers_open_accounts_for_anyone() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let ann_name = unique("ann");
    let ann = app.signed_in(&ann_name, &[]).await.access_token;
    let bob = app.signed_in(&unique("bob"), &[]).await.access_token;

    let savings = account_request("JPY", Some(&ann_name), Some("Savings"), None);
    let opened = app.create_account(&banker, savings).await.unwrap();
    assert_eq!(
        (opened.owner.as_str(), opened.name.as_str(), opened.balance),
        (ann_name.as_str(), "Savings", 0)
    );
    let for_other = account_request("USD", Some(&ann_name), None, None);
    assert_code(
        app.create_account(&bob, for_other).await,
        Code::PermissionDenied,
    );

    let listed = accounts_of(&app, &ann, None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].account_id, opened.account_id);
    let by_banker = accounts_of(&app, &banker, Some(&ann_name)).await.unwrap();
    assert_eq!(by_banker.len(), 1);

    // Bob can send to Ann's account (any existing destination of the same currency) and both
    // sides see the transfer.
    let bob_jpy = app.open_account(&bob, "JPY").await.account_id;
    app.deposit(&banker, &bob_jpy, 500).await;
    let gift = pb::CreateTransferRequest {
        memo: Some("gift".into()),
        ..yen(&bob_jpy, &opened.account_id, 200)
    };
    let sent = app.create_transfer(&bob, gift).await.unwrap();
    assert_eq!(sent.status, pb::TransferStatus::Succeeded as i32);
    for token in [&ann, &bob] {
        let got = app.get_transfer(token, &sent.transfer_id).await.unwrap();
        assert_eq!(got, sent);
    }
    let entries = app.entries(&ann, &opened.account_id).await.unwrap();
    assert_eq!((entries[0].amount, entries[0].balance_after), (200, 200));
    // Ann cannot move Bob's money back.
    assert_code(
        app.create_transfer(&ann, yen(&bob_jpy, &opened.account_id, 1))
            .await,
        Code::NotFound,
    );
}

/// Asserts `INVALID_ARGUMENT` whose first BadRequest violation names `field`.
fn assert_invalid_field<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    use tonic_types::StatusExt as _;
    let status = assert_code(result, Code::InvalidArgument);
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations[0].field, field, "{status:?}");
}

/// Asserts that each malformed field of `CreateAccount`, `GetAccount` and `ListAccounts` is
/// refused, named.
async fn assert_account_fields_are_validated(app: &TestApp, user: &str) {
    for (request, field) in [
        (account_request("", None, None, None), "currency"),
        (account_request("XXX", None, None, None), "currency"),
        (account_request("usd", None, None, None), "currency"),
        (
            account_request("USD", Some("Not Valid"), None, None),
            "owner",
        ),
        (
            account_request("USD", None, Some(&"n".repeat(65)), None),
            "name",
        ),
        (
            account_request("USD", None, Some("tab\there"), None),
            "name",
        ),
    ] {
        assert_invalid_field(app.create_account(user, request).await, field);
    }
    assert_invalid_field(app.get_account(user, "x").await, "account_id");
    let list = |owner: Option<&str>, page_size: i32, page_token: &str| pb::ListAccountsRequest {
        owner: owner.map(Into::into),
        page_size,
        page_token: page_token.into(),
        valuation_currency: String::new(),
    };
    for (request, field) in [
        (list(Some("BAD"), 0, ""), "owner"),
        (list(None, -1, ""), "page_size"),
        (list(None, 0, "garbage"), "page_token"),
    ] {
        assert_invalid_field(
            app.accounts().list_accounts(authed(user, request)).await,
            field,
        );
    }
}

/// Asserts that a malformed account id, page size or page token of `ListEntries` (of the
/// account `a`) is refused, named.
async fn assert_entry_fields_are_validated(app: &TestApp, user: &str, a: &str) {
    let list = |account_id: &str, page_size: i32, page_token: &str| pb::ListEntriesRequest {
        account_id: account_id.into(),
        page_size,
        page_token: page_token.into(),
    };
    for (request, field) in [
        (list("nope", 0, ""), "account_id"),
        (list(a, -5, ""), "page_size"),
        (list(a, 0, "garbage"), "page_token"),
    ] {
        assert_invalid_field(
            app.accounts().list_entries(authed(user, request)).await,
            field,
        );
    }
}

/// Deposits 1 into `a` three times (3 transfers, 6 entries), then asserts that a page token
/// of `a`'s entries is refused for `b`'s.
async fn assert_a_page_token_is_refused_for_another_account(
    app: &TestApp,
    banker: &str,
    user: &str,
    (a, b): (&str, &str),
) {
    for _ in 0..3 {
        app.deposit(banker, a, 1).await;
    }
    let first_page = pb::ListEntriesRequest {
        account_id: a.into(),
        page_size: 1,
        ..Default::default()
    };
    let token_of_a = app
        .accounts()
        .list_entries(authed(user, first_page))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    let of_b = pb::ListEntriesRequest {
        account_id: b.into(),
        page_token: token_of_a,
        ..Default::default()
    };
    assert_invalid_field(
        app.accounts().list_entries(authed(user, of_b)).await,
        "page_token",
    );
}

/// Asserts that each malformed field of a deposit into `a`, and of the same withdrawal, is
/// refused, named.
async fn assert_deposit_and_withdrawal_fields_are_validated(app: &TestApp, banker: &str, a: &str) {
    let uuid = || Uuid::new_v4().to_string();
    let long = "m".repeat(257);
    let deposit =
        |account_id: &str, request_id: &str, amount: i64, memo: Option<&str>| pb::DepositRequest {
            account_id: account_id.into(),
            request_id: request_id.into(),
            amount,
            memo: memo.map(Into::into),
        };
    for (request, field) in [
        (deposit("bad", &uuid(), 1, None), "account_id"),
        (deposit(a, "bad", 1, None), "request_id"),
        (deposit(a, &uuid(), 0, None), "amount"),
        (deposit(a, &uuid(), -5, None), "amount"),
        (deposit(a, &uuid(), 1_000_000_000_000_001, None), "amount"),
        (deposit(a, &uuid(), 1, Some(&long)), "memo"),
    ] {
        assert_invalid_field(
            app.accounts()
                .deposit(authed(banker, request.clone()))
                .await,
            field,
        );
        let withdraw = pb::WithdrawRequest {
            account_id: request.account_id,
            request_id: request.request_id,
            amount: request.amount,
            memo: request.memo,
        };
        assert_invalid_field(
            app.accounts().withdraw(authed(banker, withdraw)).await,
            field,
        );
    }
}

/// Asserts that each malformed field of a transfer from `a` to `b` is refused, named.
async fn assert_transfer_fields_are_validated(app: &TestApp, user: &str, (a, b): (&str, &str)) {
    let uuid = || Uuid::new_v4().to_string();
    let long = "m".repeat(257);
    let transfer =
        |id: &str, from: &str, to: &str, amount: i64, currency: &str, memo: Option<&str>| {
            pb::CreateTransferRequest {
                transfer_id: id.into(),
                currency: currency.into(),
                memo: memo.map(Into::into),
                ..transfer_request(from, to, amount)
            }
        };
    for (request, field) in [
        (transfer("", a, b, 1, "USD", None), "transfer_id"),
        (transfer("not-a-uuid", a, b, 1, "USD", None), "transfer_id"),
        (transfer(&uuid(), "x", b, 1, "USD", None), "from_account_id"),
        (transfer(&uuid(), a, "", 1, "USD", None), "to_account_id"),
        (transfer(&uuid(), a, a, 1, "USD", None), "to_account_id"),
        (transfer(&uuid(), a, b, 0, "USD", None), "amount"),
        (transfer(&uuid(), a, b, -1, "USD", None), "amount"),
        (transfer(&uuid(), a, b, 1, "XYZ", None), "currency"),
        (transfer(&uuid(), a, b, 1, "", None), "currency"),
        (transfer(&uuid(), a, b, 1, "USD", Some("bell\u{7}")), "memo"),
        (transfer(&uuid(), a, b, 1, "USD", Some(&long)), "memo"),
    ] {
        assert_invalid_field(app.create_transfer(user, request).await, field);
    }
    assert_invalid_field(app.get_transfer(user, "1").await, "transfer_id");
    let list = |account_id: &str, page_size: i32, page_token: &str| pb::ListTransfersRequest {
        account_id: account_id.into(),
        page_size,
        page_token: page_token.into(),
    };
    for (request, field) in [
        (list("", 0, ""), "account_id"),
        (list(a, -1, ""), "page_size"),
        (list(a, 0, "%%%"), "page_token"),
    ] {
        assert_invalid_field(
            app.transfers().list_transfers(authed(user, request)).await,
            field,
        );
    }
}

#[tokio::test]
async fn every_ledger_field_answers_invalid_argument_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let (banker, user, [a, b]) = app.customer_with_accounts("user", [100, 0]).await;
    let counts = || async {
        (
            app.count("accounts").await,
            app.count("transfers").await,
            app.count("entries").await,
        )
    };
    let before = counts().await;

    assert_account_fields_are_validated(&app, &user).await;
    assert_entry_fields_are_validated(&app, &user, &a).await;
    // A token of another list is refused too.
    assert_a_page_token_is_refused_for_another_account(&app, &banker, &user, (&a, &b)).await;
    let before = (before.0, before.1 + 3, before.2 + 6);
    assert_deposit_and_withdrawal_fields_are_validated(&app, &banker, &a).await;
    assert_transfer_fields_are_validated(&app, &user, (&a, &b)).await;

    assert_eq!(
        counts().await,
        before,
        "no account, transfer or entry was written"
    );
    assert!(app.verify().await.is_consistent());
}

/// Revokes `username`'s customer role as `admin`, and asserts that within 5 s their `token`,
/// issued before, may no longer move money from `from` to `to`.
async fn revoke_the_customer_role(
    app: &TestApp,
    admin: &str,
    (username, token): (&str, &str),
    (from, to): (&str, &str),
) {
    app.roles()
        .revoke_role(authed(
            admin,
            pb::RevokeRoleRequest {
                username: username.into(),
                role: "customer".into(),
            },
        ))
        .await
        .expect("admin revokes customer");
    // The issued token learns of it within the roles' refresh interval.
    let refused = eventually(std::time::Duration::from_secs(5), || async {
        app.transfer(token, from, to, 1).await.map_err(|s| s.code()) == Err(Code::PermissionDenied)
    })
    .await;
    assert!(
        refused.is_some(),
        "a revoked customer still moved money after 5 s"
    );
}

#[tokio::test]
async fn without_the_customer_role_a_user_can_neither_open_accounts_nor_move_money() {
    let app = TestApp::spawn().await;
    let admin = app
        .signed_in(&unique("boss"), &["admin"])
        .await
        .access_token;
    let banker = app.banker().await;
    let bob = unique("bob");
    let bob_token = app.signed_in(&bob, &[]).await.access_token;
    let mine = app.open_account(&bob_token, "USD").await.account_id;
    let other = app
        .open_account(
            &app.signed_in(&unique("carol"), &[]).await.access_token,
            "USD",
        )
        .await
        .account_id;
    app.deposit(&banker, &mine, 1_000).await;
    app.transfer(&bob_token, &mine, &other, 10)
        .await
        .expect("a customer moves their own money");

    revoke_the_customer_role(&app, &admin, (&bob, &bob_token), (&mine, &other)).await;
    let transfers_before = app.count("transfers").await;
    let accounts_before = app.count("accounts").await;

    for request in [
        account_request("USD", None, None, None),
        account_request("USD", Some(&bob), None, None),
    ] {
        assert_code(
            app.create_account(&bob_token, request).await,
            Code::PermissionDenied,
        );
    }
    assert_code(
        app.transfer(&bob_token, &mine, &other, 10).await,
        Code::PermissionDenied,
    );
    let batch = app
        .transfers()
        .create_transfers(authed(
            &bob_token,
            pb::CreateTransfersRequest {
                transfers: vec![transfer_request(&mine, &other, 10)],
                atomic: false,
            },
        ))
        .await;
    assert_code(batch, Code::PermissionDenied);

    // Nothing was written, and Bob still reads his own account (reading needs no role).
    assert_eq!(app.count("transfers").await, transfers_before);
    assert_eq!(app.count("accounts").await, accounts_before);
    assert_eq!(app.balance(&bob_token, &mine).await, 990);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn a_failed_transfer_is_in_its_source_history_only_never_the_destination_s() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let spammer = app.signed_in(&unique("spammer"), &[]).await.access_token;
    let victim = app.signed_in(&unique("victim"), &[]).await.access_token;
    let empty = app.open_account(&spammer, "USD").await.account_id;
    let target = app.open_account(&victim, "USD").await.account_id;
    app.deposit(&banker, &target, 500).await;

    let spam = pb::CreateTransferRequest {
        memo: Some("visit spam.example".into()),
        ..transfer_request(&empty, &target, 1)
    };
    let refused = assert_code(
        app.create_transfer(&spammer, spam.clone()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&refused).as_deref(), Some("INSUFFICIENT_FUNDS"));
    // A transfer into the victim's account that succeeded is in their history.
    app.deposit(&banker, &empty, 5).await;
    let paid = app
        .transfer(&spammer, &empty, &target, 5)
        .await
        .expect("funded transfer")
        .transfer_id;
    let spam = spam.transfer_id;

    let victim_sees = transfer_ids(&app, &victim, &target).await;
    assert!(victim_sees.contains(&paid), "{victim_sees:?}");
    assert!(!victim_sees.contains(&spam), "{victim_sees:?}");
    assert_code(app.get_transfer(&victim, &spam).await, Code::NotFound);
    // Nor does a banker see it in the destination's history, only in the source's.
    assert!(!transfer_ids(&app, &banker, &target).await.contains(&spam));
    assert!(transfer_ids(&app, &banker, &empty).await.contains(&spam));
    assert_eq!(
        app.get_transfer(&banker, &spam)
            .await
            .expect("banker reads it")
            .status,
        pb::TransferStatus::Failed as i32
    );
    // The requester sees their refused transfer in their own account's history.
    assert!(transfer_ids(&app, &spammer, &empty).await.contains(&spam));
    assert_eq!(
        app.get_transfer(&spammer, &spam)
            .await
            .expect("requester reads it")
            .memo,
        "visit spam.example"
    );
}
