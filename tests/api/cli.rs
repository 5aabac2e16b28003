//! `tally admin`: bootstrapping the first admin from the shell, against the real binary.

use tally::proto::tally_v1 as pb;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::*;

async fn tally(args: &[&str], database_url: &str, stdin: Option<&str>) -> std::process::Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

#[tokio::test]
async fn the_first_admin_is_created_from_the_shell_and_can_grant_roles() {
    let app = TestApp::spawn().await;
    let root = unique("root");
    let created = tally(
        &[
            "admin",
            "create-user",
            "--username",
            &root,
            "--email",
            "ops@example.com",
        ],
        &app.db.url,
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let granted = tally(&["admin", "grant-role", &root, "admin"], &app.db.url, None).await;
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    assert!(String::from_utf8_lossy(&granted.stdout).contains("admin, customer"));

    // Bad input is refused with the field named, and nothing is written.
    let users = app.count("users").await;
    let refused = tally(
        &[
            "admin",
            "create-user",
            "--username",
            "X",
            "--email",
            "x@example.com",
            "--password",
            PASSWORD,
        ],
        &app.db.url,
        None,
    )
    .await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("username"));
    assert_eq!(app.count("users").await, users);
    let unknown_role = tally(&["admin", "grant-role", &root, "root"], &app.db.url, None).await;
    assert!(!unknown_role.status.success());

    // The shell-made admin logs in over the API and grants a role.
    let token = app
        .login(&root, PASSWORD)
        .await
        .expect("admin logs in")
        .access_token;
    let teller = unique("teller");
    app.create_user(&teller).await;
    let user = app
        .roles()
        .grant_role(authed(
            &token,
            pb::GrantRoleRequest {
                username: teller,
                role: "banker".into(),
            },
        ))
        .await
        .expect("the admin grants")
        .into_inner();
    assert_eq!(user.roles, vec!["banker", "customer"]);
}

#[tokio::test]
async fn migrate_status_down_and_up_work_from_the_shell() {
    let db = TestDatabase::create().await;
    let up = tally(&["migrate", "up"], &db.url, None).await;
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let status =
        String::from_utf8_lossy(&tally(&["migrate", "status"], &db.url, None).await.stdout)
            .to_string();
    assert!(
        !status.contains("pending") && status.contains("applied"),
        "{status}"
    );
    let down = tally(&["migrate", "down"], &db.url, None).await;
    assert!(String::from_utf8_lossy(&down.stdout).contains("reverted migration"));
    let status =
        String::from_utf8_lossy(&tally(&["migrate", "status"], &db.url, None).await.stdout)
            .to_string();
    assert_eq!(status.matches("pending").count(), 1, "{status}");
}
