//! The rates every replica serves to its watchers.
//!
//! Each replica keeps the current rates in memory and reads the whole `exchange_rates` table
//! every `TALLY_RATES_POLL_MS` (a pair per row: a few dozen rows, at most the square of the
//! currency table), publishing the rows that differ from what it holds; a rate set on this
//! replica is published at once. Reading everything rather than "what changed since" means a
//! change that commits late is never skipped: each read converges to what the database holds.
//! No LISTEN/NOTIFY and no Redis: the database that stores the rates is the only thing to
//! agree on.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use sqlx::PgPool;
use tokio::sync::{Notify, broadcast};

use super::RateView;
use crate::{error::Result, store};

/// Changes a watcher may fall behind by before it is sent a fresh snapshot instead.
const CHANGES_BUFFERED_MAX: usize = 256;

/// The rates as this replica knows them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rates: BTreeMap<(String, String), RateView>,
    /// Counts this replica's publications: a watcher skips those its snapshot already holds.
    pub generation: u64,
}

/// One publication: the rates that changed, and the generation they make.
pub type Changes = (u64, Vec<RateView>);

struct Shared {
    snapshot: RwLock<Snapshot>,
    changes: broadcast::Sender<Changes>,
    poll_now: Notify,
}

impl Shared {
    /// Takes `rows` in, publishing those that differ from what is held.
    fn apply(&self, rows: Vec<RateView>) {
        let mut snapshot = self
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut changed = Vec::new();
        for rate in rows {
            let key = (rate.base_currency.clone(), rate.quote_currency.clone());
            if snapshot.rates.get(&key) != Some(&rate) {
                snapshot.rates.insert(key, rate.clone());
                changed.push(rate);
            }
        }
        if changed.is_empty() {
            return;
        }
        snapshot.generation += 1;
        // Sent under the lock, so publications leave in generation order. No watcher is fine.
        let _ = self.changes.send((snapshot.generation, changed));
    }
}

/// Cheap to clone; the poller stops when the last clone is dropped.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl Hub {
    /// Starts the poller (needs a tokio runtime). [`Hub::load`] fills the snapshot first.
    pub fn spawn(pool: PgPool, interval: Duration) -> Self {
        let (changes, _) = broadcast::channel(CHANGES_BUFFERED_MAX);
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Snapshot::default()),
            changes,
            poll_now: Notify::new(),
        });
        tokio::spawn(poll(pool, Arc::downgrade(&shared), interval));
        Self { shared }
    }

    /// Reads the rates and publishes what changed.
    pub async fn load(&self, pool: &PgPool) -> Result<()> {
        refresh(pool, &self.shared).await
    }

    /// Publishes a rate just set here, and has the poller read the table again soon (it holds
    /// the truth if another replica set the same pair at the same moment).
    pub fn publish(&self, rate: RateView) {
        self.shared.apply(vec![rate]);
        self.shared.poll_now.notify_one();
    }

    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Every publication from now on (subscribe before reading the snapshot: nothing falls
    /// between).
    pub fn subscribe(&self) -> broadcast::Receiver<Changes> {
        self.shared.changes.subscribe()
    }
}

async fn poll(pool: PgPool, shared: Weak<Shared>, interval: Duration) {
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        if let Err(err) = refresh(&pool, &strong).await {
            tracing::warn!(error = %err, "could not read the exchange rates; retrying");
        }
        // Woken early when a rate is set here; otherwise on the interval. (Held meanwhile: the
        // poller stops within one interval of the hub being dropped.)
        let _ = tokio::time::timeout(interval, strong.poll_now.notified()).await;
    }
}

async fn refresh(pool: &PgPool, shared: &Shared) -> Result<()> {
    let mut conn = crate::db::acquire(pool).await?;
    let rows = store::exchange::rates(&mut conn).await?;
    drop(conn);
    shared.apply(
        rows.into_iter()
            .filter_map(|row| RateView::try_from(row).ok())
            .collect(),
    );
    Ok(())
}
