//! Matches a request's method and raw (still percent-encoded) path against the parsed
//! templates.
//!
//! Rules, in the order they decide:
//! - a template with a verb matches only a path ending in `:verb`; without one, a colon is an
//!   ordinary character, so `{username}` may capture `bob:x`;
//! - among templates that match, the most specific wins, compared segment by segment: a
//!   literal beats `*`, which beats `**`; a verb beats no verb;
//! - a path some template matches under another method is `405`, with those methods listed.
//!
//! Variables are percent-decoded; a multi-segment variable keeps `%2F` encoded so the
//! captured value still says where the segments were.

use std::cmp::Ordering;

use http::Method;

use super::template::{Segment, Template};

/// (field path, decoded value) per template variable, in template order.
pub type Captures = Vec<(Vec<String>, String)>;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a, T> {
    Found {
        target: &'a T,
        variables: Captures,
    },
    /// The path is known under these other methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
}

/// Routes by method and template; `T` is whatever the caller attaches to each.
#[derive(Debug)]
pub struct Matcher<T> {
    routes: Vec<(Method, Template, T)>,
}

impl<T> Default for Matcher<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> Matcher<T> {
    /// Adds a route; returns the target of an existing route with the very same method and
    /// template shape (a conflict the caller reports), if any.
    pub fn insert(&mut self, method: Method, template: Template, target: T) -> Result<(), &T> {
        if let Some(pos) = self
            .routes
            .iter()
            .position(|(m, t, _)| *m == method && same_shape(t, &template))
        {
            return Err(&self.routes[pos].2);
        }
        self.routes.push((method, template, target));
        Ok(())
    }

    pub fn routes(&self) -> impl Iterator<Item = (&Method, &Template, &T)> {
        self.routes.iter().map(|(m, t, x)| (m, t, x))
    }

    pub fn find(&self, method: &Method, raw_path: &str) -> Match<'_, T> {
        let mut best: Option<(&Template, &T, Captures)> = None;
        let mut others: Vec<Method> = Vec::new();
        for (m, template, target) in &self.routes {
            let Some(variables) = match_template(template, raw_path) else {
                continue;
            };
            if m != method {
                if !others.contains(m) {
                    others.push(m.clone());
                }
                continue;
            }
            let better = match &best {
                None => true,
                Some((current, ..)) => specificity(template, current) == Ordering::Greater,
            };
            if better {
                best = Some((template, target, variables));
            }
        }
        match best {
            Some((_, target, variables)) => Match::Found { target, variables },
            None if !others.is_empty() => Match::MethodNotAllowed(others),
            None => Match::NotFound,
        }
    }
}

fn rank(segment: &Segment) -> u8 {
    match segment {
        Segment::Literal(_) => 3,
        Segment::Wildcard => 2,
        Segment::DoubleWildcard => 1,
    }
}

/// Orders two templates that both match a path: literal > `*` > `**`, then a verb.
fn specificity(a: &Template, b: &Template) -> Ordering {
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

fn same_shape(a: &Template, b: &Template) -> bool {
    a.segments == b.segments && a.verb == b.verb
}

fn decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Decodes everything but `%2F`, so a multi-segment value keeps its structure.
fn decode_keeping_slashes(segment: &str) -> Option<String> {
    let parts: Option<Vec<String>> = segment
        .split("%2F")
        .map(|p| {
            p.split("%2f")
                .map(decode)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join("%2F"))
        })
        .collect();
    parts.map(|v| v.join("%2F"))
}

/// The variables of `template` in `raw_path`, or `None` when it does not match.
pub fn match_template(template: &Template, raw_path: &str) -> Option<Captures> {
    let path = raw_path.strip_prefix('/')?;
    let path = match &template.verb {
        Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
        None => path,
    };
    let segments: Vec<&str> = path.split('/').collect();
    let mut consumed = vec![(0usize, 0usize); template.segments.len()];
    let mut at = 0usize;
    for (i, segment) in template.segments.iter().enumerate() {
        match segment {
            Segment::Literal(literal) => {
                let got = segments.get(at)?;
                if decode(got)? != *literal {
                    return None;
                }
                consumed[i] = (at, at + 1);
                at += 1;
            }
            Segment::Wildcard => {
                let got = segments.get(at)?;
                if got.is_empty() {
                    return None;
                }
                consumed[i] = (at, at + 1);
                at += 1;
            }
            Segment::DoubleWildcard => {
                // Greedy: everything left, possibly nothing.
                let rest = segments.len();
                consumed[i] = (at, rest);
                at = rest;
            }
        }
    }
    if at != segments.len() {
        return None;
    }
    let mut variables = Vec::with_capacity(template.variables.len());
    for variable in &template.variables {
        let from = consumed.get(variable.start)?.0;
        let to = consumed.get(variable.end.checked_sub(1)?)?.1;
        let raw = segments.get(from..to)?;
        let value = if to - from == 1 && variable.end - variable.start == 1 {
            decode(raw[0])?
        } else {
            raw.iter()
                .map(|s| decode_keeping_slashes(s))
                .collect::<Option<Vec<_>>>()?
                .join("/")
        };
        variables.push((variable.field_path.clone(), value));
    }
    Some(variables)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn matcher(routes: &[(Method, &'static str)]) -> Matcher<&'static str> {
        let mut m = Matcher::default();
        for (method, text) in routes {
            m.insert(method.clone(), Template::parse(text).unwrap(), *text)
                .unwrap();
        }
        m
    }

    fn found(m: &Matcher<&'static str>, method: Method, path: &str) -> (&'static str, Vec<String>) {
        match m.find(&method, path) {
            Match::Found { target, variables } => {
                (*target, variables.into_iter().map(|(_, v)| v).collect())
            }
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn a_literal_beats_a_variable_in_the_same_position() {
        let m = matcher(&[
            (Method::GET, "/v1/users/{username}"),
            (Method::GET, "/v1/users/me"),
        ]);
        assert_eq!(found(&m, Method::GET, "/v1/users/me").0, "/v1/users/me");
        assert_eq!(
            found(&m, Method::GET, "/v1/users/bob"),
            ("/v1/users/{username}", vec!["bob".to_owned()])
        );
    }

    #[test]
    fn a_verb_is_matched_at_the_end_and_a_literal_colon_stays_in_a_variable() {
        let m = matcher(&[
            (Method::POST, "/v1/users/{username}:resend"),
            (Method::POST, "/v1/users:verify"),
            (Method::POST, "/v1/users"),
            (Method::GET, "/v1/users/{username}"),
        ]);
        assert_eq!(
            found(&m, Method::POST, "/v1/users/bob:resend"),
            ("/v1/users/{username}:resend", vec!["bob".to_owned()])
        );
        assert_eq!(
            found(&m, Method::POST, "/v1/users:verify").0,
            "/v1/users:verify"
        );
        assert_eq!(found(&m, Method::POST, "/v1/users").0, "/v1/users");
        // No verb on the GET template: the colon belongs to the value.
        assert_eq!(
            found(&m, Method::GET, "/v1/users/bob:resend").1,
            ["bob:resend"]
        );
        assert_eq!(m.find(&Method::POST, "/v1/users:other"), Match::NotFound);
    }

    #[test]
    fn variables_are_percent_decoded() {
        let m = matcher(&[(Method::GET, "/v1/users/{username}")]);
        assert_eq!(found(&m, Method::GET, "/v1/users/a%20b%2Fc").1, ["a b/c"]);
        assert_eq!(m.find(&Method::GET, "/v1/users/%FF"), Match::NotFound);
    }

    #[test]
    fn a_double_wildcard_is_greedy_and_keeps_encoded_slashes() {
        let m = matcher(&[
            (Method::GET, "/files/{path=**}"),
            (Method::GET, "/files/{path=**}:meta"),
        ]);
        assert_eq!(found(&m, Method::GET, "/files/a/b/c").1, ["a/b/c"]);
        assert_eq!(
            found(&m, Method::GET, "/files/a%2Fb/c%20d").1,
            ["a%2Fb/c d"]
        );
        assert_eq!(
            found(&m, Method::GET, "/files/a/b:meta"),
            ("/files/{path=**}:meta", vec!["a/b".to_owned()])
        );
    }

    #[test]
    fn patterned_and_nested_variables_capture_their_segments() {
        let m = matcher(&[(Method::GET, "/v1/{book.name=shelves/*/books/*}")]);
        assert_eq!(
            found(&m, Method::GET, "/v1/shelves/s1/books/b2").1,
            ["shelves/s1/books/b2"]
        );
        assert_eq!(
            m.find(&Method::GET, "/v1/shelves/s1/cds/b2"),
            Match::NotFound
        );
    }

    #[test]
    fn a_known_path_under_another_method_is_method_not_allowed() {
        let m = matcher(&[
            (Method::GET, "/v1/users/{username}"),
            (Method::PATCH, "/v1/users/{username}"),
        ]);
        assert_eq!(
            m.find(&Method::PUT, "/v1/users/bob"),
            Match::MethodNotAllowed(vec![Method::GET, Method::PATCH])
        );
        assert_eq!(m.find(&Method::GET, "/v1/users/"), Match::NotFound);
        assert_eq!(m.find(&Method::GET, "/v1/users/bob/x"), Match::NotFound);
    }

    #[test]
    fn the_same_method_and_shape_twice_is_a_conflict() {
        let mut m = matcher(&[(Method::GET, "/v1/users/{username}")]);
        let clash = m.insert(
            Method::GET,
            Template::parse("/v1/users/{name}").unwrap(),
            "other",
        );
        assert_eq!(clash, Err(&"/v1/users/{username}"));
    }

    proptest! {
        #[test]
        fn any_value_survives_encoding_into_a_path_and_matching_back(value in "\\PC{1,20}") {
            let m = matcher(&[(Method::GET, "/v1/users/{username}")]);
            let encoded = percent_encoding::utf8_percent_encode(
                &value, percent_encoding::NON_ALPHANUMERIC).to_string();
            let (_, values) = found(&m, Method::GET, &format!("/v1/users/{encoded}"));
            prop_assert_eq!(&values[0], &value);
        }

        #[test]
        fn a_double_wildcard_takes_every_remaining_segment(
            parts in prop::collection::vec("[a-z0-9]{1,6}", 1..6)
        ) {
            let m = matcher(&[(Method::GET, "/f/{p=**}"), (Method::GET, "/f/x/{q}")]);
            let path = format!("/f/{}", parts.join("/"));
            let (target, values) = found(&m, Method::GET, &path);
            if parts.len() == 2 && parts[0] == "x" {
                prop_assert_eq!(target, "/f/x/{q}");
            } else {
                prop_assert_eq!(values[0].clone(), parts.join("/"));
            }
        }

        #[test]
        fn matching_never_panics(path in "/[a-z%0-9:/]{0,30}") {
            let m = matcher(&[
                (Method::GET, "/v1/{a}/x/{b=**}:v"),
                (Method::GET, "/v1/*/y"),
                (Method::GET, "/**"),
            ]);
            let _ = m.find(&Method::GET, &path);
        }
    }
}
