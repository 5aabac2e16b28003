//! Live watches of one account, on every replica: a tail reads the events committed after the
//! last one it read and hands each to the watchers of the accounts it names.
//!
//! The tail reads `ledger_events` (no LISTEN/NOTIFY, no Redis: the database that commits the
//! events is the only thing to agree on). It is woken at once by this replica's commits and
//! polls every `TALLY_FEED_POLL_MS` for the other replicas'. While nobody watches, it only
//! follows the newest sequence.
//!
//! A watch first replays the account's events after the client's cursor from the database, a
//! page at a time (as fast as the client reads), then registers with the tail, replays once
//! more what committed meanwhile, and goes live, skipping what it already sent. Sequence order
//! is commit order, so nothing falls between the replay and the live events, and nothing is
//! sent twice. Each watcher buffers at most [`WATCH_EVENTS_BUFFERED_MAX`] events: a client that
//! reads slower than its account changes is cut with `SLOW_CONSUMER` and the sequence to resume
//! after, rather than buffered without limit.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::Stream;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{Event, load};
use crate::{
    auth::Principal,
    error::{Error, Reason, Result},
    ledger::Ledger,
    store,
    streams::{StreamSlot, StreamSlots},
};

/// Events one watcher may have waiting for its client before it is cut.
pub const WATCH_EVENTS_BUFFERED_MAX: usize = 1_024;
/// Events one database read of a replay or of the tail takes.
pub const EVENTS_PER_READ_MAX: i64 = 500;

#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// How often the tail looks for events other replicas committed.
    pub poll_interval: Duration,
    /// A watch with nothing to send sends a heartbeat this often.
    pub heartbeat_interval: Duration,
}

/// What a watch sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// Nothing happened for a heartbeat interval; `sequence` is the cursor to resume after.
    Heartbeat {
        sequence: i64,
    },
}

pub type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchItem>> + Send>>;

struct Watcher {
    id: u64,
    /// The watch's cursor when it registered: its catch-up read starts there.
    from: i64,
    events: mpsc::Sender<Event>,
    /// Set when the tail dropped this watcher for falling behind.
    cut: Arc<AtomicBool>,
}

struct Shared {
    watchers: Mutex<HashMap<Uuid, Vec<Watcher>>>,
    /// Counts registrations: an idle tail only follows the newest sequence when none happened
    /// during its read (see [`tail`]).
    registrations: AtomicU64,
    next_id: AtomicU64,
}

impl Shared {
    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Watcher>>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, account: Uuid, from: i64) -> (u64, mpsc::Receiver<Event>, Arc<AtomicBool>) {
        let (events, receiver) = mpsc::channel(WATCH_EVENTS_BUFFERED_MAX);
        let cut = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.watchers().entry(account).or_default().push(Watcher {
            id,
            from,
            events,
            cut: cut.clone(),
        });
        self.registrations.fetch_add(1, Ordering::SeqCst);
        (id, receiver, cut)
    }

    fn unregister(&self, account: Uuid, id: u64) {
        let mut watchers = self.watchers();
        if let Some(list) = watchers.get_mut(&account) {
            list.retain(|w| w.id != id);
            if list.is_empty() {
                watchers.remove(&account);
            }
        }
    }

    /// Hands `event` to the watchers of its accounts; drops those that are full or gone.
    fn dispatch(&self, event: &Event) {
        let mut watchers = self.watchers();
        for (account, _) in &event.positions {
            let Some(list) = watchers.get_mut(account) else {
                continue;
            };
            let Some(seen) = event.for_account(*account) else {
                continue;
            };
            list.retain(|w| match w.events.try_send(seen.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.cut.store(true, Ordering::SeqCst);
                    metrics::counter!("tally_feed_watchers_cut_total").increment(1);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            if list.is_empty() {
                watchers.remove(account);
            }
        }
    }
}

/// The watches of this replica. The tail stops when the feed is dropped.
pub struct Feed {
    pool: PgPool,
    ledger: Arc<Ledger>,
    shared: Arc<Shared>,
    streams: StreamSlots,
    settings: FeedSettings,
    /// Flips to `true` when the server begins to shut down: every watch ends.
    stopping: watch::Sender<bool>,
}

impl Feed {
    /// Starts the tail (needs a tokio runtime); it is woken by `ledger`'s commits.
    pub fn spawn(
        pool: PgPool,
        ledger: Arc<Ledger>,
        settings: FeedSettings,
        streams: StreamSlots,
    ) -> Self {
        metrics::counter!("tally_feed_watchers_cut_total").increment(0);
        let shared = Arc::new(Shared {
            watchers: Mutex::default(),
            registrations: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(tail(
            pool.clone(),
            Arc::downgrade(&shared),
            ledger.commits(),
            settings.poll_interval,
        ));
        Self {
            pool,
            ledger,
            shared,
            streams,
            settings,
            stopping: watch::channel(false).0,
        }
    }

    /// Ends every watch (the server is shutting down): each stream finishes cleanly.
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }

    /// The events of `account_id` after `after_sequence`, then each new one as it commits, and
    /// a heartbeat while nothing happens. Whoever may read the account may watch it (anyone
    /// else finds it missing); `STREAM_LIMIT` when the caller holds all their streams.
    pub async fn watch(
        &self,
        principal: &Principal,
        account_id: &str,
        after_sequence: u64,
    ) -> Result<WatchStream> {
        let account = self.ledger.get_account(principal, account_id).await?.id;
        let after = i64::try_from(after_sequence)
            .map_err(|_| Error::invalid("after_sequence", "is beyond any sequence"))?;
        let slot = self.streams.acquire(principal.user_id)?;
        let state = WatchState {
            pool: self.pool.clone(),
            shared: self.shared.clone(),
            account,
            last: after,
            phase: Phase::Replay,
            buffer: VecDeque::new(),
            stopping: self.stopping.subscribe(),
            heartbeat: self.settings.heartbeat_interval,
            _slot: slot,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_item)))
    }
}

enum Phase {
    /// Reading the database; not registered with the tail yet.
    Replay,
    /// Registered; one more read catches what committed before the registration.
    CatchUp(Registration),
    Live(Registration),
    Done,
}

struct Registration {
    id: u64,
    events: mpsc::Receiver<Event>,
    cut: Arc<AtomicBool>,
}

struct WatchState {
    pool: PgPool,
    shared: Arc<Shared>,
    account: Uuid,
    /// The sequence of the last event sent (or the client's cursor).
    last: i64,
    phase: Phase,
    buffer: VecDeque<Event>,
    stopping: watch::Receiver<bool>,
    heartbeat: Duration,
    _slot: StreamSlot,
}

impl Drop for WatchState {
    fn drop(&mut self) {
        if let Phase::CatchUp(r) | Phase::Live(r) = &self.phase {
            self.shared.unregister(self.account, r.id);
        }
    }
}

impl WatchState {
    /// One page of the account's events after the last one sent; whether it was full.
    async fn read_page(&mut self) -> Result<bool> {
        let mut conn = crate::db::acquire(&self.pool).await?;
        let rows = store::events::after_for_account(
            &mut conn,
            self.account,
            self.last,
            EVENTS_PER_READ_MAX,
        )
        .await?;
        let full = rows.len() as i64 == EVENTS_PER_READ_MAX;
        let events = load(&mut conn, rows).await?;
        self.buffer
            .extend(events.iter().filter_map(|e| e.for_account(self.account)));
        Ok(full)
    }
}

async fn next_item(mut state: WatchState) -> Option<(Result<WatchItem>, WatchState)> {
    loop {
        if let Some(event) = state.buffer.pop_front() {
            if event.sequence <= state.last {
                continue; // sent already (read by the replay and by the tail)
            }
            state.last = event.sequence;
            return Some((Ok(WatchItem::Event(event)), state));
        }
        if *state.stopping.borrow() {
            return None;
        }
        let phase = std::mem::replace(&mut state.phase, Phase::Done);
        match phase {
            Phase::Done => return None,
            Phase::Replay | Phase::CatchUp(_) => {
                let full = match state.read_page().await {
                    Ok(full) => full,
                    // The stream ends with the error (phase Done); the client resumes after
                    // the last event it got.
                    Err(err) => {
                        if let Phase::CatchUp(r) = phase {
                            state.shared.unregister(state.account, r.id);
                        }
                        return Some((Err(err), state));
                    }
                };
                state.phase = match (phase, full) {
                    (phase, true) => phase,
                    (Phase::Replay, false) => {
                        let (id, events, cut) = state.shared.register(state.account, state.last);
                        Phase::CatchUp(Registration { id, events, cut })
                    }
                    (Phase::CatchUp(r), false) => Phase::Live(r),
                    _ => unreachable!("only replay phases read pages"),
                };
            }
            Phase::Live(mut r) => {
                tokio::select! {
                    _ = state.stopping.changed() => {
                        state.phase = Phase::Live(r);
                        return None;
                    }
                    received = r.events.recv() => match received {
                        Some(event) => {
                            state.buffer.push_back(event);
                            state.phase = Phase::Live(r);
                        }
                        None => {
                            let cut = r.cut.load(Ordering::SeqCst);
                            state.phase = Phase::Done;
                            if !cut {
                                return None;
                            }
                            let err = slow_consumer(state.last);
                            return Some((Err(err), state));
                        }
                    },
                    () = tokio::time::sleep(state.heartbeat) => {
                        state.phase = Phase::Live(r);
                        let sequence = state.last;
                        return Some((Ok(WatchItem::Heartbeat { sequence }), state));
                    }
                }
            }
        }
    }
}

fn slow_consumer(last: i64) -> Error {
    Error::Refused {
        reason: Reason::SlowConsumer,
        message: format!(
            "the stream fell {WATCH_EVENTS_BUFFERED_MAX} events behind and was cut; watch again \
             with after_sequence = {last} to resume without a gap"
        ),
        metadata: vec![("after_sequence", last.to_string())],
    }
}

/// Reads the events committed after the last one read and dispatches them, woken by this
/// replica's commits or every `interval`, until the feed is dropped.
///
/// While nobody watches, it only moves its cursor to the newest sequence, and only when no
/// watcher registered during that read: a watcher registering later reads the events up to that
/// sequence itself (its catch-up read comes after). With watchers and no cursor yet (they came
/// before the first read) it starts from the earliest of their cursors: duplicates are skipped
/// by the watchers, gaps could not be.
async fn tail(
    pool: PgPool,
    shared: Weak<Shared>,
    mut commits: watch::Receiver<u64>,
    interval: Duration,
) {
    let mut cursor: Option<i64> = None;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        match tail_once(&pool, &strong, &mut cursor).await {
            Ok(true) => continue, // a full read: more are waiting
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, "could not read the change feed; retrying"),
        }
        // Woken by this replica's commits only while someone watches: idle, it only follows
        // the newest sequence, on the interval.
        let watched = !strong.watchers().is_empty();
        drop(strong);
        if watched {
            let _ = tokio::time::timeout(interval, commits.changed()).await;
        } else {
            tokio::time::sleep(interval).await;
        }
    }
}

/// One read of the tail; whether it was full.
async fn tail_once(pool: &PgPool, shared: &Shared, cursor: &mut Option<i64>) -> Result<bool> {
    let registrations = shared.registrations.load(Ordering::SeqCst);
    let earliest = shared.watchers().values().flatten().map(|w| w.from).min();
    let mut conn = crate::db::acquire(pool).await?;
    let after = match (earliest, *cursor) {
        (None, _) => {
            let newest = store::events::last_sequence(&mut conn).await?;
            if shared.registrations.load(Ordering::SeqCst) == registrations {
                *cursor = Some(newest);
            }
            return Ok(false);
        }
        (Some(_), Some(after)) => after,
        (Some(earliest), None) => earliest,
    };
    let rows = store::events::after(&mut conn, after, EVENTS_PER_READ_MAX).await?;
    let full = rows.len() as i64 == EVENTS_PER_READ_MAX;
    let Some(last) = rows.last().map(|r| r.sequence) else {
        return Ok(false);
    };
    let events = load(&mut conn, rows).await?;
    drop(conn);
    for event in &events {
        shared.dispatch(event);
    }
    *cursor = Some(last);
    Ok(full)
}
