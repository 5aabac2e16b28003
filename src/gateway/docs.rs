//! `/docs`: a human-readable page rendered from the OpenAPI document, once at start-up.
//! Plain HTML and a little CSS, no script and nothing fetched from elsewhere, so it works
//! offline and under a strict content security policy.

use std::fmt::Write as _;

use serde_json::Value as Json;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short type label for a schema: `string`, `array of tally.v1.Account`, ...
fn type_label(schema: &Json) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    if schema["type"] == "array" {
        return format!("array of {}", type_label(&schema["items"]));
    }
    let mut label = match &schema["type"] {
        Json::String(t) => t.clone(),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".to_owned(),
    };
    if let Some(format) = schema["format"].as_str() {
        let _ = write!(label, " ({format})");
    }
    if let Some(values) = schema["enum"].as_array() {
        let names: Vec<&str> = values.iter().filter_map(Json::as_str).collect();
        let _ = write!(label, ": {}", names.join(", "));
    }
    escape(&label)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;line-height:1.45;color:#222}code,.path{font-family:ui-monospace,monospace}\
.op{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}\
.m{display:inline-block;min-width:4.5rem;font-weight:bold;font-family:ui-monospace,monospace}\
.get{color:#0a6}.post{color:#06c}.patch{color:#a60}.delete{color:#c22}.put{color:#60a}\
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;\
text-align:left;vertical-align:top}h3{margin-bottom:.2rem}.public{color:#777;font-size:.9em}";

/// Renders the docs page of `doc` (an OpenAPI 3.1 document).
pub fn render(doc: &Json) -> String {
    let title = escape(doc["info"]["title"].as_str().unwrap_or("API"));
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title} {}</h1>\n\
         <p>{}</p>\n<p>The machine-readable document is <a href=\"/openapi.json\">\
         /openapi.json</a> (OpenAPI 3.1). Send <code>authorization: Bearer &lt;access \
         token&gt;</code> on every call not marked public; request and response bodies are \
         proto3 JSON. Errors are <a href=\"#schema-Status\">Status</a> objects.</p>\n",
        escape(doc["info"]["version"].as_str().unwrap_or("")),
        escape(doc["info"]["description"].as_str().unwrap_or("")),
    );
    html.push_str("<h2>Operations</h2>\n");
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            let Some(ops) = ops.as_object() else { continue };
            for (method, op) in ops {
                render_operation(&mut html, path, method, op);
            }
        }
    }
    html.push_str("<h2>Schemas</h2>\n");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let _ = write!(
                html,
                "<h3 id=\"schema-{0}\">{0}</h3>\n<p>{1}</p>\n",
                escape(name),
                escape(schema["description"].as_str().unwrap_or(""))
            );
            if let Some(properties) = schema["properties"].as_object() {
                html.push_str("<table><tr><th>field</th><th>type</th><th>meaning</th></tr>\n");
                for (field, property) in properties {
                    let _ = writeln!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        escape(field),
                        type_label(property),
                        escape(property["description"].as_str().unwrap_or(""))
                    );
                }
                html.push_str("</table>\n");
            }
        }
    }
    html.push_str("</body></html>\n");
    html
}

fn render_operation(html: &mut String, path: &str, method: &str, op: &Json) {
    let public = if op["security"] == serde_json::json!([]) {
        " <span class=\"public\">public</span>"
    } else {
        ""
    };
    let _ = write!(
        html,
        "<div class=\"op\" id=\"{id}\"><h3><span class=\"m {method}\">{upper}</span> \
         <span class=\"path\">{path}</span>{public}</h3>\n<p><b>{summary}</b>: {description}</p>\n",
        id = escape(op["operationId"].as_str().unwrap_or("")),
        upper = method.to_ascii_uppercase(),
        path = escape(path),
        summary = escape(op["summary"].as_str().unwrap_or("")),
        description = escape(op["description"].as_str().unwrap_or("")),
    );
    if let Some(parameters) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        html.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th></tr>\n");
        for p in parameters {
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or("")),
                escape(p["in"].as_str().unwrap_or("")),
                type_label(&p["schema"])
            );
        }
        html.push_str("</table>\n");
    }
    let body = &op["requestBody"]["content"]["application/json"]["schema"];
    if !body.is_null() {
        let _ = writeln!(html, "<p>Request body: {}</p>", type_label(body));
    }
    let ok = &op["responses"]["200"]["content"];
    if let Some((content_type, media)) = ok.as_object().and_then(|m| m.iter().next()) {
        let _ = writeln!(
            html,
            "<p>Response ({}): {}</p>",
            escape(content_type),
            type_label(&media["schema"])
        );
    }
    html.push_str("</div>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_document_is_escaped() {
        let doc = serde_json::json!({
            "info": { "title": "<script>x</script>", "version": "1" },
            "paths": {}, "components": { "schemas": {} },
        });
        let html = render(&doc);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
