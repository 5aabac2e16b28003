//! What the engine applies: a posting (one validated request to create a transfer, deposit,
//! withdrawal or hold), a settlement of a hold (post or void), or a reversal; and the
//! fingerprint that an idempotent replay must match.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Kind;

/// A validated request to move money, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// The client's idempotency key; becomes the transfer id.
    pub id: Uuid,
    pub kind: Kind,
    /// Who asks: only they can replay this id.
    pub requested_by: Uuid,
    /// May the requester move money out of accounts it does not own (bankers, admins)?
    pub may_move_any: bool,
    pub from: Uuid,
    pub to: Uuid,
    pub amount: i64,
    pub currency: String,
    pub memo: String,
    /// A hold: reserve the amount for this many milliseconds instead of moving it.
    pub hold_ms: Option<i64>,
    /// The first leg of a conversion: the quote it uses, checked unexpired and unused and
    /// marked used in the same transaction.
    pub claim: Option<QuoteClaim>,
}

/// A conversion's use of its quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteClaim {
    pub quote_id: Uuid,
    pub conversion_id: Uuid,
}

/// Posts or voids a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The hold (a pending transfer's id).
    pub id: Uuid,
    pub requested_by: Uuid,
    /// May the requester settle holds out of accounts it does not own?
    pub may_move_any: bool,
    pub action: Settle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Move the amount (`None`: all of it); the rest is released.
    Post(Option<i64>),
    /// Release the hold.
    Void,
}

/// A reversal of a recorded transfer: a new transfer back from its destination to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    /// The reversal's own id (its idempotency key).
    pub id: Uuid,
    pub original: Uuid,
    pub requested_by: Uuid,
    /// May the requester move money out of accounts it does not own?
    pub may_move_any: bool,
    /// `None`: all that is not reversed yet.
    pub amount: Option<i64>,
    pub memo: String,
}

/// One operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create(Posting),
    Settle(Settlement),
    Reverse(Reversal),
}

impl From<Posting> for Op {
    fn from(p: Posting) -> Self {
        Op::Create(p)
    }
}

impl Op {
    /// The transfers this operation reads or records: its own id and what it refers to.
    pub fn transfer_ids(&self) -> [Option<Uuid>; 2] {
        match self {
            Op::Create(p) => [Some(p.id), None],
            Op::Settle(s) => [Some(s.id), None],
            Op::Reverse(r) => [Some(r.id), Some(r.original)],
        }
    }
}

/// SHA-256 over length-prefixed parts, so no two payloads share an encoding.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

impl Posting {
    /// SHA-256 over every field of the payload: a replay must match all of them. (A hold adds
    /// its timeout; a plain transfer hashes exactly as before holds existed, so ids recorded
    /// then still replay.)
    pub fn fingerprint(&self) -> [u8; 32] {
        let amount = self.amount.to_be_bytes();
        let mut parts: Vec<&[u8]> = vec![
            self.kind.as_str().as_bytes(),
            self.from.as_bytes(),
            self.to.as_bytes(),
            &amount,
            self.currency.as_bytes(),
            self.memo.as_bytes(),
        ];
        let hold = self.hold_ms.map(i64::to_be_bytes);
        if let Some(hold) = &hold {
            parts.push(b"hold");
            parts.push(hold);
        }
        if let Some(claim) = &self.claim {
            parts.push(b"quote");
            parts.push(claim.quote_id.as_bytes());
        }
        digest(&parts)
    }
}

impl Reversal {
    /// Over what the caller asked: the original, the amount (or its absence) and the memo.
    pub fn fingerprint(&self) -> [u8; 32] {
        let amount = self.amount.map(i64::to_be_bytes);
        digest(&[
            super::Kind::Reversal.as_str().as_bytes(),
            self.original.as_bytes(),
            amount.as_ref().map_or(&b"all"[..], |a| &a[..]),
            self.memo.as_bytes(),
        ])
    }
}

/// Operations that succeed or fail as a unit, in order. A lone one is a chain of one.
pub type Chain = Vec<Op>;

#[cfg(test)]
mod tests {
    use super::*;

    fn posting() -> Posting {
        Posting {
            id: Uuid::now_v7(),
            kind: Kind::Transfer,
            requested_by: Uuid::now_v7(),
            may_move_any: false,
            from: Uuid::now_v7(),
            to: Uuid::now_v7(),
            amount: 100,
            currency: "USD".into(),
            memo: String::new(),
            hold_ms: None,
            claim: None,
        }
    }

    /// Ids recorded before holds existed must still replay: the fingerprint of a plain transfer
    /// is the one it always was.
    #[test]
    fn a_plain_transfer_hashes_as_before_holds_existed() {
        let p = posting();
        let mut h = Sha256::new();
        let amount = p.amount.to_be_bytes();
        for part in [
            p.kind.as_str().as_bytes(),
            p.from.as_bytes(),
            p.to.as_bytes(),
            &amount[..],
            p.currency.as_bytes(),
            p.memo.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let before: [u8; 32] = h.finalize().into();
        assert_eq!(p.fingerprint(), before);
    }

    #[test]
    fn the_fingerprint_covers_every_payload_field() {
        let p = posting();
        let base = p.fingerprint();
        let variants = [
            Posting {
                amount: 101,
                ..p.clone()
            },
            Posting {
                currency: "EUR".into(),
                ..p.clone()
            },
            Posting {
                memo: "x".into(),
                ..p.clone()
            },
            Posting {
                to: Uuid::now_v7(),
                ..p.clone()
            },
            Posting {
                from: Uuid::now_v7(),
                ..p.clone()
            },
            Posting {
                kind: Kind::Deposit,
                ..p.clone()
            },
            Posting {
                hold_ms: Some(1_000),
                ..p.clone()
            },
            Posting {
                claim: Some(QuoteClaim {
                    quote_id: Uuid::now_v7(),
                    conversion_id: Uuid::now_v7(),
                }),
                ..p.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), base, "{v:?}");
        }
        assert_eq!(p.clone().fingerprint(), base);
    }
}
