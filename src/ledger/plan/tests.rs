//! The batch rules without a database: every case a lone call knows, and the chain rules.

use time::OffsetDateTime;

use super::*;

const USD: &str = "USD";

struct World {
    owner: Uuid,
    accounts: Vec<LockedAccount>,
}

impl World {
    /// `balances.len()` customer accounts of one owner, plus a USD system account (last).
    fn new(balances: &[i64]) -> Self {
        let owner = Uuid::now_v7();
        let mut accounts: Vec<LockedAccount> = balances
            .iter()
            .map(|b| LockedAccount {
                id: Uuid::now_v7(),
                owner_id: Some(owner),
                is_system: false,
                is_liquidity: false,
                currency: USD.into(),
                balance: *b,
                pending_debits: 0,
                pending_credits: 0,
                overdraft_limit: 0,
                closed: false,
                ..Default::default()
            })
            .collect();
        accounts.push(LockedAccount {
            id: Uuid::now_v7(),
            owner_id: None,
            is_system: true,
            is_liquidity: false,
            currency: USD.into(),
            balance: -balances.iter().sum::<i64>(),
            pending_debits: 0,
            pending_credits: 0,
            overdraft_limit: 0,
            closed: false,
            ..Default::default()
        });
        Self { owner, accounts }
    }

    fn id(&self, i: usize) -> Uuid {
        self.accounts[i].id
    }

    fn system(&self) -> Uuid {
        self.accounts.last().expect("a system account").id
    }

    fn transfer(&self, from: usize, to: usize, amount: i64) -> Posting {
        Posting {
            id: Uuid::now_v7(),
            kind: Kind::Transfer,
            requested_by: self.owner,
            may_move_any: false,
            from: self.id(from),
            to: self.id(to),
            amount,
            currency: USD.into(),
            memo: String::new(),
            hold_ms: None,
            claim: None,
        }
    }

    fn hold(&self, from: usize, to: usize, amount: i64) -> Posting {
        Posting {
            hold_ms: Some(60_000),
            ..self.transfer(from, to, amount)
        }
    }

    /// A hold of `amount` from account 0 to account 1, recorded before (pending): the row,
    /// with both accounts' pending sums set as the database would hold them.
    fn stored_hold(&mut self, amount: i64) -> (Posting, TransferRow) {
        let hold = self.hold(0, 1, amount);
        self.accounts[0].pending_debits = amount;
        self.accounts[1].pending_credits = amount;
        let row = stored(&hold, Status::Pending, None);
        (hold, row)
    }

    fn settle(&self, id: Uuid, action: Settle) -> Op {
        Op::Settle(Settlement {
            id,
            requested_by: self.owner,
            may_move_any: false,
            action,
        })
    }

    fn reverse(&self, original: Uuid, amount: Option<i64>) -> Op {
        Op::Reverse(Reversal {
            id: Uuid::now_v7(),
            original,
            requested_by: self.owner,
            may_move_any: false,
            amount,
            memo: String::new(),
        })
    }

    fn plan(&self, chains: &[Vec<Posting>], recorded: Vec<TransferRow>) -> Plan {
        let ops: Vec<Vec<Op>> = chains
            .iter()
            .map(|c| c.iter().cloned().map(Op::Create).collect())
            .collect();
        self.plan_ops(&ops, recorded)
    }

    fn plan_ops(&self, chains: &[Vec<Op>], recorded: Vec<TransferRow>) -> Plan {
        let chains: Vec<&[Op]> = chains.iter().map(Vec::as_slice).collect();
        plan(
            &chains,
            Loaded {
                recorded,
                accounts: self.accounts.clone(),
                ..Loaded::default()
            },
        )
    }
}

fn stored(p: &Posting, status: Status, failure_reason: Option<FailureReason>) -> TransferRow {
    TransferRow {
        id: p.id,
        seq: 1,
        kind: p.kind,
        requested_by: p.requested_by,
        from_account_id: p.from,
        to_account_id: p.to,
        amount: p.amount,
        currency: p.currency.clone(),
        status,
        failure_reason,
        memo: p.memo.clone(),
        fingerprint: p.fingerprint().to_vec(),
        created_at: OffsetDateTime::now_utc(),
        timeout_ms: p.hold_ms,
        expires_at: p.hold_ms.map(|_| OffsetDateTime::now_utc()),
        posted_amount: None,
        reverses_transfer_id: None,
        reversed_amount: 0,
    }
}

fn recorded(plan: &Plan, i: usize) -> &NewTransfer {
    match &plan.outcomes[i] {
        Planned::Recorded(index) => &plan.transfers[*index],
        other => panic!("outcome {i} is not recorded: {other:?}"),
    }
}

fn rejected_reason(plan: &Plan, i: usize) -> Reason {
    match &plan.outcomes[i] {
        Planned::Rejected(err) => err.reason(),
        other => panic!("outcome {i} is not rejected: {other:?}"),
    }
}

fn position(plan: &Plan, id: Uuid) -> Option<Position> {
    plan.positions
        .iter()
        .find(|(a, _)| *a == id)
        .map(|(_, p)| *p)
}

fn balance(plan: &Plan, id: Uuid) -> Option<i64> {
    position(plan, id).map(|p| p.balance)
}

#[test]
fn a_lone_transfer_moves_money_with_two_entries_that_cancel_out() {
    let w = World::new(&[100, 0]);
    let plan = w.plan(&[vec![w.transfer(0, 1, 30)]], vec![]);
    let t = recorded(&plan, 0);
    assert_eq!((t.status, t.failure_reason), (Status::Succeeded, None));
    assert_eq!(balance(&plan, w.id(0)), Some(70));
    assert_eq!(balance(&plan, w.id(1)), Some(30));
    assert_eq!(plan.entries.len(), 2);
    assert_eq!(plan.entries.iter().map(|e| e.amount).sum::<i64>(), 0);
    assert_eq!(
        plan.entries
            .iter()
            .map(|e| e.balance_after)
            .collect::<Vec<_>>(),
        [70, 30]
    );
}

#[test]
fn a_refusal_is_recorded_failed_and_moves_nothing() {
    let w = World::new(&[10, 0]);
    let mut other_currency = w.transfer(0, 1, 5);
    other_currency.currency = "EUR".into();
    let plan = w.plan(&[vec![w.transfer(0, 1, 11)], vec![other_currency]], vec![]);
    assert_eq!(
        recorded(&plan, 0).failure_reason,
        Some(FailureReason::InsufficientFunds)
    );
    assert_eq!(
        recorded(&plan, 1).failure_reason,
        Some(FailureReason::CurrencyMismatch)
    );
    assert!(plan.entries.is_empty());
    assert!(plan.positions.is_empty());
}

#[test]
fn accounts_the_caller_may_not_use_are_not_found_and_nothing_is_written() {
    let w = World::new(&[100, 0]);
    let mut foreign = w.transfer(0, 1, 1);
    foreign.requested_by = Uuid::now_v7();
    let mut missing = w.transfer(0, 1, 1);
    missing.to = Uuid::now_v7();
    let mut to_system = w.transfer(0, 1, 1);
    to_system.to = w.system();
    let plan = w.plan(&[vec![foreign], vec![missing], vec![to_system]], vec![]);
    for i in 0..3 {
        assert_eq!(rejected_reason(&plan, i), Reason::NotFound);
    }
    assert!(plan.transfers.is_empty() && plan.entries.is_empty() && plan.positions.is_empty());
}

#[test]
fn deposits_come_from_the_system_account_which_may_go_negative() {
    let w = World::new(&[0]);
    let deposit = Posting {
        kind: Kind::Deposit,
        from: w.system(),
        to: w.id(0),
        may_move_any: true,
        ..w.transfer(0, 0, 500)
    };
    let plan = w.plan(&[vec![deposit]], vec![]);
    assert_eq!(recorded(&plan, 0).status, Status::Succeeded);
    assert_eq!(balance(&plan, w.system()), Some(-500));
    assert_eq!(balance(&plan, w.id(0)), Some(500));
}

#[test]
fn a_replay_answers_the_record_and_another_payload_or_requester_is_refused() {
    let w = World::new(&[100, 0]);
    let first = w.transfer(0, 1, 10);
    let row = stored(&first, Status::Succeeded, None);
    let other_amount = Posting {
        amount: 11,
        ..first.clone()
    };
    let other_requester = Posting {
        requested_by: Uuid::now_v7(),
        ..first.clone()
    };
    let plan = w.plan(
        &[
            vec![first.clone()],
            vec![other_amount],
            vec![other_requester],
        ],
        vec![row.clone()],
    );
    assert!(matches!(&plan.outcomes[0], Planned::Stored(r) if *r == row));
    assert_eq!(rejected_reason(&plan, 1), Reason::TransferIdReused);
    assert_eq!(rejected_reason(&plan, 2), Reason::TransferIdReused);
    assert!(plan.transfers.is_empty() && plan.positions.is_empty());
}

#[test]
fn an_id_sent_twice_in_one_batch_is_applied_once_and_answered_twice() {
    let w = World::new(&[100, 0]);
    let p = w.transfer(0, 1, 10);
    let plan = w.plan(&[vec![p.clone()], vec![p.clone()]], vec![]);
    assert_eq!(plan.transfers.len(), 1);
    assert!(matches!(
        (&plan.outcomes[0], &plan.outcomes[1]),
        (Planned::Recorded(0), Planned::Recorded(0))
    ));
    assert_eq!(balance(&plan, w.id(0)), Some(90));
}

#[test]
fn postings_on_one_hot_account_apply_in_order_against_evolving_balances() {
    let w = World::new(&[64, 0]);
    let chains: Vec<Vec<Posting>> = (0..65).map(|_| vec![w.transfer(0, 1, 1)]).collect();
    let plan = w.plan(&chains, vec![]);
    for i in 0..64 {
        assert_eq!(recorded(&plan, i).status, Status::Succeeded, "posting {i}");
    }
    assert_eq!(
        recorded(&plan, 64).failure_reason,
        Some(FailureReason::InsufficientFunds),
        "the 65th finds the account empty"
    );
    assert_eq!(balance(&plan, w.id(0)), Some(0));
    assert_eq!(balance(&plan, w.id(1)), Some(64));
    let running: Vec<i64> = plan
        .entries
        .iter()
        .filter(|e| e.account_id == w.id(1))
        .map(|e| e.balance_after)
        .collect();
    assert_eq!(running, (1..=64).collect::<Vec<_>>());
}

#[test]
fn a_chain_whose_middle_lacks_funds_is_recorded_failed_and_moves_nothing() {
    let w = World::new(&[100, 0, 0]);
    let chain = vec![
        w.transfer(0, 1, 50),
        w.transfer(1, 2, 60),
        w.transfer(0, 2, 10),
    ];
    let after = w.transfer(0, 1, 100);
    let plan = w.plan(&[chain, vec![after]], vec![]);
    let reasons: Vec<_> = (0..3).map(|i| recorded(&plan, i).failure_reason).collect();
    assert_eq!(
        reasons,
        [
            Some(FailureReason::LinkedTransferFailed),
            Some(FailureReason::InsufficientFunds),
            Some(FailureReason::LinkedTransferFailed),
        ]
    );
    // The failed chain left no trace: the next posting sees the whole balance.
    assert_eq!(recorded(&plan, 3).status, Status::Succeeded);
    assert_eq!(balance(&plan, w.id(0)), Some(0));
    assert_eq!(balance(&plan, w.id(1)), Some(100));
    assert_eq!(plan.entries.len(), 2);
}

#[test]
fn a_chain_member_can_spend_what_an_earlier_member_brought() {
    let w = World::new(&[100, 0, 0]);
    let chain = vec![w.transfer(0, 1, 100), w.transfer(1, 2, 100)];
    let plan = w.plan(&[chain], vec![]);
    assert!((0..2).all(|i| recorded(&plan, i).status == Status::Succeeded));
    assert_eq!(balance(&plan, w.id(2)), Some(100));
    // B went up and back down: its balance is unchanged, its entries are not.
    assert_eq!(balance(&plan, w.id(1)), None);
    assert_eq!(plan.entries.len(), 4);
}

#[test]
fn a_chain_with_a_rejected_member_writes_nothing() {
    let w = World::new(&[100, 0]);
    let mut foreign = w.transfer(0, 1, 1);
    foreign.from = Uuid::now_v7();
    let chain = vec![w.transfer(0, 1, 1), foreign, w.transfer(0, 1, 1)];
    let plan = w.plan(&[chain], vec![]);
    assert_eq!(rejected_reason(&plan, 0), Reason::LinkedTransferFailed);
    assert_eq!(rejected_reason(&plan, 1), Reason::NotFound);
    assert_eq!(rejected_reason(&plan, 2), Reason::LinkedTransferFailed);
    assert!(plan.transfers.is_empty() && plan.entries.is_empty() && plan.positions.is_empty());
}

#[test]
fn a_chain_repeating_an_id_is_rejected() {
    let w = World::new(&[100, 0]);
    let p = w.transfer(0, 1, 1);
    let plan = w.plan(&[vec![p.clone(), p]], vec![]);
    assert_eq!(rejected_reason(&plan, 0), Reason::LinkedTransferFailed);
    assert_eq!(rejected_reason(&plan, 1), Reason::InvalidArgument);
    assert!(plan.transfers.is_empty());
}

#[test]
fn a_chain_resent_whole_replays_and_one_mixing_old_and_new_is_refused() {
    let w = World::new(&[100, 0]);
    let (a, b) = (w.transfer(0, 1, 1), w.transfer(0, 1, 2));
    let rows = vec![
        stored(&a, Status::Succeeded, None),
        stored(&b, Status::Succeeded, None),
    ];
    let plan = w.plan(&[vec![a.clone(), b.clone()]], rows.clone());
    assert!(
        plan.outcomes
            .iter()
            .all(|o| matches!(o, Planned::Stored(_)))
    );

    let fresh = w.transfer(0, 1, 3);
    let plan = w.plan(&[vec![a, fresh]], rows);
    assert!(matches!(&plan.outcomes[0], Planned::Stored(_)));
    assert_eq!(rejected_reason(&plan, 1), Reason::LinkedTransferFailed);
    assert!(plan.transfers.is_empty() && plan.positions.is_empty());
}

#[test]
fn a_balance_beyond_the_ledgers_range_is_rejected_not_recorded() {
    let mut w = World::new(&[10, 0]);
    w.accounts[1].balance = i64::MAX - 5;
    let chain = vec![w.transfer(0, 1, 1), w.transfer(0, 1, 9)];
    let plan = w.plan(&[chain], vec![]);
    assert_eq!(rejected_reason(&plan, 0), Reason::LinkedTransferFailed);
    assert_eq!(rejected_reason(&plan, 1), Reason::BalanceLimit);
    assert!(plan.transfers.is_empty() && plan.positions.is_empty());
}

#[test]
fn a_hold_reserves_without_entries_and_counts_against_the_available_balance() {
    let w = World::new(&[100, 0]);
    let hold = w.hold(0, 1, 70);
    let plan = w.plan(
        &[
            vec![hold],
            vec![w.transfer(0, 1, 31)],
            vec![w.transfer(0, 1, 30)],
        ],
        vec![],
    );
    assert_eq!(recorded(&plan, 0).status, Status::Pending);
    assert_eq!(recorded(&plan, 0).timeout_ms, Some(60_000));
    assert_eq!(
        recorded(&plan, 1).failure_reason,
        Some(FailureReason::InsufficientFunds),
        "70 of 100 are held"
    );
    assert_eq!(recorded(&plan, 2).status, Status::Succeeded);
    let from = position(&plan, w.id(0)).expect("moved");
    assert_eq!((from.balance, from.pending_debits), (70, 70));
    let to = position(&plan, w.id(1)).expect("moved");
    assert_eq!((to.balance, to.pending_credits), (30, 70));
    assert_eq!(
        plan.entries.len(),
        2,
        "only the plain transfer wrote entries"
    );
}

#[test]
fn a_partial_post_moves_part_and_releases_the_rest() {
    let mut w = World::new(&[100, 0]);
    let (hold, row) = w.stored_hold(70);
    let plan = w.plan_ops(
        &[vec![w.settle(hold.id, Settle::Post(Some(40)))]],
        vec![row],
    );
    let Planned::Stored(after) = &plan.outcomes[0] else {
        panic!("{:?}", plan.outcomes[0]);
    };
    assert_eq!(
        (after.status, after.posted_amount),
        (Status::Posted, Some(40))
    );
    assert_eq!(
        position(&plan, w.id(0)),
        Some(Position {
            balance: 60,
            pending_debits: 0,
            pending_credits: 0
        })
    );
    assert_eq!(
        position(&plan, w.id(1)),
        Some(Position {
            balance: 40,
            pending_debits: 0,
            pending_credits: 0
        })
    );
    assert_eq!(
        plan.entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        [-40, 40]
    );
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].status, Status::Posted);
}

#[test]
fn settling_twice_answers_the_first_result_or_is_refused() {
    let mut w = World::new(&[100, 0]);
    let (hold, row) = w.stored_hold(70);
    let plan = w.plan_ops(
        &[
            vec![w.settle(hold.id, Settle::Post(None))],
            vec![w.settle(hold.id, Settle::Post(None))],
            vec![w.settle(hold.id, Settle::Post(Some(5)))],
            vec![w.settle(hold.id, Settle::Void)],
        ],
        vec![row],
    );
    assert!(matches!(&plan.outcomes[1], Planned::Stored(r) if r.posted_amount == Some(70)));
    assert_eq!(
        rejected_reason(&plan, 2),
        Reason::PendingTransferAlreadyPosted
    );
    assert_eq!(
        rejected_reason(&plan, 3),
        Reason::PendingTransferAlreadyPosted
    );
    assert_eq!(plan.entries.len(), 2, "posted once");
}

#[test]
fn an_expired_hold_is_released_and_can_be_neither_posted_nor_voided() {
    let mut w = World::new(&[100, 0]);
    let (hold, row) = w.stored_hold(70);
    let expired = [ExpiredHold {
        id: hold.id,
        from_account_id: w.id(0),
        to_account_id: w.id(1),
        amount: 70,
    }];
    let ops = [
        vec![w.settle(hold.id, Settle::Post(None))],
        vec![w.transfer(0, 1, 100).into()],
    ];
    let chains: Vec<&[Op]> = ops.iter().map(Vec::as_slice).collect();
    let plan = plan(
        &chains,
        Loaded {
            recorded: vec![row],
            accounts: w.accounts.clone(),
            expired: expired.to_vec(),
            quotes: Vec::new(),
        },
    );
    assert_eq!(rejected_reason(&plan, 0), Reason::PendingTransferExpired);
    assert_eq!(
        recorded(&plan, 1).status,
        Status::Succeeded,
        "the hold no longer counts"
    );
    assert_eq!(position(&plan, w.id(0)).map(|p| p.pending_debits), Some(0));
    assert!(
        plan.changes.is_empty(),
        "the engine wrote the expiry itself"
    );
}

#[test]
fn an_overdraft_limit_lets_the_available_balance_go_down_to_minus_the_limit() {
    let mut w = World::new(&[10, 0]);
    w.accounts[0].overdraft_limit = 50;
    let plan = w.plan(
        &[vec![w.transfer(0, 1, 60)], vec![w.transfer(0, 1, 1)]],
        vec![],
    );
    assert_eq!(recorded(&plan, 0).status, Status::Succeeded);
    assert_eq!(
        recorded(&plan, 1).failure_reason,
        Some(FailureReason::InsufficientFunds)
    );
    assert_eq!(balance(&plan, w.id(0)), Some(-50));
}

#[test]
fn a_closed_account_refuses_transfers_in_and_out() {
    let mut w = World::new(&[10, 0, 0]);
    w.accounts[1].closed = true;
    let plan = w.plan(
        &[vec![w.transfer(0, 1, 1)], vec![w.transfer(1, 2, 1)]],
        vec![],
    );
    for i in 0..2 {
        assert_eq!(
            recorded(&plan, i).failure_reason,
            Some(FailureReason::AccountClosed)
        );
    }
}

#[test]
fn reversals_are_made_by_the_payee_and_never_pass_the_original() {
    let mut w = World::new(&[0, 100]);
    let original = w.transfer(0, 1, 100);
    w.accounts[0].balance = 0;
    let row = stored(&original, Status::Succeeded, None);
    let by_payer = w.reverse(original.id, Some(10));
    let payee = Uuid::now_v7();
    w.accounts[1].owner_id = Some(payee);
    let as_payee = |op: Op| match op {
        Op::Reverse(r) => Op::Reverse(Reversal {
            requested_by: payee,
            ..r
        }),
        other => other,
    };
    let plan = w.plan_ops(
        &[
            vec![by_payer.clone()],
            vec![as_payee(w.reverse(original.id, Some(60)))],
            vec![as_payee(w.reverse(original.id, Some(41)))],
            vec![as_payee(w.reverse(original.id, None))],
            vec![as_payee(w.reverse(original.id, None))],
        ],
        vec![row],
    );
    assert_eq!(
        rejected_reason(&plan, 0),
        Reason::PermissionDenied,
        "the payer cannot claw back"
    );
    assert_eq!(recorded(&plan, 1).kind, Kind::Reversal);
    assert_eq!(recorded(&plan, 1).reverses_transfer_id, Some(original.id));
    assert_eq!(rejected_reason(&plan, 2), Reason::ReversalExceedsOriginal);
    assert_eq!(recorded(&plan, 3).amount, 40, "omitted: what is left");
    assert_eq!(rejected_reason(&plan, 4), Reason::ReversalExceedsOriginal);
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].reversed_amount, 100);
    assert_eq!(balance(&plan, w.id(0)), Some(100));
}

/// Customer accounts 0 and 1 (100 and 0), a liquidity account holding `liquidity`, and a quote of
/// the owner; `convert` builds the two legs of a conversion of 10 into `credit` (9) at that
/// quote. (One currency and one liquidity account for both legs: the rules are per leg.)
struct Exchange {
    world: World,
    liquidity: Uuid,
    quote: QuoteState,
    credit: i64,
}

impl Exchange {
    fn new(liquidity: i64) -> Self {
        let mut world = World::new(&[100, 0]);
        let id = Uuid::now_v7();
        world.accounts.push(LockedAccount {
            id,
            owner_id: None,
            is_system: false,
            is_liquidity: true,
            currency: USD.into(),
            balance: liquidity,
            pending_debits: 0,
            pending_credits: 0,
            overdraft_limit: 0,
            closed: false,
            ..Default::default()
        });
        let quote = QuoteState {
            id: Uuid::now_v7(),
            owner_id: world.owner,
            expired: false,
            conversion_id: None,
        };
        Self {
            world,
            liquidity: id,
            quote,
            credit: 9,
        }
    }

    fn convert(&self, conversion_id: Uuid) -> Vec<Op> {
        let base = self.world.transfer(0, 1, 10);
        let debit = Posting {
            kind: Kind::Conversion,
            to: self.liquidity,
            claim: Some(QuoteClaim {
                quote_id: self.quote.id,
                conversion_id,
            }),
            ..base.clone()
        };
        let credit = Posting {
            id: Uuid::now_v7(),
            kind: Kind::Conversion,
            from: self.liquidity,
            amount: self.credit,
            ..base
        };
        vec![debit.into(), credit.into()]
    }

    fn plan(&self, chains: &[Vec<Op>]) -> Plan {
        let chains: Vec<&[Op]> = chains.iter().map(Vec::as_slice).collect();
        plan(
            &chains,
            Loaded {
                accounts: self.world.accounts.clone(),
                quotes: vec![self.quote.clone()],
                ..Loaded::default()
            },
        )
    }
}

#[test]
fn a_quote_serves_one_conversion_even_when_two_share_a_batch() {
    let x = Exchange::new(50);
    let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
    let plan = x.plan(&[x.convert(first), x.convert(second)]);
    assert_eq!(recorded(&plan, 0).status, Status::Succeeded);
    assert_eq!(recorded(&plan, 1).status, Status::Succeeded);
    assert_eq!(
        recorded(&plan, 2).failure_reason,
        Some(FailureReason::QuoteUsed)
    );
    assert_eq!(
        recorded(&plan, 3).failure_reason,
        Some(FailureReason::LinkedTransferFailed)
    );
    assert_eq!(
        plan.claims,
        [QuoteClaim {
            quote_id: x.quote.id,
            conversion_id: first
        }]
    );
    // The liquidity account received 10 and paid 9.
    assert_eq!(balance(&plan, x.liquidity), Some(51));
}

#[test]
fn a_short_liquidity_account_or_an_expired_quote_records_the_conversion_failed() {
    // 5, plus the 10 the debit leg brings, cannot pay 20.
    let mut x = Exchange::new(5);
    x.credit = 20;
    let plan = x.plan(&[x.convert(Uuid::now_v7())]);
    assert_eq!(
        recorded(&plan, 0).failure_reason,
        Some(FailureReason::LinkedTransferFailed)
    );
    assert_eq!(
        recorded(&plan, 1).failure_reason,
        Some(FailureReason::InsufficientLiquidity)
    );
    assert!(plan.claims.is_empty() && plan.entries.is_empty());

    let mut x = Exchange::new(50);
    x.quote.expired = true;
    let plan = x.plan(&[x.convert(Uuid::now_v7())]);
    assert_eq!(
        recorded(&plan, 0).failure_reason,
        Some(FailureReason::QuoteExpired)
    );
    assert!(plan.claims.is_empty());
    // Another user's quote looks missing, and nothing is written.
    let mut x = Exchange::new(50);
    x.quote.owner_id = Uuid::now_v7();
    let plan = x.plan(&[x.convert(Uuid::now_v7())]);
    assert_eq!(rejected_reason(&plan, 0), Reason::NotFound);
    assert!(plan.transfers.is_empty());
}

#[test]
fn events_follow_each_change_with_the_positions_right_after_it() {
    let w = World::new(&[100, 0]);
    let failed = w.transfer(0, 1, 1_000);
    let plan = w.plan(
        &[
            vec![w.transfer(0, 1, 30)],
            vec![failed.clone()],
            vec![w.transfer(0, 1, 20)],
        ],
        vec![],
    );
    let kinds: Vec<(EventType, Option<Status>, i64, i64)> = plan
        .events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.transfer.map(|t| t.1),
                e.account.balance,
                e.counterparty.unwrap().1.balance,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::TransferCreated, Some(Status::Succeeded), 70, 30),
            (EventType::TransferCreated, Some(Status::Failed), 70, 30),
            (EventType::TransferCreated, Some(Status::Succeeded), 50, 50),
        ]
    );
    // A replay changes nothing and has no event.
    let replayed = w.plan(
        &[vec![failed.clone()]],
        vec![stored(
            &failed,
            Status::Failed,
            Some(FailureReason::InsufficientFunds),
        )],
    );
    assert!(replayed.events.is_empty());
}

#[test]
fn a_monitor_fires_when_its_condition_comes_to_hold_and_again_only_after_it_stopped() {
    let mut w = World::new(&[200, 0]);
    let monitor = Uuid::now_v7();
    // BELOW 100 on account 0, not holding at 200.
    w.accounts[0].monitor_ids = vec![monitor];
    w.accounts[0].monitor_above = vec![false];
    w.accounts[0].monitor_thresholds = vec![100];
    w.accounts[0].monitor_triggered = vec![false];
    let plan = w.plan(
        &[
            vec![w.transfer(0, 1, 120)], // 80: crosses below, fires
            vec![w.transfer(0, 1, 10)],  // 70: still below, nothing
            vec![w.transfer(1, 0, 50)],  // 120: back above, armed again
            vec![w.transfer(0, 1, 30)],  // 90: crosses again, fires
        ],
        vec![],
    );
    let fired: Vec<(usize, i64)> = plan
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventType::BalanceMonitorTriggered)
        .map(|(i, e)| {
            assert_eq!((e.monitor, e.account_id), (Some(monitor), w.id(0)));
            (i, e.account.balance)
        })
        .collect();
    // Each right after the transfer that crossed.
    assert_eq!(fired, [(1, 80), (5, 90)]);
    assert_eq!(plan.monitor_changes, [(monitor, true)]);
    // Ending where it began (armed) writes no change.
    let plan = w.plan(
        &[vec![w.transfer(0, 1, 150)], vec![w.transfer(1, 0, 150)]],
        vec![],
    );
    assert_eq!(plan.monitor_changes, []);
    assert_eq!(
        plan.events
            .iter()
            .filter(|e| e.kind == EventType::BalanceMonitorTriggered)
            .count(),
        1
    );
}
