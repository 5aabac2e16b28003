//! A posting: one validated request to move money, as the engine applies it, and the
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
}

impl Posting {
    /// SHA-256 over every field of the payload: a replay must match all of them.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [
            self.kind.as_str().as_bytes(),
            self.from.as_bytes(),
            self.to.as_bytes(),
            &self.amount.to_be_bytes(),
            self.currency.as_bytes(),
            self.memo.as_bytes(),
        ] {
            // Length-prefixed, so no two payloads share an encoding.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.finalize().into()
    }
}

/// Postings that succeed or fail as a unit, in order. A lone posting is a chain of one.
pub type Chain = Vec<Posting>;

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
        }
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
        ];
        for v in variants {
            assert_ne!(v.fingerprint(), base, "{v:?}");
        }
        assert_eq!(p.clone().fingerprint(), base);
    }
}
