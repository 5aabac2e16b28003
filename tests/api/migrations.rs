//! Migrations go up, down and up again cleanly; the server refuses an unmigrated database.

use crate::helpers::*;

async fn tables(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    tally::db::migrate_up(&pool).await.unwrap();
    let all = tables(&pool).await;
    assert!(
        all.contains(&"users".to_string()) && all.contains(&"sessions".to_string()),
        "{all:?}"
    );
    assert!(
        tally::db::status(&pool)
            .await
            .unwrap()
            .iter()
            .all(|m| m.applied)
    );
    tally::db::ensure_migrated(&pool).await.expect("migrated");

    let steps = tally::db::status(&pool).await.unwrap().len();
    for _ in 0..steps {
        assert!(tally::db::migrate_down(&pool).await.unwrap().is_some());
    }
    assert_eq!(tally::db::migrate_down(&pool).await.unwrap(), None);
    assert!(tables(&pool).await.is_empty(), "down leaves nothing behind");
    assert!(
        tally::db::status(&pool)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.applied)
    );

    tally::db::migrate_up(&pool).await.unwrap();
    assert_eq!(tables(&pool).await, all);
    pool.close().await;
}

#[tokio::test]
async fn serve_refuses_an_unmigrated_database_unless_asked_to_migrate() {
    let db = TestDatabase::create().await;
    let err = tally::app::Application::build(settings(&db.url, &[]))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("tally migrate up"), "{err}");
    let app = tally::app::Application::build(settings(&db.url, &["--migrate", "true"]))
        .await
        .expect("migrates when asked");
    tally::db::ensure_migrated(app.pool()).await.unwrap();
    app.pool().close().await;
}

#[tokio::test]
async fn the_roles_table_mirrors_the_roles_in_code() {
    let app = TestApp::spawn().await;
    let mut conn = app.pool.acquire().await.unwrap();
    let rows = tally::store::roles::all(&mut conn).await.unwrap();
    let mut in_code: Vec<_> = tally::auth::Role::ALL
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                r.description().to_string(),
                r.permissions()
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    in_code.sort();
    let in_db: Vec<_> = rows
        .into_iter()
        .map(|r| (r.name, r.description, r.permissions))
        .collect();
    assert_eq!(in_db, in_code);
}

/// The SQLSTATE with which the database refuses `sql` (panics if it does not refuse it).
async fn sqlstate(pool: &sqlx::PgPool, sql: &str) -> String {
    let err = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .expect_err("refused");
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// The references of transfers and entries are checked per statement by triggers
/// (migration 6), not by foreign keys: they must refuse exactly what the keys refused.
#[tokio::test]
async fn the_ledger_references_hold_without_foreign_keys() {
    let app = TestApp::spawn().await;
    let (_, holder, [from, to]) = app.customer_with_accounts("holder", [100, 0]).await;
    let moved = app.transfer(&holder, &from, &to, 10).await.unwrap();
    let requester: uuid::Uuid =
        sqlx::query_scalar("SELECT requested_by FROM transfers WHERE id = $1::uuid")
            .bind(&moved.transfer_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();

    let insert_transfer = |from: &str, to: &str, requester: &str, currency: &str| {
        format!(
            "INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, \
             amount, currency, status, fingerprint) VALUES (gen_random_uuid(), 'transfer', \
             '{requester}', '{from}', '{to}', 1, '{currency}', 'succeeded', sha256('x'))"
        )
    };
    let insert_entry = |account: &str, transfer: &str| {
        format!(
            "INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) \
             VALUES (gen_random_uuid(), '{account}', '{transfer}', 1, 1)"
        )
    };
    let nobody = uuid::Uuid::new_v4().to_string();
    let requester = requester.to_string();
    let moved = &moved.transfer_id;
    let refusals = [
        (insert_transfer(&from, &nobody, &requester, "USD"), "23503"),
        (insert_transfer(&from, &to, &nobody, "USD"), "23503"),
        (insert_transfer(&from, &to, &requester, "XXX"), "23503"),
        (insert_entry(&from, &nobody), "23503"),
        (insert_entry(&nobody, moved), "23503"),
        // The referenced side: nothing a transfer names goes away or changes its key.
        (format!("DELETE FROM accounts WHERE id = '{to}'"), "23001"),
        (
            format!("UPDATE accounts SET id = gen_random_uuid() WHERE id = '{to}'"),
            "23001",
        ),
        (
            format!("DELETE FROM transfers WHERE id = '{moved}'"),
            "23001",
        ),
        ("UPDATE entries SET amount = amount".into(), "23001"),
        ("DELETE FROM entries".into(), "23001"),
        // The banker owns no account: only the deposit it requested holds its user row.
        (
            "DELETE FROM users WHERE id = (SELECT requested_by FROM transfers \
             WHERE kind = 'deposit' LIMIT 1)"
                .into(),
            "23503",
        ),
        ("DELETE FROM currencies WHERE code = 'USD'".into(), "23503"),
    ];
    for (sql, code) in refusals {
        assert_eq!(sqlstate(&app.pool, &sql).await, code, "{sql}");
    }
    // What the API wrote is still whole.
    assert!(app.verify().await.is_consistent());
}
