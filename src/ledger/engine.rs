//! The transfer engine: group commit. Every posting of this process (transfers, deposits,
//! withdrawals, batches of them) goes through one queue; one committer task takes what is
//! queued, up to [`BATCH_POSTINGS_MAX`], and applies it in one SERIALIZABLE transaction:
//!
//! 1. `BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE ledger_writer IN EXCLUSIVE MODE` (one
//!    round trip). The table lock is taken before the snapshot (LOCK TABLE takes none), so
//!    batches of several replicas run one after another and each sees the one before it,
//!    rather than failing each other with serialization errors on shared accounts;
//! 2. one lookup of every posting id (replays);
//! 3. one `SELECT … FOR NO KEY UPDATE` of every account the new postings name, in ascending
//!    id order;
//!    Holds past their expiry on those accounts are marked expired right there (one `UPDATE`,
//!    only when a locked account holds or expects a pending amount), so an expired hold never
//!    counts, whatever the sweeper has done;
//! 4. the rules, in memory and in arrival order ([`super::plan`]);
//! 5. bulk writes: transfers, entries and the change feed's events inserted from `UNNEST`ed
//!    arrays, every moved position set by one `UPDATE … FROM UNNEST` (and settled holds,
//!    reversed sums, by another);
//! 6. one `COMMIT`.
//!
//! Eight round trips per batch of plain transfers, whatever its size. (Folding the three writes into one
//! statement of data-modifying CTEs was measured: it halved throughput, with a p99 of 53 ms
//! for that one statement, so they stay apart.)
//!
//! While a batch works, arriving postings queue; once it reaches its COMMIT the next batch
//! takes them all and starts (its `BEGIN` and lock wait overlap the previous COMMIT's WAL
//! flush), so a lone caller waits for no timer and a crowd shares round trips, row locks and
//! the commit's flush.
//! A serialization failure or deadlock (SQLSTATE 40001 / 40P01, which can surface at COMMIT)
//! retries the whole batch with jittered exponential backoff, a bounded number of times; then
//! every posting of the batch answers `ABORTED` (certainly not applied; retry with the same
//! ids). Any other failure of a batch of several callers re-runs each caller's postings alone,
//! so one caller's fault never becomes another's answer.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    Chain, LedgerSettings, Status, Transfer,
    plan::{self, Plan, Planned},
    posting::Op,
};
use crate::{
    error::{Error, Result},
    store,
};

/// The most postings one batch transaction applies (TigerBeetle's batch size). A submission
/// is never split, so a larger one runs alone.
pub const BATCH_POSTINGS_MAX: usize = 8_189;
/// Submissions waiting for the committer; callers beyond it wait to enqueue (within their
/// deadline), which bounds the memory a burst can take.
pub const QUEUE_SUBMISSIONS_MAX: usize = 4_096;

/// Batch transactions of one process running at once: one committing (or retrying) while the
/// next one starts. They still apply one after another, in `ledger_writer`'s lock order.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;
const _: () = assert!(BATCHES_IN_FLIGHT_MAX >= 1 && QUEUE_SUBMISSIONS_MAX >= BATCHES_IN_FLIGHT_MAX);

/// Starts a batch transaction. One simple query, so the table lock costs no extra round trip.
const BEGIN_BATCH: &str =
    "BEGIN ISOLATION LEVEL SERIALIZABLE; LOCK TABLE ledger_writer IN EXCLUSIVE MODE";

/// The answers to one submission: one per posting, in order, and the attempts its batch took.
#[derive(Debug)]
pub struct Settled {
    pub outcomes: Vec<Result<Transfer>>,
    pub attempts: u32,
}

/// A handle on the committer; dropping the last one stops it once the queue is drained.
#[derive(Clone)]
pub struct Engine {
    queue: mpsc::Sender<Submission>,
}

/// What every batch task shares.
struct Shared {
    pool: PgPool,
    settings: LedgerSettings,
    /// Counts the commits that wrote change-feed events (every watcher of it is woken).
    committed: Arc<tokio::sync::watch::Sender<u64>>,
}

/// One caller's operations, queued.
struct Submission {
    chains: Vec<Chain>,
    /// Accounts to lock even if no operation names them: the hold sweeper's, so that the batch
    /// expires their overdue holds.
    touch: Vec<Uuid>,
    postings: usize,
    enqueued: Instant,
    /// The caller's span: the batch's span is its child (or links to it).
    span: tracing::Span,
    reply: oneshot::Sender<Result<Settled>>,
}

impl Engine {
    /// Starts the committer task on the current runtime; `committed` counts the commits that
    /// wrote change-feed events.
    pub fn spawn(
        pool: PgPool,
        settings: LedgerSettings,
        committed: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> Self {
        let (queue, submissions) = mpsc::channel(QUEUE_SUBMISSIONS_MAX);
        let shared = Arc::new(Shared {
            pool,
            settings,
            committed,
        });
        tokio::spawn(committer(shared, submissions));
        Self { queue }
    }

    /// Queues `chains` and waits for their batch to commit (or fail).
    pub async fn submit(&self, chains: Vec<Chain>) -> Result<Settled> {
        self.enqueue(chains, Vec::new()).await
    }

    /// Expires the overdue holds touching `accounts` (the sweeper's call).
    pub async fn touch(&self, accounts: Vec<Uuid>) -> Result<()> {
        self.enqueue(Vec::new(), accounts).await.map(|_| ())
    }

    async fn enqueue(&self, chains: Vec<Chain>, touch: Vec<Uuid>) -> Result<Settled> {
        let (reply, answer) = oneshot::channel();
        let submission = Submission {
            postings: chains.iter().map(Vec::len).sum::<usize>() + touch.len(),
            chains,
            touch,
            enqueued: Instant::now(),
            span: tracing::Span::current(),
            reply,
        };
        self.queue
            .send(submission)
            .await
            .map_err(|_| Error::internal(anyhow::anyhow!("the transfer engine has stopped")))?;
        answer.await.map_err(|_| {
            // The batch task panicked before it committed: its transaction was rolled back.
            Error::internal(anyhow::anyhow!(
                "the transfer engine failed applying this batch"
            ))
        })?
    }
}

async fn committer(shared: Arc<Shared>, mut queue: mpsc::Receiver<Submission>) {
    let mut carried: Option<Submission> = None;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    loop {
        let first = match carried.take() {
            Some(submission) => submission,
            None => match queue.recv().await {
                Some(submission) => submission,
                None => {
                    // Stopping: the batches still in flight finish first.
                    let _ = in_flight.acquire_many(BATCHES_IN_FLIGHT_MAX as u32).await;
                    return;
                }
            },
        };
        let mut postings = first.postings;
        let mut batch = vec![first];
        while postings < BATCH_POSTINGS_MAX {
            match queue.try_recv() {
                Ok(next) if postings + next.postings > BATCH_POSTINGS_MAX => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    postings += next.postings;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        // A caller that went away before its batch began never got an answer: leave its
        // postings out rather than apply them unseen (its retry, with the same ids, applies them
        // once).
        batch.retain(|s| !s.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // The next batch forms once this one is committing: it then starts (its BEGIN and its
        // wait for the `ledger_writer` lock) while this one's COMMIT waits for the WAL flush,
        // and takes everything that arrived meanwhile. A slot bounds the batches in flight
        // (one committing or retrying while the next works, at most BATCHES_IN_FLIGHT_MAX).
        let slot = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed");
        let (committing, reached_commit) = oneshot::channel();
        // Its own task, so a panic in one batch fails that batch's callers, not the committer.
        let run = tokio::spawn(run_batch(shared.clone(), batch, Some(committing)));
        tokio::spawn(async move {
            if let Err(err) = run.await {
                tracing::error!(error = %err, "a transfer batch panicked; its callers were answered INTERNAL");
            }
            drop(slot);
        });
        // Fired just before the batch's COMMIT, or dropped when it ends another way.
        let _ = reached_commit.await;
    }
}

async fn run_batch(
    shared: Arc<Shared>,
    batch: Vec<Submission>,
    mut committing: Option<oneshot::Sender<()>>,
) {
    let postings: usize = batch.iter().map(|s| s.postings).sum();
    metrics::histogram!("tally_transfer_batch_postings").record(postings as f64);
    for s in &batch {
        metrics::histogram!("tally_transfer_queue_wait_seconds")
            .record(s.enqueued.elapsed().as_secs_f64());
    }
    match apply_with_retries(&shared, &batch, &mut committing).await {
        Ok((mut answers, attempts)) => {
            for s in batch.into_iter().rev() {
                let outcomes = answers.pop().expect("one answer per submission");
                // A caller that has gone away is not an error: its postings are recorded.
                let _ = s.reply.send(Ok(Settled { outcomes, attempts }));
            }
        }
        Err(err) if batch.len() > 1 && !matches!(err, Error::Aborted(_)) => {
            tracing::warn!(
                error = format!("{err:#}"),
                submissions = batch.len(),
                "transfer batch failed; applying each submission alone"
            );
            for s in batch {
                let answer = apply_with_retries(&shared, std::slice::from_ref(&s), &mut None)
                    .await
                    .map(|(mut answers, attempts)| Settled {
                        outcomes: answers.pop().expect("one answer"),
                        attempts,
                    });
                let _ = s.reply.send(answer);
            }
        }
        Err(err) => {
            let mut errors = fan_out(err, batch.len());
            for s in batch {
                let _ = s
                    .reply
                    .send(Err(errors.pop().expect("one error per submission")));
            }
        }
    }
}

/// One copy of a batch-wide failure per caller (the cause is kept once, in the message).
fn fan_out(err: Error, n: usize) -> Vec<Error> {
    (0..n)
        .map(|_| match &err {
            Error::Aborted(message) => Error::Aborted(message.clone()),
            Error::Unavailable(cause) => Error::Unavailable(anyhow::anyhow!("{cause:#}")),
            other => Error::internal(anyhow::anyhow!("transfer batch failed: {other:#}")),
        })
        .collect()
}

/// Applies `batch`, retrying conflicts; returns the answers of each submission and the
/// attempts it took.
async fn apply_with_retries(
    shared: &Shared,
    batch: &[Submission],
    committing: &mut Option<oneshot::Sender<()>>,
) -> Result<(Vec<Vec<Result<Transfer>>>, u32)> {
    let chains: Vec<&[Op]> = batch
        .iter()
        .flat_map(|s| s.chains.iter().map(Vec::as_slice))
        .collect();
    let touch: Vec<Uuid> = batch.iter().flat_map(|s| s.touch.iter().copied()).collect();
    let postings: usize = chains.iter().map(|c| c.len()).sum();
    let span = tracing::info_span!(
        parent: &batch[0].span,
        "ledger.transaction",
        db.system = "postgresql",
        batch.postings = postings,
        batch.submissions = batch.len(),
        attempt = tracing::field::Empty,
        retries = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    for s in &batch[1..] {
        span.follows_from(&s.span);
    }
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        span.record("attempt", attempt);
        span.record("retries", attempt - 1);
        let outcome = attempt_batch(shared, &chains, &touch, committing)
            .instrument(span.clone())
            .await;
        span.record(
            "outcome",
            match &outcome {
                Ok(_) => "committed",
                Err(Error::Conflict(_)) => "conflict",
                Err(_) => "error",
            },
        );
        match outcome {
            Ok((outcomes, wrote_events)) => {
                if wrote_events {
                    shared.committed.send_modify(|n| *n += 1);
                }
                return Ok((split(outcomes, batch), attempt));
            }
            Err(Error::Conflict(cause)) if attempt < shared.settings.transfer_attempts_max => {
                tracing::debug!(attempt, error = %cause, "transfer batch conflict; retrying");
                metrics::counter!("tally_transfer_retries_total").increment(1);
                tokio::time::sleep(backoff(&shared.settings, attempt)).await;
            }
            Err(Error::Conflict(cause)) => {
                tracing::warn!(attempts = attempt, postings, error = %cause,
                    "transfer batch aborted after retries");
                metrics::counter!("tally_transfer_aborts_total").increment(postings as u64);
                return Err(Error::Aborted(format!(
                    "the transfer conflicted with concurrent ones {attempt} times and was not \
                     applied; retry with the same id"
                )));
            }
            Err(other) => return Err(other),
        }
    }
}

/// One attempt at a batch, in its own transaction; one answer per operation, in order, and
/// whether it wrote change-feed events.
async fn attempt_batch(
    shared: &Shared,
    chains: &[&[Op]],
    touch: &[Uuid],
    committing: &mut Option<oneshot::Sender<()>>,
) -> Result<(Vec<Result<Transfer>>, bool)> {
    let mut ids: Vec<Uuid> = chains
        .iter()
        .flat_map(|c| c.iter().flat_map(Op::transfer_ids))
        .flatten()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut tx = crate::db::begin_with(&shared.pool, BEGIN_BATCH).await?;
    let recorded = if ids.is_empty() {
        Vec::new()
    } else {
        store::transfers::by_ids(&mut tx, &ids).await?
    };
    let accounts = accounts_to_lock(chains, &recorded, touch);
    let mut locked = if accounts.is_empty() {
        Vec::new()
    } else {
        store::accounts::lock(&mut tx, &accounts).await?
    };
    let expired = expire_holds(&mut tx, &mut locked).await?;
    let quotes = quotes_to_lock(chains);
    let quotes = if quotes.is_empty() {
        Vec::new()
    } else {
        store::exchange::lock_quotes(&mut tx, &quotes).await?
    };
    let expired_count = expired.len();
    let plan = plan::plan(
        chains,
        plan::Loaded {
            recorded,
            accounts: locked,
            expired,
            quotes,
        },
    );
    store::transfers::change_many(&mut tx, &plan.changes).await?;
    // The change feed's events, in this transaction (under `ledger_writer`: commit order).
    let events: &[store::events::NewEvent] = if shared.settings.feed_events {
        &plan.events
    } else {
        &[]
    };
    // New transfers, positions, entries and events: one statement, one round trip under the
    // lock every other batch waits for.
    let writes = store::batch::Writes {
        transfers: &plan.transfers,
        positions: &plan.positions,
        entries: &plan.entries,
        events,
    };
    let created_at = store::batch::write(&mut tx, writes).await?;
    store::monitors::set_triggered(&mut tx, &plan.monitor_changes).await?;
    let claims: Vec<(Uuid, Uuid)> = plan
        .claims
        .iter()
        .map(|c| (c.quote_id, c.conversion_id))
        .collect();
    store::exchange::mark_used(&mut tx, &claims).await?;
    // The committer may start the next batch now: it will queue behind this one's lock.
    if let Some(committing) = committing.take() {
        let _ = committing.send(());
    }
    // 40001 can surface here: the commit is part of the retried unit.
    tx.commit().await?;
    count_recorded(&plan);
    if expired_count > 0 {
        metrics::counter!("tally_holds_expired_total").increment(expired_count as u64);
    }
    let wrote_events = !events.is_empty();
    Ok((resolve(plan, created_at), wrote_events))
}

/// The quotes the conversions of a batch use, in id order.
fn quotes_to_lock(chains: &[&[Op]]) -> Vec<Uuid> {
    let mut quotes: Vec<Uuid> = chains
        .iter()
        .flat_map(|c| c.iter())
        .filter_map(|op| match op {
            Op::Create(p) => p.claim.map(|claim| claim.quote_id),
            _ => None,
        })
        .collect();
    quotes.sort_unstable();
    quotes.dedup();
    quotes
}

/// The accounts a batch locks, in id order: both sides of every new transfer, of every hold it
/// settles and of every transfer it reverses (replays move nothing), and the sweeper's.
fn accounts_to_lock(
    chains: &[&[Op]],
    recorded: &[store::transfers::TransferRow],
    touch: &[Uuid],
) -> Vec<Uuid> {
    let stored: HashMap<Uuid, &store::transfers::TransferRow> =
        recorded.iter().map(|r| (r.id, r)).collect();
    let sides = |id: Uuid| {
        stored
            .get(&id)
            .map(|r| [r.from_account_id, r.to_account_id])
    };
    let mut accounts: Vec<Uuid> = touch.to_vec();
    for op in chains.iter().flat_map(|c| c.iter()) {
        let named = match op {
            Op::Create(p) if !stored.contains_key(&p.id) => Some([p.from, p.to]),
            Op::Create(_) => None,
            // A hold or an original created earlier in this batch is locked by its creation.
            Op::Settle(s) => sides(s.id),
            Op::Reverse(r) if !stored.contains_key(&r.id) => sides(r.original),
            Op::Reverse(_) => None,
        };
        accounts.extend(named.into_iter().flatten());
    }
    accounts.sort_unstable();
    accounts.dedup();
    accounts
}

/// Marks expired the overdue holds touching the locked accounts, and locks the other side of
/// each (rare: a hold between a locked and an unlocked account), so the plan can release them.
async fn expire_holds(
    tx: &mut sqlx::PgConnection,
    locked: &mut Vec<store::accounts::LockedAccount>,
) -> Result<Vec<store::transfers::ExpiredHold>> {
    let holding: Vec<Uuid> = locked
        .iter()
        .filter(|a| a.pending_debits > 0 || a.pending_credits > 0)
        .map(|a| a.id)
        .collect();
    if holding.is_empty() {
        return Ok(Vec::new());
    }
    let expired = store::transfers::expire_touching(&mut *tx, &holding).await?;
    let have: HashSet<Uuid> = locked.iter().map(|a| a.id).collect();
    let mut missing: Vec<Uuid> = expired
        .iter()
        .flat_map(|h| [h.from_account_id, h.to_account_id])
        .filter(|id| !have.contains(id))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        locked.extend(store::accounts::lock(&mut *tx, &missing).await?);
    }
    Ok(expired)
}

/// `tally_transfers_total` for the transfers this batch recorded (replays are not counted).
fn count_recorded(plan: &Plan) {
    let mut counts: HashMap<(super::Kind, Status), u64> = Default::default();
    for t in &plan.transfers {
        *counts.entry((t.kind, t.status)).or_default() += 1;
    }
    for ((kind, status), n) in counts {
        metrics::counter!("tally_transfers_total", "kind" => kind.as_str(), "outcome" => status.as_str())
            .increment(n);
    }
}

fn resolve(plan: Plan, created_at: Option<OffsetDateTime>) -> Vec<Result<Transfer>> {
    let Plan {
        outcomes,
        transfers,
        ..
    } = plan;
    outcomes
        .into_iter()
        .map(|planned| match planned {
            Planned::Stored(row) => Transfer::try_from(row),
            Planned::Recorded(i) => {
                let created_at = created_at.ok_or_else(|| {
                    Error::internal(anyhow::anyhow!("a recorded transfer without its insert"))
                })?;
                Ok(Transfer::recorded(&transfers[i], created_at))
            }
            Planned::Rejected(err) => Err(err),
        })
        .collect()
}

/// Cuts the batch's answers back into one list per submission.
fn split(outcomes: Vec<Result<Transfer>>, batch: &[Submission]) -> Vec<Vec<Result<Transfer>>> {
    let mut outcomes = outcomes.into_iter();
    batch
        .iter()
        .map(|s| outcomes.by_ref().take(s.postings).collect())
        .collect()
}

/// Full jitter: uniformly random in [0, min(max, base · 2^(attempt−1))].
fn backoff(settings: &LedgerSettings, attempt: u32) -> Duration {
    let exp = settings
        .retry_backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(settings.retry_backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_full_jitter_and_stays_bounded() {
        let settings = LedgerSettings {
            currencies: Default::default(),
            accounts_per_owner_max: 1,
            transfer_attempts_max: 10,
            retry_backoff_base: Duration::from_millis(2),
            retry_backoff_max: Duration::from_millis(50),
            hold_sweep_interval: Duration::from_secs(1),
            feed_events: true,
        };
        for attempt in 1..40 {
            assert!(backoff(&settings, attempt) <= Duration::from_millis(50));
        }
        // It grows: the first retry waits at most the base, the fifth up to 2^4 times it (32
        // ms), and full jitter spreads the waits over that whole range (not always 0).
        let waits = |attempt| {
            (0..500)
                .map(|_| backoff(&settings, attempt))
                .collect::<Vec<_>>()
        };
        assert!(waits(1).iter().all(|w| *w <= Duration::from_millis(2)));
        let fifth = waits(5);
        assert!(fifth.iter().all(|w| *w <= Duration::from_millis(32)));
        assert!(
            fifth.iter().any(|w| *w > Duration::from_millis(16)),
            "full jitter reaches the upper half of the range"
        );
        assert!(fifth.iter().any(|w| *w < Duration::from_millis(16)));
    }
}
