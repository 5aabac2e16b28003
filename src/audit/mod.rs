//! The audit trail: one event per answered call of tally's services — when, who (or
//! anonymous), which method, the ids its request named, the outcome code, the latency, the
//! client address and the request id.
//!
//! Off the request path: the call's layers note what they learn in an [`AuditSlot`] (the rate
//! limit layer the principal and address, the overload layer the ids), the rpc layer hands the
//! finished event to an [`AuditSink`] without waiting, and one writer task inserts whatever has
//! queued in one statement. A full queue drops the event and counts it
//! (`tally_audit_events_dropped_total`); a call never waits for the trail.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
};

use prost::encoding::{WireType, decode_key, decode_varint};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use uuid::Uuid;

pub mod rpc;

pub use crate::store::audit::{AuditEvent, AuditFilter};
use crate::{
    auth::Principal,
    error::{Error, Result},
    ledger::Page,
    store,
};

/// Events waiting for the writer; beyond it they are dropped (and counted).
pub const AUDIT_QUEUE_EVENTS_MAX: usize = 10_000;
/// Events one insert writes at most.
pub const AUDIT_BATCH_EVENTS_MAX: usize = 1_000;
const _: () = assert!(AUDIT_BATCH_EVENTS_MAX <= AUDIT_QUEUE_EVENTS_MAX);
/// Ids noted per event, each cut to [`RESOURCE_ID_CHARS_MAX`].
pub const RESOURCE_IDS_MAX: usize = 16;
pub const RESOURCE_ID_CHARS_MAX: usize = 64;
/// The longest request id kept.
pub const REQUEST_ID_CHARS_MAX: usize = 128;

/// What the layers of one call learned about it, shared through the request's extensions.
#[derive(Debug, Default)]
pub struct AuditFacts {
    pub user_id: Option<Uuid>,
    pub username: Option<String>,
    pub client_address: Option<IpAddr>,
    pub resource_ids: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditFacts>>);

impl AuditSlot {
    pub fn note_caller(&self, principal: Option<&Principal>, address: Option<IpAddr>) {
        let mut facts = self.0.lock().expect("audit slot lock");
        if let Some(p) = principal {
            facts.user_id = Some(p.user_id);
            facts.username = Some(p.username.clone());
        }
        facts.client_address = address;
    }

    /// Notes the ids the request message of `path` names (`frame`: the gRPC-framed body).
    pub fn note_request(&self, path: &str, frame: &[u8]) {
        let ids = resource_ids(path, frame);
        self.0.lock().expect("audit slot lock").resource_ids = ids;
    }

    pub fn take(&self) -> AuditFacts {
        std::mem::take(&mut *self.0.lock().expect("audit slot lock"))
    }
}

/// Hands events to the writer task.
#[derive(Clone)]
pub struct AuditSink {
    queue: mpsc::Sender<AuditEvent>,
}

impl AuditSink {
    /// Starts the writer on the current runtime; it ends when every sink is dropped.
    pub fn spawn(pool: PgPool) -> Self {
        let (queue, events) = mpsc::channel(AUDIT_QUEUE_EVENTS_MAX);
        tokio::spawn(writer(pool, events));
        Self { queue }
    }

    /// Queues `event`, or drops it when the queue is full: never waits.
    pub fn record(&self, event: AuditEvent) {
        if self.queue.try_send(event).is_err() {
            metrics::counter!("tally_audit_events_dropped_total").increment(1);
        }
    }
}

async fn writer(pool: PgPool, mut events: mpsc::Receiver<AuditEvent>) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH_EVENTS_MAX);
    while events.recv_many(&mut batch, AUDIT_BATCH_EVENTS_MAX).await > 0 {
        let written = async {
            let mut conn = crate::db::acquire(&pool).await?;
            store::audit::insert_many(&mut conn, &batch).await
        }
        .await;
        match written {
            Ok(()) => {
                metrics::counter!("tally_audit_events_written_total").increment(batch.len() as u64)
            }
            Err(err) => {
                tracing::warn!(
                    // The cause too: an internal error's Display hides it from callers, not logs.
                    error = format!("{err:?}"),
                    events = batch.len(),
                    "audit events not written"
                );
                metrics::counter!("tally_audit_events_dropped_total").increment(batch.len() as u64);
            }
        }
        batch.clear();
    }
}

/// The events matching `filter`, newest first.
pub async fn list(
    pool: &PgPool,
    filter: &AuditFilter,
    page_size: i32,
    page_token: &str,
) -> Result<Page<AuditEvent>> {
    use crate::ledger::page;
    let limit = page::page_size(page_size)?;
    let before = match page::cursor(AUDIT_SCOPE, page_token)? {
        None => None,
        Some(cursor) => Some(
            parse_cursor(&cursor)
                .ok_or_else(|| Error::invalid("page_token", "is not a page token of this list"))?,
        ),
    };
    let mut conn = crate::db::acquire(pool).await?;
    let mut rows = store::audit::page(&mut conn, filter, before, limit as i64 + 1).await?;
    let next_page_token = page::cut(
        &mut rows,
        limit,
        |e| page::ITEM_FIXED_BYTES + e.resource_ids.iter().map(String::len).sum::<usize>(),
        |last| {
            page::token(
                AUDIT_SCOPE,
                &format!("{}/{}", last.at.unix_timestamp_nanos(), last.id),
            )
        },
    );
    Ok(Page {
        items: rows,
        next_page_token,
    })
}

/// The scope page tokens of the trail are bound to.
const AUDIT_SCOPE: Uuid = Uuid::nil();

#[doc(hidden)] // public for the fuzz targets (fuzz/fuzz_targets/page_token.rs)
pub fn parse_cursor(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let (nanos, id) = cursor.split_once('/')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((at, Uuid::parse_str(id).ok()?))
}

/// The ids and usernames a request message names: string fields called `*_id`, `username` or
/// `owner`, at the top and one message deep (the items of a batch), at most
/// [`RESOURCE_IDS_MAX`]. Walks the wire format and stops there, so a batch of thousands
/// costs a few dozen fields.
pub fn resource_ids(path: &str, frame: &[u8]) -> Vec<String> {
    let mut ids = Vec::new();
    // A gRPC frame: a flag byte and a 4-byte length, then the message.
    let (Some(message), Some(input)) = (frame.get(5..), request_type(path)) else {
        return ids;
    };
    collect_ids(&input, message, &mut ids, 0);
    ids
}

fn request_type(path: &str) -> Option<MessageDescriptor> {
    static POOL: std::sync::LazyLock<Option<DescriptorPool>> =
        std::sync::LazyLock::new(|| DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).ok());
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let service = POOL.as_ref()?.get_service_by_name(service)?;
    let method = service.methods().find(|m| m.name() == method)?;
    Some(method.input())
}

fn collect_ids(message: &MessageDescriptor, mut buf: &[u8], ids: &mut Vec<String>, depth: u8) {
    while !buf.is_empty() && ids.len() < RESOURCE_IDS_MAX {
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return;
        };
        let skip = match wire_type {
            WireType::Varint => {
                if decode_varint(&mut buf).is_err() {
                    return;
                }
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let Ok(len) = decode_varint(&mut buf) else {
                    return;
                };
                let Some(value) = buf.get(..len as usize) else {
                    return;
                };
                if let Some(field) = message.get_field(tag) {
                    match field.kind() {
                        Kind::String if names_a_resource(field.name()) => {
                            if let Ok(text) = std::str::from_utf8(value)
                                && !text.is_empty()
                            {
                                ids.push(text.chars().take(RESOURCE_ID_CHARS_MAX).collect());
                            }
                        }
                        Kind::Message(inner) if depth == 0 => {
                            collect_ids(&inner, value, ids, depth + 1);
                        }
                        _ => {}
                    }
                }
                len as usize
            }
            // Groups are not used by proto3.
            _ => return,
        };
        let Some(rest) = buf.get(skip..) else {
            return;
        };
        buf = rest;
    }
}

fn names_a_resource(field: &str) -> bool {
    field.ends_with("_id") || field == "username" || field == "owner"
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::proto::tally_v1 as pb;

    fn framed(message: &impl prost::Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn the_ids_a_request_names_are_noted_up_to_the_limit() {
        let single = pb::CreateTransferRequest {
            transfer_id: "t-1".into(),
            from_account_id: "a-1".into(),
            to_account_id: "a-2".into(),
            amount: 5,
            currency: "USD".into(),
            memo: Some("not an id".into()),
            linked: false,
            pending: false,
            timeout: None,
        };
        assert_eq!(
            resource_ids("/tally.v1.TransferService/CreateTransfer", &framed(&single)),
            ["t-1", "a-1", "a-2"]
        );
        let batch = pb::CreateTransfersRequest {
            transfers: vec![single; 100],
            atomic: false,
        };
        let ids = resource_ids("/tally.v1.TransferService/CreateTransfers", &framed(&batch));
        assert_eq!(ids.len(), RESOURCE_IDS_MAX);
        assert_eq!(&ids[..3], ["t-1", "a-1", "a-2"]);
        // Garbage and unknown methods note nothing, and never panic.
        assert!(
            resource_ids(
                "/tally.v1.TransferService/CreateTransfer",
                &[0, 0, 0, 0, 2, 0xff, 0xff]
            )
            .is_empty()
        );
        assert!(resource_ids("/nope/Nope", &framed(&batch)).is_empty());
    }

    #[test]
    fn page_cursors_round_trip() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789).unwrap();
        let id = Uuid::now_v7();
        let cursor = format!("{}/{}", at.unix_timestamp_nanos(), id);
        assert_eq!(parse_cursor(&cursor), Some((at, id)));
        assert_eq!(parse_cursor("12/not-a-uuid"), None);
    }
}
