//! The module graph, checked: every `crate::<module>` a top-level module names (outside
//! comments and its `#[cfg(test)]` code) is an arrow, and the arrows must point one way.
//!
//! - The leaves ([`LEAVES`]: configuration, the error taxonomy, the generated protos, telemetry,
//!   input validation, the tower helper) import no other module but leaves;
//! - there is no cycle: the request path reads `main → cli → app → {api, gateway, limits} →
//!   {audit, exchange → ledger, identity} → auth → jobs → store → db → leaves`, and a newcomer
//!   can follow any arrow down without coming back.
//!
//! `make lint` runs this test; it fails naming the offending arrow (and the file it is in).

#![cfg(test)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Modules that import no module but other leaves.
const LEAVES: &[&str] = &[
    "config",
    "error",
    "proto",
    "service",
    "streams",
    "telemetry",
    "validate",
];

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that ships: without line comments and from its `#[cfg(test)] mod` on
/// (test modules sit at the end of their files here).
fn shipped_code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod ").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// For each top-level module, the modules it names and the first file that names each.
fn arrows(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src/");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name")
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(top.as_str(), "main" | "lib" | "architecture") {
            continue;
        }
        let code = shipped_code(&std::fs::read_to_string(&file).expect("a readable file"));
        let named = named_modules(&code);
        let entry = graph.entry(top.clone()).or_default();
        for module in named {
            if !module.is_empty() && module != top && module != "self" {
                entry
                    .entry(module)
                    .or_insert_with(|| relative.display().to_string());
            }
        }
    }
    graph
}

/// The top-level modules `code` names: `crate::x` paths and the first segment of every item in
/// a `use crate::{x::…, y, …}` group.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            named.insert(first_segment(rest));
            continue;
        };
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    named.insert(first_segment(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                item.push(c);
            }
        }
        named.insert(first_segment(&item));
    }
    named
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle of the graph, if any, as the modules on it (the first one again at the end).
fn cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

mod tests {
    use super::*;

    fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
        arrows(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
    }

    #[test]
    fn leaves_import_only_leaves() {
        let graph = graph();
        for leaf in LEAVES {
            for (module, file) in graph.get(*leaf).into_iter().flatten() {
                assert!(
                    LEAVES.contains(&module.as_str()),
                    "{leaf} is a leaf but imports {module} (in src/{file})"
                );
            }
        }
    }

    #[test]
    fn the_module_graph_has_no_cycle() {
        let graph = graph();
        if let Some(cycle) = cycle(&graph) {
            let arrows: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} → {} (src/{})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("the module graph has a cycle: {}", arrows.join(", "));
        }
    }

    /// `cargo test --lib architecture -- --ignored --nocapture` prints the graph (for notes and
    /// reviews).
    #[test]
    #[ignore = "prints the graph; asserts nothing"]
    fn print_the_graph() {
        for (module, names) in graph() {
            let targets: Vec<&str> = names.keys().map(String::as_str).collect();
            println!("{module} → {}", targets.join(", "));
        }
    }

    /// The check itself: it sees an arrow in a `use crate::{…}` group and in a path, ignores
    /// comments and test code, and finds a cycle.
    #[test]
    fn the_check_sees_arrows_and_cycles() {
        let code = shipped_code(
            "use crate::{a::B, c, d::{e, f}};\n// crate::ignored\nfn x() { crate::g::h(); }\n\
             #[cfg(test)]\nmod tests { use crate::t; }",
        );
        let named: Vec<String> = named_modules(&code).into_iter().collect();
        assert_eq!(named, ["a", "c", "d", "g"]);
        let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (from, to) in [("a", "b"), ("b", "c"), ("c", "a")] {
            graph
                .entry(from.into())
                .or_default()
                .insert(to.into(), "x.rs".into());
        }
        assert_eq!(
            cycle(&graph).map(|c| c.len()),
            Some(4),
            "a → b → c → a is found"
        );
        graph.get_mut("c").unwrap().clear();
        assert_eq!(cycle(&graph), None);
    }
}
