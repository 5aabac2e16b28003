//! `tally admin …`: operator commands that talk to the database directly, so a fresh
//! deployment can create its first admin without the API. They go through the same domain
//! code (validation, hashing, the last-admin rule) as the RPCs.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

use crate::{
    auth::{Authenticator, token::PasetoCodec},
    config::AdminAction,
    identity::{Identity, IdentitySettings, users::CreateUser},
};

/// Who the logs name as the actor of shell commands.
const SHELL_ACTOR: &str = "shell";

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
        pool,
        authenticator,
        IdentitySettings {
            access_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(120),
            login_failures_max: 1,
            login_failure_window: Duration::from_secs(1),
        },
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
    }
    Ok(())
}

async fn read_password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
