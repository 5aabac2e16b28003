//! Users: sign-up, reads, changes, and the validation of every field.

use tally::proto::tally_v1 as pb;
use tonic::Code;

use crate::helpers::*;

/// Asserts `INVALID_ARGUMENT` naming `field` in the message and in the BadRequest detail.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    use tonic_types::StatusExt as _;
    let status = assert_code(result, Code::InvalidArgument);
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "{field}: {status:?}"
    );
    let details = status.get_error_details();
    let violation = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations[0];
    assert_eq!(violation.field, field);
}

fn signup(username: &str, full_name: &str, email: &str, password: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        username: username.into(),
        full_name: full_name.into(),
        email: email.into(),
        password: password.into(),
    }
}

/// Asserts that each malformed field of a sign-up is refused, named.
async fn assert_sign_up_fields_are_validated(app: &TestApp) {
    let ok_email = "new@example.com";
    let cases = [
        (signup("ab", "N", ok_email, PASSWORD), "username"),
        (signup("Not_Lower", "N", ok_email, PASSWORD), "username"),
        (signup("system", "N", ok_email, PASSWORD), "username"),
        (
            signup("newbie", &"x".repeat(129), ok_email, PASSWORD),
            "full_name",
        ),
        (signup("newbie", "N", "not-an-email", PASSWORD), "email"),
        (signup("newbie", "N", "", PASSWORD), "email"),
        (signup("newbie", "N", ok_email, "too short"), "password"),
        (
            signup("newbie", "N", ok_email, &"p".repeat(129)),
            "password",
        ),
    ];
    for (request, field) in cases {
        assert_invalid(app.users().create_user(request).await, field);
    }
}

/// Asserts that each malformed field of a change to `owner`'s profile, made with their
/// `token`, is refused, named (a new password without the current one names the latter).
async fn assert_profile_change_fields_are_validated(app: &TestApp, owner: &str, token: &str) {
    let base = pb::UpdateUserRequest {
        username: owner.into(),
        ..Default::default()
    };
    let cases = [
        (
            pb::UpdateUserRequest {
                username: "x".into(),
                ..base.clone()
            },
            "username",
        ),
        (
            pb::UpdateUserRequest {
                full_name: Some("a\u{0}b".into()),
                ..base.clone()
            },
            "full_name",
        ),
        (
            pb::UpdateUserRequest {
                email: Some("nope".into()),
                ..base.clone()
            },
            "email",
        ),
        (
            pb::UpdateUserRequest {
                password: Some("short".into()),
                current_password: Some(PASSWORD.into()),
                ..base.clone()
            },
            "password",
        ),
        (
            pb::UpdateUserRequest {
                password: Some("a brand new password".into()),
                ..base.clone()
            },
            "current_password",
        ),
    ];
    for (change, field) in cases {
        assert_invalid(app.users().update_user(authed(token, change)).await, field);
    }
}

/// Asserts that each malformed field of the session calls (with `owner`'s `token`) and of the
/// role calls (with `admin`'s) is refused, named.
async fn assert_session_and_role_fields_are_validated(
    app: &TestApp,
    owner: &str,
    token: &str,
    admin: &str,
) {
    assert_invalid(app.login("NO", PASSWORD).await, "username");
    assert_invalid(app.login(owner, "").await, "password");
    assert_invalid(app.refresh("").await, "refresh_token");
    assert_invalid(app.revoke_session(token, "nope").await, "session_id");
    let list = pb::ListSessionsRequest {
        username: "A".into(),
    };
    assert_invalid(
        app.sessions().list_sessions(authed(token, list)).await,
        "username",
    );
    let grant = |username: &str, role: &str| pb::GrantRoleRequest {
        username: username.into(),
        role: role.into(),
    };
    for (request, field) in [
        (grant(owner, "root"), "role"),
        (grant("B", "banker"), "username"),
    ] {
        assert_invalid(app.roles().grant_role(authed(admin, request)).await, field);
    }
    let revoke = pb::RevokeRoleRequest {
        username: owner.into(),
        role: "".into(),
    };
    assert_invalid(app.roles().revoke_role(authed(admin, revoke)).await, "role");
}

#[tokio::test]
async fn every_validated_field_answers_invalid_argument_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let owner = unique("owner");
    let token = app.signed_in(&owner, &[]).await.access_token;
    let admin = app.signed_in(&unique("adm"), &["admin"]).await.access_token;
    let (users, sessions, roles) = (
        app.count("users").await,
        app.count("sessions").await,
        app.count("user_roles").await,
    );

    assert_sign_up_fields_are_validated(&app).await;
    assert_invalid(app.get_user(&token, "NO").await, "username");
    assert_profile_change_fields_are_validated(&app, &owner, &token).await;
    assert_session_and_role_fields_are_validated(&app, &owner, &token, &admin).await;

    assert_eq!(app.count("users").await, users, "no user was written");
    assert_eq!(
        app.count("sessions").await,
        sessions,
        "no session was written"
    );
    assert_eq!(app.count("user_roles").await, roles, "no role was written");
    let profile = app.get_user(&token, &owner).await.unwrap();
    assert_eq!(
        profile.full_name,
        format!("{owner} tester"),
        "nothing changed"
    );
}

#[tokio::test]
async fn usernames_and_emails_are_unique() {
    let app = TestApp::spawn().await;
    let name = unique("nina");
    app.create_user(&name).await;
    let again = app
        .users()
        .create_user(signup(&name, "", "other@example.com", PASSWORD))
        .await;
    assert_eq!(
        reason(&assert_code(again, Code::AlreadyExists)).as_deref(),
        Some("USERNAME_TAKEN")
    );
    let same_email = app
        .users()
        .create_user(signup(
            &unique("olga"),
            "",
            &format!("{}@EXAMPLE.com", name.to_uppercase()),
            PASSWORD,
        ))
        .await;
    assert_eq!(
        reason(&assert_code(same_email, Code::AlreadyExists)).as_deref(),
        Some("EMAIL_TAKEN")
    );
}

#[tokio::test]
async fn a_new_user_is_a_customer_and_no_secret_is_stored_or_returned() {
    let app = TestApp::spawn().await;
    let name = unique("paul");
    let user = app.create_user(&name).await;
    assert_eq!(user.roles, vec!["customer"]);
    assert!(!user.email_verified);
    assert!(user.created_at.is_some() && user.password_changed_at.is_some());
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE username = $1")
        .bind(&name)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn changing_your_password_needs_the_current_one_and_signs_out_other_sessions() {
    let app = TestApp::spawn().await;
    let name = unique("quinn");
    let here = app.signed_in(&name, &[]).await;
    let elsewhere = app.login(&name, PASSWORD).await.unwrap();
    let new_password = "a much better passphrase";

    let wrong = app
        .users()
        .update_user(authed(
            &here.access_token,
            pb::UpdateUserRequest {
                username: name.clone(),
                password: Some(new_password.into()),
                current_password: Some("not my password".into()),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(wrong, Code::PermissionDenied)).as_deref(),
        Some("CURRENT_PASSWORD_MISMATCH")
    );

    app.users()
        .update_user(authed(
            &here.access_token,
            pb::UpdateUserRequest {
                username: name.clone(),
                password: Some(new_password.into()),
                current_password: Some(PASSWORD.into()),
                ..Default::default()
            },
        ))
        .await
        .expect("password changed");
    assert_code(app.login(&name, PASSWORD).await, Code::Unauthenticated);
    app.login(&name, new_password)
        .await
        .expect("the new password works");

    // This session lives on; the other one was signed out.
    app.users()
        .get_user(authed(
            &here.access_token,
            pb::GetUserRequest {
                username: name.clone(),
            },
        ))
        .await
        .expect("current session kept");
    assert_code(
        app.users()
            .get_user(authed(
                &elsewhere.access_token,
                pb::GetUserRequest {
                    username: name.clone(),
                },
            ))
            .await,
        Code::Unauthenticated,
    );
}

#[tokio::test]
async fn a_new_email_is_unverified_and_an_admin_may_reset_a_password() {
    let app = TestApp::spawn().await;
    let name = unique("rita");
    let token = app.signed_in(&name, &[]).await.access_token;
    sqlx::query("UPDATE users SET email_verified = true WHERE username = $1")
        .bind(&name)
        .execute(&app.pool)
        .await
        .unwrap();
    let updated = app
        .users()
        .update_user(authed(
            &token,
            pb::UpdateUserRequest {
                username: name.clone(),
                full_name: Some("Rita Renamed".into()),
                email: Some(format!("{name}@new.example.org")),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.full_name, "Rita Renamed");
    assert_eq!(updated.email, format!("{name}@new.example.org"));
    assert!(!updated.email_verified);

    let admin = app.signed_in(&unique("adm"), &["admin"]).await.access_token;
    let seen = app
        .users()
        .get_user(authed(
            &admin,
            pb::GetUserRequest {
                username: name.clone(),
            },
        ))
        .await
        .expect("admins see everyone")
        .into_inner();
    assert_eq!(seen.username, name);
    app.users()
        .update_user(authed(
            &admin,
            pb::UpdateUserRequest {
                username: name.clone(),
                password: Some("reset by the admin!".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("admin resets without current_password");
    app.login(&name, "reset by the admin!")
        .await
        .expect("reset password works");
    assert_code(
        app.users()
            .get_user(authed(
                &token,
                pb::GetUserRequest {
                    username: name.clone(),
                },
            ))
            .await,
        Code::Unauthenticated,
    );
}
