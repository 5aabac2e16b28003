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
    /// Customer accounts below zero.
    pub negative_balances: i64,
    /// Entries whose `balance_after` is not the running sum of the account's entries.
    pub broken_running_balances: i64,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.balance_mismatches == 0
            && self.unbalanced_transfers == 0
            && self.unbalanced_currencies == 0
            && self.negative_balances == 0
            && self.broken_running_balances == 0
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
                        FROM entries GROUP BY transfer_id) e ON e.transfer_id = t.id \
             WHERE (t.status = 'succeeded' AND (e.n IS DISTINCT FROM 2 OR e.total <> 0)) \
                OR (t.status = 'failed' AND e.n IS NOT NULL)",
        )
        .fetch_one(&mut *tx)
        .await?,
        unbalanced_currencies: count(
            "SELECT count(*) FROM (SELECT currency FROM accounts GROUP BY currency \
                                   HAVING sum(balance) <> 0) c",
        )
        .fetch_one(&mut *tx)
        .await?,
        negative_balances: count("SELECT count(*) FROM accounts WHERE NOT is_system AND balance < 0")
            .fetch_one(&mut *tx)
            .await?,
        broken_running_balances: count(
            "SELECT count(*) FROM (SELECT balance_after, \
                    sum(amount) OVER (PARTITION BY account_id ORDER BY seq) AS running \
                  FROM entries) r WHERE balance_after <> running",
        )
        .fetch_one(&mut *tx)
        .await?,
    };
    tx.commit().await?;
    Ok(report)
}
