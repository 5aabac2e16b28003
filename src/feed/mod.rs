//! The ledger's change feed, read side: the events the engine and account changes write in
//! their own transactions (`ledger_events`, see the migration for why their sequence is commit
//! order), as the domain shows them, and live watches of one account ([`hub`]).
//!
//! An event carries the transfer or account it is about as it stood right after the event, and
//! the positions (balance, pending debits and credits) of the accounts it moved. A watcher of
//! one account sees only that account's position, and never a FAILED transfer into it: such a
//! transfer moved nothing there, and showing it would let anyone write into the account's feed
//! (the statement hides them too).

pub mod hub;

use std::collections::HashMap;

use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::store::events::EventType;
use crate::{
    error::{Error, Result},
    ledger::{Account, Status, Transfer, monitors::BalanceMonitor},
    store::{self, accounts::Position, events::EventRow},
};
pub use hub::{Feed, FeedSettings, WatchItem};

/// One committed change of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Ascending in commit order across the whole database (with gaps).
    pub sequence: i64,
    pub kind: EventType,
    pub occurred_at: OffsetDateTime,
    pub subject: Subject,
    /// Right after the event: the transfer's source then its destination, or the account.
    pub positions: Vec<(Uuid, Position)>,
}

/// What an event is about, as it stood right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Transfer(Box<Transfer>),
    Account(Box<Account>),
    /// `balance_monitor.triggered`: the monitor (its state as it is now).
    Monitor(Box<BalanceMonitor>),
}

impl Event {
    /// The event as a watcher of `account_id` sees it, or `None` when it is not theirs to see.
    pub fn for_account(&self, account_id: Uuid) -> Option<Event> {
        if let Subject::Transfer(t) = &self.subject
            && t.status == Status::Failed
            && t.from_account_id != account_id
        {
            return None;
        }
        let positions: Vec<(Uuid, Position)> = self
            .positions
            .iter()
            .filter(|(id, _)| *id == account_id)
            .copied()
            .collect();
        (!positions.is_empty()).then(|| Event {
            positions,
            ..self.clone()
        })
    }
}

/// Turns event rows into events: one read of the transfers and one of the accounts they name.
pub async fn load(conn: &mut sqlx::PgConnection, rows: Vec<EventRow>) -> Result<Vec<Event>> {
    let mut transfer_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.transfer_id).collect();
    transfer_ids.sort_unstable();
    transfer_ids.dedup();
    let mut account_ids: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.transfer_id.is_none() && r.monitor_id.is_none())
        .map(|r| r.account_id)
        .collect();
    let monitor_ids: Vec<Uuid> = rows.iter().filter_map(|r| r.monitor_id).collect();
    // A monitor deleted since is shown by its id and account only.
    let monitors: HashMap<Uuid, _> = if monitor_ids.is_empty() {
        HashMap::new()
    } else {
        store::monitors::by_ids(&mut *conn, &monitor_ids)
            .await?
            .into_iter()
            .map(|m| (m.id, m))
            .collect()
    };
    account_ids.sort_unstable();
    account_ids.dedup();
    let transfers: HashMap<Uuid, _> = if transfer_ids.is_empty() {
        HashMap::new()
    } else {
        store::transfers::by_ids(&mut *conn, &transfer_ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect()
    };
    let accounts: HashMap<Uuid, _> = if account_ids.is_empty() {
        HashMap::new()
    } else {
        store::accounts::by_ids(&mut *conn, &account_ids)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect()
    };
    rows.into_iter()
        .map(|row| {
            let missing = |what: &str| {
                Error::internal(anyhow::anyhow!(
                    "event {} names a {what} that is not stored",
                    row.sequence
                ))
            };
            let subject = match (row.transfer_id, row.monitor_id) {
                (_, Some(id)) => Subject::Monitor(Box::new(monitors.get(&id).cloned().unwrap_or(
                    BalanceMonitor {
                        id,
                        account_id: row.account_id,
                        created_by: Uuid::nil(),
                        condition: String::new(),
                        threshold: 0,
                        triggered: true,
                        created_at: row.occurred_at,
                    },
                ))),
                (Some(id), None) => {
                    let mut t = Transfer::try_from(
                        transfers
                            .get(&id)
                            .cloned()
                            .ok_or_else(|| missing("transfer"))?,
                    )?;
                    t.status = row.status.ok_or_else(|| missing("status"))?;
                    t.posted_amount = row.posted_amount;
                    // Only a settled transfer is reversed, and it has no event after that.
                    t.reversed_amount = 0;
                    Subject::Transfer(Box::new(t))
                }
                (None, None) => {
                    let mut a = Account::from(
                        accounts
                            .get(&row.account_id)
                            .cloned()
                            .ok_or_else(|| missing("account"))?,
                    );
                    a.balance = row.account_balance;
                    a.pending_debits = row.account_pending_debits;
                    a.pending_credits = row.account_pending_credits;
                    a.closed_at = (row.kind == EventType::AccountClosed).then_some(row.occurred_at);
                    a.updated_at = row.occurred_at;
                    Subject::Account(Box::new(a))
                }
            };
            Ok(Event::from_row(row, subject))
        })
        .collect()
}

impl Event {
    fn from_row(row: EventRow, subject: Subject) -> Self {
        let mut positions = vec![(
            row.account_id,
            Position {
                balance: row.account_balance,
                pending_debits: row.account_pending_debits,
                pending_credits: row.account_pending_credits,
            },
        )];
        if let (Some(id), Some(balance), Some(pending_debits), Some(pending_credits)) = (
            row.counterparty_id,
            row.counterparty_balance,
            row.counterparty_pending_debits,
            row.counterparty_pending_credits,
        ) {
            positions.push((
                id,
                Position {
                    balance,
                    pending_debits,
                    pending_credits,
                },
            ));
        }
        Event {
            sequence: row.sequence,
            kind: row.kind,
            occurred_at: row.occurred_at,
            subject,
            positions,
        }
    }
}
