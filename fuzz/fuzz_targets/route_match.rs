//! Request routing over tally's real HTTP routes (src/gateway/matcher.rs `Matcher::find`, with
//! the routes src/gateway/rules.rs loads from `tally::proto::FILE_DESCRIPTOR_SET`).
//!
//! Input: UTF-8 text, one request per line: `METHOD /raw/path`.
//!
//! What must hold, besides never panicking, checked against every route one by one:
//! - `Found`: the route is of the request's method, its template matches the path with exactly
//!   the captures returned (one per path field of the route), and no other route of that method
//!   that matches is more specific (segment by segment, literal > `*` > `**`, then longer, then
//!   a verb);
//! - `MethodNotAllowed(methods)`: no route of the request's method matches, and `methods` are
//!   exactly the other methods of the routes that do, each once;
//! - `NotFound`: no route matches at all.

#![no_main]

use std::cmp::Ordering;

use http::Method;
use libfuzzer_sys::fuzz_target;
use tally::gateway::{
    matcher::{Match, match_template},
    template::{Segment, Template},
};
use tally_fuzz::ROUTES;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let Some((method, path)) = line.split_once(' ') else {
            continue;
        };
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            continue;
        };
        check(&method, path);
    }
});

fn check(method: &Method, path: &str) {
    let matching: Vec<_> = ROUTES
        .routes()
        .filter_map(|(m, t, r)| match_template(t, path).map(|c| (m, t, r, c)))
        .collect();
    match ROUTES.find(method, path) {
        Match::Found { target, variables } => {
            assert_eq!(&target.http_method, method, "{method} {path}");
            assert_eq!(
                match_template(&target.template, path).as_ref(),
                Some(&variables),
                "{method} {path}: {} captured differently",
                target.template_text
            );
            assert_eq!(variables.len(), target.path_fields.len(), "{method} {path}");
            for (m, t, r, _) in &matching {
                assert!(
                    *m != method || specificity(t, &target.template) != Ordering::Greater,
                    "{method} {path}: {} won over the more specific {}",
                    target.template_text,
                    r.template_text
                );
            }
        }
        Match::MethodNotAllowed(methods) => {
            assert!(!methods.is_empty(), "{method} {path}");
            assert!(!methods.contains(method), "{method} {path}: {methods:?}");
            for (i, m) in methods.iter().enumerate() {
                assert!(!methods[..i].contains(m), "{method} {path}: {methods:?}");
            }
            for (m, _, r, _) in &matching {
                assert!(
                    methods.contains(m),
                    "{method} {path}: {m} {} matches but is not listed in {methods:?}",
                    r.template_text
                );
            }
            assert_eq!(
                methods.len(),
                methods
                    .iter()
                    .filter(|x| matching.iter().any(|(m, ..)| m == x))
                    .count(),
                "{method} {path}: {methods:?} lists a method no matching route has"
            );
        }
        Match::NotFound => {
            if let Some((m, _, r, _)) = matching.first() {
                panic!(
                    "{method} {path}: not found, yet {m} {} matches",
                    r.template_text
                );
            }
        }
    }
}

/// The documented order of two templates that match one path (src/gateway/matcher.rs), written
/// out again here as the oracle.
fn specificity(a: &Template, b: &Template) -> Ordering {
    let rank = |s: &Segment| match s {
        Segment::Literal(_) => 3,
        Segment::Wildcard => 2,
        Segment::DoubleWildcard => 1,
    };
    for (x, y) in a.segments.iter().zip(&b.segments) {
        match rank(x).cmp(&rank(y)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.segments
        .len()
        .cmp(&b.segments.len())
        .then(a.verb.is_some().cmp(&b.verb.is_some()))
}
