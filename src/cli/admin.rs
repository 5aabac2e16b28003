//! `tally admin …`: operator commands that talk to the database directly, so a fresh
//! deployment can create its first admin without the API, and an operator can see and
//! requeue dead-lettered mail. They go through the same domain code (validation, hashing,
//! the last-admin rule) as the RPCs.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

use crate::{
    auth::{Authenticator, token::PasetoCodec},
    cli::AdminAction,
    identity::{Identity, IdentitySettings, users::CreateUser},
    store,
};

/// Who the logs name as the actor of shell commands.
const SHELL_ACTOR: &str = "shell";
/// Verification codes of users created from the shell live as long as the default.
const ADMIN_VERIFICATION_TTL: Duration = Duration::from_secs(86_400);
/// The shell's one hash at a time never waits behind anything but itself.
const ADMIN_HASH_WAIT: Duration = Duration::from_secs(60);
/// `dead-letters` lines are cut to this many characters of the error.
const DEAD_LETTER_ERROR_CHARS_SHOWN: usize = 200;

pub async fn run(pool: PgPool, action: AdminAction) -> anyhow::Result<()> {
    crate::db::ensure_migrated(&pool).await?;
    // The shell issues no tokens; a throwaway codec satisfies the domain's wiring.
    let codec = Arc::new(PasetoCodec::new(
        &rand::random::<[u8; 32]>(),
        "tally",
        "tally",
    )?);
    let authenticator = Arc::new(Authenticator::new(codec, pool.clone(), Duration::ZERO));
    let identity = Identity::new(
        pool.clone(),
        authenticator,
        IdentitySettings {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(120),
            login_failures_max: 1,
            login_failures_per_address_max: 1,
            login_failure_window: Duration::from_secs(1),
            verification_ttl: ADMIN_VERIFICATION_TTL,
            hash_concurrency_max: 1,
            hash_wait: ADMIN_HASH_WAIT,
        },
        // No Redis here: the worker's outbox sweep queues the mail of users made from the shell.
        None,
    );
    match action {
        AdminAction::CreateUser {
            username,
            email,
            full_name,
            password,
        } => {
            let password = match password {
                Some(p) => p,
                None => read_password_from_stdin().await?,
            };
            let command = CreateUser::parse(&username, &full_name, &email, &password)?;
            let user = identity.create_user(command).await?;
            println!("created user {} ({})", user.username, user.email);
        }
        AdminAction::GrantRole { username, role } => {
            let user = identity.grant_role(SHELL_ACTOR, &username, &role).await?;
            println!("{}: roles {}", user.username, user.roles.join(", "));
        }
        AdminAction::RevokeRole { username, role } => {
            let user = identity.revoke_role(SHELL_ACTOR, &username, &role).await?;
            println!("{}: roles {}", user.username, user.roles.join(", "));
        }
        AdminAction::DeadLetters { all, limit } => {
            let mut conn = pool.acquire().await?;
            let letters = store::mail::dead_letters(&mut conn, all, limit).await?;
            if letters.is_empty() {
                println!("no dead letters");
            }
            for d in letters {
                println!(
                    "{} verification={} to={} attempts={} dead_at={} requeued_at={} error={}",
                    d.id,
                    d.verification_id,
                    d.email,
                    d.attempts,
                    d.dead_at,
                    shown(d.requeued_at),
                    shown_error(&d.last_error)
                );
            }
        }
        AdminAction::RequeueDeadLetter { id } => {
            let mut conn = pool.acquire().await?;
            match store::mail::requeue(&mut conn, id).await? {
                Some(outbox_id) => println!("requeued {id} as outbox {outbox_id}"),
                None => anyhow::bail!("no dead letter {id} waiting to be requeued"),
            }
        }
        AdminAction::WebhookDeadLetters { all, limit } => {
            let mut conn = pool.acquire().await?;
            let letters = store::webhooks::dead_letters(&mut conn, all, limit).await?;
            if letters.is_empty() {
                println!("no webhook dead letters");
            }
            for d in letters {
                println!(
                    "{} webhook={} url={} sequence={} attempts={} dead_at={} requeued_at={} \
                     delivered_at={} error={}",
                    d.id,
                    d.webhook_id,
                    d.url,
                    d.sequence,
                    d.attempts,
                    d.dead_at,
                    shown(d.requeued_at),
                    shown(d.delivered_at),
                    shown_error(&d.last_error)
                );
            }
        }
        AdminAction::RequeueWebhook { id } => {
            let mut conn = pool.acquire().await?;
            if store::webhooks::requeue(&mut conn, id).await? {
                println!("requeued webhook dead letter {id}");
            } else {
                anyhow::bail!("no webhook dead letter {id} waiting to be requeued");
            }
        }
    }
    Ok(())
}

/// A moment of a dead letter, or `-`.
fn shown(t: Option<time::OffsetDateTime>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_string())
}

/// A dead letter's error, cut to [`DEAD_LETTER_ERROR_CHARS_SHOWN`] characters.
fn shown_error(error: &str) -> String {
    error.chars().take(DEAD_LETTER_ERROR_CHARS_SHOWN).collect()
}

async fn read_password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
