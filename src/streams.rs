//! Live streams per user, bounded: WatchRates and WatchAccount hold a slot each for as long as
//! they live, so one user cannot hold a server's streams (and their memory) without limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use uuid::Uuid;

use crate::error::{Error, Reason, Result};

/// Live streams per user, bounded: a slot is held for as long as its stream lives.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
    per_user_max: usize,
}

/// Frees its slot when dropped (the stream ended, or its client went away).
#[derive(Debug)]
pub struct StreamSlot {
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
    user: Uuid,
}

impl StreamSlots {
    pub fn new(per_user_max: usize) -> Self {
        Self {
            held: Arc::default(),
            per_user_max,
        }
    }

    /// A slot for `user`, or `RESOURCE_EXHAUSTED` (`STREAM_LIMIT`) when they hold them all.
    pub fn acquire(&self, user: Uuid) -> Result<StreamSlot> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(user).or_default();
        if *count >= self.per_user_max {
            return Err(Error::refused(
                Reason::StreamLimit,
                format!(
                    "at most {} live streams per user (TALLY_STREAMS_PER_USER_MAX); close one first",
                    self.per_user_max
                ),
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            held: self.held.clone(),
            user,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_user_and_freed_on_drop() {
        let slots = StreamSlots::new(2);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = slots.acquire(alice).unwrap();
        let _second = slots.acquire(alice).unwrap();
        assert!(slots.acquire(alice).is_err());
        assert!(
            slots.acquire(bob).is_ok(),
            "another user has slots of their own"
        );
        drop(first);
        assert!(slots.acquire(alice).is_ok());
    }
}
