//! Verification mail end to end: the real server, a real PostgreSQL, a real Redis, the worker
//! and a real SMTP server process (aiosmtpd).

use std::{collections::HashMap, time::Duration};

use tally::proto::tally_v1 as pb;
use tonic::{Code, Status};

use crate::{helpers::*, mail_harness::*};

/// Generous: the machine may be busy with every other test at once.
const MAIL_WAIT: Duration = Duration::from_secs(60);

async fn verify(
    app: &TestApp,
    verification_id: &str,
    code: &str,
) -> Result<pb::VerifyEmailResponse, Status> {
    app.users()
        .verify_email(pb::VerifyEmailRequest {
            verification_id: verification_id.into(),
            code: code.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn email_verified(app: &TestApp, username: &str) -> bool {
    sqlx::query_scalar("SELECT email_verified FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The query parameters of a mailed link, as the GET binding of VerifyEmail reads them.
fn link_query(link: &str) -> HashMap<String, String> {
    let (base, query) = link.split_once('?').expect("a query string");
    assert_eq!(base, "https://tally.example.com/v1/verify_email");
    query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("key=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn assert_bad_code(result: Result<pb::VerifyEmailResponse, Status>) -> Status {
    let status = assert_code(result, Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "verification code is invalid, expired or already used"
    );
    assert_eq!(
        reason(&status).as_deref(),
        Some("VERIFICATION_CODE_INVALID")
    );
    status
}

/// Waits for one mail per user, then `settle` more for duplicates to show, and requires
/// exactly one mail for each of `names` and none for anyone else.
async fn assert_one_mail_each(smtp: &SmtpSink, names: &[String], settle: Duration) {
    let mails = smtp.wait_for(names.len(), MAIL_WAIT).await;
    assert_eq!(mails.len(), names.len(), "every user got a mail");
    tokio::time::sleep(settle).await;
    let mut per_address: HashMap<String, usize> = HashMap::new();
    for mail in smtp.mails() {
        *per_address.entry(mail.to).or_default() += 1;
    }
    for name in names {
        let address = format!("{name}@example.com");
        assert_eq!(per_address.get(&address), Some(&1), "{address}");
    }
    assert_eq!(per_address.len(), names.len(), "{per_address:?}");
}

async fn outbox_len(app: &TestApp) -> i64 {
    app.count("mail_outbox").await
}

#[tokio::test]
async fn a_new_user_gets_one_mail_whose_link_verifies_the_email_once() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;
    let name = unique("mailee");
    let user = app.create_user(&name).await;
    assert!(!user.email_verified);

    let mails = smtp.wait_for(1, MAIL_WAIT).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, format!("{name}@example.com"));
    assert_eq!(mail.code.len(), 43, "32 random bytes, unpadded base64url");

    // The link's query parameters are VerifyEmail's request fields...
    let query = link_query(&mail.link);
    assert_eq!(query["verification_id"], mail.verification_id);
    assert_eq!(query["code"], mail.code);
    // ...and the link itself, pointed at this server, verifies through the GET binding, with
    // the tracking parameters mail systems append (they name no field and are ignored).
    let (_, path_and_query) = mail.link.split_once("/v1/").expect("a /v1/ link");
    let clicked = reqwest::get(format!(
        "http://{}/v1/{path_and_query}&utm_source=newsletter&utm_medium=email",
        app.addr
    ))
    .await
    .unwrap();
    assert_eq!(clicked.status(), 200);
    let body: serde_json::Value = clicked.json().await.unwrap();
    assert_eq!(body["username"], name.as_str());
    assert_eq!(body["emailVerified"], true);
    assert!(email_verified(&app, &name).await);

    // Single use: the same code again fails, over gRPC and over the link.
    assert_bad_code(verify(&app, &mail.verification_id, &mail.code).await);
    let again = reqwest::get(format!("http://{}/v1/{path_and_query}", app.addr))
        .await
        .unwrap();
    assert_eq!(again.status(), 400);

    // Only the hash is stored, and nothing is owed any more.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM email_verifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert_ne!(stored, mail.code.as_bytes());
    assert_eq!(outbox_len(&app).await, 0);
    worker.stop().await;
    assert_eq!(smtp.mails().len(), 1, "exactly one mail");
}

#[tokio::test]
async fn expired_wrong_and_superseded_codes_fail_with_the_same_message() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;
    let name = unique("codes");
    let login = app.signed_in(&name, &[]).await;
    let first = smtp.wait_for(1, MAIL_WAIT).await.remove(0);

    // Wrong code, malformed code, unknown id, malformed id.
    let wrong = "A".repeat(43);
    let unknown_id = uuid::Uuid::now_v7().to_string();
    for (id, code) in [
        (first.verification_id.as_str(), wrong.as_str()),
        (first.verification_id.as_str(), ""),
        (unknown_id.as_str(), first.code.as_str()),
        ("not-a-uuid", first.code.as_str()),
    ] {
        assert_bad_code(verify(&app, id, code).await);
    }

    // Superseded: a resend replaces the first code.
    app.users()
        .resend_verification(authed(
            &login.access_token,
            pb::ResendVerificationRequest {
                username: name.clone(),
            },
        ))
        .await
        .expect("resend");
    let mails = smtp.wait_for(2, MAIL_WAIT).await;
    assert_eq!(mails.len(), 2);
    let second = mails
        .into_iter()
        .find(|m| m.verification_id != first.verification_id)
        .expect("a second verification");
    assert_bad_code(verify(&app, &first.verification_id, &first.code).await);

    // Expired: move the second verification's window into the past.
    sqlx::query(
        "UPDATE email_verifications SET created_at = now() - interval '2 days', \
         expires_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&second.verification_id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_bad_code(verify(&app, &second.verification_id, &second.code).await);
    assert!(!email_verified(&app, &name).await);
    worker.stop().await;
}

#[tokio::test]
async fn twenty_sign_ups_during_a_redis_outage_each_get_exactly_one_mail() {
    let mut redis = RedisServer::start().await;
    let redis_url = redis.url();
    let app = TestApp::spawn_with(&["--redis-url", &redis_url]).await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;

    redis.stop().await;
    let mut names = Vec::new();
    for i in 0..20 {
        let name = unique(&format!("outage{i}"));
        app.create_user(&name).await;
        names.push(name);
    }
    // Sign-up does not wait for Redis; the mail is owed in the outbox.
    assert_eq!(outbox_len(&app).await, 20);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(smtp.mails().is_empty());

    redis.restart().await;
    assert_one_mail_each(&smtp, &names, Duration::from_secs(2)).await;
    assert_eq!(outbox_len(&app).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_server_that_refuses_the_first_attempts_gets_the_mail_exactly_once() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&["--refuse-first", "2", "--refuse-code", "451"]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &["--mail-attempts-max", "5"]).await;
    app.create_user(&unique("retry")).await;

    let mails = smtp.wait_for(1, MAIL_WAIT).await;
    assert_eq!(mails.len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.mails().len(), 1, "delivered once");
    assert_eq!(smtp.attempts(), 3, "two refusals, then the accepted one");
    let metrics = worker.metrics.snapshot();
    assert_eq!((metrics.sent, metrics.retried, metrics.dead), (1, 2, 0));
    assert_eq!(app.count("mail_dead_letters").await, 0);
    assert_eq!(outbox_len(&app).await, 0);
    worker.stop().await;
}

#[tokio::test]
async fn a_permanently_failing_server_ends_in_a_dead_letter_that_an_operator_can_requeue() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&["--refuse-always", "--refuse-code", "550"]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &["--mail-attempts-max", "3"]).await;
    let name = unique("dead");
    app.create_user(&name).await;

    let dead = eventually(MAIL_WAIT, || async {
        app.count("mail_dead_letters").await == 1
    })
    .await;
    assert!(dead.is_some(), "a dead letter appears");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.attempts(), 3, "exactly the bounded number of attempts");
    assert!(smtp.mails().is_empty());
    assert_eq!(outbox_len(&app).await, 0);
    let (attempts, last_error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM mail_dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 3);
    assert!(last_error.contains("550"), "{last_error}");
    assert_eq!(worker.metrics.snapshot().dead, 1);
    worker.stop().await;

    // The operator sees it and puts it back.
    let listed = tally_cli(&["admin", "dead-letters"], &app.db.url).await;
    assert!(listed.status.success(), "{listed:?}");
    let stdout = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(stdout.contains(&format!("{name}@example.com")), "{stdout}");
    assert!(stdout.contains("attempts=3"), "{stdout}");
    let id = stdout.split_whitespace().next().unwrap().to_owned();
    let requeued = tally_cli(&["admin", "requeue-dead-letter", &id], &app.db.url).await;
    assert!(requeued.status.success(), "{requeued:?}");
    assert_eq!(outbox_len(&app).await, 1);
    let again = tally_cli(&["admin", "requeue-dead-letter", &id], &app.db.url).await;
    assert!(!again.status.success(), "a dead letter is requeued once");

    // With a working server, the requeued mail goes out.
    let good = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &good.url(), &[]).await;
    assert_eq!(good.wait_for(1, MAIL_WAIT).await.len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn a_worker_stopped_mid_flight_and_restarted_sends_every_mail_exactly_once() {
    let app = TestApp::spawn_with(&["--outbox-lease-secs", "4"]).await;
    let smtp = SmtpSink::start(&["--delay-ms", "300"]).await;
    let mut argv = worker_argv(&app, &smtp.url());
    argv.extend(
        ["--worker-concurrency", "2", "--outbox-lease-secs", "4"]
            .iter()
            .map(|s| s.to_string()),
    );
    let start_worker = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tally worker")
    };
    let mut worker = start_worker();
    let mut names = Vec::new();
    for i in 0..12 {
        let name = unique(&format!("sigterm{i}"));
        app.create_user(&name).await;
        names.push(name);
    }
    // Stop it while mail is going out.
    let busy = eventually(MAIL_WAIT, || async { smtp.attempts() >= 1 }).await;
    assert!(busy.is_some(), "the worker starts sending");
    let pid = worker.id().expect("running") as i32;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("the worker drains and exits within its drain time")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let before_restart = smtp.mails().len();
    assert!(
        before_restart < names.len(),
        "stopped before the end ({before_restart} sent)"
    );

    let mut restarted = start_worker();
    // Longer than the lease, so a job lost with the stopped worker would have been re-sent.
    assert_one_mail_each(&smtp, &names, Duration::from_secs(5)).await;
    assert_eq!(outbox_len(&app).await, 0);
    restarted.kill().await.unwrap();
}

#[tokio::test]
async fn resend_is_limited_to_three_an_hour_and_only_for_yourself() {
    let app = TestApp::spawn().await;
    let name = unique("resender");
    let login = app.signed_in(&name, &[]).await;
    let resend = |token: String, username: String| {
        let mut users = app.users();
        async move {
            users
                .resend_verification(authed(&token, pb::ResendVerificationRequest { username }))
                .await
        }
    };
    for _ in 0..3 {
        resend(login.access_token.clone(), name.clone())
            .await
            .expect("within the limit");
    }
    let limited = assert_code(
        resend(login.access_token.clone(), name.clone()).await,
        Code::ResourceExhausted,
    );
    assert_eq!(
        reason(&limited).as_deref(),
        Some("VERIFICATION_RATE_LIMITED")
    );
    // Each resend superseded the one before: one open verification remains.
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM email_verifications WHERE superseded_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(open, 1);

    // Someone else's address is not yours to resend to; an admin may.
    let other = unique("other");
    app.create_user(&other).await;
    assert_code(
        resend(login.access_token.clone(), other.clone()).await,
        Code::NotFound,
    );
    let admin = app.signed_in(&unique("admin"), &["admin"]).await;
    resend(admin.access_token.clone(), other.clone())
        .await
        .expect("an admin may resend for anyone");
}

#[tokio::test]
async fn a_changed_email_is_unverified_and_gets_its_own_mail() {
    let app = TestApp::spawn().await;
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;
    let name = unique("mover");
    let login = app.signed_in(&name, &[]).await;
    let first = smtp.wait_for(1, MAIL_WAIT).await.remove(0);
    verify(&app, &first.verification_id, &first.code)
        .await
        .expect("verified");
    assert!(email_verified(&app, &name).await);

    let updated = app
        .users()
        .update_user(authed(
            &login.access_token,
            pb::UpdateUserRequest {
                username: name.clone(),
                email: Some(format!("{name}@new.example.com")),
                ..Default::default()
            },
        ))
        .await
        .expect("update")
        .into_inner();
    assert!(!updated.email_verified);
    let mails = smtp.wait_for(2, MAIL_WAIT).await;
    let second = mails
        .iter()
        .find(|m| m.to == format!("{name}@new.example.com"))
        .expect("mail to the new address");
    let verified = verify(&app, &second.verification_id, &second.code)
        .await
        .expect("verified again");
    assert!(verified.email_verified);
    worker.stop().await;
}

/// Runs the real binary with `DATABASE_URL`.
async fn tally_cli(args: &[&str], database_url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .output()
        .await
        .unwrap()
}

/// The fault suite's `worker-commit-cut` finding: a worker that mailed a code and then lost
/// its transaction retries with a new code. The first mail's code must still work.
#[tokio::test]
async fn a_code_whose_mail_lost_its_commit_still_verifies_after_the_retry_mailed_another() {
    use sha2::Digest as _;
    let app = TestApp::spawn().await;
    let name = unique("lostcommit");
    app.create_user(&name).await;
    let verification: uuid::Uuid = sqlx::query_scalar("SELECT id FROM email_verifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    // What the lost attempt left: its code remembered (before its send), nothing committed.
    let first_code = "the-code-of-the-mail-whose-commit-was-lost";
    sqlx::query("INSERT INTO verification_codes (verification_id, code_hash) VALUES ($1, $2)")
        .bind(verification)
        .bind(sha2::Sha256::digest(first_code.as_bytes()).to_vec())
        .execute(&app.pool)
        .await
        .unwrap();
    // The retry mails a second code.
    let smtp = SmtpSink::start(&[]).await;
    let worker = TestWorker::spawn(&app, &smtp.url(), &[]).await;
    let mails = smtp.wait_for(1, MAIL_WAIT).await;
    worker.stop().await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_ne!(mails[0].code, first_code);
    let minted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM verification_codes WHERE verification_id = $1")
            .bind(verification)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        minted, 2,
        "the retry remembered its code before sending it too"
    );
    // The first mail's code works (once), and then neither does.
    let verified = verify(&app, &verification.to_string(), first_code)
        .await
        .unwrap();
    assert!(verified.email_verified);
    assert_bad_code(verify(&app, &verification.to_string(), &mails[0].code).await);
    assert_bad_code(verify(&app, &verification.to_string(), first_code).await);
}
