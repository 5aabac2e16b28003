//! Access tokens: one trait, two formats.
//!
//! PASETO v4.local (the default) encrypts and authenticates the claims with a 32-byte key; JWT
//! HS256 signs them with a secret of at least 32 bytes. Both pin their one algorithm, require
//! `exp`, `iss`, `aud` and `sub`, and mark the token `typ = access` so no other kind of token
//! minted with the same key can pass for one. Every defect is the same [`TokenError`]: callers
//! learn nothing about why a token was refused.
//!
//! Refresh tokens are not bearer claims but opaque random secrets stored hashed (see
//! `identity::sessions`), so they can be rotated and revoked server-side.

use std::sync::Arc;

use pasetors::{
    claims::{Claims, ClaimsValidationRules},
    keys::SymmetricKey,
    local,
    token::UntrustedToken,
    version4::V4,
};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use crate::config::{TokenFormat, TokenSettings};

/// The `typ` claim of access tokens.
/// PASETO v4.local keys are exactly this long; JWT HS256 secrets at least this long.
pub const TOKEN_KEY_BYTES: usize = 32;
const ACCESS_TOKEN_TYPE: &str = "access";
/// Tolerated clock difference between replicas for JWT time claims, in seconds.
const JWT_LEEWAY_SECS: u64 = 5;
/// Longer tokens are refused before any parsing.
pub const TOKEN_CHARS_MAX: usize = 4_096;
/// Roles carried in one token; more is a bug, not a user.
const TOKEN_ROLES_MAX: usize = 16;

/// What an access token asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub username: String,
    pub session_id: Uuid,
    /// Roles when the token was issued. Authorization re-reads the live roles (so a revoked
    /// role stops working before the token expires); these are informational.
    pub roles: Vec<String>,
    pub issued_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Unique per token (`jti`).
    pub token_id: Uuid,
}

/// A token was refused. Deliberately carries no reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid token")]
pub struct TokenError;

/// Issues and verifies access tokens in one format.
pub trait TokenCodec: Send + Sync + 'static {
    fn issue(&self, claims: &AccessClaims) -> Result<String, TokenError>;
    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError>;
}

/// Builds the codec the settings ask for.
pub fn codec(settings: &TokenSettings) -> anyhow::Result<Arc<dyn TokenCodec>> {
    let key = settings.key.bytes();
    Ok(match settings.format {
        TokenFormat::Paseto => {
            Arc::new(PasetoCodec::new(key, &settings.issuer, &settings.audience)?)
        }
        TokenFormat::Jwt => Arc::new(JwtCodec::new(key, &settings.issuer, &settings.audience)?),
    })
}

/// Truncates to whole seconds, the precision both formats carry.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

pub struct PasetoCodec {
    key: SymmetricKey<V4>,
    issuer: String,
    audience: String,
}

impl PasetoCodec {
    pub fn new(key: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: SymmetricKey::<V4>::from(key)
                .map_err(|_| anyhow::anyhow!("TALLY_TOKEN_KEY: PASETO needs exactly 32 bytes"))?,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }
}

fn rfc3339(t: OffsetDateTime) -> Result<String, TokenError> {
    whole_seconds(t).format(&Rfc3339).map_err(|_| TokenError)
}

impl TokenCodec for PasetoCodec {
    fn issue(&self, c: &AccessClaims) -> Result<String, TokenError> {
        let mut claims = Claims::new().map_err(|_| TokenError)?;
        claims.issuer(&self.issuer).map_err(|_| TokenError)?;
        claims.audience(&self.audience).map_err(|_| TokenError)?;
        claims.subject(&c.username).map_err(|_| TokenError)?;
        claims
            .issued_at(&rfc3339(c.issued_at)?)
            .map_err(|_| TokenError)?;
        claims
            .not_before(&rfc3339(c.issued_at)?)
            .map_err(|_| TokenError)?;
        claims
            .expiration(&rfc3339(c.expires_at)?)
            .map_err(|_| TokenError)?;
        claims
            .token_identifier(&c.token_id.to_string())
            .map_err(|_| TokenError)?;
        claims
            .add_additional("sid", c.session_id.to_string())
            .map_err(|_| TokenError)?;
        claims
            .add_additional("roles", serde_json::json!(c.roles))
            .map_err(|_| TokenError)?;
        claims
            .add_additional("typ", ACCESS_TOKEN_TYPE)
            .map_err(|_| TokenError)?;
        local::encrypt(&self.key, &claims, None, None).map_err(|_| TokenError)
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > TOKEN_CHARS_MAX {
            return Err(TokenError);
        }
        // Parsing as `UntrustedToken<Local, V4>` refuses every other version and purpose.
        let untrusted =
            UntrustedToken::<pasetors::Local, V4>::try_from(token).map_err(|_| TokenError)?;
        let mut rules = ClaimsValidationRules::new();
        rules.validate_issuer_with(&self.issuer);
        rules.validate_audience_with(&self.audience);
        let trusted =
            local::decrypt(&self.key, &untrusted, &rules, None, None).map_err(|_| TokenError)?;
        let claims = trusted.payload_claims().ok_or(TokenError)?;
        let text = |name: &str| claims.get_claim(name).and_then(|v| v.as_str());
        let time = |name: &str| {
            text(name)
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
                .ok_or(TokenError)
        };
        if text("typ") != Some(ACCESS_TOKEN_TYPE) {
            return Err(TokenError);
        }
        let roles = claims
            .get_claim("roles")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|roles| roles.len() <= TOKEN_ROLES_MAX)
            .ok_or(TokenError)?;
        Ok(AccessClaims {
            username: text("sub").ok_or(TokenError)?.to_owned(),
            session_id: text("sid")
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or(TokenError)?,
            roles,
            issued_at: time("iat")?,
            expires_at: time("exp")?,
            token_id: text("jti")
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or(TokenError)?,
        })
    }
}

pub struct JwtCodec {
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
    issuer: String,
    audience: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct JwtClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: Uuid,
    sid: Uuid,
    roles: Vec<String>,
    typ: String,
}

impl JwtCodec {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= TOKEN_KEY_BYTES,
            "TALLY_TOKEN_KEY: JWT needs at least 32 bytes"
        );
        // `Validation::new` pins the accepted algorithms to exactly HS256, so `alg: none` or any
        // other algorithm in a header is refused before the signature is looked at.
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.validate_nbf = true;
        validation.leeway = JWT_LEEWAY_SECS;
        Ok(Self {
            encoding: jsonwebtoken::EncodingKey::from_secret(secret),
            decoding: jsonwebtoken::DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }
}

impl TokenCodec for JwtCodec {
    fn issue(&self, c: &AccessClaims) -> Result<String, TokenError> {
        let claims = JwtClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: c.username.clone(),
            iat: c.issued_at.unix_timestamp(),
            nbf: c.issued_at.unix_timestamp(),
            exp: c.expires_at.unix_timestamp(),
            jti: c.token_id,
            sid: c.session_id,
            roles: c.roles.clone(),
            typ: ACCESS_TOKEN_TYPE.to_owned(),
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(|_| TokenError)
    }

    fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if token.len() > TOKEN_CHARS_MAX {
            return Err(TokenError);
        }
        let data = jsonwebtoken::decode::<JwtClaims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError)?;
        let c = data.claims;
        if c.typ != ACCESS_TOKEN_TYPE || c.roles.len() > TOKEN_ROLES_MAX {
            return Err(TokenError);
        }
        let time = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).map_err(|_| TokenError);
        Ok(AccessClaims {
            username: c.sub,
            session_id: c.sid,
            roles: c.roles,
            issued_at: time(c.iat)?,
            expires_at: time(c.exp)?,
            token_id: c.jti,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use time::Duration;

    use super::*;

    const KEY: [u8; 32] = [42; 32];
    const OTHER_KEY: [u8; 32] = [43; 32];

    fn claims(expires_in: Duration) -> AccessClaims {
        let now = whole_seconds(OffsetDateTime::now_utc());
        AccessClaims {
            username: "alice".into(),
            session_id: Uuid::now_v7(),
            roles: vec!["customer".into()],
            issued_at: now,
            expires_at: now + expires_in,
            token_id: Uuid::new_v4(),
        }
    }

    fn codecs(key: &[u8]) -> Vec<(&'static str, Box<dyn TokenCodec>)> {
        vec![
            (
                "paseto",
                Box::new(PasetoCodec::new(key, "tally", "tally").unwrap()),
            ),
            (
                "jwt",
                Box::new(JwtCodec::new(key, "tally", "tally").unwrap()),
            ),
        ]
    }

    #[test]
    fn a_token_round_trips_in_both_formats() {
        for (name, codec) in codecs(&KEY) {
            let c = claims(Duration::minutes(15));
            let token = codec.issue(&c).unwrap();
            assert_eq!(codec.verify(&token).unwrap(), c, "{name}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        for (name, codec) in codecs(&KEY) {
            let mut c = claims(Duration::minutes(15));
            c.issued_at -= Duration::hours(1);
            c.expires_at = c.issued_at + Duration::minutes(1);
            let token = codec.issue(&c).unwrap();
            assert!(codec.verify(&token).is_err(), "{name}");
        }
    }

    #[test]
    fn tokens_of_another_key_or_format_are_refused() {
        let mine = codecs(&KEY);
        let theirs = codecs(&OTHER_KEY);
        for (name, codec) in &theirs {
            let token = codec.issue(&claims(Duration::minutes(15))).unwrap();
            for (verifier, mine) in &mine {
                assert!(
                    mine.verify(&token).is_err(),
                    "{name} token, {verifier} verifier"
                );
            }
        }
        let paseto = mine[0].1.issue(&claims(Duration::minutes(15))).unwrap();
        assert!(mine[1].1.verify(&paseto).is_err());
        let jwt = mine[1].1.issue(&claims(Duration::minutes(15))).unwrap();
        assert!(mine[0].1.verify(&jwt).is_err());
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        for (name, codec) in codecs(&KEY) {
            let token = codec.issue(&claims(Duration::minutes(15))).unwrap();
            // Flip one character inside the payload part.
            let mut bytes = token.into_bytes();
            let at = bytes.len() / 2;
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(codec.verify(&tampered).is_err(), "{name}");
        }
    }

    #[test]
    fn jwt_with_alg_none_or_another_algorithm_is_refused() {
        let codec = JwtCodec::new(&KEY, "tally", "tally").unwrap();
        let token = codec.issue(&claims(Duration::minutes(15))).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
        assert!(codec.verify(&none).is_err());
        // The same payload signed with HS512 and the same secret is still refused.
        let hs512 = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
            &serde_json::from_slice::<serde_json::Value>(&b64.decode(payload).unwrap()).unwrap(),
            &jsonwebtoken::EncodingKey::from_secret(&KEY),
        )
        .unwrap();
        assert!(codec.verify(&hs512).is_err());
    }

    #[test]
    fn garbage_and_oversized_tokens_are_refused() {
        for (name, codec) in codecs(&KEY) {
            for junk in ["", "garbage", "v4.local.AAAA", "a.b.c", &"x".repeat(10_000)] {
                assert!(codec.verify(junk).is_err(), "{name}: {junk:.20}");
            }
        }
    }

    #[test]
    fn a_wrong_audience_or_issuer_is_refused() {
        for (name, codec) in codecs(&KEY) {
            let token = codec.issue(&claims(Duration::minutes(15))).unwrap();
            let strict = [
                Box::new(PasetoCodec::new(&KEY, "tally", "other").unwrap()) as Box<dyn TokenCodec>,
                Box::new(JwtCodec::new(&KEY, "other", "tally").unwrap()),
            ];
            for verifier in &strict {
                assert!(verifier.verify(&token).is_err(), "{name}");
            }
        }
    }
}
