//! Every token defect is `UNAUTHENTICATED`, with one message, through the real server.

use base64::Engine as _;
use tally::{
    auth::token::{AccessClaims, JwtCodec, PasetoCodec, TokenCodec, whole_seconds},
    proto::tally_v1 as pb,
};
use time::{Duration, OffsetDateTime};
use tonic::{Code, Request};
use uuid::Uuid;

use crate::helpers::*;

fn claims_for(login: &pb::LoginResponse, username: &str, expires_in: Duration) -> AccessClaims {
    let now = whole_seconds(OffsetDateTime::now_utc());
    AccessClaims {
        username: username.to_owned(),
        session_id: Uuid::parse_str(&login.session_id).unwrap(),
        roles: vec!["customer".into()],
        issued_at: now - Duration::minutes(30),
        expires_at: now - Duration::minutes(30) + expires_in,
        token_id: Uuid::new_v4(),
    }
}

async fn check(app: &TestApp, username: &str, label: &str, token: Option<String>) {
    let message = pb::GetUserRequest {
        username: username.to_owned(),
    };
    let request = match &token {
        Some(t) => authed(t, message),
        None => Request::new(message),
    };
    let status = app.users().get_user(request).await.expect_err(label);
    assert_eq!(status.code(), Code::Unauthenticated, "{label}: {status:?}");
    assert_eq!(
        status.message(),
        "missing or invalid access token",
        "{label}"
    );
}

#[tokio::test]
async fn every_token_defect_is_unauthenticated() {
    let app = TestApp::spawn().await;
    let ivan = unique("ivan");
    app.create_user(&ivan).await;
    let login = app.login(&ivan, PASSWORD).await.unwrap();

    // The real token works, so every refusal below is the defect's doing.
    app.get_user(&login.access_token, &ivan)
        .await
        .expect("the genuine token works");

    let paseto = PasetoCodec::new(&TEST_KEY, "tally", "tally").unwrap();
    let jwt = JwtCodec::new(&TEST_KEY, "tally", "tally").unwrap();
    let other_key = PasetoCodec::new(&[9u8; 32], "tally", "tally").unwrap();
    let valid = claims_for(&login, &ivan, Duration::hours(1));

    // A token minted here with the server's key is accepted: the forgeries below differ from
    // it in exactly one defect.
    let minted = paseto.issue(&valid).unwrap();
    app.get_user(&minted, &ivan)
        .await
        .expect("a well-formed token with the right key works");

    let mut tampered = login.access_token.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let expired = paseto
        .issue(&claims_for(&login, &ivan, Duration::minutes(5)))
        .unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwt_token = jwt.issue(&valid).unwrap();
    let payload = jwt_token.split('.').nth(1).unwrap();
    let none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    // A token for another (real) session id of a different user is refused too.
    let mut wrong_user = valid.clone();
    wrong_user.username = unique("mallory");

    let defects = [
        ("tampered", Some(String::from_utf8(tampered).unwrap())),
        ("expired", Some(expired)),
        ("another key", Some(other_key.issue(&valid).unwrap())),
        ("the other format", Some(jwt.issue(&valid).unwrap())),
        ("alg none", Some(none)),
        ("garbage", Some("garbage".into())),
        ("missing", None),
        (
            "username mismatch",
            Some(paseto.issue(&wrong_user).unwrap()),
        ),
    ];
    for (label, token) in defects {
        check(&app, &ivan, label, token).await;
    }
}

#[tokio::test]
async fn a_jwt_server_pins_hs256_and_refuses_paseto() {
    let app = TestApp::spawn_with(&["--token-format", "jwt"]).await;
    let judy = unique("judy");
    app.create_user(&judy).await;
    let login = app.login(&judy, PASSWORD).await.unwrap();
    assert_eq!(login.access_token.split('.').count(), 3, "a JWT");
    app.users()
        .get_user(authed(
            &login.access_token,
            pb::GetUserRequest {
                username: judy.clone(),
            },
        ))
        .await
        .expect("the genuine JWT works");

    let valid = claims_for(&login, &judy, Duration::hours(1));
    let paseto = PasetoCodec::new(&TEST_KEY, "tally", "tally").unwrap();
    check(
        &app,
        &judy,
        "paseto on a jwt server",
        Some(paseto.issue(&valid).unwrap()),
    )
    .await;

    // The same claims signed with HS512 and the same secret.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = login.access_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&TEST_KEY),
    )
    .unwrap();
    check(&app, &judy, "HS512", Some(hs512)).await;
    let none = format!("{}.{payload}.", b64.encode(r#"{"alg":"none","typ":"JWT"}"#));
    check(&app, &judy, "alg none", Some(none)).await;

    // Without `aud` the token is refused even with a good signature.
    let mut no_aud = claims.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let no_aud = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &no_aud,
        &jsonwebtoken::EncodingKey::from_secret(&TEST_KEY),
    )
    .unwrap();
    check(&app, &judy, "no aud", Some(no_aud)).await;
}
