//! Queries on `roles` and `user_roles`.

use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::error::Result;

#[derive(Debug, Clone, FromRow, PartialEq, Eq)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
}

pub async fn all(conn: &mut PgConnection) -> Result<Vec<RoleRow>> {
    Ok(sqlx::query_as::<_, RoleRow>(
        "SELECT name, description, permissions FROM roles ORDER BY name",
    )
    .fetch_all(conn)
    .await?)
}

/// Grants `role`; granting a role already held changes nothing.
pub async fn grant(conn: &mut PgConnection, user_id: Uuid, role: &str) -> Result<()> {
    sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}

/// Revokes `role`; returns whether it was held.
pub async fn revoke(conn: &mut PgConnection, user_id: Uuid, role: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
        .bind(user_id)
        .bind(role)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Locks the holders of `role` and counts them, so two concurrent revocations cannot both
/// see "one other admin is left".
pub async fn lock_holders(conn: &mut PgConnection, role: &str) -> Result<i64> {
    let holders: Vec<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM user_roles WHERE role = $1 FOR UPDATE")
            .bind(role)
            .fetch_all(conn)
            .await?;
    Ok(holders.len() as i64)
}
