//! The rules of a batch, with no I/O: given the postings of one batch (as chains, in arrival
//! order), the transfers already recorded under their ids and the locked accounts, decide what
//! each posting comes to and which rows to write.
//!
//! Postings are applied in order against balances as they evolve in memory, so many postings
//! on one account cost one row lock and one balance update. Each posting gets exactly the
//! answer a lone call would have had:
//! - a replay (same id, same requester, same payload) answers the recorded transfer, even when
//!   it was recorded earlier in the same batch; another payload or requester is
//!   `ALREADY_EXISTS` (`TRANSFER_ID_REUSED`);
//! - an account that is missing or not the caller's to use is `NOT_FOUND`, and nothing is
//!   written for that posting;
//! - a ledger rule (insufficient funds, currency mismatch) records the posting FAILED;
//! - otherwise it succeeds: one transfer row, two entries summing to zero.
//!
//! A chain of several postings succeeds or fails as a unit (TigerBeetle's linked events):
//! - if a member is rejected (nothing could be written for it), nothing is written for the
//!   chain: that member answers its error, the others `LINKED_TRANSFER_FAILED`;
//! - if a member is refused by a rule, evaluation stops there and every member is recorded
//!   FAILED (that one with its reason, the others with `linked_transfer_failed`), so resending
//!   the chain replays the same answers;
//! - a chain whose members were all recorded before replays them; one that mixes recorded and
//!   new members cannot be applied as a unit, so its new members answer
//!   `LINKED_TRANSFER_FAILED` and nothing is written.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{FailureReason, Kind, Posting, Status};
use crate::{
    error::{Error, Reason},
    store::{
        accounts::LockedAccount,
        transfers::{NewEntry, NewTransfer, TransferRow},
    },
};

/// What one posting comes to.
#[derive(Debug)]
pub enum Planned {
    /// Recorded by an earlier batch: the original answer.
    Replayed(TransferRow),
    /// Recorded by this batch (or replaying a posting recorded earlier in it): an index into
    /// [`Plan::transfers`].
    Recorded(usize),
    /// Nothing is written for it.
    Rejected(Error),
}

/// The decisions and the rows of one batch.
#[derive(Debug, Default)]
pub struct Plan {
    /// One per posting, in the order the chains listed them.
    pub outcomes: Vec<Planned>,
    /// Transfer rows to insert, in application order.
    pub transfers: Vec<NewTransfer>,
    /// Entry rows to insert, in application order.
    pub entries: Vec<NewEntry>,
    /// Final balance of every account that moved.
    pub balances: Vec<(Uuid, i64)>,
}

/// A transfer id this batch already knows: recorded before, or planned by an earlier chain.
enum Known {
    Stored(TransferRow),
    Planned(usize),
}

/// A chain member after the checks that need no balance.
enum Member {
    Replay(Planned),
    Reject(Error),
    New { fingerprint: [u8; 32] },
}

/// Decides a batch. `recorded` holds the transfers already stored under the postings' ids;
/// `accounts` the accounts the postings name, as locked.
pub fn plan(
    chains: &[&[Posting]],
    recorded: Vec<TransferRow>,
    accounts: Vec<LockedAccount>,
) -> Plan {
    let mut known: HashMap<Uuid, Known> = recorded
        .into_iter()
        .map(|row| (row.id, Known::Stored(row)))
        .collect();
    let mut ledger = Balances::new(accounts);
    let mut plan = Plan::default();
    for chain in chains {
        plan_chain(chain, &mut known, &mut ledger, &mut plan);
    }
    plan.balances = ledger.changed();
    plan
}

fn plan_chain(
    chain: &[Posting],
    known: &mut HashMap<Uuid, Known>,
    ledger: &mut Balances,
    plan: &mut Plan,
) {
    let mut ids = HashSet::with_capacity(chain.len());
    let members: Vec<Member> = chain
        .iter()
        .map(|p| {
            if !ids.insert(p.id) {
                return Member::Reject(Error::invalid(
                    "transfer_id",
                    "repeats an earlier transfer of the same linked chain",
                ));
            }
            check(p, known, plan, ledger)
        })
        .collect();

    let rejected = members.iter().any(|m| matches!(m, Member::Reject(_)));
    let replayed = members
        .iter()
        .filter(|m| matches!(m, Member::Replay(_)))
        .count();
    if rejected || (replayed > 0 && replayed < members.len()) {
        // Nothing is written for the chain. What was recorded before stays what it was.
        let why = if rejected {
            CHAIN_REJECTED
        } else {
            "its linked chain mixes transfers recorded before with new ones, so it cannot be \
             applied as a unit; nothing was written for this one"
        };
        for member in members {
            plan.outcomes.push(match member {
                Member::Replay(planned) => planned,
                Member::Reject(err) => Planned::Rejected(err),
                Member::New { .. } => Planned::Rejected(linked_failed(why)),
            });
        }
        return;
    }
    if replayed == members.len() {
        for member in members {
            if let Member::Replay(planned) = member {
                plan.outcomes.push(planned);
            }
        }
        return;
    }

    let fingerprints: Vec<[u8; 32]> = members
        .into_iter()
        .map(|m| match m {
            Member::New { fingerprint } => fingerprint,
            // Every member is new here: rejections and replays returned above.
            Member::Replay(_) | Member::Reject(_) => unreachable!("only new members remain"),
        })
        .collect();
    let mark = ledger.mark();
    let mut entries = Vec::with_capacity(2 * chain.len());
    let mut stop = None;
    for (i, p) in chain.iter().enumerate() {
        match ledger.apply(p) {
            Ok((from_after, to_after)) => {
                entries.push(NewEntry {
                    account_id: p.from,
                    transfer_id: p.id,
                    amount: -p.amount,
                    balance_after: from_after,
                });
                entries.push(NewEntry {
                    account_id: p.to,
                    transfer_id: p.id,
                    amount: p.amount,
                    balance_after: to_after,
                });
            }
            Err(failure) => {
                stop = Some((i, failure));
                break;
            }
        }
    }

    match stop {
        None => {
            for (p, fingerprint) in chain.iter().zip(fingerprints) {
                record(p, fingerprint, None, known, plan);
            }
            plan.entries.append(&mut entries);
        }
        Some((at, Stop::Refused(reason))) => {
            ledger.undo(mark);
            for (i, (p, fingerprint)) in chain.iter().zip(fingerprints).enumerate() {
                let reason = if i == at {
                    reason
                } else {
                    FailureReason::LinkedTransferFailed
                };
                record(p, fingerprint, Some(reason), known, plan);
            }
        }
        Some((at, Stop::Rejected(err))) => {
            ledger.undo(mark);
            let mut err = Some(err);
            for i in 0..chain.len() {
                plan.outcomes.push(Planned::Rejected(if i == at {
                    err.take().expect("one error for the failing member")
                } else {
                    linked_failed(CHAIN_REJECTED)
                }));
            }
        }
    }
}

/// The checks that need no balance: replay, repeated id, who may use which accounts.
fn check(p: &Posting, known: &HashMap<Uuid, Known>, plan: &Plan, ledger: &Balances) -> Member {
    let fingerprint = p.fingerprint();
    if let Some(k) = known.get(&p.id) {
        let (requested_by, stored_fingerprint): (Uuid, &[u8]) = match k {
            Known::Stored(row) => (row.requested_by, &row.fingerprint),
            Known::Planned(i) => (
                plan.transfers[*i].requested_by,
                &plan.transfers[*i].fingerprint,
            ),
        };
        // A different requester gets the same answer as a different payload, so it learns
        // nothing about the transfer.
        if requested_by != p.requested_by || stored_fingerprint != fingerprint.as_slice() {
            return Member::Reject(Error::refused(
                Reason::TransferIdReused,
                "this id was already used for a different request",
            ));
        }
        return Member::Replay(match k {
            Known::Stored(row) => Planned::Replayed(row.clone()),
            Known::Planned(i) => Planned::Recorded(*i),
        });
    }
    match (ledger.get(p.from), ledger.get(p.to)) {
        (Some(from), Some(to)) if visible(p, from, to) => Member::New { fingerprint },
        _ => Member::Reject(Error::NotFound("account")),
    }
}

/// Who may use which accounts. The destination may be anyone's, but never a system account
/// through a plain transfer (system accounts move money only by deposit and withdrawal).
fn visible(p: &Posting, from: &Account, to: &Account) -> bool {
    match p.kind {
        Kind::Transfer => {
            !from.is_system
                && !to.is_system
                && (p.may_move_any || from.owner_id == Some(p.requested_by))
        }
        Kind::Deposit => from.is_system && !to.is_system,
        Kind::Withdrawal => !from.is_system && to.is_system,
    }
}

fn record(
    p: &Posting,
    fingerprint: [u8; 32],
    failure: Option<FailureReason>,
    known: &mut HashMap<Uuid, Known>,
    plan: &mut Plan,
) {
    let index = plan.transfers.len();
    plan.transfers.push(NewTransfer {
        id: p.id,
        kind: p.kind,
        requested_by: p.requested_by,
        from_account_id: p.from,
        to_account_id: p.to,
        amount: p.amount,
        currency: p.currency.clone(),
        status: if failure.is_some() {
            Status::Failed
        } else {
            Status::Succeeded
        },
        failure_reason: failure,
        memo: p.memo.clone(),
        fingerprint,
    });
    known.insert(p.id, Known::Planned(index));
    plan.outcomes.push(Planned::Recorded(index));
}

/// Why a member of a chain that had a rejected member moved nothing.
pub(super) const CHAIN_REJECTED: &str =
    "another transfer of its linked chain was rejected; nothing was written for this one";

/// The answer of a chain member that moved nothing because of another member.
pub(super) fn linked_failed(message: &str) -> Error {
    Error::refused(Reason::LinkedTransferFailed, message.to_owned())
}

/// Why applying a posting stopped its chain.
enum Stop {
    /// A ledger rule: recorded FAILED.
    Refused(FailureReason),
    /// Nothing can be written (a balance would leave the ledger's range).
    Rejected(Error),
}

/// A locked account as the batch sees it, balance evolving.
struct Account {
    owner_id: Option<Uuid>,
    is_system: bool,
    currency: String,
    balance: i64,
    /// Balance as locked, to tell which accounts moved.
    locked_balance: i64,
}

/// The batch's view of its accounts, with an undo log so a failed chain leaves no trace.
struct Balances {
    accounts: HashMap<Uuid, Account>,
    /// (account, balance before) for every change, newest last.
    undo: Vec<(Uuid, i64)>,
}

impl Balances {
    fn new(locked: Vec<LockedAccount>) -> Self {
        Self {
            accounts: locked
                .into_iter()
                .map(|a| {
                    (
                        a.id,
                        Account {
                            owner_id: a.owner_id,
                            is_system: a.is_system,
                            currency: a.currency,
                            balance: a.balance,
                            locked_balance: a.balance,
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
                .balance = before;
        }
    }

    /// Moves `p.amount` if the rules allow; returns both balances after. The accounts were
    /// checked to exist by [`check`].
    fn apply(&mut self, p: &Posting) -> Result<(i64, i64), Stop> {
        let (from, to) = (&self.accounts[&p.from], &self.accounts[&p.to]);
        if from.currency != p.currency || to.currency != p.currency {
            return Err(Stop::Refused(FailureReason::CurrencyMismatch));
        }
        if !from.is_system && from.balance < p.amount {
            return Err(Stop::Refused(FailureReason::InsufficientFunds));
        }
        let beyond_range = || {
            Stop::Rejected(Error::refused(
                Reason::BalanceLimit,
                "the transfer would take a balance beyond the ledger's range",
            ))
        };
        let from_after = from
            .balance
            .checked_sub(p.amount)
            .ok_or_else(beyond_range)?;
        let to_after = to.balance.checked_add(p.amount).ok_or_else(beyond_range)?;
        assert!(
            from.is_system || from_after >= 0,
            "customer balance went negative"
        );
        // Double entry: the two entries cancel out.
        assert_eq!(
            (from_after - from.balance) + (to_after - to.balance),
            0,
            "entries of a transfer must sum to zero"
        );
        for (id, after) in [(p.from, from_after), (p.to, to_after)] {
            let account = self.accounts.get_mut(&id).expect("checked above");
            self.undo.push((id, account.balance));
            account.balance = after;
        }
        Ok((from_after, to_after))
    }

    /// Final balances of the accounts that moved, in id order.
    fn changed(&self) -> Vec<(Uuid, i64)> {
        let mut moved: Vec<(Uuid, i64)> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.balance != a.locked_balance)
            .map(|(id, a)| (*id, a.balance))
            .collect();
        moved.sort_unstable();
        moved
    }
}

#[cfg(test)]
mod tests;
