//! Password hashing with argon2id at the OWASP parameters (m = 19 MiB, t = 2, p = 1).
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on the blocking pool, never
//! on the async workers. Unknown users are checked against a dummy hash computed once, so a
//! login for a missing user costs the same as a wrong password.

use std::sync::LazyLock;

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};

use crate::error::{Error, Result};

/// Memory cost in KiB (OWASP: 19 MiB).
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Iterations (OWASP: 2).
pub const ARGON2_ITERATIONS: u32 = 2;
/// Lanes (OWASP: 1).
pub const ARGON2_PARALLELISM: u32 = 1;
/// Passwords shorter than this are refused at sign-up and on change.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longer passwords are refused everywhere, before any hashing (hashing cost grows with size).
pub const PASSWORD_CHARS_MAX: usize = 128;

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

/// Returns the PHC string of a new argon2id hash of `password`.
pub async fn hash(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|err| Error::internal(anyhow::anyhow!("argon2 hash failed: {err}")))
    })
    .await
    .map_err(Error::internal)?
}

/// Checks `password` against a stored PHC hash, or against the dummy hash when `stored` is
/// `None`, so both paths cost the same. Returns true only for a real match.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
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

/// Warms the dummy hash so the first unknown-user login is not measurably slower.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let phc = hash("correct horse battery staple".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            verify("correct horse battery staple".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("correct horse battery stapl".into(), Some(phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn the_dummy_hash_never_matches() {
        assert!(
            !verify("tally dummy password for unknown users".into(), None)
                .await
                .unwrap()
        );
    }
}
