//! The `google.api.http` path template grammar, parsed once at start-up:
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! Variables are flattened into the segment list and remember which segments they cover, so
//! the matcher walks one flat list. `**` may only be the last segment: that keeps matching
//! linear and its greediness obvious (it takes every remaining segment, possibly none).

use std::fmt;

/// One segment of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text (after percent-decoding the request segment).
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Wildcard,
    /// `**`: every remaining segment (zero or more). Always last.
    DoubleWildcard,
}

/// A `{field.path=...}` variable covering `segments[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub field_path: Vec<String>,
    pub start: usize,
    pub end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(message: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(message.into()))
}

/// Characters a literal may hold: unreserved URL characters, percent escapes and the
/// sub-delimiters that cannot be confused with the template syntax.
fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~%!$&'()+,;@".contains(c)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses a template such as `/v1/{name=projects/*/items/*}:publish`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let Some(rest) = text.strip_prefix('/') else {
            return err(format!("template `{text}` must start with `/`"));
        };
        // The verb is a `:` outside braces after the last `/` outside braces.
        let (mut depth, mut last_slash, mut verb_at) = (0i32, 0usize, None);
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                '/' if depth == 0 => {
                    last_slash = i;
                    verb_at = None;
                }
                ':' if depth == 0 && i >= last_slash => verb_at = Some(i),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(verb) = verb
            && (verb.is_empty() || !verb.chars().all(is_literal_char))
        {
            return err(format!("template `{text}`: bad verb `{verb}`"));
        }
        let mut template = Template {
            segments: Vec::new(),
            variables: Vec::new(),
            verb: verb.map(str::to_owned),
        };
        let mut parts = split_outside_braces(path).into_iter();
        for part in parts.by_ref() {
            if let Some(inner) = part.strip_prefix('{') {
                let Some(inner) = inner.strip_suffix('}') else {
                    return err(format!("template `{text}`: unclosed variable `{part}`"));
                };
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if !field_path.iter().all(|p| is_ident(p)) {
                    return err(format!("template `{text}`: bad field path `{field}`"));
                }
                if template
                    .variables
                    .iter()
                    .any(|v| v.field_path == field_path)
                {
                    return err(format!("template `{text}`: variable `{field}` bound twice"));
                }
                let start = template.segments.len();
                for sub in pattern.split('/') {
                    if sub.contains(['{', '}']) {
                        return err(format!("template `{text}`: nested variable in `{part}`"));
                    }
                    template.segments.push(plain_segment(text, sub)?);
                }
                let end = template.segments.len();
                template.variables.push(Variable {
                    field_path,
                    start,
                    end,
                });
            } else {
                template.segments.push(plain_segment(text, part)?);
            }
        }
        if let Some(i) = template
            .segments
            .iter()
            .position(|s| *s == Segment::DoubleWildcard)
            && i + 1 != template.segments.len()
        {
            return err(format!("template `{text}`: `**` must be the last segment"));
        }
        Ok(template)
    }

    /// The template with variables written as OpenAPI path parameters (`{field.path}`).
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < self.segments.len() {
            out.push('/');
            if let Some(v) = self.variables.iter().find(|v| v.start == i) {
                out.push('{');
                out.push_str(&v.field_path.join("."));
                out.push('}');
                i = v.end.max(i + 1);
                continue;
            }
            match &self.segments[i] {
                Segment::Literal(l) => out.push_str(l),
                Segment::Wildcard => out.push('*'),
                Segment::DoubleWildcard => out.push_str("**"),
            }
            i += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }
}

fn plain_segment(text: &str, part: &str) -> Result<Segment, TemplateError> {
    match part {
        "*" => Ok(Segment::Wildcard),
        "**" => Ok(Segment::DoubleWildcard),
        "" => err(format!("template `{text}`: empty segment")),
        literal if literal.chars().all(is_literal_char) => Ok(Segment::Literal(
            percent_encoding::percent_decode_str(literal)
                .decode_utf8_lossy()
                .into_owned(),
        )),
        other => err(format!("template `{text}`: bad segment `{other}`")),
    }
}

fn split_outside_braces(path: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0i32, 0usize);
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                parts.push(&path[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&path[from..]);
    parts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.to_owned())
    }

    #[test]
    fn literals_variables_and_a_verb_parse() {
        let t = Template::parse("/v1/users/{username}:resendVerification").unwrap();
        assert_eq!(t.segments, [lit("v1"), lit("users"), Segment::Wildcard]);
        assert_eq!(t.variables[0].field_path, ["username"]);
        assert_eq!((t.variables[0].start, t.variables[0].end), (2, 3));
        assert_eq!(t.verb.as_deref(), Some("resendVerification"));
    }

    #[test]
    fn a_verb_directly_after_a_literal_is_a_verb_not_part_of_the_literal() {
        let t = Template::parse("/v1/users:verifyEmail").unwrap();
        assert_eq!(t.segments, [lit("v1"), lit("users")]);
        assert_eq!(t.verb.as_deref(), Some("verifyEmail"));
    }

    #[test]
    fn nested_field_paths_and_patterns_parse() {
        let t = Template::parse("/v1/{book.name=shelves/*/books/*}/x/**").unwrap();
        assert_eq!(
            t.segments,
            [
                lit("v1"),
                lit("shelves"),
                Segment::Wildcard,
                lit("books"),
                Segment::Wildcard,
                lit("x"),
                Segment::DoubleWildcard
            ]
        );
        assert_eq!(t.variables[0].field_path, ["book", "name"]);
        assert_eq!((t.variables[0].start, t.variables[0].end), (1, 5));
        assert_eq!(t.openapi_path(), "/v1/{book.name}/x/**");
    }

    #[test]
    fn a_double_wildcard_variable_takes_the_rest() {
        let t = Template::parse("/files/{path=**}:get").unwrap();
        assert_eq!(t.segments, [lit("files"), Segment::DoubleWildcard]);
        assert_eq!(t.verb.as_deref(), Some("get"));
    }

    #[test]
    fn malformed_templates_are_refused_with_a_reason() {
        for bad in [
            "v1/users",
            "/v1//users",
            "/v1/{user",
            "/v1/{1abc}",
            "/v1/{a}/{a}",
            "/v1/**/tail",
            "/v1/{a={b}}",
            "/v1/users:",
            "/v1/us ers",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9_.-]{0,8}",
            Just("*".to_owned()),
            "[a-z][a-z0-9_]{0,6}".prop_map(|f| format!("{{{f}}}")),
            ("[a-z]{1,5}", "[a-z]{1,5}").prop_map(|(a, b)| format!("{{{a}.{b}=p/*}}")),
        ]
    }

    proptest! {
        #[test]
        fn every_generated_template_parses_and_round_trips_through_its_openapi_form(
            segments in prop::collection::vec(segment(), 1..6),
            verb in prop::option::of("[a-z][a-zA-Z]{0,8}"),
            tail in any::<bool>(),
        ) {
            let mut text = format!("/{}", segments.join("/"));
            if tail { text.push_str("/**"); }
            if let Some(v) = &verb { text.push(':'); text.push_str(v); }
            // A field bound twice is the one legitimate refusal of generated input.
            let fields: Vec<&str> = segments
                .iter()
                .filter_map(|s| s.strip_prefix('{'))
                .map(|s| s.trim_end_matches('}').split('=').next().unwrap_or_default())
                .collect();
            let unique: std::collections::HashSet<&str> = fields.iter().copied().collect();
            let parsed = Template::parse(&text);
            prop_assert_eq!(parsed.is_ok(), unique.len() == fields.len(), "{}: {:?}", text, parsed);
            if let Ok(t) = parsed {
                prop_assert_eq!(t.verb.as_ref(), verb.as_ref());
                prop_assert_eq!(t.segments.last() == Some(&Segment::DoubleWildcard), tail);
                let reparsed = Template::parse(&t.openapi_path());
                if t.variables.iter().all(|v| v.end - v.start == 1
                    && t.segments[v.start] == Segment::Wildcard)
                {
                    prop_assert_eq!(reparsed.unwrap(), t);
                }
            }
        }

        #[test]
        fn the_parser_never_panics(text in "/[a-z{}=*:/._]{0,30}") {
            let _ = Template::parse(&text);
        }
    }
}
