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

/// The references of transfers and entries are checked per statement by triggers
/// (migration 6), not by foreign keys: they must refuse exactly what the keys refused.
#[tokio::test]
async fn the_ledger_references_hold_without_foreign_keys() {
    let app = TestApp::spawn().await;
    let banker = app.banker().await;
    let holder = app.signed_in(&unique("holder"), &[]).await.access_token;
    let from = app.open_account(&holder, "USD").await.account_id;
    let to = app.open_account(&holder, "USD").await.account_id;
    app.deposit(&banker, &from, 100).await;
    let moved = app.transfer(&holder, &from, &to, 10).await.unwrap();
    let requester: uuid::Uuid =
        sqlx::query_scalar("SELECT requested_by FROM transfers WHERE id = $1::uuid")
            .bind(&moved.transfer_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();

    let sqlstate = |sql: String| {
        let pool = app.pool.clone();
        async move {
            let err = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect_err("refused");
            err.as_database_error()
                .and_then(|e| e.code())
                .map(|c| c.into_owned())
                .unwrap_or_default()
        }
    };
    let insert_transfer = |from: &str, to: &str, requester: &str, currency: &str| {
        format!(
            "INSERT INTO transfers (id, kind, requested_by, from_account_id, to_account_id, \
             amount, currency, status, fingerprint) VALUES (gen_random_uuid(), 'transfer', \
             '{requester}', '{from}', '{to}', 1, '{currency}', 'succeeded', sha256('x'))"
        )
    };
    let nobody = uuid::Uuid::new_v4().to_string();
    let requester = requester.to_string();
    assert_eq!(
        sqlstate(insert_transfer(&from, &nobody, &requester, "USD")).await,
        "23503"
    );
    assert_eq!(
        sqlstate(insert_transfer(&from, &to, &nobody, "USD")).await,
        "23503"
    );
    assert_eq!(
        sqlstate(insert_transfer(&from, &to, &requester, "XXX")).await,
        "23503"
    );
    assert_eq!(
        sqlstate(format!(
            "INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) \
             VALUES (gen_random_uuid(), '{from}', '{nobody}', 1, 1)"
        ))
        .await,
        "23503"
    );
    assert_eq!(
        sqlstate(format!(
            "INSERT INTO entries (id, account_id, transfer_id, amount, balance_after) \
             VALUES (gen_random_uuid(), '{nobody}', '{}', 1, 1)",
            moved.transfer_id
        ))
        .await,
        "23503"
    );
    // The referenced side: nothing a transfer names goes away or changes its key.
    assert_eq!(
        sqlstate(format!("DELETE FROM accounts WHERE id = '{to}'")).await,
        "23001"
    );
    assert_eq!(
        sqlstate(format!(
            "UPDATE accounts SET id = gen_random_uuid() WHERE id = '{to}'"
        ))
        .await,
        "23001"
    );
    assert_eq!(
        sqlstate(format!(
            "DELETE FROM transfers WHERE id = '{}'",
            moved.transfer_id
        ))
        .await,
        "23001"
    );
    assert_eq!(
        sqlstate("UPDATE entries SET amount = amount".into()).await,
        "23001"
    );
    assert_eq!(sqlstate("DELETE FROM entries".into()).await, "23001");
    // The banker owns no account: only the deposit it requested holds its user row.
    assert_eq!(
        sqlstate(
            "DELETE FROM users WHERE id = (SELECT requested_by FROM transfers \
             WHERE kind = 'deposit' LIMIT 1)"
                .into()
        )
        .await,
        "23503"
    );
    assert_eq!(
        sqlstate("DELETE FROM currencies WHERE code = 'USD'".into()).await,
        "23503"
    );
    // What the API wrote is still whole.
    assert!(app.verify().await.is_consistent());
}
