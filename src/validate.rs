//! Validated input values, shared by every domain module (a leaf: it imports only the error
//! taxonomy). Each parser names the request field it checks, so a refusal is an
//! `INVALID_ARGUMENT` that says which field and why. The database CHECK constraints in
//! `migrations/` mirror these rules.

use uuid::Uuid;

use crate::error::{Error, Result};

/// Passwords shorter than this are refused at sign-up and on change.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Longer passwords are refused everywhere, before any hashing (hashing cost grows with size).
pub const PASSWORD_CHARS_MAX: usize = 128;

pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 32;
pub const FULL_NAME_CHARS_MAX: usize = 128;
/// RFC 5321's limit on a forward path.
/// RFC 5321: a path holds at most 254 octets (the 256 of a forward-path less its brackets).
pub const EMAIL_BYTES_MAX: usize = 254;
/// RFC 5321: a local part holds at most 64 octets.
const EMAIL_LOCAL_BYTES_MAX: usize = 64;
const _: () = assert!(
    USERNAME_CHARS_MIN < USERNAME_CHARS_MAX
        && PASSWORD_CHARS_MIN < PASSWORD_CHARS_MAX
        && EMAIL_LOCAL_BYTES_MAX < EMAIL_BYTES_MAX
);
/// RFC 5321 / 1035: a domain of at most 255 octets, each label at most 63.
const EMAIL_DOMAIN_BYTES_MAX: usize = 255;
const DNS_LABEL_BYTES_MAX: usize = 63;
/// Usernames that name the ledger itself and can never be registered.
const RESERVED_USERNAMES: &[&str] = &["system", "tally", "root"];

/// `[a-z0-9_]{3,32}`; not a reserved name.
pub fn username(field: &'static str, value: &str) -> Result<String> {
    let n = value.chars().count();
    if !(USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&n) {
        return Err(Error::invalid(
            field,
            format!("must be {USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Error::invalid(
            field,
            "may contain only lower-case letters, digits and underscores",
        ));
    }
    Ok(value.to_owned())
}

/// A username for a new user: also not reserved.
pub fn new_username(field: &'static str, value: &str) -> Result<String> {
    let name = username(field, value)?;
    if RESERVED_USERNAMES.contains(&name.as_str()) {
        return Err(Error::invalid(field, "is reserved"));
    }
    Ok(name)
}

/// Trimmed; at most 128 characters; no control characters. May be empty.
pub fn full_name(field: &'static str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.chars().count() > FULL_NAME_CHARS_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {FULL_NAME_CHARS_MAX} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A deliberately plain address check: `local@domain.tld`, no spaces or control characters,
/// within RFC 5321's lengths. Deliverability is proven by the verification mail, not here.
pub fn email(field: &'static str, value: &str) -> Result<String> {
    let value = value.trim();
    let invalid = || Error::invalid(field, "must be an email address like name@example.com");
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.len() > EMAIL_BYTES_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {EMAIL_BYTES_MAX} bytes"),
        ));
    }
    let (local, domain) = value.rsplit_once('@').ok_or_else(invalid)?;
    // Checked as it will be stored: the domain lower-cased. Only ASCII letters, digits and
    // hyphens (RFC 1035; an international domain in its xn-- form), so lower-casing never
    // changes a length.
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= EMAIL_DOMAIN_BYTES_MAX
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= DNS_LABEL_BYTES_MAX
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    // RFC 5321 counts octets: 64 for the local part, 254 for the whole path.
    let local_ok = !local.is_empty()
        && local.len() <= EMAIL_LOCAL_BYTES_MAX
        && !local.contains('@')
        && !local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c));
    if !(domain_ok && local_ok) {
        return Err(invalid());
    }
    let normalised = format!("{local}@{domain}");
    if normalised.len() > EMAIL_BYTES_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {EMAIL_BYTES_MAX} bytes"),
        ));
    }
    // Domains are case-insensitive; keep the local part as typed.
    Ok(normalised)
}

/// A new password: 12 to 128 characters.
pub fn new_password(field: &'static str, value: &str) -> Result<String> {
    let n = value.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&n) {
        return Err(Error::invalid(
            field,
            format!("must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A password presented for checking: any non-empty value up to the maximum (old passwords
/// may predate today's minimum, so only the maximum is enforced).
pub fn presented_password(field: &'static str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > PASSWORD_CHARS_MAX {
        return Err(Error::invalid(
            field,
            format!("must be at most {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A UUID in its canonical hyphenated form.
pub fn uuid(field: &'static str, value: &str) -> Result<Uuid> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.len() != 36 {
        return Err(Error::invalid(field, "must be a UUID"));
    }
    Uuid::parse_str(value).map_err(|_| Error::invalid(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: Error) -> &'static str {
        match err {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn usernames() {
        assert!(username("username", "alice_01").is_ok());
        for bad in [
            "al",
            "Alice",
            "alice-b",
            &"a".repeat(33),
            "ali ce",
            "élodie",
            "",
        ] {
            assert_eq!(
                field_of(username("username", bad).unwrap_err()),
                "username",
                "{bad}"
            );
        }
        assert!(new_username("username", "system").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("email", " Bob@Example.COM ").unwrap(),
            "Bob@example.com"
        );
        for bad in [
            "",
            "bob",
            "bob@",
            "@example.com",
            "bob@example",
            "b ob@example.com",
            "bob@exa mple.com",
            "bob@.example.com",
            "bob@example..com",
            // Grows when lower-cased (İ → i̇): refused, not a 500.
            "bob@İ.com",
            "bob@exämple.com",
            "bob@-example.com",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        // RFC 5321 and 1035 lengths, in octets.
        let label63 = "a".repeat(63);
        assert!(email("email", &format!("bob@{label63}.com")).is_ok());
        assert!(email("email", &format!("bob@{label63}a.com")).is_err());
        assert!(email("email", &format!("{}@example.com", "b".repeat(64))).is_ok());
        assert!(email("email", &format!("{}@example.com", "b".repeat(65))).is_err());
        assert!(email("email", &format!("{}@example.com", "ö".repeat(33))).is_err());
        assert!(email("email", "jöhn@Example.com").is_ok());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(email("email", &long).is_err());
    }

    #[test]
    fn passwords() {
        assert!(new_password("password", "twelve chars").is_ok());
        assert!(new_password("password", "short").is_err());
        assert!(new_password("password", &"x".repeat(129)).is_err());
        assert!(presented_password("password", "short").is_ok());
        assert!(presented_password("password", "").is_err());
    }

    #[test]
    fn full_names() {
        assert_eq!(
            full_name("full_name", "  Ada Lovelace ").unwrap(),
            "Ada Lovelace"
        );
        assert!(full_name("full_name", "bad\u{7}name").is_err());
        assert!(full_name("full_name", &"x".repeat(129)).is_err());
    }

    #[test]
    fn uuids() {
        assert!(uuid("session_id", "0190a0b6-7c4e-7a3b-8d2c-1e2f3a4b5c6d").is_ok());
        assert!(uuid("session_id", "not-a-uuid").is_err());
        assert!(uuid("session_id", "0190a0b67c4e7a3b8d2c1e2f3a4b5c6d").is_err());
    }
}
