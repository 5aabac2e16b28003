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
