//! What the fuzz targets share: tally's real HTTP routes, read once from the descriptor set the
//! server itself serves.

use std::sync::LazyLock;

use tally::gateway::{matcher::Matcher, rules::Route};

/// Every `google.api.http` binding of `tally::proto::FILE_DESCRIPTOR_SET`, as `tally serve`'s
/// gateway loads them.
pub static ROUTES: LazyLock<Matcher<Route>> = LazyLock::new(|| {
    let pool = prost_reflect::DescriptorPool::decode(tally::proto::FILE_DESCRIPTOR_SET)
        .expect("tally's descriptor set decodes");
    let routes = tally::gateway::rules::load(&pool).expect("tally's HTTP rules load");
    assert!(routes.routes().count() > 0, "tally has HTTP routes");
    routes
});

/// Splits `data` at its first newline: the line (as UTF-8) and the bytes after it.
pub fn first_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    Some((std::str::from_utf8(line).ok()?, rest))
}
