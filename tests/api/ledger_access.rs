//! Who may see and move what, and the validation of every ledger field.

use tally::proto::tally_v1 as pb;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

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

    let mut answers: Vec<(String, Status)> = Vec::new();
    for id in &ids {
        let get = app
            .accounts()
            .get_account(authed(
                &snoop,
                pb::GetAccountRequest {
                    account_id: id.clone(),
                },
            ))
            .await;
        answers.push(("GetAccount".into(), get.expect_err("hidden")));
        let entries = app
            .accounts()
            .list_entries(authed(
                &snoop,
                pb::ListEntriesRequest {
                    account_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        answers.push(("ListEntries".into(), entries.expect_err("hidden")));
        let transfers = app
            .transfers()
            .list_transfers(authed(
                &snoop,
                pb::ListTransfersRequest {
                    account_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        answers.push(("ListTransfers".into(), transfers.expect_err("hidden")));
        let out = app.transfer(&snoop, id, &mine, 1).await;
        answers.push(("CreateTransfer".into(), out.expect_err("cannot move")));
    }
    for (method, status) in &answers {
        assert_eq!(status.code(), Code::NotFound, "{method}: {status:?}");
        assert_eq!(status.message(), answers[0].1.message(), "{method}");
    }
    let foreign = app
        .transfers()
        .get_transfer(authed(
            &snoop,
            pb::GetTransferRequest {
                transfer_id: victim_transfer.clone(),
            },
        ))
        .await;
    let random = app
        .transfers()
        .get_transfer(authed(
            &snoop,
            pb::GetTransferRequest {
                transfer_id: Uuid::new_v4().to_string(),
            },
        ))
        .await;
    let (foreign, random) = (
        assert_code(foreign, Code::NotFound),
        assert_code(random, Code::NotFound),
    );
    assert_eq!(foreign.message(), random.message());
    let listed = app
        .accounts()
        .list_accounts(authed(
            &snoop,
            pb::ListAccountsRequest {
                owner: Some("someone_else".into()),
                ..Default::default()
            },
        ))
        .await;
    assert_code(listed, Code::NotFound);

    // A banker reads and deposits anywhere; a customer cannot deposit at all.
    let seen = app
        .accounts()
        .get_account(authed(
            &banker,
            pb::GetAccountRequest {
                account_id: ids[0].clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.balance, 990);
    app.transfers()
        .get_transfer(authed(
            &banker,
            pb::GetTransferRequest {
                transfer_id: victim_transfer.clone(),
            },
        ))
        .await
        .expect("bankers read every transfer");
    app.deposit(&banker, &ids[1], 5).await;
    let denied = app
        .accounts()
        .deposit(authed(
            &snoop,
            pb::DepositRequest {
                account_id: mine.clone(),
                request_id: Uuid::new_v4().to_string(),
                amount: 1_000_000,
                memo: None,
            },
        ))
        .await;
    assert_code(denied, Code::PermissionDenied);
    assert_eq!(app.balance(&snoop, &mine).await, 0);
}

#[tokio::test]
async fn owners_see_their_accounts_and_transfers_and_bankers_open_accounts_for_anyone() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let ann_name = unique("ann");
    let ann = app.signed_in(&ann_name, &[]).await.access_token;
    let bob = app.signed_in(&unique("bob"), &[]).await.access_token;

    let opened = app
        .accounts()
        .create_account(authed(
            &banker,
            pb::CreateAccountRequest {
                currency: "JPY".into(),
                owner: Some(ann_name.clone()),
                name: Some("Savings".into()),
                overdraft_limit: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (opened.owner.as_str(), opened.name.as_str(), opened.balance),
        (ann_name.as_str(), "Savings", 0)
    );
    let for_other = app
        .accounts()
        .create_account(authed(
            &bob,
            pb::CreateAccountRequest {
                currency: "USD".into(),
                owner: Some(ann_name.clone()),
                name: None,
                overdraft_limit: None,
            },
        ))
        .await;
    assert_code(for_other, Code::PermissionDenied);

    let listed = app
        .accounts()
        .list_accounts(authed(&ann, pb::ListAccountsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    assert_eq!(listed.accounts[0].account_id, opened.account_id);
    let by_banker = app
        .accounts()
        .list_accounts(authed(
            &banker,
            pb::ListAccountsRequest {
                owner: Some(ann_name.clone()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_banker.accounts.len(), 1);

    // Bob can send to Ann's account (any existing destination of the same currency) and both
    // sides see the transfer.
    let bob_jpy = app.open_account(&bob, "JPY").await.account_id;
    app.deposit(&banker, &bob_jpy, 500).await;
    let sent = app
        .transfers()
        .create_transfer(authed(
            &bob,
            pb::CreateTransferRequest {
                transfer_id: Uuid::new_v4().to_string(),
                from_account_id: bob_jpy.clone(),
                to_account_id: opened.account_id.clone(),
                amount: 200,
                currency: "JPY".into(),
                memo: Some("gift".into()),
                linked: false,
                pending: false,
                timeout: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.status, pb::TransferStatus::Succeeded as i32);
    for token in [&ann, &bob] {
        let got = app
            .transfers()
            .get_transfer(authed(
                token,
                pb::GetTransferRequest {
                    transfer_id: sent.transfer_id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, sent);
    }
    let entries = app
        .accounts()
        .list_entries(authed(
            &ann,
            pb::ListEntriesRequest {
                account_id: opened.account_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!((entries[0].amount, entries[0].balance_after), (200, 200));
    // Ann cannot move Bob's money back.
    assert_code(
        app.transfers()
            .create_transfer(authed(
                &ann,
                pb::CreateTransferRequest {
                    transfer_id: Uuid::new_v4().to_string(),
                    from_account_id: bob_jpy.clone(),
                    to_account_id: opened.account_id.clone(),
                    amount: 1,
                    currency: "JPY".into(),
                    memo: None,
                    linked: false,
                    pending: false,
                    timeout: None,
                },
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn every_ledger_field_answers_invalid_argument_and_writes_nothing() {
    use tonic_types::StatusExt as _;

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

    fn check<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
        let status = assert_code(result, Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations[0].field, field, "{status:?}");
    }
    let uuid = || Uuid::new_v4().to_string();
    let long = "m".repeat(257);

    let open = |currency: &str, owner: Option<&str>, name: Option<&str>| pb::CreateAccountRequest {
        currency: currency.into(),
        owner: owner.map(Into::into),
        name: name.map(Into::into),
        overdraft_limit: None,
    };
    for (request, field) in [
        (open("", None, None), "currency"),
        (open("XXX", None, None), "currency"),
        (open("usd", None, None), "currency"),
        (open("USD", Some("Not Valid"), None), "owner"),
        (open("USD", None, Some(&"n".repeat(65))), "name"),
        (open("USD", None, Some("tab\there")), "name"),
    ] {
        check(
            app.accounts().create_account(authed(&user, request)).await,
            field,
        );
    }
    check(
        app.accounts()
            .get_account(authed(
                &user,
                pb::GetAccountRequest {
                    account_id: "x".into(),
                },
            ))
            .await,
        "account_id",
    );
    for (request, field) in [
        (
            pb::ListAccountsRequest {
                owner: Some("BAD".into()),
                ..Default::default()
            },
            "owner",
        ),
        (
            pb::ListAccountsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListAccountsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        check(
            app.accounts().list_accounts(authed(&user, request)).await,
            field,
        );
    }
    for (request, field) in [
        (
            pb::ListEntriesRequest {
                account_id: "nope".into(),
                ..Default::default()
            },
            "account_id",
        ),
        (
            pb::ListEntriesRequest {
                account_id: a.clone(),
                page_size: -5,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListEntriesRequest {
                account_id: a.clone(),
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        check(
            app.accounts().list_entries(authed(&user, request)).await,
            field,
        );
    }
    // A token of another list is refused too.
    let mut entries_of_a = Vec::new();
    for _ in 0..3 {
        entries_of_a.push(app.deposit(&banker, &a, 1).await);
    }
    let before = (before.0, before.1 + 3, before.2 + 6);
    let token_of_a = app
        .accounts()
        .list_entries(authed(
            &user,
            pb::ListEntriesRequest {
                account_id: a.clone(),
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    check(
        app.accounts()
            .list_entries(authed(
                &user,
                pb::ListEntriesRequest {
                    account_id: b.clone(),
                    page_token: token_of_a,
                    ..Default::default()
                },
            ))
            .await,
        "page_token",
    );

    let deposit =
        |account_id: &str, request_id: &str, amount: i64, memo: Option<&str>| pb::DepositRequest {
            account_id: account_id.into(),
            request_id: request_id.into(),
            amount,
            memo: memo.map(Into::into),
        };
    for (request, field) in [
        (deposit("bad", &uuid(), 1, None), "account_id"),
        (deposit(&a, "bad", 1, None), "request_id"),
        (deposit(&a, &uuid(), 0, None), "amount"),
        (deposit(&a, &uuid(), -5, None), "amount"),
        (deposit(&a, &uuid(), 1_000_000_000_000_001, None), "amount"),
        (deposit(&a, &uuid(), 1, Some(&long)), "memo"),
    ] {
        check(
            app.accounts()
                .deposit(authed(&banker, request.clone()))
                .await,
            field,
        );
        let withdraw = pb::WithdrawRequest {
            account_id: request.account_id,
            request_id: request.request_id,
            amount: request.amount,
            memo: request.memo,
        };
        check(
            app.accounts().withdraw(authed(&banker, withdraw)).await,
            field,
        );
    }

    let transfer =
        |id: &str, from: &str, to: &str, amount: i64, currency: &str, memo: Option<&str>| {
            pb::CreateTransferRequest {
                transfer_id: id.into(),
                from_account_id: from.into(),
                to_account_id: to.into(),
                amount,
                currency: currency.into(),
                memo: memo.map(Into::into),
                linked: false,
                pending: false,
                timeout: None,
            }
        };
    for (request, field) in [
        (transfer("", &a, &b, 1, "USD", None), "transfer_id"),
        (
            transfer("not-a-uuid", &a, &b, 1, "USD", None),
            "transfer_id",
        ),
        (
            transfer(&uuid(), "x", &b, 1, "USD", None),
            "from_account_id",
        ),
        (transfer(&uuid(), &a, "", 1, "USD", None), "to_account_id"),
        (transfer(&uuid(), &a, &a, 1, "USD", None), "to_account_id"),
        (transfer(&uuid(), &a, &b, 0, "USD", None), "amount"),
        (transfer(&uuid(), &a, &b, -1, "USD", None), "amount"),
        (transfer(&uuid(), &a, &b, 1, "XYZ", None), "currency"),
        (transfer(&uuid(), &a, &b, 1, "", None), "currency"),
        (
            transfer(&uuid(), &a, &b, 1, "USD", Some("bell\u{7}")),
            "memo",
        ),
        (transfer(&uuid(), &a, &b, 1, "USD", Some(&long)), "memo"),
    ] {
        check(
            app.transfers()
                .create_transfer(authed(&user, request))
                .await,
            field,
        );
    }
    check(
        app.transfers()
            .get_transfer(authed(
                &user,
                pb::GetTransferRequest {
                    transfer_id: "1".into(),
                },
            ))
            .await,
        "transfer_id",
    );
    for (request, field) in [
        (
            pb::ListTransfersRequest {
                account_id: "".into(),
                ..Default::default()
            },
            "account_id",
        ),
        (
            pb::ListTransfersRequest {
                account_id: a.clone(),
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListTransfersRequest {
                account_id: a.clone(),
                page_token: "%%%".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        check(
            app.transfers().list_transfers(authed(&user, request)).await,
            field,
        );
    }

    assert_eq!(
        counts().await,
        before,
        "no account, transfer or entry was written"
    );
    assert!(app.verify().await.is_consistent());
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

    app.roles()
        .revoke_role(authed(
            &admin,
            pb::RevokeRoleRequest {
                username: bob.clone(),
                role: "customer".into(),
            },
        ))
        .await
        .expect("admin revokes customer");
    // Bob's issued token learns of it within the roles' refresh interval.
    let refused = eventually(std::time::Duration::from_secs(5), || {
        let app = &app;
        let token = bob_token.clone();
        let to = other.clone();
        let from = mine.clone();
        async move {
            app.transfer(&token, &from, &to, 1)
                .await
                .map_err(|s| s.code())
                == Err(Code::PermissionDenied)
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "a revoked customer still moved money after 5 s"
    );
    let transfers_before = app.count("transfers").await;
    let accounts_before = app.count("accounts").await;

    let open = app
        .accounts()
        .create_account(authed(
            &bob_token,
            pb::CreateAccountRequest {
                currency: "USD".into(),
                owner: None,
                name: None,
                overdraft_limit: None,
            },
        ))
        .await;
    assert_code(open, Code::PermissionDenied);
    let named_self = app
        .accounts()
        .create_account(authed(
            &bob_token,
            pb::CreateAccountRequest {
                currency: "USD".into(),
                owner: Some(bob.clone()),
                name: None,
                overdraft_limit: None,
            },
        ))
        .await;
    assert_code(named_self, Code::PermissionDenied);
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
        app.transfers()
            .create_transfer(authed(&spammer, spam.clone()))
            .await,
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

    let history = |token: String, account: String| {
        let app = &app;
        async move {
            app.transfers()
                .list_transfers(authed(
                    &token,
                    pb::ListTransfersRequest {
                        account_id: account,
                        ..Default::default()
                    },
                ))
                .await
                .expect("list transfers")
                .into_inner()
                .transfers
                .into_iter()
                .map(|t| t.transfer_id)
                .collect::<Vec<_>>()
        }
    };
    let get = |token: String| {
        let app = &app;
        let id = spam.transfer_id.clone();
        async move {
            app.transfers()
                .get_transfer(authed(&token, pb::GetTransferRequest { transfer_id: id }))
                .await
        }
    };

    let victim_sees = history(victim.clone(), target.clone()).await;
    assert!(victim_sees.contains(&paid), "{victim_sees:?}");
    assert!(!victim_sees.contains(&spam.transfer_id), "{victim_sees:?}");
    assert_code(get(victim.clone()).await, Code::NotFound);
    // Nor does a banker see it in the destination's history, only in the source's.
    assert!(
        !history(banker.clone(), target.clone())
            .await
            .contains(&spam.transfer_id)
    );
    assert!(
        history(banker.clone(), empty.clone())
            .await
            .contains(&spam.transfer_id)
    );
    assert_eq!(
        get(banker.clone())
            .await
            .expect("banker reads it")
            .into_inner()
            .status,
        pb::TransferStatus::Failed as i32
    );
    // The requester sees their refused transfer in their own account's history.
    assert!(
        history(spammer.clone(), empty.clone())
            .await
            .contains(&spam.transfer_id)
    );
    assert_eq!(
        get(spammer.clone())
            .await
            .expect("requester reads it")
            .into_inner()
            .memo,
        "visit spam.example"
    );
}
