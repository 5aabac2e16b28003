//! The settings of access tokens: format, key, issuer, audience, lifetimes.

use std::time::Duration;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// PASETO v4.local (XChaCha20 + BLAKE2b), 32-byte key.
    Paseto,
    /// JWT HS256, secret of at least 32 bytes.
    Jwt,
}

/// Where the token key came from; an ephemeral key is development-only.
#[derive(Clone)]
pub enum TokenKey {
    Configured(Vec<u8>),
    Ephemeral(Vec<u8>),
}

impl TokenKey {
    pub fn bytes(&self) -> &[u8] {
        match self {
            TokenKey::Configured(k) | TokenKey::Ephemeral(k) => k,
        }
    }
}

impl std::fmt::Debug for TokenKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenKey::Configured(_) => f.write_str("TokenKey::Configured(<redacted>)"),
            TokenKey::Ephemeral(_) => f.write_str("TokenKey::Ephemeral(<redacted>)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub format: TokenFormat,
    pub key: TokenKey,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}
