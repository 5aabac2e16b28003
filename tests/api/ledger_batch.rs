//! `CreateTransfers` and the group-commit engine: every item answered as a single call would
//! be, linked chains and `atomic`, limits, and the invariants under concurrent batches on one
//! server and on two replicas of one database.

use std::collections::{HashMap, HashSet};

use prost::Message as _;
use tally::proto::tally_v1::{self as pb, create_transfer_result::Result as Outcome};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::helpers::*;

fn item(from: &str, to: &str, amount: i64) -> pb::CreateTransferRequest {
    transfer_request(from, to, amount)
}

fn linked(mut item: pb::CreateTransferRequest) -> pb::CreateTransferRequest {
    item.linked = true;
    item
}

async fn batch(
    channel: &Channel,
    token: &str,
    transfers: Vec<pb::CreateTransferRequest>,
    atomic: bool,
) -> Result<Vec<Outcome>, Status> {
    pb::transfer_service_client::TransferServiceClient::new(channel.clone())
        .create_transfers(authed(
            token,
            pb::CreateTransfersRequest { transfers, atomic },
        ))
        .await
        .map(|r| {
            r.into_inner()
                .results
                .into_iter()
                .map(|r| r.result.expect("every result is set"))
                .collect()
        })
}

fn transfer(outcome: &Outcome) -> &pb::Transfer {
    match outcome {
        Outcome::Transfer(t) => t,
        Outcome::Error(e) => panic!("expected a transfer, got error {e:?}"),
    }
}

/// The error of a result, as the tonic status a single call would have answered.
fn error(outcome: &Outcome) -> Status {
    match outcome {
        Outcome::Error(e) => Status::with_details(
            Code::from_i32(e.code),
            e.message.clone(),
            e.encode_to_vec().into(),
        ),
        Outcome::Transfer(t) => panic!("expected an error, got transfer {t:?}"),
    }
}

fn failure(outcome: &Outcome) -> pb::FailureReason {
    let t = transfer(outcome);
    assert_eq!(t.status, pb::TransferStatus::Failed as i32, "{t:?}");
    pb::FailureReason::try_from(t.failure_reason).expect("a known reason")
}

/// A customer with two funded accounts and a third empty one.
struct Payer {
    token: String,
    a: String,
    b: String,
    c: String,
}

async fn payer(app: &TestApp, banker: &str, funding: i64) -> Payer {
    let token = app.signed_in(&unique("payer"), &[]).await.access_token;
    let a = app.open_account(&token, "USD").await.account_id;
    let b = app.open_account(&token, "USD").await.account_id;
    let c = app.open_account(&token, "USD").await.account_id;
    app.deposit(banker, &a, funding).await;
    app.deposit(banker, &b, funding).await;
    Payer { token, a, b, c }
}

#[tokio::test]
async fn one_batch_answers_each_item_exactly_as_a_single_call_would() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let p = payer(&app, &banker, 1_000).await;
    let stranger = app.signed_in(&unique("stranger"), &[]).await.access_token;
    let theirs = app.open_account(&stranger, "USD").await.account_id;
    let earlier = item(&p.a, &p.b, 10);
    let earlier_answer = app
        .create_transfer(&p.token, earlier.clone())
        .await
        .unwrap();

    let success = item(&p.a, &p.c, 100);
    let too_much = item(&p.a, &p.c, 1_000_000);
    let foreign = item(&theirs, &p.c, 1);
    let malformed = item(&p.a, &p.c, 0);
    let items = vec![
        success.clone(),
        too_much.clone(),
        foreign.clone(),
        malformed.clone(),
        earlier.clone(),
    ];
    let transfers_before = app.count("transfers").await;
    let results = batch(&app.channel, &p.token, items.clone(), false)
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(
        app.count("transfers").await,
        transfers_before + 2,
        "the success and the refusal are recorded, nothing else"
    );

    // Each recorded item replays through CreateTransfer as the same transfer.
    let single = |r| app.create_transfer(&p.token, r);
    let ok = transfer(&results[0]);
    assert_eq!(ok.status, pb::TransferStatus::Succeeded as i32);
    assert_eq!(single(success).await.unwrap(), *ok);

    assert_eq!(failure(&results[1]), pb::FailureReason::InsufficientFunds);
    let refused = assert_code(single(too_much).await, Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("INSUFFICIENT_FUNDS"));
    let info = refused.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata["transfer_id"],
        transfer(&results[1]).transfer_id
    );

    // Nothing is written for these: the batch answers what a single call answers.
    for (i, request, code) in [
        (2, foreign, Code::NotFound),
        (3, malformed, Code::InvalidArgument),
    ] {
        let in_batch = error(&results[i]);
        let alone = assert_code(single(request).await, code);
        assert_eq!(in_batch.code(), code, "item {i}");
        assert_eq!(in_batch.message(), alone.message(), "item {i}");
        assert_eq!(reason(&in_batch), reason(&alone), "item {i}");
    }

    assert_eq!(
        *transfer(&results[4]),
        earlier_answer,
        "a replay answers the original"
    );

    // Resending the whole batch gives the same results and writes nothing more.
    let again = batch(&app.channel, &p.token, items, false).await.unwrap();
    assert_eq!(again, results);
    assert_eq!(app.count("transfers").await, transfers_before + 2);
    assert_eq!(app.balance(&p.token, &p.a).await, 1_000 - 10 - 100);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn a_chain_of_three_whose_middle_lacks_funds_moves_nothing() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let p = payer(&app, &banker, 100).await;
    let chain = vec![
        linked(item(&p.a, &p.c, 50)),
        linked(item(&p.c, &p.b, 500)),
        item(&p.b, &p.a, 5),
    ];
    let entries_before = app.count("entries").await;
    let results = batch(&app.channel, &p.token, chain.clone(), false)
        .await
        .unwrap();
    assert_eq!(
        results.iter().map(failure).collect::<Vec<_>>(),
        [
            pb::FailureReason::LinkedTransferFailed,
            pb::FailureReason::InsufficientFunds,
            pb::FailureReason::LinkedTransferFailed,
        ]
    );
    assert_eq!(app.count("entries").await, entries_before, "no money moved");
    for (account, balance) in [(&p.a, 100), (&p.b, 100), (&p.c, 0)] {
        assert_eq!(app.balance(&p.token, account).await, balance);
    }
    // The members are recorded FAILED, so the chain replays as the same answers.
    assert_eq!(
        batch(&app.channel, &p.token, chain.clone(), false)
            .await
            .unwrap(),
        results
    );
    let status = assert_code(
        app.transfers()
            .create_transfer(authed(
                &p.token,
                pb::CreateTransferRequest {
                    linked: false,
                    ..chain[0].clone()
                },
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&status).as_deref(), Some("LINKED_TRANSFER_FAILED"));

    // A chain that works moves all of its members, and a later member may spend what an
    // earlier one brought.
    let chain = vec![linked(item(&p.a, &p.c, 100)), item(&p.c, &p.b, 100)];
    let results = batch(&app.channel, &p.token, chain, false).await.unwrap();
    assert!(
        results
            .iter()
            .all(|r| transfer(r).status == pb::TransferStatus::Succeeded as i32)
    );
    assert_eq!(app.balance(&p.token, &p.b).await, 200);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn a_chain_with_a_rejected_member_writes_nothing_for_any_member() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let p = payer(&app, &banker, 100).await;
    let missing = Uuid::now_v7().to_string();
    let results = batch(
        &app.channel,
        &p.token,
        vec![
            linked(item(&p.a, &p.b, 1)),
            linked(item(&p.a, &missing, 1)),
            item(&p.a, &p.b, 1),
            // A malformed member is found before any account is read: it answers its own
            // error and the rest of its chain LINKED_TRANSFER_FAILED.
            linked(item(&p.a, &p.b, 1)),
            item(&p.a, &p.b, -5),
            item(&p.a, &p.b, 1),
        ],
        false,
    )
    .await
    .unwrap();
    let reasons: Vec<Option<String>> = results[..5].iter().map(|r| reason(&error(r))).collect();
    assert_eq!(
        reasons,
        [
            Some("LINKED_TRANSFER_FAILED".into()),
            Some("NOT_FOUND".into()),
            Some("LINKED_TRANSFER_FAILED".into()),
            Some("LINKED_TRANSFER_FAILED".into()),
            Some("INVALID_ARGUMENT".into()),
        ]
    );
    assert_eq!(
        transfer(&results[5]).status,
        pb::TransferStatus::Succeeded as i32,
        "the item after the chains is its own"
    );
    assert_eq!(
        app.count("transfers").await,
        3,
        "the two deposits and the last item"
    );
    assert_eq!(app.balance(&p.token, &p.a).await, 99);
}

#[tokio::test]
async fn an_open_chain_is_refused_and_atomic_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let p = payer(&app, &banker, 100).await;
    let before = app.count("transfers").await;

    let open = batch(
        &app.channel,
        &p.token,
        vec![item(&p.a, &p.b, 1), linked(item(&p.a, &p.b, 1))],
        false,
    )
    .await;
    let status = assert_code(open, Code::InvalidArgument);
    assert_eq!(reason(&status).as_deref(), Some("LINKED_CHAIN_OPEN"));
    assert_eq!(app.count("transfers").await, before, "nothing written");

    // Atomic: one item lacking funds fails all of them, without any `linked`.
    let results = batch(
        &app.channel,
        &p.token,
        vec![
            item(&p.a, &p.c, 60),
            item(&p.a, &p.c, 60),
            item(&p.b, &p.c, 1),
        ],
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        results.iter().map(failure).collect::<Vec<_>>(),
        [
            pb::FailureReason::LinkedTransferFailed,
            pb::FailureReason::InsufficientFunds,
            pb::FailureReason::LinkedTransferFailed,
        ]
    );
    assert_eq!(app.balance(&p.token, &p.c).await, 0);

    let results = batch(
        &app.channel,
        &p.token,
        vec![
            item(&p.a, &p.c, 60),
            item(&p.a, &p.c, 40),
            linked(item(&p.b, &p.c, 1)),
        ],
        true,
    )
    .await
    .unwrap();
    assert!(
        results
            .iter()
            .all(|r| transfer(r).status == pb::TransferStatus::Succeeded as i32),
        "an atomic batch ignores `linked` and needs no chain end"
    );
    assert_eq!(app.balance(&p.token, &p.c).await, 101);
    assert!(app.verify().await.is_consistent());
}

#[tokio::test]
async fn batches_are_bounded_and_a_linked_single_transfer_is_refused() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let p = payer(&app, &banker, 100).await;
    let status = assert_code(
        batch(&app.channel, &p.token, vec![], false).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("1 to 8189"), "{status:?}");

    // 3,000 items fit the default 1 MiB request, but not with room for their answers.
    let many: Vec<_> = (0..3_000).map(|_| item(&p.a, &p.b, 1)).collect();
    let status = assert_code(
        batch(&app.channel, &p.token, many, false).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("message-size limit"),
        "{status:?}"
    );

    let roomy = app.replica(&["--max-message-bytes", "16777216"]).await;
    let too_many: Vec<_> = (0..8_190).map(|_| item(&p.a, &p.b, 1)).collect();
    let client = pb::transfer_service_client::TransferServiceClient::new(roomy.channel.clone())
        .max_encoding_message_size(16 << 20)
        .max_decoding_message_size(16 << 20)
        .create_transfers(authed(
            &p.token,
            pb::CreateTransfersRequest {
                transfers: too_many,
                atomic: false,
            },
        ))
        .await;
    let status = assert_code(client, Code::InvalidArgument);
    assert!(status.message().contains("1 to 8189"), "{status:?}");
    assert_eq!(app.count("transfers").await, 2, "only the two deposits");

    let single = app
        .transfers()
        .create_transfer(authed(&p.token, linked(item(&p.a, &p.b, 1))))
        .await;
    assert_eq!(
        assert_code(single, Code::InvalidArgument).message(),
        "linked: chains exist only in CreateTransfers; leave it false here"
    );
}

/// `tasks` tasks, each sending `rounds` batches of `per_batch` transfers over `accounts`, with
/// opposite directions in neighbouring tasks; some batches are linked in pairs. Returns every
/// answered item: (transfer id, whether it was acknowledged as succeeded).
async fn hammer(
    channels: &[Channel],
    token: &str,
    accounts: &[String],
    tasks: usize,
    rounds: usize,
    per_batch: usize,
) -> (Vec<(String, bool)>, HashMap<String, usize>) {
    let mut handles = Vec::new();
    for task in 0..tasks {
        let channel = channels[task % channels.len()].clone();
        let (token, accounts) = (token.to_owned(), accounts.to_vec());
        handles.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            let mut codes: HashMap<String, usize> = HashMap::new();
            for round in 0..rounds {
                let items: Vec<_> = (0..per_batch)
                    .map(|i| {
                        let a = (task / 2 + i + round) % accounts.len();
                        let b = (a + 1 + task % 3) % accounts.len();
                        let (from, to) = if task % 2 == 0 { (a, b) } else { (b, a) };
                        let mut t = item(
                            &accounts[from],
                            &accounts[to],
                            1 + ((task * 7 + i) % 300) as i64,
                        );
                        // Pairs of items chain in every third task.
                        t.linked = task % 3 == 0 && i % 2 == 0;
                        t
                    })
                    .collect();
                let ids: Vec<String> = items.iter().map(|t| t.transfer_id.clone()).collect();
                match batch(&channel, &token, items, false).await {
                    Ok(results) => {
                        for (id, result) in ids.into_iter().zip(results) {
                            match result {
                                Outcome::Transfer(t) => {
                                    let ok = t.status == pb::TransferStatus::Succeeded as i32;
                                    *codes
                                        .entry(if ok { "SUCCEEDED" } else { "FAILED" }.into())
                                        .or_default() += 1;
                                    answered.push((id, ok));
                                }
                                Outcome::Error(e) => {
                                    *codes
                                        .entry(format!("{:?}", Code::from_i32(e.code)))
                                        .or_default() += 1;
                                    answered.push((id, false));
                                }
                            }
                        }
                    }
                    Err(status) => {
                        *codes
                            .entry(format!("call {:?}", status.code()))
                            .or_default() += ids.len();
                        answered.extend(ids.into_iter().map(|id| (id, false)));
                    }
                }
            }
            (answered, codes)
        }));
    }
    let mut answered = Vec::new();
    let mut codes: HashMap<String, usize> = HashMap::new();
    for handle in handles {
        let (a, c) = handle.await.unwrap();
        answered.extend(a);
        for (code, n) in c {
            *codes.entry(code).or_default() += n;
        }
    }
    (answered, codes)
}

/// The invariants of `tally verify`, conservation of the customers' money, no negative
/// balance, and every acknowledged success present exactly once.
async fn assert_ledger_holds(
    app: &TestApp,
    token: &str,
    accounts: &[String],
    funded: i64,
    answered: &[(String, bool)],
) {
    let report = app.verify().await;
    assert!(report.is_consistent(), "{report:?}");
    let mut total = 0;
    for account in accounts {
        let balance = app.balance(token, account).await;
        assert!(balance >= 0, "{account} went negative: {balance}");
        total += balance;
    }
    assert_eq!(total, funded, "customer money is conserved");

    let succeeded: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM transfers WHERE status = 'succeeded' AND kind = 'transfer'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let succeeded: HashSet<Uuid> = succeeded.into_iter().collect();
    let acknowledged: HashSet<Uuid> = answered
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id.parse().unwrap())
        .collect();
    assert_eq!(
        acknowledged, succeeded,
        "exactly the acknowledged transfers succeeded: none lost, none applied unseen"
    );
}

#[tokio::test]
async fn sixty_four_tasks_sending_batches_over_ten_accounts_keep_every_invariant() {
    const ACCOUNTS: usize = 10;
    const FUNDING: i64 = 20_000;
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let owner = app.signed_in(&unique("owner"), &[]).await.access_token;
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = app.open_account(&owner, "USD").await.account_id;
        app.deposit(&banker, &account, FUNDING).await;
        accounts.push(account);
    }

    let (answered, codes) = hammer(
        std::slice::from_ref(&app.channel),
        &owner,
        &accounts,
        64,
        3,
        50,
    )
    .await;
    assert_eq!(answered.len(), 64 * 3 * 50);
    let unexpected: Vec<_> = codes
        .iter()
        .filter(|(code, _)| !["SUCCEEDED", "FAILED", "FailedPrecondition"].contains(&code.as_str()))
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {codes:?}");
    assert!(codes["SUCCEEDED"] > answered.len() / 2, "{codes:?}");
    assert_ledger_holds(
        &app,
        &owner,
        &accounts,
        FUNDING * ACCOUNTS as i64,
        &answered,
    )
    .await;
}

#[tokio::test]
async fn two_replicas_batching_on_the_same_ten_accounts_keep_every_invariant() {
    const ACCOUNTS: usize = 10;
    const FUNDING: i64 = 20_000;
    let app = TestApp::spawn().await;
    let replica = app.replica(&[]).await;
    let banker = app.banker().await;
    let owner = app.signed_in(&unique("owner"), &[]).await.access_token;
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let account = app.open_account(&owner, "USD").await.account_id;
        app.deposit(&banker, &account, FUNDING).await;
        accounts.push(account);
    }

    // Batches and single transfers through both replicas at once.
    let channels = [app.channel.clone(), replica.channel.clone()];
    let singles = {
        let (channels, owner, accounts) = (channels.clone(), owner.clone(), accounts.clone());
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for task in 0..16 {
                let (channel, owner, accounts) =
                    (channels[task % 2].clone(), owner.clone(), accounts.clone());
                handles.push(tokio::spawn(async move {
                    let mut client =
                        pb::transfer_service_client::TransferServiceClient::new(channel);
                    let mut answered = Vec::new();
                    for i in 0..20 {
                        let t = item(
                            &accounts[(task + i) % ACCOUNTS],
                            &accounts[(task + i + 1) % ACCOUNTS],
                            7,
                        );
                        let id = t.transfer_id.clone();
                        let result = client.create_transfer(authed(&owner, t)).await;
                        match &result {
                            Ok(_) => answered.push((id, true)),
                            Err(s) => {
                                assert!(
                                    matches!(s.code(), Code::FailedPrecondition | Code::Aborted),
                                    "{s:?}"
                                );
                                answered.push((id, false));
                            }
                        }
                    }
                    answered
                }));
            }
            let mut answered = Vec::new();
            for handle in handles {
                answered.extend(handle.await.unwrap());
            }
            answered
        })
    };
    let (mut answered, codes) = hammer(&channels, &owner, &accounts, 32, 3, 40).await;
    answered.extend(singles.await.unwrap());
    let unexpected: Vec<_> = codes
        .iter()
        .filter(|(code, _)| {
            !["SUCCEEDED", "FAILED", "FailedPrecondition", "Aborted"].contains(&code.as_str())
        })
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {codes:?}");
    eprintln!("two replicas: {codes:?}");
    assert_ledger_holds(
        &app,
        &owner,
        &accounts,
        FUNDING * ACCOUNTS as i64,
        &answered,
    )
    .await;
}
