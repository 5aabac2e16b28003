//! Keyset pagination: page sizes and opaque page tokens.
//!
//! A token names the position after the last item returned and the query it belongs to (the
//! account or owner listed), so it cannot be replayed against another list. It is opaque to
//! clients (base64url) but not secret: it carries nothing the caller could not see.

use base64::Engine as _;
use uuid::Uuid;

use crate::error::{Error, Result};

pub const PAGE_SIZE_DEFAULT: usize = 50;
/// Larger requests are served this many (AIP-158: coerce down, do not fail).
pub const PAGE_SIZE_MAX: usize = 1_000;
/// A page also stops before its items' encoded size passes this, whatever its item count, so a
/// full page always fits the response limit (`TALLY_MAX_MESSAGE_BYTES`, at least 1 MiB by
/// default; JSON spells a message in up to about three times its protobuf bytes).
pub const PAGE_BYTES_MAX: usize = 256 * 1024;
/// An upper bound on an item's encoded size beside its free text (ids, amounts, timestamps,
/// enums, field tags).
pub const ITEM_FIXED_BYTES: usize = 256;
const TOKEN_CHARS_MAX: usize = 256;
const TOKEN_VERSION: &str = "v1";

/// The page size to serve for a requested one: 0 means the default; negative is refused.
pub fn page_size(requested: i32) -> Result<usize> {
    match requested {
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(PAGE_SIZE_DEFAULT),
        n => Ok((n as usize).min(PAGE_SIZE_MAX)),
    }
}

/// Cuts `rows` (fetched as `limit + 1`) to a page: at most `limit` items and at most
/// [`PAGE_BYTES_MAX`] by `size_of`, never fewer than one. Returns the next page's token from
/// the last item kept, or empty when nothing was left out.
pub fn cut<T>(
    rows: &mut Vec<T>,
    limit: usize,
    size_of: impl Fn(&T) -> usize,
    token: impl Fn(&T) -> String,
) -> String {
    let mut bytes = 0;
    let mut keep = 0;
    for row in rows.iter().take(limit) {
        bytes += size_of(row);
        if keep > 0 && bytes > PAGE_BYTES_MAX {
            break;
        }
        keep += 1;
    }
    if keep == rows.len() {
        return String::new();
    }
    rows.truncate(keep);
    rows.last().map(token).unwrap_or_default()
}

/// Encodes the position after `cursor` in the list identified by `scope`.
pub fn token(scope: Uuid, cursor: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{TOKEN_VERSION}|{scope}|{cursor}"))
}

/// The cursor of a token for the list `scope`, or `None` for the first page.
pub fn cursor(scope: Uuid, page_token: &str) -> Result<Option<String>> {
    if page_token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a page token of this list");
    if page_token.len() > TOKEN_CHARS_MAX {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(page_token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '|');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(TOKEN_VERSION), Some(s), Some(c)) if s == scope.to_string() && !c.is_empty() => {
            Ok(Some(c.to_owned()))
        }
        _ => Err(invalid()),
    }
}

/// A `seq` cursor (entries and transfers).
pub fn seq_cursor(scope: Uuid, page_token: &str) -> Result<Option<i64>> {
    cursor(scope, page_token)?
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Error::invalid("page_token", "is not a page token of this list"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_stops_at_its_item_count_or_its_bytes_and_keeps_at_least_one() {
        let token = |n: &usize| n.to_string();
        // By count: 3 of the 4 fetched, the token after the third.
        let mut rows = vec![1, 2, 3, 4];
        assert_eq!(cut(&mut rows, 3, |_| 10, token), "3");
        assert_eq!(rows, [1, 2, 3]);
        // Everything fits: no next page.
        let mut rows = vec![1, 2];
        assert_eq!(cut(&mut rows, 3, |_| 10, token), "");
        assert_eq!(rows, [1, 2]);
        // By bytes: each item a third of the budget plus one, so two fit.
        let mut rows = vec![1, 2, 3, 4];
        assert_eq!(cut(&mut rows, 3, |_| PAGE_BYTES_MAX / 3 + 1, token), "2");
        assert_eq!(rows, [1, 2]);
        // An item larger than the budget still makes a page of one.
        let mut rows = vec![1, 2];
        assert_eq!(cut(&mut rows, 3, |_| PAGE_BYTES_MAX * 2, token), "1");
        assert_eq!(rows, [1]);
    }

    #[test]
    fn page_sizes_default_cap_and_refuse_negatives() {
        assert_eq!(page_size(0).unwrap(), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(1_000_000).unwrap(), PAGE_SIZE_MAX);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_only_for_their_own_list() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let t = token(a, "42");
        assert_eq!(seq_cursor(a, &t).unwrap(), Some(42));
        assert!(seq_cursor(b, &t).is_err());
        assert_eq!(seq_cursor(a, "").unwrap(), None);
        for junk in ["!!", "djE", &"A".repeat(300)] {
            assert!(cursor(a, junk).is_err(), "{junk}");
        }
    }
}
