//! Page-token decoding: src/ledger/page.rs (`cursor`, `seq_cursor`: every list's token) and the
//! cursors inside the tokens: the audit trail's `<unix nanos>/<uuid>` (src/audit/mod.rs
//! `parse_cursor`), ListAccounts' account id, the entries' and transfers' `seq`.
//!
//! Input: the page token, as a client would send it (UTF-8). It is decoded for two lists: the
//! audit trail's (scope: the nil UUID) and one account's (`SCOPE`).
//!
//! What must hold, besides never panicking:
//! - the empty token, and only it, is the first page;
//! - a token that decodes is the canonical token of its cursor (`token(scope, cursor)` gives the
//!   very same text back), the cursor is not empty, and the token is refused for the other list;
//! - a `seq` token decodes to the integer its cursor spells, and a token made for that `seq`
//!   decodes to it again;
//! - an audit cursor (or account id) that parses is re-encodable: the form the list writes for
//!   it parses to the same position.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tally::{audit::parse_cursor, ledger::page};
use uuid::Uuid;

/// The account whose lists the tokens of the seed corpus page through.
const SCOPE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (scope, other) in [(Uuid::nil(), SCOPE), (SCOPE, Uuid::nil())] {
        check_token(scope, other, text);
    }
    // A cursor itself never arrives from a client, but the parser must hold for any text.
    check_audit_cursor(text);
});

fn check_token(scope: Uuid, other: Uuid, text: &str) {
    let cursor = page::cursor(scope, text);
    match &cursor {
        Ok(None) => assert!(text.is_empty(), "{text:?} taken for the first page"),
        Ok(Some(c)) => {
            assert!(!c.is_empty(), "{text:?}: an empty cursor");
            assert_eq!(
                page::token(scope, c),
                text,
                "{text:?} is not the token of {c:?}"
            );
            assert!(
                page::cursor(other, text).is_err(),
                "{text:?} passes for another list"
            );
            check_audit_cursor(c);
            if let Ok(id) = Uuid::parse_str(c) {
                let again = page::cursor(scope, &page::token(scope, &id.to_string()));
                assert_eq!(again.ok().flatten(), Some(id.to_string()), "{text:?}");
            }
        }
        Err(_) => assert!(!text.is_empty(), "the empty token refused"),
    }
    match page::seq_cursor(scope, text) {
        Ok(None) => assert!(text.is_empty(), "{text:?} taken for the first page"),
        Ok(Some(seq)) => {
            let c = cursor.ok().flatten();
            assert_eq!(
                c.as_deref().and_then(|c| c.parse::<i64>().ok()),
                Some(seq),
                "{text:?}: seq {seq} from cursor {c:?}"
            );
            let again = page::seq_cursor(scope, &page::token(scope, &seq.to_string()));
            assert_eq!(again.ok().flatten(), Some(seq), "{text:?}");
        }
        Err(_) => assert!(
            !matches!(&cursor, Ok(Some(c)) if c.parse::<i64>().is_ok()),
            "{text:?}: a seq cursor refused"
        ),
    }
}

fn check_audit_cursor(cursor: &str) {
    let Some((at, id)) = parse_cursor(cursor) else {
        return;
    };
    // What src/audit/mod.rs `list` writes for the last event of a page.
    let written = format!("{}/{}", at.unix_timestamp_nanos(), id);
    assert_eq!(
        parse_cursor(&written),
        Some((at, id)),
        "{cursor:?} read as {at} {id}, written back as {written:?}"
    );
    let token = page::token(Uuid::nil(), &written);
    assert_eq!(
        page::cursor(Uuid::nil(), &token).ok().flatten().as_deref(),
        Some(written.as_str()),
        "{cursor:?}: its token does not decode"
    );
}
