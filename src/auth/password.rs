//! Password hashing with argon2id at the OWASP parameters (m = 19 MiB, t = 2, p = 1).
//!
//! Hashing is deliberately slow (tens of milliseconds) and takes 19 MiB while it runs, so it is
//! bounded: every hash or check needs a [`HashPermit`] from the process's [`Hashing`] pool
//! (about one per core), taken before any work starts and waited for only briefly; a caller
//! that gets none is answered `UNAVAILABLE`. A caller that goes away while it waits never
//! starts a hash; a hash that has started keeps its permit until it ends, so abandoned work
//! still counts against the bound. Hashes run on the blocking pool, never on the async
//! workers. Unknown users are checked against a dummy hash computed once, so a login for a
//! missing user costs the same as a wrong password.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};

use crate::error::{Error, Result};

/// Memory cost in KiB (OWASP: 19 MiB).
/// The most password hashes a process may run at once (each takes 19 MiB while it runs).
pub const HASH_CONCURRENCY_MAX: i64 = 64;
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Iterations (OWASP: 2).
pub const ARGON2_ITERATIONS: u32 = 2;
/// Lanes (OWASP: 1).
pub const ARGON2_PARALLELISM: u32 = 1;
pub use crate::validate::{PASSWORD_CHARS_MAX, PASSWORD_CHARS_MIN};

fn hasher() -> Argon2<'static> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .expect("the argon2 parameters are constants within range");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashed once, at first use, with the same parameters as real hashes.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hasher()
        .hash_password(b"tally dummy password for unknown users")
        .expect("hashing a constant cannot fail")
        .to_string()
});

/// The retry delay a caller is told when no hashing turn came.
pub const HASH_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bounded pool of password hashing: at most `permits` hashes at once, process-wide.
#[derive(Clone)]
pub struct Hashing {
    permits: Arc<Semaphore>,
    wait: Duration,
}

/// The right to run one hash or check: see [`Hashing::permit`].
pub struct HashPermit {
    /// Released when the hash it allowed ends (it moves into the blocking task).
    _held: OwnedSemaphorePermit,
}

impl Hashing {
    /// `permits` hashes at once (at least one); a caller waits at most `wait` for one.
    pub fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }

    /// Waits up to the pool's wait for a permit; then `UNAVAILABLE`. Take it before any other
    /// work the hash depends on (a transaction, a row lock), so that no caller holds those
    /// while it queues for hashing.
    pub async fn permit(&self) -> Result<HashPermit> {
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(HashPermit { _held: permit }),
            Ok(Err(closed)) => Err(Error::internal(closed)),
            Err(_) => {
                metrics::counter!("tally_password_hash_rejected_total").increment(1);
                Err(Error::overloaded(
                    "the server is busy hashing passwords; retry in a moment",
                    HASH_RETRY_AFTER,
                ))
            }
        }
    }
}

impl HashPermit {
    /// Returns the PHC string of a new argon2id hash of `password`.
    pub async fn hash(self, password: String) -> Result<String> {
        tokio::task::spawn_blocking(move || {
            let _permit = self;
            metrics::counter!("tally_password_hashes_total").increment(1);
            hasher()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|err| Error::internal(anyhow::anyhow!("argon2 hash failed: {err}")))
        })
        .await
        .map_err(Error::internal)?
    }

    /// Checks `password` against a stored PHC hash, or against the dummy hash when `stored`
    /// is `None`, so both paths cost the same. Returns true only for a real match.
    pub async fn verify(self, password: String, stored: Option<String>) -> Result<bool> {
        tokio::task::spawn_blocking(move || {
            let _permit = self;
            metrics::counter!("tally_password_hashes_total").increment(1);
            let is_real = stored.is_some();
            let phc = stored.unwrap_or_else(|| DUMMY_HASH.clone());
            // The comparison inside argon2 is constant-time.
            let matched = hasher()
                .verify_password(password.as_bytes(), phc.as_str())
                .is_ok();
            is_real && matched
        })
        .await
        .map_err(Error::internal)
    }
}

/// Warms the dummy hash so the first unknown-user login is not measurably slower.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(permits: usize) -> Hashing {
        Hashing::new(permits, Duration::from_millis(50))
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let pool = pool(1);
        let phc = pool
            .permit()
            .await
            .unwrap()
            .hash("correct horse battery staple".into())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let permit = pool.permit().await.unwrap();
        assert!(
            permit
                .verify("correct horse battery staple".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        let permit = pool.permit().await.unwrap();
        assert!(
            !permit
                .verify("correct horse battery stapl".into(), Some(phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_dummy_hash_never_matches() {
        let permit = pool(1).permit().await.unwrap();
        assert!(
            !permit
                .verify("tally dummy password for unknown users".into(), None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_full_pool_answers_unavailable_after_its_wait_and_frees_its_permits() {
        let pool = pool(2);
        let first = pool.permit().await.unwrap();
        let second = pool.permit().await.unwrap();
        let third = pool.permit().await;
        assert!(
            matches!(
                third,
                Err(Error::RetryLater {
                    reason: crate::error::Reason::Overloaded,
                    ..
                })
            ),
            "{:?}",
            third.err()
        );
        // A permit spent on a hash comes back when the hash ends.
        first
            .hash("correct horse battery staple".into())
            .await
            .unwrap();
        let again = pool.permit().await.expect("the hash gave its permit back");
        drop((second, again));
    }
}
