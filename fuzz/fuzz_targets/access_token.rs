//! Access-token parsing (src/auth/token.rs): `PasetoCodec::verify` and `JwtCodec::verify` of an
//! arbitrary string, and of tokens minted here with the codecs' own key around an arbitrary
//! payload (so the claim checks behind the cryptography are reached too).
//!
//! Input, UTF-8 or not:
//! - `paseto:<payload>`: the payload bytes are encrypted as a PASETO v4.local token with the key;
//! - `jwt:<header JSON>\n<payload JSON>`: signed as a JWT with HMAC-SHA256 and the key, whatever
//!   the header says (`jwt:<payload>` alone takes the header `{"alg":"HS256","typ":"JWT"}`);
//! - anything else is the token itself, given to both codecs.
//!
//! What must hold, besides never panicking:
//! - a token one format accepts, the other refuses;
//! - accepted claims carry at most 16 roles, and are those of the payload that was minted
//!   (`sub`, `sid`, `jti`, `roles`);
//! - a JWT is accepted only when its header says HS256, whatever key signed it;
//! - accepted claims are re-encodable: `issue` mints a token for them that verifies to the same
//!   claims (for claims tally can issue: a username, issued since 1970 and not in the future,
//!   expiring a minute or more from now).

#![no_main]

use std::sync::LazyLock;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use libfuzzer_sys::fuzz_target;
use pasetors::{keys::SymmetricKey, version4::V4};
use serde_json::Value as Json;
use tally::auth::token::{AccessClaims, JwtCodec, PasetoCodec, TokenCodec, whole_seconds};
use time::{Duration, OffsetDateTime};

/// The key, issuer and audience of the seed corpus' tokens (fuzz/corpus/access_token/).
const KEY: [u8; 32] = [42; 32];
const ISSUER: &str = "tally";
const AUDIENCE: &str = "tally";

static PASETO: LazyLock<PasetoCodec> =
    LazyLock::new(|| PasetoCodec::new(&KEY, ISSUER, AUDIENCE).expect("a 32-byte key"));
static JWT: LazyLock<JwtCodec> =
    LazyLock::new(|| JwtCodec::new(&KEY, ISSUER, AUDIENCE).expect("a 32-byte secret"));

fuzz_target!(|data: &[u8]| {
    if let Some(payload) = data.strip_prefix(b"paseto:") {
        let key = SymmetricKey::<V4>::from(&KEY).expect("a 32-byte key");
        let Ok(token) = pasetors::version4::LocalToken::encrypt(&key, payload, None, None) else {
            return; // an empty payload
        };
        let claims = check(&*PASETO, "paseto", &token, &*JWT);
        if let Some(claims) = claims {
            check_payload(&claims, payload, &token);
        }
    } else if let Some(rest) = data.strip_prefix(b"jwt:") {
        let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        let message = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let key = jsonwebtoken::EncodingKey::from_secret(&KEY);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .expect("HMAC-SHA256 signs anything");
        let token = format!("{message}.{signature}");
        if let Some(claims) = check(&*JWT, "jwt", &token, &*PASETO) {
            let alg = serde_json::from_slice::<Json>(header)
                .ok()
                .and_then(|h| h.get("alg").and_then(Json::as_str).map(str::to_owned));
            assert_eq!(
                alg.as_deref(),
                Some("HS256"),
                "a JWT accepted under its header {alg:?}"
            );
            check_payload(&claims, payload, &token);
        }
    } else if let Ok(token) = std::str::from_utf8(data) {
        check(&*PASETO, "paseto", token, &*JWT);
        check(&*JWT, "jwt", token, &*PASETO);
    }
});

/// Verifies `token` with `codec`; what it accepts, `other` must refuse and `codec` must be able
/// to issue again.
fn check(
    codec: &dyn TokenCodec,
    name: &str,
    token: &str,
    other: &dyn TokenCodec,
) -> Option<AccessClaims> {
    let claims = codec.verify(token).ok()?;
    assert!(
        other.verify(token).is_err(),
        "{name} token {token:?} passes for the other format"
    );
    assert!(
        claims.roles.len() <= 16,
        "{name}: {} roles accepted",
        claims.roles.len()
    );
    let now = OffsetDateTime::now_utc();
    // JWT time claims are unsigned to jsonwebtoken: a token issued before 1970 (`nbf` = `iat`)
    // would not verify, and no clock tally runs on says 1969.
    if !claims.username.is_empty()
        && OffsetDateTime::UNIX_EPOCH <= claims.issued_at
        && claims.issued_at <= now
        && claims.expires_at > now + Duration::minutes(1)
    {
        let canonical = AccessClaims {
            issued_at: whole_seconds(claims.issued_at),
            expires_at: whole_seconds(claims.expires_at),
            ..claims.clone()
        };
        let again = codec
            .issue(&canonical)
            .unwrap_or_else(|_| panic!("{name}: accepted claims {claims:?} cannot be issued"));
        let back = codec.verify(&again).map_err(|_| ()).unwrap_or_else(|()| {
            panic!("{name}: a token re-issued for {claims:?} does not verify")
        });
        assert_eq!(back, canonical, "{name}: re-issued claims differ");
    }
    Some(claims)
}

/// The accepted claims are the payload's.
fn check_payload(claims: &AccessClaims, payload: &[u8], token: &str) {
    let Ok(Json::Object(p)) = serde_json::from_slice::<Json>(payload) else {
        panic!("{token:?} accepted with a payload that is not a JSON object");
    };
    let text = |name: &str| {
        p.get(name)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(claims.username, text("sub"), "{token:?}: sub");
    let uuid = |name: &str| uuid::Uuid::parse_str(&text(name)).ok();
    assert_eq!(Some(claims.session_id), uuid("sid"), "{token:?}: sid");
    assert_eq!(Some(claims.token_id), uuid("jti"), "{token:?}: jti");
    let roles: Vec<String> = p
        .get("roles")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default();
    assert_eq!(claims.roles, roles, "{token:?}: roles");
}
