//! The ledger under concurrency: conservation, double spends, idempotent replays, the retry
//! path, and `tally verify`.

use std::{collections::HashSet, time::Duration};

use tally::proto::tally_v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// Codes a transfer may legitimately answer under contention; anything else is a bug.
fn acceptable(code: Code) -> bool {
    matches!(code, Code::Ok | Code::FailedPrecondition)
}

/// Runs `tasks` tasks of `per_task` transfers among `accounts` as `banker`, tasks 2k and 2k+1
/// on the same pairs in opposite directions at the same time; returns every call's code and
/// message.
async fn transfer_in_opposite_direction_pairs(
    app: &TestApp,
    banker: &str,
    accounts: &[String],
    tasks: usize,
    per_task: usize,
) -> Vec<(Code, String)> {
    let n = accounts.len();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (mut client, banker, accounts) =
            (app.transfers(), banker.to_owned(), accounts.to_vec());
        handles.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for i in 0..per_task {
                // Tasks 2k and 2k+1 run the same pair in opposite directions at the same time.
                let a = (task / 2 + i) % n;
                let b = (a + 1 + task % 3) % n;
                let (from, to) = if task % 2 == 0 { (a, b) } else { (b, a) };
                let amount = 1 + ((task * 31 + i * 17) % 700) as i64;
                let request = transfer_request(&accounts[from], &accounts[to], amount);
                codes.push(
                    match client.create_transfer(authed(&banker, request)).await {
                        Ok(_) => (Code::Ok, String::new()),
                        Err(s) => (s.code(), s.message().to_owned()),
                    },
                );
            }
            codes
        }));
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.extend(handle.await.unwrap());
    }
    outcomes
}

/// Asserts that the `tally verify` binary finds the ledger of `database_url` consistent.
fn assert_the_binary_verifies(database_url: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["verify"])
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("ledger consistent"));
}

#[tokio::test]
async fn money_is_conserved_under_concurrency_with_opposite_direction_pairs() {
    const ACCOUNTS: usize = 10;
    const TASKS: usize = 64;
    const PER_TASK: usize = 32; // 2,048 transfers
    const FUNDING: i64 = 10_000;

    let app = TestApp::spawn().await;
    let (banker, _, accounts) = app
        .customer_with_accounts("owner", [FUNDING; ACCOUNTS])
        .await;

    let outcomes =
        transfer_in_opposite_direction_pairs(&app, &banker, &accounts, TASKS, PER_TASK).await;
    assert_eq!(outcomes.len(), TASKS * PER_TASK);
    let bad: Vec<_> = outcomes.iter().filter(|(c, _)| !acceptable(*c)).collect();
    assert!(bad.is_empty(), "calls failed unexpectedly: {bad:?}");
    let succeeded = outcomes.iter().filter(|(c, _)| *c == Code::Ok).count();
    assert!(
        succeeded > TASKS * PER_TASK / 2,
        "only {succeeded} transfers succeeded"
    );

    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
    let mut total = 0;
    for account in &accounts {
        let balance = app.balance(&banker, account).await;
        assert!(balance >= 0);
        total += balance;
    }
    assert_eq!(
        total,
        FUNDING * ACCOUNTS as i64,
        "customer money is conserved"
    );

    // The binary agrees.
    assert_the_binary_verifies(&app.db.url);
}

#[tokio::test]
async fn of_fifty_concurrent_transfers_of_the_whole_balance_exactly_one_succeeds() {
    let app = TestApp::spawn().await;
    let (_, spender, [source, sink]) = app.customer_with_accounts("spender", [1_000, 0]).await;

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (channel, token, source, sink) = (
            app.channel.clone(),
            spender.clone(),
            source.clone(),
            sink.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let app_transfers = pb::transfer_service_client::TransferServiceClient::new(channel);
            let mut client = app_transfers;
            client
                .create_transfer(authed(
                    &token,
                    pb::CreateTransferRequest {
                        transfer_id: Uuid::new_v4().to_string(),
                        from_account_id: source,
                        to_account_id: sink,
                        amount: 1_000,
                        currency: "USD".into(),
                        memo: None,
                        linked: false,
                        pending: false,
                        timeout: None,
                    },
                ))
                .await
        }));
    }
    let mut ok = 0;
    let mut insufficient = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if reason(&s).as_deref() == Some("INSUFFICIENT_FUNDS") => {
                assert_eq!(s.code(), Code::FailedPrecondition);
                insufficient += 1;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((ok, insufficient), (1, 49));
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transfers WHERE status = 'failed' AND failure_reason = 'insufficient_funds'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(failed, 49, "every refusal is a FAILED record");
    assert_eq!(app.balance(&spender, &source).await, 0);
    assert_eq!(app.balance(&spender, &sink).await, 1_000);
    assert!(app.verify().await.is_consistent());
}

/// Sends `request` `n` times at once as the holder of `token`; returns the answers.
async fn send_at_once(
    app: &TestApp,
    token: &str,
    request: &pb::CreateTransferRequest,
    n: usize,
) -> Vec<Result<pb::Transfer, tonic::Status>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (mut client, token, request) = (app.transfers(), token.to_owned(), request.clone());
            tokio::spawn(async move {
                client
                    .create_transfer(authed(&token, request))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

/// Asserts that `request` under a fresh id and for more than the payer has is refused the
/// same way twice, and is recorded as a FAILED transfer for insufficient funds.
async fn assert_a_failed_transfer_replays_as_the_same_failure(
    app: &TestApp,
    payer: &str,
    request: &pb::CreateTransferRequest,
) {
    let too_much = pb::CreateTransferRequest {
        transfer_id: Uuid::new_v4().to_string(),
        amount: 10_000,
        ..request.clone()
    };
    let first = assert_code(
        app.create_transfer(payer, too_much.clone()).await,
        Code::FailedPrecondition,
    );
    let again = assert_code(
        app.create_transfer(payer, too_much.clone()).await,
        Code::FailedPrecondition,
    );
    assert_eq!(first.message(), again.message());
    assert_eq!(reason(&first), reason(&again));
    let recorded = app
        .get_transfer(payer, &too_much.transfer_id)
        .await
        .unwrap();
    assert_eq!(recorded.status, pb::TransferStatus::Failed as i32);
    assert_eq!(
        recorded.failure_reason,
        pb::FailureReason::InsufficientFunds as i32
    );
}

#[tokio::test]
async fn one_transfer_id_sent_twenty_times_at_once_is_one_transfer_with_identical_answers() {
    let app = TestApp::spawn().await;
    let (_, payer, [from, to]) = app.customer_with_accounts("payer", [500, 0]).await;

    let request = pb::CreateTransferRequest {
        memo: Some("rent".into()),
        ..transfer_request(&from, &to, 120)
    };
    let answers: Vec<_> = send_at_once(&app, &payer, &request, 20)
        .await
        .into_iter()
        .map(|a| a.expect("every replay succeeds"))
        .collect();
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "answers differ: {answers:?}"
    );
    assert_eq!(answers[0].transfer_id, request.transfer_id);
    assert_eq!(app.balance(&payer, &from).await, 380, "moved once");
    assert_eq!(app.count("transfers").await, 2, "one deposit, one transfer");

    // Same id, another amount.
    let reused = app
        .create_transfer(
            &payer,
            pb::CreateTransferRequest {
                amount: 121,
                ..request.clone()
            },
        )
        .await;
    let status = assert_code(reused, Code::AlreadyExists);
    assert_eq!(reason(&status).as_deref(), Some("TRANSFER_ID_REUSED"));

    // Another user replaying the id learns nothing: the same answer as another payload.
    let other = app.signed_in(&unique("other"), &[]).await.access_token;
    let foreign = app.create_transfer(&other, request.clone()).await;
    assert_eq!(
        reason(&assert_code(foreign, Code::AlreadyExists)).as_deref(),
        Some("TRANSFER_ID_REUSED")
    );

    // A failed transfer replays as the same failure.
    assert_a_failed_transfer_replays_as_the_same_failure(&app, &payer, &request).await;
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn a_forced_serialization_failure_is_retried_and_the_transfer_happens_once() {
    let app = TestApp::spawn().await;
    let (_, holder, [from, to]) = app.customer_with_accounts("holder", [1_000, 0]).await;

    // A concurrent transaction updates the source row and holds its lock.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("UPDATE accounts SET updated_at = now() WHERE id = $1::uuid")
        .bind(&from)
        .execute(&mut *blocker)
        .await
        .unwrap();

    let call = {
        let (channel, token, from, to) = (
            app.channel.clone(),
            holder.clone(),
            from.clone(),
            to.clone(),
        );
        tokio::spawn(async move {
            pb::transfer_service_client::TransferServiceClient::new(channel)
                .create_transfer(authed(
                    &token,
                    pb::CreateTransferRequest {
                        transfer_id: Uuid::new_v4().to_string(),
                        from_account_id: from,
                        to_account_id: to,
                        amount: 250,
                        currency: "USD".into(),
                        memo: None,
                        linked: false,
                        pending: false,
                        timeout: None,
                    },
                ))
                .await
        })
    };
    // Wait until the transfer's transaction is blocked on the row lock, then commit under it:
    // its snapshot predates the commit, so PostgreSQL answers 40001 and the engine retries.
    let blocked = eventually(Duration::from_secs(10), || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    })
    .await;
    assert!(blocked.is_some(), "the transfer never waited on the lock");
    blocker.commit().await.unwrap();

    let response = call
        .await
        .unwrap()
        .expect("the transfer succeeds after a retry");
    let attempts: u32 = response
        .metadata()
        .get("tally-attempts")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(attempts >= 2, "expected a retry, got {attempts} attempt(s)");
    assert_eq!(app.balance(&holder, &from).await, 750);
    assert_eq!(app.balance(&holder, &to).await, 250);
    let transfers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'transfer'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(transfers, 1);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn currency_mismatches_and_overdrawn_withdrawals_are_failed_records() {
    let app = TestApp::spawn().await;
    let (banker, user, [usd]) = app.customer_with_accounts("user", [0]).await;
    let eur = app.open_account(&user, "EUR").await.account_id;
    app.deposit(&banker, &usd, 100).await;

    let mismatch = assert_code(
        app.transfer(&user, &usd, &eur, 10).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&mismatch).as_deref(), Some("CURRENCY_MISMATCH"));

    let overdraw = app
        .accounts()
        .withdraw(authed(
            &banker,
            pb::WithdrawRequest {
                account_id: usd.clone(),
                request_id: Uuid::new_v4().to_string(),
                amount: 101,
                memo: None,
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(overdraw, Code::FailedPrecondition)).as_deref(),
        Some("INSUFFICIENT_FUNDS")
    );
    let withdrawal = app
        .accounts()
        .withdraw(authed(
            &banker,
            pb::WithdrawRequest {
                account_id: usd.clone(),
                request_id: Uuid::new_v4().to_string(),
                amount: 60,
                memo: Some("cash".into()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawal.kind, pb::TransferKind::Withdrawal as i32);
    assert_eq!(app.balance(&user, &usd).await, 40);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE status = 'failed'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(failed, 2);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn verify_fails_on_a_tampered_balance() {
    let app = TestApp::spawn().await;
    let (_, _, [account]) = app.customer_with_accounts("user", [500]).await;
    assert!(app.verify().await.is_consistent());

    sqlx::query("UPDATE accounts SET balance = balance + 1 WHERE id = $1::uuid")
        .bind(&account)
        .execute(&app.pool)
        .await
        .unwrap();
    let report = app.verify().await;
    assert_eq!(report.balance_mismatches, 1);
    assert_eq!(report.unbalanced_currencies, 1);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["verify"])
        .env("DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "verify must exit non-zero on a mismatch"
    );
}

#[tokio::test]
async fn a_thousand_entries_page_newest_first_without_gaps_or_duplicates() {
    let app = TestApp::spawn().await;
    let (banker, user, [account]) = app.customer_with_accounts("user", [0]).await;
    for _ in 0..1_000 {
        app.deposit(&banker, &account, 1).await;
    }

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .accounts()
            .list_entries(authed(
                &user,
                pb::ListEntriesRequest {
                    account_id: account.clone(),
                    page_size: 77,
                    page_token: token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 77);
        seen.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // Each deposit adds 1: newest first, the running balances count down 1000..1.
    let balances: Vec<i64> = seen.iter().map(|e| e.balance_after).collect();
    assert_eq!(balances, (1..=1_000).rev().collect::<Vec<i64>>());
    let ids: HashSet<_> = seen.iter().map(|e| e.entry_id.clone()).collect();
    assert_eq!(ids.len(), 1_000);

    // The transfers list pages the same way, and a page size over the cap is served capped.
    let mut transfers = HashSet::new();
    let mut token = String::new();
    loop {
        let page = app
            .transfers()
            .list_transfers(authed(
                &user,
                pb::ListTransfersRequest {
                    account_id: account.clone(),
                    page_size: 300,
                    page_token: token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        for t in page.transfers {
            assert!(transfers.insert(t.transfer_id), "duplicate across pages");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(transfers.len(), 1_000);
    let capped = app
        .accounts()
        .list_entries(authed(
            &user,
            pb::ListEntriesRequest {
                account_id: account.clone(),
                page_size: 5_000,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.entries.len(), 1_000);
    assert!(capped.next_page_token.is_empty());
}
