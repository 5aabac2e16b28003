//! Holds (pending transfers: post, void, expiry), overdraft limits, closed accounts, reversals
//! and point-in-time balances, against the real server and database, with the invariants
//! (pending sums included) checked by `tally verify` afterwards.

use std::time::Duration;

use tally::proto::tally_v1 as pb;
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::helpers::*;

const MINUTES: Duration = Duration::from_secs(600);

type Transfers = pb::transfer_service_client::TransferServiceClient<Channel>;
type Accounts = pb::account_service_client::AccountServiceClient<Channel>;

async fn post(
    client: &mut Transfers,
    token: &str,
    id: &str,
    amount: Option<i64>,
) -> Result<pb::Transfer, Status> {
    client
        .post_transfer(authed(
            token,
            pb::PostTransferRequest {
                transfer_id: id.into(),
                amount,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn void(client: &mut Transfers, token: &str, id: &str) -> Result<pb::Transfer, Status> {
    client
        .void_transfer(authed(
            token,
            pb::VoidTransferRequest {
                transfer_id: id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn reverse(
    client: &mut Transfers,
    token: &str,
    original: &str,
    reversal_id: &str,
    amount: Option<i64>,
) -> Result<pb::Transfer, Status> {
    client
        .reverse_transfer(authed(
            token,
            pb::ReverseTransferRequest {
                transfer_id: original.into(),
                reversal_id: reversal_id.into(),
                amount,
                memo: None,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Asserts a `FAILED_PRECONDITION` with ErrorInfo `reason`.
fn refused<T: std::fmt::Debug>(result: Result<T, Status>, why: &str) {
    let status = assert_code(result, Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some(why), "{status:?}");
}

fn status(t: &pb::Transfer) -> pb::TransferStatus {
    t.status()
}

/// (balance, pending debits, pending credits, available balance)
fn position(a: &pb::Account) -> (i64, i64, i64, i64) {
    (
        a.balance,
        a.pending_debits,
        a.pending_credits,
        a.available_balance,
    )
}

/// Asserts the (balance, pending debits, pending credits, available balance) of `account`.
async fn assert_position(
    app: &TestApp,
    token: &str,
    account: &str,
    expected: (i64, i64, i64, i64),
) {
    let actual = position(&app.account(token, account).await);
    assert_eq!(actual, expected, "position of account {account}");
}

/// Asserts that the ledger invariants hold, pending sums included.
async fn assert_consistent(app: &TestApp) {
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
}

/// Asserts that a post of nothing, a hold without a timeout or with one over a week, and a
/// timeout on a plain transfer are each `INVALID_ARGUMENT`.
async fn assert_malformed_settlements_and_holds_are_invalid(
    app: &TestApp,
    owner: &str,
    hold_id: &str,
    source: &str,
    sink: &str,
) {
    let mut transfers = app.transfers();
    let status = assert_code(
        post(&mut transfers, owner, hold_id, Some(0)).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("amount"), "{status:?}");
    let mut no_timeout = hold_request(source, sink, 5, MINUTES);
    no_timeout.timeout = None;
    let too_long = hold_request(source, sink, 5, Duration::from_secs(8 * 24 * 3600));
    let mut timeout_without_hold = transfer_request(source, sink, 5);
    timeout_without_hold.timeout = Some(MINUTES.try_into().unwrap());
    for request in [no_timeout, too_long, timeout_without_hold] {
        assert_code(
            app.create_transfer(owner, request).await,
            Code::InvalidArgument,
        );
    }
}

#[tokio::test]
async fn a_hold_reserves_then_a_partial_post_moves_part_and_releases_the_rest() {
    let app = TestApp::spawn().await;
    let (_, owner, [source, sink]) = app.customer_with_accounts("holder", [1_000, 0]).await;
    let mut transfers = app.transfers();

    let hold = app
        .hold(&owner, &source, &sink, 300, MINUTES)
        .await
        .unwrap();
    assert_eq!(status(&hold), pb::TransferStatus::Pending);
    assert_eq!(hold.timeout, Some(MINUTES.try_into().unwrap()));
    let expires = hold.expires_at.expect("an accepted hold expires");
    let created = hold.created_at.unwrap();
    assert_eq!(expires.seconds - created.seconds, 600);
    assert_position(&app, &owner, &source, (1_000, 300, 0, 700)).await;
    assert_position(&app, &owner, &sink, (0, 0, 300, 0)).await;
    assert_consistent(&app).await;

    // Insufficient funds is decided on the available balance.
    refused(
        app.transfer(&owner, &source, &sink, 701).await,
        "INSUFFICIENT_FUNDS",
    );
    refused(
        app.hold(&owner, &source, &sink, 701, MINUTES).await,
        "INSUFFICIENT_FUNDS",
    );

    let posted = post(&mut transfers, &owner, &hold.transfer_id, Some(120))
        .await
        .unwrap();
    assert_eq!(status(&posted), pb::TransferStatus::Posted);
    assert_eq!((posted.amount, posted.posted_amount), (300, Some(120)));
    assert_position(&app, &owner, &source, (880, 0, 0, 880)).await;
    assert_position(&app, &owner, &sink, (120, 0, 0, 120)).await;

    // The same post again answers the first result; anything else is refused.
    let again = post(&mut transfers, &owner, &hold.transfer_id, Some(120))
        .await
        .unwrap();
    assert_eq!(again, posted);
    for other in [
        post(&mut transfers, &owner, &hold.transfer_id, Some(100)).await,
        post(&mut transfers, &owner, &hold.transfer_id, None).await,
        void(&mut transfers, &owner, &hold.transfer_id).await,
    ] {
        refused(other, "PENDING_TRANSFER_ALREADY_POSTED");
    }

    // A post of more than the hold, and a settlement of a plain transfer, are refused.
    let small = app.hold(&owner, &source, &sink, 50, MINUTES).await.unwrap();
    refused(
        post(&mut transfers, &owner, &small.transfer_id, Some(51)).await,
        "POST_EXCEEDS_PENDING",
    );
    let whole = post(&mut transfers, &owner, &small.transfer_id, None)
        .await
        .unwrap();
    assert_eq!(whole.posted_amount, Some(50));
    let plain = app.transfer(&owner, &source, &sink, 1).await.unwrap();
    refused(
        void(&mut transfers, &owner, &plain.transfer_id).await,
        "TRANSFER_NOT_PENDING",
    );

    // Malformed requests write nothing.
    assert_malformed_settlements_and_holds_are_invalid(
        &app,
        &owner,
        &small.transfer_id,
        &source,
        &sink,
    )
    .await;
    assert_consistent(&app).await;
}

#[tokio::test]
async fn a_void_releases_the_hold_and_only_who_may_move_the_money_may_settle_it() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let payer = app.signed_in(&unique("payer"), &[]).await.access_token;
    let payee = app.signed_in(&unique("payee"), &[]).await.access_token;
    let stranger = app.signed_in(&unique("stranger"), &[]).await.access_token;
    let source = app.open_account(&payer, "USD").await.account_id;
    let sink = app.open_account(&payee, "USD").await.account_id;
    app.deposit(&banker, &source, 1_000).await;
    let mut transfers = app.transfers();

    let hold = app
        .hold(&payer, &source, &sink, 500, MINUTES)
        .await
        .unwrap();
    // The payee sees the hold coming, but may not settle it; a stranger does not see it.
    assert_eq!(
        app.get_transfer(&payee, &hold.transfer_id).await.unwrap(),
        hold
    );
    assert_code(
        void(&mut transfers, &payee, &hold.transfer_id).await,
        Code::PermissionDenied,
    );
    assert_code(
        post(&mut transfers, &stranger, &hold.transfer_id, None).await,
        Code::NotFound,
    );

    let voided = void(&mut transfers, &payer, &hold.transfer_id)
        .await
        .unwrap();
    assert_eq!(status(&voided), pb::TransferStatus::Voided);
    assert_eq!(
        position(&app.account(&payer, &source).await),
        (1_000, 0, 0, 1_000)
    );
    assert_eq!(position(&app.account(&payee, &sink).await), (0, 0, 0, 0));
    assert_eq!(
        void(&mut transfers, &payer, &hold.transfer_id)
            .await
            .unwrap(),
        voided,
        "voiding twice answers the first result"
    );
    refused(
        post(&mut transfers, &payer, &hold.transfer_id, None).await,
        "PENDING_TRANSFER_ALREADY_VOIDED",
    );
    // A voided hold moved nothing into the payee's account: it left their history.
    assert_code(
        app.get_transfer(&payee, &hold.transfer_id).await,
        Code::NotFound,
    );

    // A banker settles anyone's holds.
    let second = app
        .hold(&payer, &source, &sink, 200, MINUTES)
        .await
        .unwrap();
    let posted = post(&mut transfers, &banker, &second.transfer_id, None)
        .await
        .unwrap();
    assert_eq!(posted.posted_amount, Some(200));
    assert_eq!(app.balance(&payee, &sink).await, 200);
    assert_consistent(&app).await;
}

#[tokio::test]
async fn an_expired_hold_no_longer_counts_even_before_any_sweep() {
    // The sweeper runs once at start, then not for an hour: expiry must not depend on it.
    let app = TestApp::spawn_with(&["--hold-sweep-interval-ms", "3600000"]).await;
    let (_, owner, [source, sink]) = app.customer_with_accounts("expiry", [1_000, 0]).await;
    let mut transfers = app.transfers();

    let hold = app
        .hold(&owner, &source, &sink, 900, Duration::from_millis(300))
        .await
        .unwrap();
    refused(
        app.transfer(&owner, &source, &sink, 101).await,
        "INSUFFICIENT_FUNDS",
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    refused(
        post(&mut transfers, &owner, &hold.transfer_id, None).await,
        "PENDING_TRANSFER_EXPIRED",
    );
    refused(
        void(&mut transfers, &owner, &hold.transfer_id).await,
        "PENDING_TRANSFER_EXPIRED",
    );
    let expired = app.get_transfer(&owner, &hold.transfer_id).await.unwrap();
    assert_eq!(status(&expired), pb::TransferStatus::Expired);
    // The funds are available again.
    app.transfer(&owner, &source, &sink, 1_000).await.unwrap();
    assert_eq!(position(&app.account(&owner, &source).await), (0, 0, 0, 0));
    assert_consistent(&app).await;
}

#[tokio::test]
async fn the_sweeper_expires_holds_on_accounts_nobody_touches() {
    let app = TestApp::spawn_with(&["--hold-sweep-interval-ms", "50"]).await;
    let (_, owner, [source, sink]) = app.customer_with_accounts("sweep", [100, 0]).await;
    let hold = app
        .hold(&owner, &source, &sink, 60, Duration::from_millis(100))
        .await
        .unwrap();
    let mut transfers = app.transfers();
    let swept = eventually(Duration::from_secs(10), || {
        let (app, owner, id) = (&app, &owner, &hold.transfer_id);
        async move {
            app.get_transfer(owner, id)
                .await
                .is_ok_and(|t| status(&t) == pb::TransferStatus::Expired)
        }
    })
    .await;
    assert!(swept.is_some(), "the hold was never marked expired");
    assert_eq!(
        position(&app.account(&owner, &source).await),
        (100, 0, 0, 100)
    );
    assert_eq!(position(&app.account(&owner, &sink).await), (0, 0, 0, 0));
    refused(
        post(&mut transfers, &owner, &hold.transfer_id, None).await,
        "PENDING_TRANSFER_EXPIRED",
    );
    assert_consistent(&app).await;
}

/// Places `n` holds of `amount` from `source` to `sink` at once; asserts that each is PENDING
/// or refused for funds, and returns the ids of the held ones and of the refused ones.
async fn hold_concurrently(
    app: &TestApp,
    owner: &str,
    (source, sink): (&str, &str),
    n: usize,
    amount: i64,
) -> (Vec<String>, Vec<String>) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut client, owner) = (app.transfers(), owner.to_owned());
            let request = hold_request(source, sink, amount, MINUTES);
            tokio::spawn(async move {
                let id = request.transfer_id.clone();
                (id, client.create_transfer(authed(&owner, request)).await)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut failed = Vec::new();
    for task in tasks {
        let (id, result) = task.await.unwrap();
        match result {
            Ok(t) => {
                assert_eq!(status(t.get_ref()), pb::TransferStatus::Pending);
                held.push(id);
            }
            Err(s) => {
                assert_eq!(reason(&s).as_deref(), Some("INSUFFICIENT_FUNDS"), "{s:?}");
                failed.push(id);
            }
        }
    }
    (held, failed)
}

/// Settles the `held` holds and the `failed` ids at once, in that order: even positions posted
/// in part (10), odd ones voided. Asserts that each hold settles so and that each failed one
/// answers it is not a hold; returns the amount posted.
async fn settle_concurrently(
    app: &TestApp,
    owner: &str,
    held: &[String],
    failed: &[String],
) -> i64 {
    let tasks: Vec<_> = held
        .iter()
        .chain(failed)
        .enumerate()
        .map(|(i, id)| {
            let (mut client, owner, id) = (app.transfers(), owner.to_owned(), id.clone());
            tokio::spawn(async move {
                if i % 2 == 0 {
                    post(&mut client, &owner, &id, Some(10)).await
                } else {
                    void(&mut client, &owner, &id).await
                }
            })
        })
        .collect();
    let mut posted = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        if i < held.len() {
            let t = result.unwrap();
            if i % 2 == 0 {
                assert_eq!(t.posted_amount, Some(10));
                posted += 10;
            } else {
                assert_eq!(status(&t), pb::TransferStatus::Voided);
            }
        } else {
            refused(result, "TRANSFER_NOT_PENDING");
        }
    }
    posted
}

#[tokio::test]
async fn of_fifty_concurrent_holds_exactly_those_that_fit_succeed_and_settle_concurrently() {
    const HOLDS: usize = 50;
    const AMOUNT: i64 = 30;
    const FUNDING: i64 = 1_000; // room for 33 holds of 30
    let app = TestApp::spawn().await;
    let (banker, owner, [source, sink]) = app.customer_with_accounts("crowd", [0, 0]).await;
    app.deposit(&banker, &source, FUNDING).await;

    let (held, failed) = hold_concurrently(&app, &owner, (&source, &sink), HOLDS, AMOUNT).await;
    let fit = (FUNDING / AMOUNT) as usize;
    assert_eq!(held.len(), fit, "exactly the holds that fit succeed");
    let reserved = fit as i64 * AMOUNT;
    assert_position(
        &app,
        &owner,
        &source,
        (FUNDING, reserved, 0, FUNDING - reserved),
    )
    .await;
    assert_consistent(&app).await;

    // 50 concurrent settlements: even holds posted in part (10), odd ones voided, and the
    // failed ones answer that they are not holds.
    let posted = settle_concurrently(&app, &owner, &held, &failed).await;
    let left = FUNDING - posted;
    assert_position(&app, &owner, &source, (left, 0, 0, left)).await;
    assert_position(&app, &owner, &sink, (posted, 0, 0, posted)).await;
    assert_consistent(&app).await;
}

/// `UpdateAccount` of `account_id`'s name or overdraft limit as the holder of `token`.
async fn update_account(
    app: &TestApp,
    token: &str,
    account_id: &str,
    name: Option<&str>,
    overdraft_limit: Option<i64>,
) -> Result<pb::Account, Status> {
    app.accounts()
        .update_account(authed(
            token,
            pb::UpdateAccountRequest {
                account_id: account_id.into(),
                name: name.map(Into::into),
                overdraft_limit,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Sends `n` transfers of `amount` from `from` to `to` at once; asserts that each refusal is
/// for funds and returns how many succeeded.
async fn spend_concurrently(
    app: &TestApp,
    token: &str,
    (from, to): (&str, &str),
    n: usize,
    amount: i64,
) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut client, token) = (app.transfers(), token.to_owned());
            let request = transfer_request(from, to, amount);
            tokio::spawn(async move { client.create_transfer(authed(&token, request)).await })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(s) => assert_eq!(reason(&s).as_deref(), Some("INSUFFICIENT_FUNDS"), "{s:?}"),
        }
    }
    succeeded
}

#[tokio::test]
async fn an_overdraft_limit_is_honoured_under_64_concurrent_spenders() {
    const SPENDERS: usize = 64;
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let customer_name = unique("overdraft");
    let customer = app.signed_in(&customer_name, &[]).await.access_token;

    // A customer may not give themselves credit.
    let status = assert_code(
        app.create_account(&customer, account_request("USD", None, None, Some(500)))
            .await,
        Code::PermissionDenied,
    );
    assert!(status.message().contains("accounts.manage"), "{status:?}");
    let credit_line = account_request("USD", Some(&customer_name), Some("credit line"), Some(500));
    let account = app.create_account(&banker, credit_line).await.unwrap();
    assert_eq!(account.overdraft_limit, 500);
    let account = account.account_id;
    let sink = app.open_account(&customer, "USD").await.account_id;
    app.deposit(&banker, &account, 100).await;

    let succeeded = spend_concurrently(&app, &customer, (&account, &sink), SPENDERS, 10).await;
    assert_eq!(
        succeeded, 60,
        "100 of money and 500 of credit is 60 spends of 10"
    );
    assert_eq!(app.balance(&customer, &account).await, -500);
    assert_consistent(&app).await;

    let limit = |token, limit| update_account(&app, token, &account, None, Some(limit));
    assert_code(limit(&customer, 1_000).await, Code::PermissionDenied);
    refused(limit(&banker, 499).await, "INSUFFICIENT_FUNDS");
    assert_eq!(limit(&banker, 600).await.unwrap().overdraft_limit, 600);
    app.transfer(&customer, &account, &sink, 100).await.unwrap();
    refused(
        app.transfer(&customer, &account, &sink, 1).await,
        "INSUFFICIENT_FUNDS",
    );
    // The owner may rename it.
    let renamed = update_account(&app, &customer, &account, Some("renamed"), None)
        .await
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.overdraft_limit),
        ("renamed", 600)
    );
    assert_consistent(&app).await;
}

async fn close(accounts: &mut Accounts, token: &str, id: &str) -> Result<pb::Account, Status> {
    accounts
        .close_account(authed(
            token,
            pb::CloseAccountRequest {
                account_id: id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_closed_account_refuses_transfers_both_ways_but_stays_readable() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let owner = app.signed_in(&unique("closer"), &[]).await.access_token;
    let stranger = app.signed_in(&unique("closer_x"), &[]).await.access_token;
    let closing = app.open_account(&owner, "USD").await.account_id;
    let other = app.open_account(&owner, "USD").await.account_id;
    app.deposit(&banker, &closing, 100).await;
    let mut accounts = app.accounts();
    let mut transfers = app.transfers();

    refused(
        close(&mut accounts, &owner, &closing).await,
        "ACCOUNT_NOT_EMPTY",
    );
    assert_code(
        close(&mut accounts, &stranger, &closing).await,
        Code::NotFound,
    );
    let hold = app
        .hold(&owner, &closing, &other, 60, MINUTES)
        .await
        .unwrap();
    app.transfer(&owner, &closing, &other, 40).await.unwrap();
    // All is spent or held, but the hold is pending: still not empty.
    refused(
        close(&mut accounts, &owner, &closing).await,
        "ACCOUNT_NOT_EMPTY",
    );
    post(&mut transfers, &owner, &hold.transfer_id, None)
        .await
        .unwrap();

    let closed = close(&mut accounts, &owner, &closing).await.unwrap();
    assert!(closed.closed_at.is_some());
    assert_eq!(
        close(&mut accounts, &owner, &closing).await.unwrap(),
        closed
    );
    for moved in [
        app.transfer(&owner, &other, &closing, 1).await,
        app.transfer(&owner, &closing, &other, 1).await,
        app.hold(&owner, &other, &closing, 1, MINUTES).await,
        app.try_deposit(&banker, &closing, 5).await,
    ] {
        refused(moved, "ACCOUNT_CLOSED");
    }
    refused(
        update_account(&app, &banker, &closing, None, Some(10)).await,
        "ACCOUNT_CLOSED",
    );
    // Still readable, with its history.
    assert_eq!(
        app.account(&owner, &closing).await.closed_at,
        closed.closed_at
    );
    let entries = app.entries(&owner, &closing).await.unwrap();
    assert_eq!(
        entries.len(),
        3,
        "the deposit, the transfer out, the posted hold"
    );
    assert_consistent(&app).await;
}

/// A payer with 1,000 in `from`, and a payee with two empty accounts, `to` and `spent`.
struct Payment {
    banker: String,
    payer: String,
    payee: String,
    from: String,
    to: String,
    spent: String,
}

/// The parties of [`Payment`], signed in, with `from` funded.
async fn payment(app: &TestApp) -> Payment {
    let banker = app.banker().await;
    let payer = app.signed_in(&unique("rpayer"), &[]).await.access_token;
    let payee = app.signed_in(&unique("rpayee"), &[]).await.access_token;
    let from = app.open_account(&payer, "USD").await.account_id;
    let to = app.open_account(&payee, "USD").await.account_id;
    let spent = app.open_account(&payee, "USD").await.account_id;
    app.deposit(&banker, &from, 1_000).await;
    Payment {
        banker,
        payer,
        payee,
        from,
        to,
        spent,
    }
}

/// Reverses `amount` of `original` (None: all of it) under a fresh reversal id.
async fn reverse_anew(
    client: &mut Transfers,
    token: &str,
    original: &str,
    amount: Option<i64>,
) -> Result<pb::Transfer, Status> {
    reverse(client, token, original, &Uuid::new_v4().to_string(), amount).await
}

/// Sends `attempts` reversals of `amount` of `original` at once; asserts that each refusal is
/// for exceeding the original and returns the reversals that were made.
async fn reverse_concurrently(
    app: &TestApp,
    token: &str,
    original: &str,
    attempts: usize,
    amount: i64,
) -> Vec<pb::Transfer> {
    let tasks: Vec<_> = (0..attempts)
        .map(|_| {
            let (mut client, token, id) = (app.transfers(), token.to_owned(), original.to_owned());
            tokio::spawn(async move { reverse_anew(&mut client, &token, &id, Some(amount)).await })
        })
        .collect();
    let mut reversed = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(t) => reversed.push(t),
            Err(s) => assert_eq!(
                reason(&s).as_deref(),
                Some("REVERSAL_EXCEEDS_ORIGINAL"),
                "{s:?}"
            ),
        }
    }
    reversed
}

#[tokio::test]
async fn reversals_go_up_to_the_original_and_not_past_it_even_concurrently() {
    const ATTEMPTS: usize = 20;
    let app = TestApp::spawn().await;
    let Payment {
        banker,
        payer,
        payee,
        from,
        to,
        ..
    } = payment(&app).await;
    let original = app.transfer(&payer, &from, &to, 100).await.unwrap();
    let mut transfers = app.transfers();

    // The payer cannot claw the payment back; the payee gives it back.
    assert_code(
        reverse_anew(&mut transfers, &payer, &original.transfer_id, None).await,
        Code::PermissionDenied,
    );
    let reversed = reverse_concurrently(&app, &payee, &original.transfer_id, ATTEMPTS, 10).await;
    assert_eq!(reversed.len(), 10, "ten reversals of 10 make up the 100");
    for r in &reversed {
        assert_eq!(r.kind(), pb::TransferKind::Reversal);
        assert_eq!(r.reverses_transfer_id, original.transfer_id);
        assert_eq!(
            (r.from_account_id.as_str(), r.to_account_id.as_str()),
            (to.as_str(), from.as_str())
        );
    }
    let after = app
        .get_transfer(&payer, &original.transfer_id)
        .await
        .unwrap();
    assert_eq!(after.reversed_amount, 100);
    assert_eq!(app.balance(&payer, &from).await, 1_000);
    assert_eq!(app.balance(&payee, &to).await, 0);

    // A reversal is idempotent by its id; a reversal is not itself reversible.
    let first = &reversed[0];
    let (original, first_id) = (&original.transfer_id, &first.transfer_id);
    let resent = reverse(&mut transfers, &payee, original, first_id, Some(10))
        .await
        .unwrap();
    assert_eq!(&resent, first);
    assert_code(
        reverse(&mut transfers, &payee, original, first_id, Some(9)).await,
        Code::AlreadyExists,
    );
    refused(
        reverse_anew(&mut transfers, &banker, first_id, None).await,
        "TRANSFER_NOT_REVERSIBLE",
    );
    assert_consistent(&app).await;
}

#[tokio::test]
async fn a_reversal_the_payee_can_no_longer_pay_is_recorded_failed_and_reverses_nothing() {
    let app = TestApp::spawn().await;
    let Payment {
        payer,
        payee,
        from,
        to,
        spent,
        ..
    } = payment(&app).await;
    let mut transfers = app.transfers();

    // Recorded FAILED when the payee no longer has the money.
    let paid = app.transfer(&payer, &from, &to, 50).await.unwrap();
    app.transfer(&payee, &to, &spent, 50).await.unwrap();
    let reversal_id = Uuid::new_v4().to_string();
    refused(
        reverse(
            &mut transfers,
            &payee,
            &paid.transfer_id,
            &reversal_id,
            None,
        )
        .await,
        "INSUFFICIENT_FUNDS",
    );
    let failed = app.get_transfer(&payee, &reversal_id).await.unwrap();
    assert_eq!(status(&failed), pb::TransferStatus::Failed);
    assert_eq!(failed.amount, 50);
    assert_eq!(
        app.get_transfer(&payee, &paid.transfer_id)
            .await
            .unwrap()
            .reversed_amount,
        0
    );
    assert_consistent(&app).await;
}

#[tokio::test]
async fn a_banker_reverses_a_deposit_and_a_customer_cannot() {
    let app = TestApp::spawn().await;
    let (banker, customer, [account]) = app.customer_with_accounts("rdeposit", [0]).await;
    let mut transfers = app.transfers();

    // The money goes back to the system account.
    let deposit = app.deposit(&banker, &account, 30).await;
    assert_code(
        reverse_anew(&mut transfers, &customer, &deposit.transfer_id, None).await,
        Code::PermissionDenied,
    );
    let undone = reverse_anew(&mut transfers, &banker, &deposit.transfer_id, None)
        .await
        .unwrap();
    assert_eq!(undone.amount, 30);
    assert_eq!(app.balance(&customer, &account).await, 0);
    assert_consistent(&app).await;
}

fn instant(t: &prost_types::Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

fn at(nanos: i128) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Runs `tasks` tasks at once, each sending `per_task` transfers between `a` and `b`, the
/// directions alternating, the amounts varying from 1 to 40.
async fn transfer_both_ways_concurrently(
    app: &TestApp,
    owner: &str,
    (a, b): (&str, &str),
    tasks: usize,
    per_task: usize,
) {
    let tasks: Vec<_> = (0..tasks)
        .map(|task| {
            let (mut client, owner) = (app.transfers(), owner.to_owned());
            let (a, b) = (a.to_owned(), b.to_owned());
            tokio::spawn(async move {
                for i in 0..per_task {
                    let (from, to) = if (task + i) % 2 == 0 {
                        (&a, &b)
                    } else {
                        (&b, &a)
                    };
                    let amount = 1 + ((task * 7 + i * 13) % 40) as i64;
                    client
                        .create_transfer(authed(&owner, transfer_request(from, to, amount)))
                        .await
                        .expect("funded");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Every entry of `account`, oldest first, read page by page.
async fn statement(app: &TestApp, token: &str, account: &str) -> Vec<pb::Entry> {
    let mut accounts = app.accounts();
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = accounts
            .list_entries(authed(
                token,
                pb::ListEntriesRequest {
                    account_id: account.into(),
                    page_size: 1_000,
                    page_token: page_token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    entries.reverse();
    entries
}

/// `GetAccountBalance` of `account` as of `as_of` (None: now) as the holder of `token`.
async fn balance_as_of(
    app: &TestApp,
    token: &str,
    account: &str,
    as_of: Option<prost_types::Timestamp>,
) -> Result<pb::GetAccountBalanceResponse, Status> {
    app.accounts()
        .get_account_balance(authed(
            token,
            pb::GetAccountBalanceRequest {
                account_id: account.into(),
                as_of,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// The instants to ask for, given the entries' `times` (ascending): 200 random ones between the
/// first and the last, exactly at entries, a nanosecond before them, before everything and
/// after everything.
fn probe_instants(times: &[i128]) -> Vec<i128> {
    let (first, last) = (times[0], *times.last().unwrap());
    let mut instants: Vec<i128> = (0..200)
        .map(|_| first + rand::random_range(0..=(last - first)))
        .collect();
    instants.extend(times.iter().step_by(25).copied());
    instants.extend(times.iter().step_by(25).map(|t| t - 1));
    instants.extend([first - 1_000_000_000, last + 1]);
    instants
}

#[tokio::test]
async fn the_balance_at_any_past_instant_is_the_running_balance_at_that_instant() {
    const TASKS: usize = 10;
    const PER_TASK: usize = 100; // 1,000 transfers, each an entry on the watched account
    let app = TestApp::spawn().await;
    let (_, owner, [watched, other]) = app
        .customer_with_accounts("history", [10_000, 10_000])
        .await;

    // Both directions, concurrently: some entries share a batch (and its instant).
    transfer_both_ways_concurrently(&app, &owner, (&watched, &other), TASKS, PER_TASK).await;

    // The whole statement, oldest first.
    let entries = statement(&app, &owner, &watched).await;
    assert_eq!(entries.len(), 1 + TASKS * PER_TASK);
    let times: Vec<i128> = entries
        .iter()
        .map(|e| instant(e.created_at.as_ref().unwrap()))
        .collect();
    // Applied in order, so each entry's instant is at or after the one before it.
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "entry instants go back"
    );

    // The running balance at an instant: after the last entry at or before it.
    let expected = |t: i128| -> i64 {
        entries
            .iter()
            .zip(&times)
            .rev()
            .find(|(_, at)| **at <= t)
            .map_or(0, |(e, _)| e.balance_after)
    };
    for t in probe_instants(&times) {
        let answer = balance_as_of(&app, &owner, &watched, Some(at(t)))
            .await
            .unwrap();
        assert_eq!(answer.balance, expected(t), "at {t}");
        assert_eq!(answer.as_of, Some(at(t)));
        assert_eq!(answer.currency, "USD");
    }

    // Now, when omitted; a future instant is refused; another's account is not found.
    let now = balance_as_of(&app, &owner, &watched, None).await.unwrap();
    assert_eq!(now.balance, entries.last().unwrap().balance_after);
    let future = at(
        instant(&prost_types::Timestamp::from(std::time::SystemTime::now()))
            + 3_600 * 1_000_000_000,
    );
    assert_code(
        balance_as_of(&app, &owner, &watched, Some(future)).await,
        Code::InvalidArgument,
    );
    let stranger = app.signed_in(&unique("peek"), &[]).await.access_token;
    assert_code(
        balance_as_of(&app, &stranger, &watched, None).await,
        Code::NotFound,
    );
}

/// `CreateTransfers` of `items`; asserts that every item was recorded and returns them.
async fn recorded_batch(
    app: &TestApp,
    token: &str,
    items: Vec<pb::CreateTransferRequest>,
    atomic: bool,
) -> Vec<pb::Transfer> {
    app.transfers()
        .create_transfers(authed(
            token,
            pb::CreateTransfersRequest {
                transfers: items,
                atomic,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(pb::create_transfer_result::Result::Transfer(t)) => t,
            other => panic!("expected a recorded transfer, got {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn holds_work_in_batches_and_linked_chains() {
    let app = TestApp::spawn().await;
    let (_, owner, [source, sink]) = app.customer_with_accounts("chains", [100, 0]).await;
    let mut transfers = app.transfers();

    // A chain of a hold of 50 and a transfer of 60: the transfer finds only 50 available, so
    // the chain fails as a unit and the hold is recorded FAILED (no expiry: it never held).
    let mut hold = hold_request(&source, &sink, 50, MINUTES);
    hold.linked = true;
    let chain = vec![hold, transfer_request(&source, &sink, 60)];
    let failed = recorded_batch(&app, &owner, chain.clone(), false).await;
    assert_eq!(
        failed
            .iter()
            .map(|t| t.failure_reason())
            .collect::<Vec<_>>(),
        [
            pb::FailureReason::LinkedTransferFailed,
            pb::FailureReason::InsufficientFunds
        ]
    );
    assert_eq!(failed[0].timeout, Some(MINUTES.try_into().unwrap()));
    assert_eq!(failed[0].expires_at, None);
    assert_position(&app, &owner, &source, (100, 0, 0, 100)).await;

    // An atomic batch of two holds and a transfer that fit together.
    let batch = vec![
        hold_request(&source, &sink, 30, MINUTES),
        hold_request(&source, &sink, 20, MINUTES),
        transfer_request(&source, &sink, 50),
    ];
    let held = recorded_batch(&app, &owner, batch, true).await;
    assert_eq!(
        held.iter().map(status).collect::<Vec<_>>(),
        [
            pb::TransferStatus::Pending,
            pb::TransferStatus::Pending,
            pb::TransferStatus::Succeeded
        ]
    );
    assert_position(&app, &owner, &source, (50, 50, 0, 0)).await;
    assert_position(&app, &owner, &sink, (50, 0, 50, 50)).await;
    // Resending the failed chain replays it: the same answers, nothing moves.
    let replayed = recorded_batch(&app, &owner, chain, false).await;
    assert_eq!(replayed, failed);
    post(&mut transfers, &owner, &held[0].transfer_id, None)
        .await
        .unwrap();
    void(&mut transfers, &owner, &held[1].transfer_id)
        .await
        .unwrap();
    assert_position(&app, &owner, &source, (20, 0, 0, 20)).await;
    assert_consistent(&app).await;
}
