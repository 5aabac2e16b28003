//! The documentation against the code and against itself: the configuration tables of
//! `docs/configuration.md` list exactly the environment variables that `tally serve --help` and
//! `tally worker --help` print; `README.md` stays a short front page that links every page under
//! `docs/`; every relative link resolves; nothing points at a file outside the repository; every
//! example output of the walkthroughs is marked with the walkthrough steps that produce it.
//!
//! (That the marked outputs are what those steps print is checked by `scripts/docs-outputs.py`
//! in `make test-walkthrough`, against a real server: this file only makes sure that no example
//! output escapes that check.)
//!
//! No server and no database: the real binary's `--help`, and the files.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// The README is a front page; detail goes under `docs/`.
const README_MAX_LINES: usize = 300;

/// Files outside this repository, which a reader of the repository cannot open.
const OUTSIDE_REFERENCES: &[&str] = &["../shared", "ARCHITECTURE.md", "STYLE.md", "STACK.md"];

/// How a table row of `docs/configuration.md` names a variable (the page states the convention):
/// a line starting with this, then the name, a backtick and the end of the cell.
const CONFIG_ROW_PREFIX: &str = "| `";

/// The pages whose example outputs come from `scripts/walkthrough.sh`.
const WALKTHROUGH_PAGES: &[&str] = &[
    "README.md",
    "docs/walkthrough.md",
    "docs/exchange.md",
    "docs/identity.md",
];

/// How a page marks an example output (scripts/docs-outputs.py reads the same marker).
const OUTPUT_MARKER: (&str, &str) = ("<!-- output: ", " -->");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &Path) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir` (relative to the repository root), recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![root().join(dir)];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(root()).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

fn is_markdown(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "md")
}

/// The pages the README must link: `docs/*.md`.
fn docs_pages() -> Vec<PathBuf> {
    let pages: Vec<PathBuf> = files_under(Path::new("docs"))
        .into_iter()
        .filter(|path| is_markdown(path) && path.parent() == Some(Path::new("docs")))
        .collect();
    assert!(
        !pages.is_empty(),
        "no docs/*.md at all under {}",
        root().display()
    );
    pages
}

/// `README.md` and every Markdown file under `docs/`.
fn markdown_documents() -> Vec<PathBuf> {
    let mut documents = vec![PathBuf::from("README.md")];
    documents.extend(
        files_under(Path::new("docs"))
            .into_iter()
            .filter(|path| is_markdown(path)),
    );
    documents
}

/// The targets of the Markdown links `[text](target)` outside fenced code blocks, with their
/// 1-based line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut in_code_block = false;
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        for (start, _) in line.match_indices("](") {
            let rest = &line[start + 2..];
            let Some(end) = rest.find(')') else {
                continue;
            };
            // `[text](<target> "title")`: the target is the first word, without angle brackets.
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let target = target.trim_start_matches('<').trim_end_matches('>');
            found.push((index + 1, target.to_owned()));
        }
    }
    found
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:")
}

/// A link's file part: the target without its `#anchor` (empty for a link within the page).
fn file_part(target: &str) -> &str {
    target.split('#').next().unwrap_or("")
}

/// The environment variables that `tally <subcommand> --help` names: every `[env: NAME]` or
/// `[env: NAME=value]` of clap's output.
fn help_env_vars(subcommand: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([subcommand, "--help"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `tally {subcommand} --help`: {e}"));
    assert!(
        output.status.success(),
        "`tally {subcommand} --help` exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8(output.stdout).unwrap();
    // clap may wrap a long line between `[env:` and the name: read it as one line of words.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let vars: BTreeSet<String> = help
        .match_indices("[env: ")
        .map(|(start, marker)| {
            help[start + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    assert!(
        !vars.is_empty() && !vars.contains(""),
        "`tally {subcommand} --help` no longer prints `[env: NAME]` markers as expected \
         (found {vars:?}); adapt help_env_vars in tests/api/docs.rs. The output:\n{help}"
    );
    vars
}

fn is_env_var_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables the tables of `docs/configuration.md` list: one per row whose first cell is the
/// name alone in backticks, `` | `NAME` | ``. A row that starts like that but holds anything
/// else in its first cell, or a name listed twice, fails here.
fn documented_env_vars() -> BTreeSet<String> {
    let page = Path::new("docs/configuration.md");
    let text = read(page);
    let mut vars = BTreeSet::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix(CONFIG_ROW_PREFIX) else {
            continue;
        };
        let first_cell = rest.split('|').next().unwrap_or("").trim_end();
        match first_cell
            .strip_suffix('`')
            .filter(|name| is_env_var_name(name))
        {
            Some(name) => {
                if !vars.insert(name.to_owned()) {
                    problems.push(format!("line {}: `{name}` has a second row", index + 1));
                }
            }
            None => problems.push(format!(
                "line {}: a row whose first cell starts with a backtick must hold exactly one \
                 variable name in backticks, like | `TALLY_ENV` |; found: {line}",
                index + 1
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{}: table rows that break the page's convention (one variable per row):\n  {}",
        page.display(),
        problems.join("\n  ")
    );
    assert!(
        !vars.is_empty(),
        "{}: no table row names a variable (rows must start with | `NAME` |)",
        page.display()
    );
    vars
}

#[test]
fn the_configuration_tables_list_exactly_the_variables_that_serve_and_worker_help_print() {
    let serve = help_env_vars("serve");
    let worker = help_env_vars("worker");
    // Two anchors, so a change in how clap prints cannot pass as an empty agreement.
    assert!(
        serve.contains("TALLY_LISTEN_ADDR"),
        "`tally serve --help` names no TALLY_LISTEN_ADDR: {serve:?}"
    );
    assert!(
        worker.contains("SMTP_URL"),
        "`tally worker --help` names no SMTP_URL: {worker:?}"
    );
    let printed: BTreeSet<String> = serve.union(&worker).cloned().collect();
    let documented = documented_env_vars();

    let missing: Vec<&String> = printed.difference(&documented).collect();
    let extra: Vec<&String> = documented.difference(&printed).collect();
    let printed_by = |var: &String| match (serve.contains(var), worker.contains(var)) {
        (true, true) => "serve and worker",
        (true, false) => "serve",
        _ => "worker",
    };
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md and the `--help` of `tally serve` / `tally worker` disagree.\n\
         Printed by --help but without a row in docs/configuration.md (add a row, with the \
         flag, default and description from --help):\n  {}\n\
         Rows in docs/configuration.md that neither --help prints (remove the row, or mention \
         the variable in text outside the tables):\n  {}\n\
         A variable counts as documented when a line of the page starts with | `NAME` |.",
        if missing.is_empty() {
            "(none)".to_owned()
        } else {
            missing
                .iter()
                .map(|var| format!("{var} (tally {} --help)", printed_by(var)))
                .collect::<Vec<_>>()
                .join("\n  ")
        },
        if extra.is_empty() {
            "(none)".to_owned()
        } else {
            extra
                .iter()
                .map(|var| var.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        },
    );
}

#[test]
fn the_readme_is_a_short_front_page_that_links_every_docs_page() {
    let readme = read(Path::new("README.md"));
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines, more than {README_MAX_LINES}: it is the front page; move \
         the detail into a page under docs/ and link that page from the README"
    );

    let linked: BTreeSet<PathBuf> = links(&readme)
        .into_iter()
        .map(|(_, target)| file_part(&target).to_owned())
        .filter(|file| !file.is_empty() && !is_external(file))
        .map(|file| PathBuf::from(file.trim_start_matches("./")))
        .collect();
    let unlinked: Vec<String> = docs_pages()
        .into_iter()
        .filter(|page| !linked.contains(page))
        .map(|page| page.display().to_string())
        .collect();
    assert!(
        unlinked.is_empty(),
        "README.md links no {}: add each page, with one line on what it covers, to the \
         README's \"Read on\" list",
        unlinked.join(", ")
    );

    let untitled: Vec<String> = docs_pages()
        .into_iter()
        .filter(|page| !read(page).starts_with("# "))
        .map(|page| page.display().to_string())
        .collect();
    assert!(
        untitled.is_empty(),
        "these pages do not start with a `# Title` line: {}",
        untitled.join(", ")
    );
}

#[test]
fn every_relative_link_in_the_readme_and_docs_points_at_an_existing_file() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for document in markdown_documents() {
        let dir = document.parent().unwrap_or(Path::new(""));
        for (line, target) in links(&read(&document)) {
            let file = file_part(&target);
            if file.is_empty() || is_external(&target) {
                continue;
            }
            checked += 1;
            let resolved = root().join(dir).join(file);
            if !resolved.exists() {
                broken.push(format!(
                    "{}:{line}: ]({target}) -> {} does not exist",
                    document.display(),
                    dir.join(file).display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "relative links that point at no file (a link is relative to the file it is in; \
         from docs/, the repository root is ../):\n  {}",
        broken.join("\n  ")
    );
    assert!(
        checked > 0,
        "no relative link found at all; is the link parser broken?"
    );
}

#[test]
fn the_readme_and_docs_point_at_no_file_outside_the_repository() {
    let mut documents = vec![PathBuf::from("README.md")];
    documents.extend(files_under(Path::new("docs")));
    let mut found = Vec::new();
    for document in documents {
        let Ok(text) = std::fs::read_to_string(root().join(&document)) else {
            continue; // not text: nothing to point anywhere
        };
        for (index, line) in text.lines().enumerate() {
            for reference in OUTSIDE_REFERENCES {
                if line.contains(reference) {
                    found.push(format!(
                        "{}:{}: mentions {reference}: {line}",
                        document.display(),
                        index + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the README and docs/ must not point at files outside this repository (a reader of the \
         repository cannot open them; say what is needed here instead):\n  {}",
        found.join("\n  ")
    );
}

/// The steps each fenced ```json or ```text block of `text` is marked with (the names of the
/// marker just before its opening fence, `None` when unmarked), with the fence's line number.
fn output_blocks(text: &str) -> Vec<(usize, Option<Vec<String>>)> {
    let mut blocks = Vec::new();
    let mut in_fence = false;
    let mut marker: Option<Vec<String>> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            if !in_fence && (fence == "json" || fence == "text") {
                blocks.push((index + 1, marker.take()));
            }
            in_fence = !in_fence;
            continue;
        }
        let (open, close) = OUTPUT_MARKER;
        marker = line
            .trim()
            .strip_prefix(open)
            .and_then(|rest| rest.strip_suffix(close))
            .map(|steps| steps.split_whitespace().map(str::to_owned).collect());
    }
    blocks
}

/// The step names `scripts/walkthrough.sh` records: `record NAME`, and the keys of its
/// `expect_http KEY` and `expect_unauthenticated KEY` calls (the latter also `KEY-status`).
fn recorded_steps() -> BTreeSet<String> {
    let script = read(Path::new("scripts/walkthrough.sh"));
    let mut steps = BTreeSet::new();
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["record", name, ..] if !name.starts_with('"') => {
                steps.insert((*name).to_owned());
            }
            ["expect_http", key, ..] => {
                steps.insert((*key).to_owned());
            }
            ["expect_unauthenticated", key, ..] => {
                steps.insert((*key).to_owned());
                steps.insert(format!("{key}-status"));
            }
            _ => {}
        }
    }
    steps
}

#[test]
fn every_example_output_of_the_walkthroughs_names_the_steps_that_produce_it() {
    let recorded = recorded_steps();
    assert!(
        recorded.contains("health") && recorded.contains("curl-login"),
        "found no `record` step in scripts/walkthrough.sh: {recorded:?}"
    );
    let mut problems = Vec::new();
    let mut marked = 0;
    for page in WALKTHROUGH_PAGES {
        for (line, steps) in output_blocks(&read(Path::new(page))) {
            let Some(steps) = steps else {
                problems.push(format!(
                    "{page}:{line}: an example output without an `<!-- output: STEP... -->` marker"
                ));
                continue;
            };
            marked += 1;
            for step in steps.iter().filter(|step| *step != "none") {
                let name = step.split('|').next().unwrap_or_default();
                if !recorded.contains(name) {
                    problems.push(format!(
                        "{page}:{line}: step `{name}` is not recorded by scripts/walkthrough.sh"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "every example output must name the walkthrough steps it shows, so that \
         scripts/docs-outputs.py compares it with what they print:\n  {}",
        problems.join("\n  ")
    );
    assert!(
        marked >= 20,
        "only {marked} marked example outputs; is the parser broken?"
    );
}
