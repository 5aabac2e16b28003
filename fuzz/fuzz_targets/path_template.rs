//! The `google.api.http` path template parser (src/gateway/template.rs) and the matching of one
//! template against request paths (src/gateway/matcher.rs `match_template`).
//!
//! Input: UTF-8 text; the first line is a template, every further line a raw request path.
//!
//! What must hold, besides never panicking:
//! - a template that parses is well formed: at least one segment, `**` only last, variables in
//!   order, non-empty, disjoint, inside the segment list, bound once, with identifier paths;
//! - it is re-encodable: written back out (literals percent-encoded, every variable with its
//!   pattern) it parses to the very same template; `openapi_path` does not panic;
//! - a path it matches yields one capture per variable, in template order, and a path rebuilt
//!   from those captures (each value percent-encoded) matches again with the same captures.

#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use tally::gateway::{
    matcher::{Captures, match_template},
    template::{Segment, Template},
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let template_text = lines.next().unwrap_or_default();
    let Ok(template) = Template::parse(template_text) else {
        return;
    };
    check_well_formed(&template, template_text);

    let canonical = canonical_text(&template);
    match Template::parse(&canonical) {
        Ok(again) => assert_eq!(
            again, template,
            "{template_text:?} rewritten as {canonical:?} parses differently"
        ),
        Err(e) => panic!("{template_text:?} rewritten as {canonical:?} does not parse: {e}"),
    }
    let _ = template.openapi_path();

    for path in lines {
        let Some(captures) = match_template(&template, path) else {
            continue;
        };
        assert_eq!(captures.len(), template.variables.len(), "{path:?}");
        for ((field_path, _), variable) in captures.iter().zip(&template.variables) {
            assert_eq!(field_path, &variable.field_path, "{path:?}");
        }
        let rebuilt = path_for(&template, &captures);
        assert_eq!(
            match_template(&template, &rebuilt).as_ref(),
            Some(&captures),
            "{template_text:?}: {path:?} captured {captures:?}; rebuilt as {rebuilt:?}"
        );
    }
});

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_well_formed(t: &Template, text: &str) {
    assert!(!t.segments.is_empty(), "{text:?}: no segment");
    if let Some(i) = t
        .segments
        .iter()
        .position(|s| *s == Segment::DoubleWildcard)
    {
        assert_eq!(i + 1, t.segments.len(), "{text:?}: `**` not last");
    }
    for segment in &t.segments {
        if let Segment::Literal(l) = segment {
            assert!(!l.is_empty(), "{text:?}: empty literal");
        }
    }
    let mut covered_to = 0;
    for (i, v) in t.variables.iter().enumerate() {
        assert!(
            covered_to <= v.start && v.start < v.end && v.end <= t.segments.len(),
            "{text:?}: variable {v:?} out of order or out of the segments"
        );
        covered_to = v.end;
        assert!(
            !v.field_path.is_empty() && v.field_path.iter().all(|p| is_ident(p)),
            "{text:?}: bad field path {:?}",
            v.field_path
        );
        assert!(
            t.variables[..i]
                .iter()
                .all(|o| o.field_path != v.field_path),
            "{text:?}: {:?} bound twice",
            v.field_path
        );
    }
    if let Some(verb) = &t.verb {
        assert!(
            !verb.is_empty() && !verb.contains(['/', ':', '{', '}']),
            "{text:?}: verb {verb:?}"
        );
    }
}

/// A literal as template text: everything but ASCII letters and digits percent-encoded (the
/// parser decodes literals).
fn literal_text(literal: &str) -> String {
    encoded(literal)
}

fn encoded(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn segment_text(segment: &Segment) -> String {
    match segment {
        Segment::Literal(l) => literal_text(l),
        Segment::Wildcard => "*".to_owned(),
        Segment::DoubleWildcard => "**".to_owned(),
    }
}

/// The template written back out, every variable with its pattern spelt in full.
fn canonical_text(t: &Template) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < t.segments.len() {
        out.push('/');
        if let Some(v) = t.variables.iter().find(|v| v.start == i) {
            let pattern: Vec<String> = t.segments[v.start..v.end]
                .iter()
                .map(segment_text)
                .collect();
            out.push_str(&format!(
                "{{{}={}}}",
                v.field_path.join("."),
                pattern.join("/")
            ));
            i = v.end;
        } else {
            out.push_str(&segment_text(&t.segments[i]));
            i += 1;
        }
    }
    if let Some(verb) = &t.verb {
        out.push(':');
        out.push_str(verb);
    }
    out
}

/// A raw request path that `t` matches with exactly `captures`.
fn path_for(t: &Template, captures: &Captures) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < t.segments.len() {
        if let Some(at) = t.variables.iter().position(|v| v.start == i) {
            let v = &t.variables[at];
            let value = &captures[at].1;
            let single = v.end - v.start == 1 && t.segments[i] != Segment::DoubleWildcard;
            if single {
                // One segment, decoded whole: a `/` in it was `%2F`.
                out.push('/');
                out.push_str(&encoded(value));
            } else {
                // Several segments joined by `/` (a `%2F` in a value stays as text), one piece
                // per segment of the pattern; a literal's piece is the literal itself.
                let mut pieces = value.split('/');
                for segment in &t.segments[v.start..v.end] {
                    match segment {
                        Segment::Literal(l) => {
                            pieces.next();
                            out.push('/');
                            out.push_str(&literal_text(l));
                        }
                        Segment::Wildcard => {
                            out.push('/');
                            out.push_str(&encoded(pieces.next().unwrap_or_default()));
                        }
                        Segment::DoubleWildcard => {
                            for piece in pieces.by_ref() {
                                out.push('/');
                                out.push_str(&encoded(piece));
                            }
                        }
                    }
                }
            }
            i = v.end;
            continue;
        }
        match &t.segments[i] {
            Segment::Literal(l) => {
                out.push('/');
                out.push_str(&literal_text(l));
            }
            Segment::Wildcard => out.push_str("/x"),
            Segment::DoubleWildcard => {}
        }
        i += 1;
    }
    if out.is_empty() {
        out.push('/');
    }
    if let Some(verb) = &t.verb {
        out.push(':');
        out.push_str(verb);
    }
    out
}
