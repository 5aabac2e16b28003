//! `docs/schema.md`, the database documentation, is generated here from a freshly migrated
//! database (tables, columns, types, constraints, indexes, triggers, and an entity-relationship
//! diagram), and this test fails when the committed file is not what the migrations produce.
//! `make schema-doc` (`TALLY_WRITE_SCHEMA_DOC=1`) writes it instead of comparing.

use std::fmt::Write as _;

use sqlx::PgPool;

use crate::helpers::*;

const SCHEMA_DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.md");

/// References that triggers check instead of foreign keys (migrations
/// `20261201000006_set_based_references` and `20261201000009_holds_reversals_limits`): the
/// catalog has no foreign key for them, so the diagram takes them from here.
const TRIGGER_REFERENCES: &[(&str, &str, &str)] = &[
    ("transfers", "accounts", "from_account_id, to_account_id"),
    ("transfers", "users", "requested_by"),
    ("transfers", "currencies", "currency"),
    ("transfers", "transfers", "reverses_transfer_id"),
    ("entries", "accounts", "account_id"),
    ("entries", "transfers", "transfer_id"),
];

async fn rows(pool: &PgPool, sql: &'static str, table: Option<&str>) -> Vec<Vec<String>> {
    let query = sqlx::query_as::<_, (Vec<Option<String>>,)>(sql);
    let query = match table {
        Some(t) => query.bind(t.to_owned()),
        None => query,
    };
    query
        .fetch_all(pool)
        .await
        .expect("a catalog query")
        .into_iter()
        .map(|(r,)| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect()
}

/// Markdown-safe table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The document's title and introduction, and the entity-relationship diagram of `foreign`
/// (the catalog's foreign keys) and of [`TRIGGER_REFERENCES`].
fn write_head(doc: &mut String, major: u32, foreign: &[Vec<String>]) {
    writeln!(
        doc,
        "# Database schema\n\n\
         What the migrations in `migrations/` build, read from a freshly migrated PostgreSQL \
         {major} database. Generated: `make schema-doc` writes this file, and `make test` fails \
         when it is stale (`tests/api/schema.rs`). The rules behind the CHECK constraints are \
         in [ledger.md](ledger.md).\n"
    )
    .unwrap();
    writeln!(doc, "## Entity-relationship diagram\n").unwrap();
    writeln!(
        doc,
        "Foreign keys, and (dashed) the references that statement-level triggers check \
         instead.\n\n```mermaid\nerDiagram"
    )
    .unwrap();
    for row in foreign {
        writeln!(doc, "    {} }}o--|| {} : \"{}\"", row[0], row[1], row[2]).unwrap();
    }
    for (from, to, columns) in TRIGGER_REFERENCES {
        writeln!(doc, "    {from} }}o..|| {to} : \"{columns}\"").unwrap();
    }
    writeln!(doc, "```\n").unwrap();
}

/// The section of one table (`table`: its name and comment): its columns, then its
/// constraints, indexes and triggers where it has any.
async fn write_table(doc: &mut String, pool: &PgPool, table: &[String]) {
    let name = table[0].as_str();
    writeln!(doc, "## `{name}`\n").unwrap();
    if !table[1].is_empty() {
        writeln!(doc, "{}\n", table[1]).unwrap();
    }
    let columns = rows(
        pool,
        "SELECT ARRAY[a.attname::text, format_type(a.atttypid, a.atttypmod), \
           CASE WHEN a.attnotnull THEN 'not null' ELSE 'null' END, \
           CASE WHEN a.attidentity = 'a' THEN 'generated always as identity' \
                ELSE pg_get_expr(d.adbin, d.adrelid) END] \
         FROM pg_attribute a LEFT JOIN pg_attrdef d \
           ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        Some(name),
    )
    .await;
    writeln!(doc, "| column | type | null | default |\n|---|---|---|---|").unwrap();
    for c in &columns {
        writeln!(
            doc,
            "| `{}` | {} | {} | {} |",
            c[0],
            cell(&c[1]),
            c[2],
            if c[3].is_empty() {
                String::new()
            } else {
                format!("`{}`", cell(&c[3]))
            }
        )
        .unwrap();
    }
    for (title, sql) in [
        (
            "Constraints",
            "SELECT ARRAY[conname::text, pg_get_constraintdef(oid)] FROM pg_constraint \
             WHERE conrelid = $1::regclass ORDER BY conname",
        ),
        (
            "Indexes",
            "SELECT ARRAY[indexname::text, indexdef] FROM pg_indexes \
             WHERE schemaname = 'public' AND tablename = $1 ORDER BY indexname",
        ),
        (
            "Triggers",
            "SELECT ARRAY[tgname::text, pg_get_triggerdef(oid)] FROM pg_trigger \
             WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname",
        ),
    ] {
        let items = rows(pool, sql, Some(name)).await;
        if items.is_empty() {
            continue;
        }
        writeln!(doc, "\n{title}:\n").unwrap();
        for item in &items {
            writeln!(doc, "- `{}`: `{}`", item[0], item[1].replace('`', "'")).unwrap();
        }
    }
    writeln!(doc).unwrap();
}

/// The whole document, from the database's catalog.
async fn render(pool: &PgPool) -> String {
    let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
        .fetch_one(pool)
        .await
        .unwrap();
    let major = version.parse::<u32>().unwrap() / 10_000;
    let tables = rows(
        pool,
        "SELECT ARRAY[c.relname::text, obj_description(c.oid, 'pg_class')] FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' \
         ORDER BY 1",
        None,
    )
    .await;
    let foreign = rows(
        pool,
        "SELECT ARRAY[c.conrelid::regclass::text, c.confrelid::regclass::text, \
           (SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_attribute a \
            WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey))] \
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public' ORDER BY 1",
        None,
    )
    .await;

    let mut doc = String::new();
    write_head(&mut doc, major, &foreign);
    for table in &tables {
        write_table(&mut doc, pool, table).await;
    }
    doc
}

/// Table, column and constraint names only: what no PostgreSQL version renders differently.
fn names(doc: &str) -> Vec<&str> {
    doc.lines()
        .filter(|l| l.starts_with("## ") || l.starts_with("| `") || l.starts_with("- `"))
        .map(|l| l.split(['|', ':']).take(2).last().unwrap_or(l).trim())
        .collect()
}

#[tokio::test]
async fn docs_schema_md_is_what_the_migrations_build() {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    tally::db::migrate_up(&pool).await.unwrap();
    let rendered = render(&pool).await;
    pool.close().await;
    if std::env::var_os("TALLY_WRITE_SCHEMA_DOC").is_some() {
        std::fs::write(SCHEMA_DOC, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(SCHEMA_DOC)
        .unwrap_or_else(|_| panic!("{SCHEMA_DOC} is missing: run `make schema-doc`"));
    let same_major = committed.lines().take(4).collect::<String>()
        == rendered.lines().take(4).collect::<String>();
    if same_major {
        assert!(
            committed == rendered,
            "docs/schema.md is stale: run `make schema-doc` and commit it"
        );
    } else {
        // Another PostgreSQL major renders definitions a little differently; the structure
        // must still match.
        assert_eq!(
            names(&committed),
            names(&rendered),
            "docs/schema.md is stale: run `make schema-doc` and commit it"
        );
    }
    for table in ["users", "accounts", "transfers", "entries", "audit_events"] {
        assert!(rendered.contains(&format!("## `{table}`")), "{table}");
    }
    assert!(rendered.contains("accounts_customer_available_within_limit"));
}
