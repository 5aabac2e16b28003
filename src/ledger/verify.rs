//! `tally verify`: recomputes the ledger's invariants from its entries, in one consistent
//! snapshot (REPEATABLE READ, read only), so it can run beside live traffic.

use sqlx::PgPool;

/// What `tally verify` found. Every count but `accounts`, `transfers` and `entries` must be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub accounts: i64,
    pub transfers: i64,
    pub entries: i64,
    /// Accounts whose balance differs from the sum of their entries.
    pub balance_mismatches: i64,
    /// Succeeded transfers without exactly two entries summing to zero, or failed ones with
    /// entries.
    pub unbalanced_transfers: i64,
    /// Currencies whose balances do not sum to zero.
    pub unbalanced_currencies: i64,
    /// Customer accounts whose available balance (balance − pending debits) is below
    /// −overdraft limit.
    pub negative_balances: i64,
    /// Accounts whose pending debits or credits differ from the sums of their live holds.
    pub pending_mismatches: i64,
    /// Transfers whose `reversed_amount` differs from the sum of their succeeded reversals, or
    /// exceeds what they moved.
    pub reversal_mismatches: i64,
    /// Closed accounts that are not empty.
    pub closed_not_empty: i64,
    /// Entries whose `balance_after` is not the running sum of the account's entries.
    pub broken_running_balances: i64,
    /// Transfers recorded since the change feed began without exactly one `transfer.created`
    /// event, and events naming a transfer or account that is not stored.
    pub feed_mismatches: i64,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.balance_mismatches == 0
            && self.unbalanced_transfers == 0
            && self.unbalanced_currencies == 0
            && self.negative_balances == 0
            && self.broken_running_balances == 0
            && self.pending_mismatches == 0
            && self.reversal_mismatches == 0
            && self.closed_not_empty == 0
            && self.feed_mismatches == 0
    }
}

pub async fn run(pool: &PgPool) -> anyhow::Result<Report> {
    let mut tx =
        crate::db::begin_with(pool, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let report = Report {
        accounts: count("SELECT count(*) FROM accounts").fetch_one(&mut *tx).await?,
        transfers: count("SELECT count(*) FROM transfers").fetch_one(&mut *tx).await?,
        entries: count("SELECT count(*) FROM entries").fetch_one(&mut *tx).await?,
        balance_mismatches: count(
            "SELECT count(*) FROM accounts a \
             LEFT JOIN (SELECT account_id, sum(amount) AS total FROM entries GROUP BY account_id) e \
               ON e.account_id = a.id \
             WHERE a.balance <> COALESCE(e.total, 0)",
        )
        .fetch_one(&mut *tx)
        .await?,
        unbalanced_transfers: count(
            "SELECT count(*) FROM transfers t \
             LEFT JOIN (SELECT transfer_id, count(*) AS n, sum(amount) AS total \
                               , max(amount) AS moved \
                        FROM entries GROUP BY transfer_id) e ON e.transfer_id = t.id \
             WHERE (t.status IN ('succeeded', 'posted') AND (e.n IS DISTINCT FROM 2 OR e.total <> 0 \
                    OR e.moved IS DISTINCT FROM COALESCE(t.posted_amount, t.amount))) \
                OR (t.status NOT IN ('succeeded', 'posted') AND e.n IS NOT NULL)",
        )
        .fetch_one(&mut *tx)
        .await?,
        unbalanced_currencies: count(
            "SELECT count(*) FROM (SELECT currency FROM accounts GROUP BY currency \
                                   HAVING sum(balance) <> 0) c",
        )
        .fetch_one(&mut *tx)
        .await?,
        negative_balances: count(
            "SELECT count(*) FROM accounts \
             WHERE NOT is_system AND balance - pending_debits < -overdraft_limit",
        )
        .fetch_one(&mut *tx)
        .await?,
        pending_mismatches: count(
            "SELECT count(*) FROM accounts a \
             LEFT JOIN (SELECT from_account_id AS id, sum(amount) AS total FROM transfers \
                        WHERE status = 'pending' GROUP BY 1) d ON d.id = a.id \
             LEFT JOIN (SELECT to_account_id AS id, sum(amount) AS total FROM transfers \
                        WHERE status = 'pending' GROUP BY 1) c ON c.id = a.id \
             WHERE a.pending_debits <> COALESCE(d.total, 0) \
                OR a.pending_credits <> COALESCE(c.total, 0)",
        )
        .fetch_one(&mut *tx)
        .await?,
        reversal_mismatches: count(
            "SELECT count(*) FROM transfers t \
             LEFT JOIN (SELECT reverses_transfer_id AS id, sum(amount) AS total FROM transfers \
                        WHERE kind = 'reversal' AND status = 'succeeded' GROUP BY 1) r \
               ON r.id = t.id \
             WHERE t.reversed_amount <> COALESCE(r.total, 0) \
                OR t.reversed_amount > COALESCE(t.posted_amount, t.amount)",
        )
        .fetch_one(&mut *tx)
        .await?,
        closed_not_empty: count(
            "SELECT count(*) FROM accounts WHERE closed_at IS NOT NULL \
             AND (balance <> 0 OR pending_debits <> 0 OR pending_credits <> 0)",
        )
        .fetch_one(&mut *tx)
        .await?,
        broken_running_balances: count(
            "SELECT count(*) FROM (SELECT balance_after, \
                    sum(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running \
                  FROM entries) r WHERE balance_after <> running",
        )
        .fetch_one(&mut *tx)
        .await?,
        feed_mismatches: count(
            "SELECT (SELECT count(*) FROM transfers t                      LEFT JOIN (SELECT transfer_id, count(*) AS n FROM ledger_events                                 WHERE type = 'transfer.created' GROUP BY 1) e                        ON e.transfer_id = t.id                      WHERE t.seq > (SELECT after_transfer_seq FROM ledger_feed_start)                        AND e.n IS DISTINCT FROM 1)                   + (SELECT count(*) FROM ledger_events e                      WHERE (e.transfer_id IS NOT NULL                             AND NOT EXISTS (SELECT 1 FROM transfers t WHERE t.id = e.transfer_id))                         OR NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id))",
        )
        .fetch_one(&mut *tx)
        .await?,
    };
    tx.commit().await?;
    Ok(report)
}
