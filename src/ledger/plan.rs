//! The rules of a batch, with no I/O: given the operations of one batch (as chains, in arrival
//! order), the transfers already recorded under the ids they name and the locked accounts,
//! decide what each operation comes to and which rows to write.
//!
//! Operations are applied in order against account positions as they evolve in memory, so many
//! postings on one account cost one row lock and one update. Each gets exactly the answer a
//! lone call would have had:
//! - a replay (same id, same requester, same payload) answers the recorded transfer, even when
//!   it was recorded earlier in the same batch; another payload or requester is
//!   `ALREADY_EXISTS` (`TRANSFER_ID_REUSED`);
//! - an account that is missing or not the caller's to use is `NOT_FOUND`, and nothing is
//!   written for that operation;
//! - a ledger rule (insufficient funds, currency mismatch, a closed account) records the
//!   posting FAILED;
//! - otherwise it succeeds: one transfer row and two entries summing to zero, or, for a hold,
//!   one pending transfer row and the amount reserved on both accounts.
//!
//! Funds: a customer account may spend down to `−overdraft_limit` of its *available* balance
//! (balance − pending debits); pending credits are not spendable until posted.
//!
//! Holds are settled by a post (all or part of the amount is moved, the rest released; entries
//! are written then) or a void (all released). A hold past its expiry was marked expired by the
//! engine before planning (see [`super::engine`]), so it can be neither.
//!
//! A reversal is a new transfer from the original's destination back to its source; the
//! original's `reversed_amount` grows by it and never passes what the original moved.
//!
//! A conversion is a chain of two legs through the liquidity accounts of its two currencies;
//! its first leg carries the quote, which must be the requester's, unexpired and unused by any
//! other conversion (`QUOTE_EXPIRED`, `QUOTE_USED` otherwise), and is marked used when the
//! chain holds. A liquidity account never goes below zero (`INSUFFICIENT_LIQUIDITY`).
//!
//! A chain of several operations succeeds or fails as a unit (TigerBeetle's linked events):
//! - if a member is rejected (nothing could be written for it), nothing is written for the
//!   chain: that member answers its error, the others `LINKED_TRANSFER_FAILED`;
//! - if a member is refused by a rule, evaluation stops there and every new transfer of the
//!   chain is recorded FAILED (that one with its reason, the others with
//!   `linked_transfer_failed`), so resending the chain replays the same answers;
//! - a chain whose members were all recorded before replays them; one that mixes recorded and
//!   new members cannot be applied as a unit, so its new members answer
//!   `LINKED_TRANSFER_FAILED` and nothing is written.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{
    FailureReason, Kind, Status,
    posting::{Op, Posting, QuoteClaim, Reversal, Settle, Settlement},
};
use crate::{
    error::{Error, Reason},
    store::{
        accounts::{LockedAccount, MonitorState, Position},
        events::{EventType, NewEvent},
        exchange::QuoteState,
        transfers::{ExpiredHold, NewEntry, NewTransfer, TransferChange, TransferRow},
    },
};

/// What one operation comes to.
#[derive(Debug)]
pub enum Planned {
    /// Recorded by an earlier batch: the row as it stands after this operation.
    Stored(TransferRow),
    /// Recorded by this batch (or replaying one recorded earlier in it): an index into
    /// [`Plan::transfers`].
    Recorded(usize),
    /// Nothing is written for it.
    Rejected(Error),
}

/// The decisions and the rows of one batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// One per operation, in the order the chains listed them.
    pub outcomes: Vec<Planned>,
    /// Transfer rows to insert, in application order.
    pub transfers: Vec<NewTransfer>,
    /// Entry rows to insert, in application order.
    pub entries: Vec<NewEntry>,
    /// Final position of every account that moved, in id order.
    pub positions: Vec<(Uuid, Position)>,
    /// What changed in transfers recorded before this batch (holds settled, reversed sums).
    pub changes: Vec<TransferChange>,
    /// The quotes conversions of this batch used.
    pub claims: Vec<QuoteClaim>,
    /// The change feed's events, in the order the changes applied: each new transfer (FAILED
    /// ones too), each hold posted, voided or expired, with both positions right after it.
    /// Replays and rejected operations change nothing and have none. A balance monitor whose
    /// condition comes to hold fires its event right after the change that made it hold.
    pub events: Vec<NewEvent>,
    /// Balance monitors whose state changed: (monitor, whether its condition holds now).
    pub monitor_changes: Vec<(Uuid, bool)>,
}

/// What a batch reads besides its operations: the transfers already stored under the ids the
/// operations name, the accounts they touch (as locked), the holds the engine has just marked
/// expired (their reservations are released here), and the quotes conversions name (locked).
#[derive(Debug, Default)]
pub struct Loaded {
    pub recorded: Vec<TransferRow>,
    pub accounts: Vec<LockedAccount>,
    pub expired: Vec<ExpiredHold>,
    pub quotes: Vec<QuoteState>,
}

/// Decides a batch.
pub fn plan(chains: &[&[Op]], loaded: Loaded) -> Plan {
    let Loaded {
        recorded,
        accounts,
        expired,
        quotes,
    } = loaded;
    let mut batch = Batch::new(recorded, accounts, &expired);
    batch.quotes = quotes.into_iter().map(|q| (q.id, q)).collect();
    for chain in chains {
        batch.chain(chain);
    }
    batch.finish()
}

/// A transfer id this batch already knows: recorded before, or planned by an earlier chain.
enum Known {
    Stored(Box<TransferRow>),
    Planned(usize),
}

/// The part of a recorded transfer that a batch may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled {
    status: Status,
    posted_amount: Option<i64>,
    reversed_amount: i64,
}

/// A known transfer, as the rules read it.
struct View {
    kind: Kind,
    requested_by: Uuid,
    from: Uuid,
    to: Uuid,
    amount: i64,
    currency: String,
    is_hold: bool,
    state: Settled,
}

/// A chain member after the checks that need no balance.
enum Member {
    Replay(Planned),
    Reject(Error),
    /// A new transfer (a reversal too, resolved into its posting) to apply and record.
    New {
        posting: Posting,
        fingerprint: [u8; 32],
        reverses: Option<Uuid>,
    },
    /// A post or void to apply.
    Settle,
}

/// A chain member that applied: a settlement's answer, and the event of what it changed.
struct Applied {
    answer: Option<Planned>,
    event: Option<NewEvent>,
}

/// Why applying an operation stopped its chain.
enum Stop {
    /// A ledger rule: the chain's new transfers are recorded FAILED.
    Refused(FailureReason),
    /// Nothing can be written.
    Rejected(Error),
}

struct Batch {
    known: HashMap<Uuid, Known>,
    /// The state of each stored transfer as loaded (after expiry), to tell what changed.
    loaded: HashMap<Uuid, Settled>,
    /// (transfer, state before) for every change of a known transfer, newest last.
    undo: Vec<(Uuid, Settled)>,
    ledger: Balances,
    /// The quotes conversions name, as locked; used ones are marked as chains hold.
    quotes: HashMap<Uuid, QuoteState>,
    /// The balance monitors of the locked accounts, states evolving with the events.
    monitors: HashMap<Uuid, Vec<MonitorState>>,
    /// Their states as loaded, to tell which changed.
    monitors_loaded: HashMap<Uuid, Vec<MonitorState>>,
    plan: Plan,
}

impl Batch {
    fn new(
        recorded: Vec<TransferRow>,
        accounts: Vec<LockedAccount>,
        expired: &[ExpiredHold],
    ) -> Self {
        let monitors: HashMap<Uuid, Vec<MonitorState>> = accounts
            .iter()
            .filter(|a| !a.monitor_ids.is_empty())
            .map(|a| (a.id, a.monitors()))
            .collect();
        let mut ledger = Balances::new(accounts);
        let expired_ids: HashSet<Uuid> = expired.iter().map(|h| h.id).collect();
        let mut expiries = Vec::with_capacity(expired.len());
        for hold in expired {
            ledger.release(hold.from_account_id, hold.to_account_id, hold.amount);
            expiries.push(ledger.event(
                EventType::TransferExpired,
                (hold.id, Status::Expired, None),
                hold.from_account_id,
                hold.to_account_id,
            ));
        }
        // Expiry is not a change of this plan: the engine has written it already.
        ledger.undo.clear();
        let mut known = HashMap::with_capacity(recorded.len());
        let mut loaded = HashMap::with_capacity(recorded.len());
        for mut row in recorded {
            if expired_ids.contains(&row.id) {
                row.status = Status::Expired;
            }
            loaded.insert(row.id, settled_of_row(&row));
            known.insert(row.id, Known::Stored(Box::new(row)));
        }
        let mut batch = Self {
            known,
            loaded,
            undo: Vec::new(),
            ledger,
            quotes: HashMap::new(),
            monitors_loaded: monitors.clone(),
            monitors,
            plan: Plan::default(),
        };
        for event in expiries {
            batch.push_event(event);
        }
        batch
    }

    /// Records an event of a change that holds, and the events of the balance monitors it
    /// makes fire: those whose condition did not hold and now does (one that keeps holding
    /// fires no more; one that stops holding is armed again).
    fn push_event(&mut self, event: NewEvent) {
        let moved: Vec<(Uuid, i64)> = std::iter::once((event.account_id, event.account))
            .chain(event.counterparty)
            .map(|(id, p)| (id, p.balance))
            .collect();
        self.plan.events.push(event);
        for (account, balance) in moved {
            let Some(monitors) = self.monitors.get_mut(&account) else {
                continue;
            };
            for monitor in monitors.iter_mut() {
                let holds = monitor.holds(balance);
                if holds == monitor.triggered {
                    continue;
                }
                monitor.triggered = holds;
                if holds {
                    let position = self.ledger.accounts[&account].position;
                    self.plan.events.push(NewEvent {
                        monitor: Some(monitor.id),
                        ..NewEvent::account(
                            EventType::BalanceMonitorTriggered,
                            account,
                            Position {
                                balance,
                                ..position
                            },
                        )
                    });
                }
            }
        }
    }

    fn finish(mut self) -> Plan {
        self.plan.positions = self.ledger.changed();
        let mut monitor_changes: Vec<(Uuid, bool)> = Vec::new();
        for (account, monitors) in &self.monitors {
            let loaded = self.monitors_loaded.get(account);
            for m in monitors {
                let before = loaded.and_then(|l| l.iter().find(|x| x.id == m.id));
                if before.is_some_and(|b| b.triggered != m.triggered) {
                    monitor_changes.push((m.id, m.triggered));
                }
            }
        }
        monitor_changes.sort_unstable();
        self.plan.monitor_changes = monitor_changes;
        let mut changes: Vec<TransferChange> = self
            .known
            .iter()
            .filter_map(|(id, k)| match k {
                Known::Stored(row) => {
                    let now = settled_of_row(row);
                    (self.loaded.get(id) != Some(&now)).then_some(TransferChange {
                        id: *id,
                        status: now.status,
                        posted_amount: now.posted_amount,
                        reversed_amount: now.reversed_amount,
                    })
                }
                Known::Planned(_) => None,
            })
            .collect();
        changes.sort_unstable_by_key(|c| c.id);
        self.plan.changes = changes;
        self.plan
    }

    fn view(&self, id: Uuid) -> Option<View> {
        Some(match self.known.get(&id)? {
            Known::Stored(r) => View {
                kind: r.kind,
                requested_by: r.requested_by,
                from: r.from_account_id,
                to: r.to_account_id,
                amount: r.amount,
                currency: r.currency.clone(),
                is_hold: r.timeout_ms.is_some(),
                state: settled_of_row(r),
            },
            Known::Planned(i) => {
                let t = &self.plan.transfers[*i];
                View {
                    kind: t.kind,
                    requested_by: t.requested_by,
                    from: t.from_account_id,
                    to: t.to_account_id,
                    amount: t.amount,
                    currency: t.currency.clone(),
                    is_hold: t.timeout_ms.is_some(),
                    state: Settled {
                        status: t.status,
                        posted_amount: t.posted_amount,
                        reversed_amount: t.reversed_amount,
                    },
                }
            }
        })
    }

    /// Changes a known transfer, with an undo record.
    fn set(&mut self, id: Uuid, state: Settled) {
        let before = self.view(id).expect("only known transfers change").state;
        self.undo.push((id, before));
        self.write(id, state);
    }

    fn write(&mut self, id: Uuid, state: Settled) {
        match self
            .known
            .get_mut(&id)
            .expect("only known transfers change")
        {
            Known::Stored(row) => {
                row.status = state.status;
                row.posted_amount = state.posted_amount;
                row.reversed_amount = state.reversed_amount;
            }
            Known::Planned(i) => {
                let t = &mut self.plan.transfers[*i];
                t.status = state.status;
                t.posted_amount = state.posted_amount;
                t.reversed_amount = state.reversed_amount;
            }
        }
    }

    fn rollback(&mut self, (account_mark, transfer_mark): (usize, usize)) {
        self.ledger.undo(account_mark);
        while self.undo.len() > transfer_mark {
            let (id, before) = self.undo.pop().expect("len > mark");
            self.write(id, before);
        }
    }

    /// The answer naming a known transfer as it stands now.
    fn answer(&self, id: Uuid) -> Planned {
        match self.known.get(&id).expect("answers name known transfers") {
            Known::Stored(row) => Planned::Stored((**row).clone()),
            Known::Planned(i) => Planned::Recorded(*i),
        }
    }

    fn chain(&mut self, chain: &[Op]) {
        let members = self.members(chain);
        let Some(members) = self.unless_answered_without_applying(members) else {
            return;
        };
        let mark = (self.ledger.mark(), self.undo.len());
        let mut entries = Vec::with_capacity(2 * chain.len());
        match self.apply(chain, &members, &mut entries) {
            Ok(applied) => {
                self.conclude(members, applied);
                self.plan.entries.append(&mut entries);
            }
            Err((at, Stop::Refused(reason))) => {
                self.rollback(mark);
                self.record_failed(members, at, reason);
            }
            Err((at, Stop::Rejected(err))) => {
                self.rollback(mark);
                let mut err = Some(err);
                for i in 0..chain.len() {
                    self.plan.outcomes.push(Planned::Rejected(if i == at {
                        err.take().expect("one error for the failing member")
                    } else {
                        linked_failed(CHAIN_REJECTED)
                    }));
                }
            }
        }
    }

    /// Each operation of a chain after the checks that need no balance.
    fn members(&self, chain: &[Op]) -> Vec<Member> {
        let mut ids = HashSet::with_capacity(chain.len());
        chain
            .iter()
            .map(|op| {
                let records = match op {
                    Op::Create(p) => Some(p.id),
                    Op::Reverse(r) => Some(r.id),
                    Op::Settle(_) => None,
                };
                if records.is_some_and(|id| !ids.insert(id)) {
                    return Member::Reject(Error::invalid(
                        "transfer_id",
                        "repeats an earlier transfer of the same linked chain",
                    ));
                }
                self.check(op)
            })
            .collect()
    }

    /// Answers a chain that applies nothing (a member rejected, recorded and new members mixed,
    /// or every member a replay) and returns `None`; else gives the members back.
    fn unless_answered_without_applying(&mut self, members: Vec<Member>) -> Option<Vec<Member>> {
        let rejected = members.iter().any(|m| matches!(m, Member::Reject(_)));
        let replayed = members
            .iter()
            .filter(|m| matches!(m, Member::Replay(_)))
            .count();
        if !rejected && replayed == 0 {
            return Some(members);
        }
        // Nothing is written for the chain. What was recorded before stays what it was.
        let why = if rejected {
            CHAIN_REJECTED
        } else {
            "its linked chain mixes transfers recorded before with new ones, so it cannot be \
             applied as a unit; nothing was written for this one"
        };
        for member in members {
            self.plan.outcomes.push(match member {
                Member::Replay(planned) => planned,
                Member::Reject(err) => Planned::Rejected(err),
                // Only when some member was rejected or the chain is mixed.
                Member::New { .. } | Member::Settle => Planned::Rejected(linked_failed(why)),
            });
        }
        None
    }

    /// Applies the members in order: for each, the answer of a settlement (`None` for a new
    /// transfer, recorded once the whole chain holds) and the event it makes, if it changed
    /// anything; or where and why the chain stopped.
    fn apply(
        &mut self,
        chain: &[Op],
        members: &[Member],
        entries: &mut Vec<NewEntry>,
    ) -> Result<Vec<Applied>, (usize, Stop)> {
        let mut applied = Vec::with_capacity(chain.len());
        for (i, (op, member)) in chain.iter().zip(members).enumerate() {
            let one = match (op, member) {
                (Op::Settle(s), Member::Settle) => self.settle_with_event(s, entries),
                (
                    _,
                    Member::New {
                        posting, reverses, ..
                    },
                ) => self
                    .quote_usable(posting)
                    .and_then(|()| self.create(posting, *reverses, entries))
                    .map(|()| Applied {
                        answer: None,
                        event: Some(self.ledger.event(
                            EventType::TransferCreated,
                            // The status is the record's, set by `conclude`.
                            (posting.id, Status::Succeeded, None),
                            posting.from,
                            posting.to,
                        )),
                    }),
                _ => unreachable!("only new members and settlements remain"),
            };
            applied.push(one.map_err(|why| (i, why))?);
        }
        Ok(applied)
    }

    /// [`Batch::settle`], and the event of a post or void that changed the hold (the same
    /// settlement again changes nothing and makes none).
    fn settle_with_event(
        &mut self,
        s: &Settlement,
        entries: &mut Vec<NewEntry>,
    ) -> Result<Applied, Stop> {
        let before = self.view(s.id).expect("checked").state;
        let answer = self.settle(s, entries)?;
        let hold = self.view(s.id).expect("checked");
        let kind = match hold.state.status {
            Status::Posted => EventType::TransferPosted,
            _ => EventType::TransferVoided,
        };
        let event = (hold.state != before).then(|| {
            self.ledger.event(
                kind,
                (s.id, hold.state.status, hold.state.posted_amount),
                hold.from,
                hold.to,
            )
        });
        Ok(Applied {
            answer: Some(answer),
            event,
        })
    }

    /// The chain held: new transfers are recorded, settlements answered, events kept.
    fn conclude(&mut self, members: Vec<Member>, applied: Vec<Applied>) {
        for (member, Applied { answer, event }) in members.into_iter().zip(applied) {
            match (member, answer) {
                (Member::Settle, Some(answer)) => {
                    self.plan.outcomes.push(answer);
                    if let Some(event) = event {
                        self.push_event(event);
                    }
                }
                (
                    Member::New {
                        posting,
                        fingerprint,
                        reverses,
                    },
                    None,
                ) => {
                    if let Some(claim) = posting.claim {
                        self.quotes
                            .entry(claim.quote_id)
                            .and_modify(|q| q.conversion_id = Some(claim.conversion_id));
                        self.plan.claims.push(claim);
                    }
                    let status = self.record(&posting, fingerprint, reverses, None);
                    if let Some(mut event) = event {
                        event.transfer = Some((posting.id, status, None));
                        self.push_event(event);
                    }
                }
                _ => unreachable!("a settlement answers, a new transfer is recorded"),
            }
        }
    }

    /// A rule refused member `at`: every new transfer of the chain is recorded FAILED (that
    /// one with `reason`), and its settlements moved nothing.
    fn record_failed(&mut self, members: Vec<Member>, at: usize, reason: FailureReason) {
        for (i, member) in members.into_iter().enumerate() {
            match member {
                Member::New {
                    posting,
                    fingerprint,
                    reverses,
                } => {
                    let reason = if i == at {
                        reason
                    } else {
                        FailureReason::LinkedTransferFailed
                    };
                    self.record(&posting, fingerprint, reverses, Some(reason));
                    // Moved nothing: the positions are those after the rollback.
                    let event = self.ledger.event(
                        EventType::TransferCreated,
                        (posting.id, Status::Failed, None),
                        posting.from,
                        posting.to,
                    );
                    self.push_event(event);
                }
                _ => self
                    .plan
                    .outcomes
                    .push(Planned::Rejected(linked_failed(CHAIN_REJECTED))),
            }
        }
    }

    /// The checks that need no balance: replay, who may use which accounts and transfers.
    fn check(&self, op: &Op) -> Member {
        match op {
            Op::Create(p) => {
                let fingerprint = p.fingerprint();
                if let Some(replay) = self.replay(p.id, p.requested_by, &fingerprint) {
                    return replay;
                }
                // Another user's quote looks like a missing one.
                if let Some(claim) = &p.claim
                    && self
                        .quotes
                        .get(&claim.quote_id)
                        .is_none_or(|q| q.owner_id != p.requested_by)
                {
                    return Member::Reject(Error::NotFound("quote"));
                }
                match (self.ledger.get(p.from), self.ledger.get(p.to)) {
                    (Some(from), Some(to)) if visible(p, from, to) => Member::New {
                        posting: p.clone(),
                        fingerprint,
                        reverses: None,
                    },
                    _ => Member::Reject(Error::NotFound("account")),
                }
            }
            Op::Reverse(r) => self.check_reversal(r),
            Op::Settle(s) => self.check_settlement(s),
        }
    }

    /// A known id: the replay, or `TRANSFER_ID_REUSED` for another payload or requester.
    fn replay(&self, id: Uuid, requested_by: Uuid, fingerprint: &[u8; 32]) -> Option<Member> {
        let known = self.known.get(&id)?;
        let (by, stored): (Uuid, &[u8]) = match known {
            Known::Stored(row) => (row.requested_by, &row.fingerprint),
            Known::Planned(i) => (
                self.plan.transfers[*i].requested_by,
                &self.plan.transfers[*i].fingerprint,
            ),
        };
        // A different requester gets the same answer as a different payload, so it learns
        // nothing about the transfer.
        if by != requested_by || stored != fingerprint.as_slice() {
            return Some(Member::Reject(Error::refused(
                Reason::TransferIdReused,
                "this id was already used for a different request",
            )));
        }
        Some(Member::Replay(self.answer(id)))
    }

    /// Whether the requester may see transfer `t` at all (requested it, owns its source, or owns
    /// its destination and it moved or holds money there).
    fn sees(&self, t: &View, requester: Uuid, may_move_any: bool) -> bool {
        let owns = |id: Uuid| self.ledger.get(id).and_then(|a| a.owner_id) == Some(requester);
        may_move_any
            || t.requested_by == requester
            || owns(t.from)
            || (owns(t.to)
                && matches!(
                    t.state.status,
                    Status::Succeeded | Status::Pending | Status::Posted
                ))
    }

    fn check_settlement(&self, s: &Settlement) -> Member {
        let Some(hold) = self.view(s.id) else {
            return Member::Reject(Error::NotFound("transfer"));
        };
        // Who may create a transfer out of the source may settle it.
        let owner = self.ledger.get(hold.from).and_then(|a| a.owner_id);
        if s.may_move_any || owner == Some(s.requested_by) {
            return Member::Settle;
        }
        Member::Reject(if self.sees(&hold, s.requested_by, false) {
            Error::permission_denied(
                "only who may move money out of the source account (its owner, a banker or an \
                 admin) may post or void its holds",
            )
        } else {
            Error::NotFound("transfer")
        })
    }

    fn check_reversal(&self, r: &Reversal) -> Member {
        let fingerprint = r.fingerprint();
        if let Some(replay) = self.replay(r.id, r.requested_by, &fingerprint) {
            return replay;
        }
        let Some(original) = self.view(r.original) else {
            return Member::Reject(Error::NotFound("transfer"));
        };
        // The money goes back out of the original's destination: its owner gives it back (a
        // customer cannot claw a payment back alone); bankers and admins may reverse anything,
        // and only they reverse deposits and withdrawals (one side is a system account).
        let payee = self.ledger.get(original.to).and_then(|a| a.owner_id);
        let allowed =
            r.may_move_any || (original.kind == Kind::Transfer && payee == Some(r.requested_by));
        if !allowed {
            return Member::Reject(if self.sees(&original, r.requested_by, false) {
                Error::permission_denied(
                    "a transfer is reversed by the owner of the account it went to (who gives the \
                     money back), a banker or an admin",
                )
            } else {
                Error::NotFound("transfer")
            });
        }
        // A conversion leg is one half of an exchange at a quoted rate: reversing one side alone
        // would leave the other.
        if matches!(original.kind, Kind::Reversal | Kind::Conversion)
            || !matches!(original.state.status, Status::Succeeded | Status::Posted)
        {
            return Member::Reject(Error::refused(
                Reason::TransferNotReversible,
                "only a transfer, deposit or withdrawal that moved money (or a posted hold) can be \
                 reversed",
            ));
        }
        let remaining = reversible(&original);
        let amount = r.amount.unwrap_or(remaining);
        if remaining == 0 || amount > remaining {
            return Member::Reject(exceeds_original(remaining));
        }
        Member::New {
            posting: Posting {
                id: r.id,
                kind: Kind::Reversal,
                requested_by: r.requested_by,
                may_move_any: r.may_move_any,
                from: original.to,
                to: original.from,
                amount,
                currency: original.currency,
                memo: r.memo.clone(),
                hold_ms: None,
                claim: None,
            },
            fingerprint,
            reverses: Some(r.original),
        }
    }

    /// A conversion's quote is unexpired and unused by any other conversion (checked when its
    /// chain applies, so a quote used by an earlier chain of this batch counts as used).
    fn quote_usable(&self, p: &Posting) -> Result<(), Stop> {
        let Some(claim) = &p.claim else {
            return Ok(());
        };
        let quote = self.quotes.get(&claim.quote_id).expect("checked");
        if quote
            .conversion_id
            .is_some_and(|used_by| used_by != claim.conversion_id)
        {
            return Err(Stop::Refused(FailureReason::QuoteUsed));
        }
        if quote.expired {
            return Err(Stop::Refused(FailureReason::QuoteExpired));
        }
        Ok(())
    }

    /// Applies a new transfer (a hold reserves, anything else moves); a reversal also adds to
    /// its original's reversed sum.
    fn create(
        &mut self,
        p: &Posting,
        reverses: Option<Uuid>,
        entries: &mut Vec<NewEntry>,
    ) -> Result<(), Stop> {
        if let Some(original) = reverses {
            // Checked at the start of the chain; an earlier member may have reversed some since.
            let view = self.view(original).expect("checked");
            let remaining = reversible(&view);
            if p.amount > remaining {
                return Err(Stop::Rejected(exceeds_original(remaining)));
            }
            self.ledger.apply(p, entries)?;
            self.set(
                original,
                Settled {
                    reversed_amount: view.state.reversed_amount + p.amount,
                    ..view.state
                },
            );
            return Ok(());
        }
        self.ledger.apply(p, entries)
    }

    /// Posts or voids a hold; answers the hold as it stands after.
    fn settle(&mut self, s: &Settlement, entries: &mut Vec<NewEntry>) -> Result<Planned, Stop> {
        let hold = self.view(s.id).expect("checked");
        let refuse = |reason, message: String| Err(Stop::Rejected(Error::refused(reason, message)));
        if !hold.is_hold || hold.state.status == Status::Failed {
            return refuse(
                Reason::TransferNotPending,
                "the transfer is not a hold (it was not created pending, or it failed)".into(),
            );
        }
        match (hold.state.status, s.action) {
            (Status::Pending, Settle::Post(amount)) => {
                let amount = amount.unwrap_or(hold.amount);
                if amount > hold.amount {
                    return refuse(
                        Reason::PostExceedsPending,
                        format!("the hold is for {}; a post moves at most that", hold.amount),
                    );
                }
                self.ledger.release(hold.from, hold.to, hold.amount);
                self.ledger
                    .transfer(s.id, hold.from, hold.to, amount, entries)?;
                self.set(
                    s.id,
                    Settled {
                        status: Status::Posted,
                        posted_amount: Some(amount),
                        ..hold.state
                    },
                );
            }
            (Status::Pending, Settle::Void) => {
                self.ledger.release(hold.from, hold.to, hold.amount);
                self.set(
                    s.id,
                    Settled {
                        status: Status::Voided,
                        ..hold.state
                    },
                );
            }
            // The same settlement again answers the first result.
            (Status::Posted, Settle::Post(amount))
                if Some(amount.unwrap_or(hold.amount)) == hold.state.posted_amount => {}
            (Status::Voided, Settle::Void) => {}
            (Status::Posted, _) => {
                return refuse(
                    Reason::PendingTransferAlreadyPosted,
                    format!(
                        "the hold was already posted ({} of {})",
                        hold.state.posted_amount.unwrap_or_default(),
                        hold.amount
                    ),
                );
            }
            (Status::Voided, _) => {
                return refuse(
                    Reason::PendingTransferAlreadyVoided,
                    "the hold was already voided".into(),
                );
            }
            (Status::Expired, _) => {
                return refuse(
                    Reason::PendingTransferExpired,
                    "the hold reached its timeout; its amount is available again".into(),
                );
            }
            (Status::Succeeded | Status::Failed, _) => {
                unreachable!("a hold is pending, posted, voided or expired")
            }
        }
        Ok(self.answer(s.id))
    }

    /// Records a new transfer; returns its status.
    fn record(
        &mut self,
        p: &Posting,
        fingerprint: [u8; 32],
        reverses: Option<Uuid>,
        failure: Option<FailureReason>,
    ) -> Status {
        let index = self.plan.transfers.len();
        let status = match (failure, p.hold_ms) {
            (Some(_), _) => Status::Failed,
            (None, Some(_)) => Status::Pending,
            (None, None) => Status::Succeeded,
        };
        self.plan.transfers.push(NewTransfer {
            id: p.id,
            kind: p.kind,
            requested_by: p.requested_by,
            from_account_id: p.from,
            to_account_id: p.to,
            amount: p.amount,
            currency: p.currency.clone(),
            status,
            failure_reason: failure,
            memo: p.memo.clone(),
            fingerprint,
            timeout_ms: p.hold_ms,
            posted_amount: None,
            reverses_transfer_id: reverses,
            reversed_amount: 0,
        });
        self.known.insert(p.id, Known::Planned(index));
        self.plan.outcomes.push(Planned::Recorded(index));
        status
    }
}

fn settled_of_row(row: &TransferRow) -> Settled {
    Settled {
        status: row.status,
        posted_amount: row.posted_amount,
        reversed_amount: row.reversed_amount,
    }
}

/// What is left to reverse of a transfer: what it moved less what was reversed already.
fn reversible(t: &View) -> i64 {
    t.state.posted_amount.unwrap_or(t.amount) - t.state.reversed_amount
}

fn exceeds_original(remaining: i64) -> Error {
    Error::refused(
        Reason::ReversalExceedsOriginal,
        format!("the reversals of a transfer may not exceed what it moved; {remaining} is left"),
    )
}

/// Who may use which accounts. The destination may be anyone's, but never a system account
/// through a plain transfer (system accounts move money only by deposit and withdrawal, and by
/// reversals of those, which [`Batch::check_reversal`] allows to bankers and admins).
fn visible(p: &Posting, from: &Account, to: &Account) -> bool {
    let customer = |a: &Account| !a.is_system && !a.is_liquidity;
    match p.kind {
        Kind::Transfer => {
            customer(from)
                && customer(to)
                && (p.may_move_any || from.owner_id == Some(p.requested_by))
        }
        // Built by the ledger's conversions, never from a request: one side the requester's
        // account, the other a liquidity account.
        Kind::Conversion => match (from.is_liquidity, to.is_liquidity) {
            (false, true) => {
                customer(from) && (p.may_move_any || from.owner_id == Some(p.requested_by))
            }
            (true, false) => {
                customer(to) && (p.may_move_any || to.owner_id == Some(p.requested_by))
            }
            _ => false,
        },
        Kind::Deposit => from.is_system && !to.is_system,
        Kind::Withdrawal => !from.is_system && to.is_system,
        // Built by `check_reversal` from a transfer it checked.
        Kind::Reversal => true,
    }
}

/// Why a member of a chain that had a rejected member moved nothing.
pub(super) const CHAIN_REJECTED: &str =
    "another transfer of its linked chain was rejected; nothing was written for this one";

/// The answer of a chain member that moved nothing because of another member.
pub(super) fn linked_failed(message: &str) -> Error {
    Error::refused(Reason::LinkedTransferFailed, message.to_owned())
}

/// A locked account as the batch sees it, position evolving.
struct Account {
    owner_id: Option<Uuid>,
    is_system: bool,
    is_liquidity: bool,
    currency: String,
    closed: bool,
    overdraft_limit: i64,
    position: Position,
    /// Position as locked, to tell which accounts moved.
    locked: Position,
}

impl Account {
    /// What a customer account may still spend: available balance plus the overdraft limit.
    fn spendable(&self) -> i128 {
        i128::from(self.position.balance) - i128::from(self.position.pending_debits)
            + i128::from(self.overdraft_limit)
    }
}

/// The batch's view of its accounts, with an undo log so a failed chain leaves no trace.
struct Balances {
    accounts: HashMap<Uuid, Account>,
    /// (account, position before) for every change, newest last.
    undo: Vec<(Uuid, Position)>,
}

fn beyond_range() -> Stop {
    Stop::Rejected(Error::refused(
        Reason::BalanceLimit,
        "the transfer would take a balance beyond the ledger's range",
    ))
}

impl Balances {
    fn new(locked: Vec<LockedAccount>) -> Self {
        Self {
            accounts: locked
                .into_iter()
                .map(|a| {
                    let position = Position {
                        balance: a.balance,
                        pending_debits: a.pending_debits,
                        pending_credits: a.pending_credits,
                    };
                    (
                        a.id,
                        Account {
                            owner_id: a.owner_id,
                            is_system: a.is_system,
                            is_liquidity: a.is_liquidity,
                            currency: a.currency,
                            closed: a.closed,
                            overdraft_limit: a.overdraft_limit,
                            position,
                            locked: position,
                        },
                    )
                })
                .collect(),
            undo: Vec::new(),
        }
    }

    fn get(&self, id: Uuid) -> Option<&Account> {
        self.accounts.get(&id)
    }

    fn mark(&self) -> usize {
        self.undo.len()
    }

    fn undo(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let (id, before) = self.undo.pop().expect("len > mark");
            self.accounts
                .get_mut(&id)
                .expect("undo names a locked account")
                .position = before;
        }
    }

    fn set(&mut self, id: Uuid, position: Position) {
        let account = self.accounts.get_mut(&id).expect("a locked account");
        self.undo.push((id, account.position));
        account.position = position;
    }

    /// Checks the rules and applies a new posting: moves its amount, or reserves it for a hold.
    /// The accounts were checked to exist by [`Batch::check`].
    fn apply(&mut self, p: &Posting, entries: &mut Vec<NewEntry>) -> Result<(), Stop> {
        let (from, to) = (&self.accounts[&p.from], &self.accounts[&p.to]);
        if from.currency != p.currency || to.currency != p.currency {
            return Err(Stop::Refused(FailureReason::CurrencyMismatch));
        }
        if from.closed || to.closed {
            return Err(Stop::Refused(FailureReason::AccountClosed));
        }
        if !from.is_system && from.spendable() < i128::from(p.amount) {
            return Err(Stop::Refused(if from.is_liquidity {
                FailureReason::InsufficientLiquidity
            } else {
                FailureReason::InsufficientFunds
            }));
        }
        if p.hold_ms.is_none() {
            return self.transfer(p.id, p.from, p.to, p.amount, entries);
        }
        let (from, to) = (from.position, to.position);
        let debits = from
            .pending_debits
            .checked_add(p.amount)
            .ok_or_else(beyond_range)?;
        let credits = to
            .pending_credits
            .checked_add(p.amount)
            .ok_or_else(beyond_range)?;
        // Posting must be able to credit the whole amount later.
        to.balance.checked_add(credits).ok_or_else(beyond_range)?;
        self.set(
            p.from,
            Position {
                pending_debits: debits,
                ..from
            },
        );
        self.set(
            p.to,
            Position {
                pending_credits: credits,
                ..to
            },
        );
        Ok(())
    }

    /// Moves `amount` (the rules were checked, or a hold reserved it) and writes the two entries.
    fn transfer(
        &mut self,
        transfer_id: Uuid,
        from_id: Uuid,
        to_id: Uuid,
        amount: i64,
        entries: &mut Vec<NewEntry>,
    ) -> Result<(), Stop> {
        let (from, to) = (&self.accounts[&from_id], &self.accounts[&to_id]);
        let from_after = from
            .position
            .balance
            .checked_sub(amount)
            .ok_or_else(beyond_range)?;
        let to_after = to
            .position
            .balance
            .checked_add(amount)
            .ok_or_else(beyond_range)?;
        assert!(
            from.is_system
                || i128::from(from_after) - i128::from(from.position.pending_debits)
                    >= -i128::from(from.overdraft_limit),
            "a customer balance went below its overdraft limit"
        );
        // Double entry: the two entries cancel out.
        assert_eq!(
            (from_after - from.position.balance) + (to_after - to.position.balance),
            0,
            "entries of a transfer must sum to zero"
        );
        let (from, to) = (from.position, to.position);
        self.set(
            from_id,
            Position {
                balance: from_after,
                ..from
            },
        );
        self.set(
            to_id,
            Position {
                balance: to_after,
                ..to
            },
        );
        entries.push(NewEntry {
            account_id: from_id,
            transfer_id,
            amount: -amount,
            balance_after: from_after,
        });
        entries.push(NewEntry {
            account_id: to_id,
            transfer_id,
            amount,
            balance_after: to_after,
        });
        Ok(())
    }

    /// Releases a hold's reservation on both accounts.
    fn release(&mut self, from_id: Uuid, to_id: Uuid, amount: i64) {
        for (id, debit) in [(from_id, true), (to_id, false)] {
            let Some(account) = self.accounts.get(&id) else {
                // The engine locks both sides of every hold it releases.
                unreachable!("a hold's account {id} was not locked");
            };
            let mut position = account.position;
            let pending = if debit {
                &mut position.pending_debits
            } else {
                &mut position.pending_credits
            };
            *pending -= amount;
            assert!(*pending >= 0, "released more than account {id} held");
            self.set(id, position);
        }
    }

    /// An event of transfer `transfer` between `from` and `to`, with their positions now.
    fn event(
        &self,
        kind: EventType,
        transfer: (Uuid, Status, Option<i64>),
        from: Uuid,
        to: Uuid,
    ) -> NewEvent {
        let position = |id: Uuid| self.accounts[&id].position;
        NewEvent {
            kind,
            account_id: from,
            account: position(from),
            counterparty: Some((to, position(to))),
            transfer: Some(transfer),
            monitor: None,
        }
    }

    /// Final positions of the accounts that moved, in id order.
    fn changed(&self) -> Vec<(Uuid, Position)> {
        let mut moved: Vec<(Uuid, Position)> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.position != a.locked)
            .map(|(id, a)| (*id, a.position))
            .collect();
        moved.sort_unstable_by_key(|(id, _)| *id);
        moved
    }
}

#[cfg(test)]
mod tests;
