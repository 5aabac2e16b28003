//! Queries on `audit_events`.

use sqlx::{FromRow, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Result;

/// One answered call.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub method: String,
    pub resource_ids: Vec<String>,
    pub outcome: String,
    pub latency_micros: i64,
    pub client_address: String,
    pub request_id: String,
}

/// The filters of a listing; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// `Some(None)`: anonymous calls only.
    pub username: Option<Option<String>>,
    pub method: Option<String>,
    pub outcome: Option<String>,
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
}

#[derive(Debug, FromRow)]
struct AuditRow {
    id: Uuid,
    at: OffsetDateTime,
    user_id: Option<Uuid>,
    username: Option<String>,
    method: String,
    resource_ids: Vec<String>,
    outcome: String,
    latency_micros: i64,
    client_address: String,
    request_id: String,
}

impl From<AuditRow> for AuditEvent {
    fn from(row: AuditRow) -> Self {
        AuditEvent {
            id: row.id,
            at: row.at,
            user_id: row.user_id,
            username: row.username,
            method: row.method,
            resource_ids: row.resource_ids,
            outcome: row.outcome,
            latency_micros: row.latency_micros,
            client_address: row.client_address,
            request_id: row.request_id,
        }
    }
}

/// Inserts `events` with one statement. `resource_ids` travel as one `text[]` per event,
/// joined with a unit separator (arrays of arrays cannot be unnested row by row).
pub async fn insert_many(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let ats: Vec<OffsetDateTime> = events.iter().map(|e| e.at).collect();
    let user_ids: Vec<Option<Uuid>> = events.iter().map(|e| e.user_id).collect();
    let usernames: Vec<Option<&str>> = events.iter().map(|e| e.username.as_deref()).collect();
    let methods: Vec<String> = events.iter().map(|e| storable(&e.method)).collect();
    let resources: Vec<String> = events
        .iter()
        .map(|e| storable(&e.resource_ids.join(RESOURCE_SEPARATOR)))
        .collect();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    let latencies: Vec<i64> = events.iter().map(|e| e.latency_micros).collect();
    let addresses: Vec<String> = events.iter().map(|e| storable(&e.client_address)).collect();
    let request_ids: Vec<String> = events.iter().map(|e| storable(&e.request_id)).collect();
    sqlx::query(
        "INSERT INTO audit_events (id, at, user_id, username, method, resource_ids, outcome, \
           latency_micros, client_address, request_id) \
         SELECT id, at, user_id, username, method, \
           CASE WHEN resources = '' THEN '{}'::text[] ELSE string_to_array(resources, $11) END, \
           outcome, latency_micros, client_address, request_id \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], \
           $6::text[], $7::text[], $8::int8[], $9::text[], $10::text[]) \
           AS e(id, at, user_id, username, method, resources, outcome, latency_micros, \
             client_address, request_id)",
    )
    .bind(ids)
    .bind(ats)
    .bind(user_ids)
    .bind(usernames)
    .bind(methods)
    .bind(resources)
    .bind(outcomes)
    .bind(latencies)
    .bind(addresses)
    .bind(request_ids)
    .bind(RESOURCE_SEPARATOR)
    .execute(conn)
    .await?;
    Ok(())
}

/// `text` as PostgreSQL can store it: a NUL byte (which a request's id or header may carry
/// before any validator sees it) would fail the whole batch's insert, losing every event in it.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Never part of an id (ids are cut from request strings; a control character is refused by
/// every validator before it could matter, and here it only splits).
const RESOURCE_SEPARATOR: &str = "\u{1f}";

/// Events matching `filter` before the `(at, id)` cursor, newest first.
pub async fn page(
    conn: &mut PgConnection,
    filter: &AuditFilter,
    before: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<AuditEvent>> {
    let (anonymous, username) = match &filter.username {
        None => (false, None),
        Some(None) => (true, None),
        Some(Some(name)) => (false, Some(name.as_str())),
    };
    let rows = sqlx::query_as::<_, AuditRow>(
        "SELECT id, at, user_id, username, method, resource_ids, outcome, latency_micros, \
           client_address, request_id \
         FROM audit_events \
         WHERE ($1::text IS NULL OR username = $1) \
           AND (NOT $2 OR username IS NULL) \
           AND ($3::text IS NULL OR method = $3) \
           AND ($4::text IS NULL OR outcome = $4) \
           AND ($5::timestamptz IS NULL OR at >= $5) \
           AND ($6::timestamptz IS NULL OR at < $6) \
           AND ($7::timestamptz IS NULL OR (at, id) < ($7, $8::uuid)) \
         ORDER BY at DESC, id DESC LIMIT $9",
    )
    .bind(username)
    .bind(anonymous)
    .bind(filter.method.as_deref())
    .bind(filter.outcome.as_deref())
    .bind(filter.start)
    .bind(filter.end)
    .bind(before.map(|(at, _)| at))
    .bind(before.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(AuditEvent::from).collect())
}

/// Deletes up to `limit` events older than `cutoff`; returns how many went.
pub async fn prune(conn: &mut PgConnection, cutoff: OffsetDateTime, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM audit_events WHERE id IN \
           (SELECT id FROM audit_events WHERE at < $1 LIMIT $2)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
