//! SQL, and nothing else. Every function takes `&mut PgConnection` so the caller (the domain)
//! owns transactions; expected constraint violations are mapped to domain errors here, by
//! constraint name.

pub mod accounts;
pub mod audit;
pub mod batch;
pub mod events;
pub mod exchange;
pub mod mail;
pub mod monitors;
pub mod roles;
pub mod sessions;
pub mod transfers;
pub mod users;
pub mod verifications;
pub mod webhooks;

/// The constraint a unique or check violation names, if `err` is one.
pub(crate) fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
