//! Attack traffic, on loopback only and bounded in count and time: what an anonymous caller
//! can make the server spend.

use tally::proto::tally_v1::{
    self as pb, session_service_client::SessionServiceClient,
    user_service_client::UserServiceClient,
};
use tonic::Code;

use crate::helpers::*;

/// Concurrent anonymous calls of each kind below.
const ATTACKERS: usize = 200;
/// The server's peak RSS must stay under this through the attack.
const RSS_KIB_MAX: u64 = 256 * 1024;

#[tokio::test]
async fn two_hundred_sign_ups_with_a_taken_name_and_two_hundred_logins_stay_under_256_mib() {
    let server = ServerProcess::spawn(&[]).await;
    let users = UserServiceClient::new(server.channel.clone());
    let sessions = SessionServiceClient::new(server.channel.clone());
    let taken = unique("taken");
    users
        .clone()
        .create_user(pb::CreateUserRequest {
            username: taken.clone(),
            full_name: "First Comer".into(),
            email: format!("{taken}@example.com"),
            password: PASSWORD.into(),
        })
        .await
        .expect("the first sign-up");

    let mut calls = tokio::task::JoinSet::new();
    for i in 0..ATTACKERS {
        let mut users = users.clone();
        let taken = taken.clone();
        calls.spawn(async move {
            users
                .create_user(pb::CreateUserRequest {
                    username: taken,
                    full_name: "Second Comer".into(),
                    email: format!("attacker{i}@example.com"),
                    password: PASSWORD.into(),
                })
                .await
                .map(|_| ())
        });
        let mut sessions = sessions.clone();
        calls.spawn(async move {
            sessions
                .login(pb::LoginRequest {
                    username: format!("nobody_{i}"),
                    password: "wrong password 123".into(),
                })
                .await
                .map(|_| ())
        });
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answer) = calls.join_next().await {
        let code = answer
            .expect("task")
            .expect_err("no attack call succeeds")
            .code();
        assert!(
            matches!(
                code,
                Code::AlreadyExists
                    | Code::Unauthenticated
                    | Code::Unavailable
                    | Code::ResourceExhausted
            ),
            "unexpected answer {code:?}"
        );
        *codes.entry(format!("{code:?}")).or_default() += 1;
    }
    // Every sign-up met the taken name, and without hashing (so none waited for a turn).
    assert_eq!(codes.get("AlreadyExists"), Some(&ATTACKERS), "{codes:?}");
    let peak = server.peak_rss_kib();
    assert!(
        peak < RSS_KIB_MAX,
        "the server's RSS peaked at {peak} KiB (answers: {codes:?})"
    );
}
