//! The hand-written diesel schemas (`domain/src/schema.rs`, `read-models/src/schema.rs`)
//! against the database the migrations build: every table they declare exists with the
//! same columns, types and nullability, so a migration cannot silently disagree with
//! the code that reads and writes it.

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use till_domain::db::testing::TestDb;

const SCHEMAS: [(&str, &str); 2] = [
    (
        "domain/src/schema.rs",
        include_str!("../../domain/src/schema.rs"),
    ),
    (
        "read-models/src/schema.rs",
        include_str!("../src/schema.rs"),
    ),
];

/// One column as a `table!` block declares it: name, PostgreSQL type name
/// (`udt_name`), nullable.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Column {
    name: String,
    udt: String,
    nullable: bool,
}

/// The tables of a schema file: name and columns, in file order.
fn declared(text: &str) -> Vec<(String, Vec<Column>)> {
    let mut tables = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("diesel::table! {") {
        rest = &rest[at + "diesel::table! {".len()..];
        // Past the doc comments (`/// ...`) in front of the table's name.
        let head = rest
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("//"))
            .unwrap_or_default();
        let name: String = head
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find(") {") else { break };
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let body = &rest[open + 3..open + close];
        let columns = body
            .lines()
            .filter_map(|line| {
                let (col, ty) = line.trim().trim_end_matches(',').split_once("->")?;
                let ty = ty.trim();
                let (nullable, ty) = match ty.strip_prefix("Nullable<") {
                    Some(inner) => (true, inner.trim_end_matches('>')),
                    None => (false, ty),
                };
                Some(Column {
                    name: col.trim().trim_start_matches("r#").to_owned(),
                    udt: udt_of(ty),
                    nullable,
                })
            })
            .collect();
        tables.push((name, columns));
        rest = &rest[open + close..];
    }
    tables
}

/// PostgreSQL's `udt_name` for a diesel SQL type of these schemas.
fn udt_of(diesel: &str) -> String {
    match diesel {
        "Uuid" => "uuid",
        "Text" => "text",
        "Int2" => "int2",
        "Int4" | "Integer" => "int4",
        "Int8" | "BigInt" => "int8",
        "Bool" => "bool",
        "Timestamptz" => "timestamptz",
        "Date" => "date",
        "Jsonb" => "jsonb",
        "Bytea" => "bytea",
        "Bpchar" => "bpchar",
        "Array<Uuid>" => "_uuid",
        other => panic!("schema_drift: add a mapping for diesel type {other}"),
    }
    .to_owned()
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    udt: String,
    #[diesel(sql_type = Text)]
    nullable: String,
}

/// What `text` (a schema file) declares that the database disagrees with, and how
/// many tables it declares.
async fn drift(
    conn: &mut diesel_async::AsyncPgConnection,
    file: &str,
    text: &str,
) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let tables = declared(text);
    let count = tables.len();
    for (table, mut columns) in tables {
        let mut actual: Vec<Column> = diesel::sql_query(
            "SELECT column_name::text AS name, udt_name::text AS udt, is_nullable::text AS nullable \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        )
        .bind::<Text, _>(&table)
        .load::<Row>(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|r| Column {
            name: r.name,
            udt: r.udt,
            nullable: r.nullable == "YES",
        })
        .collect();
        if actual.is_empty() {
            problems.push(format!("{file}: table {table} does not exist"));
            continue;
        }
        columns.sort();
        actual.sort();
        let null = |n: bool| if n { "NULL" } else { "NOT NULL" };
        for c in &columns {
            match actual.iter().find(|a| a.name == c.name) {
                None => problems.push(format!("{file}: {table}.{} is not in the database", c.name)),
                Some(a) if a != c => problems.push(format!(
                    "{file}: {table}.{} is declared {} {}, the database has {} {}",
                    c.name,
                    c.udt,
                    null(c.nullable),
                    a.udt,
                    null(a.nullable),
                )),
                Some(_) => {}
            }
        }
        for a in &actual {
            if !columns.iter().any(|c| c.name == a.name) {
                problems.push(format!(
                    "{file}: {table}.{} ({}) is in the database but not declared",
                    a.name, a.udt
                ));
            }
        }
    }
    (problems, count)
}

#[tokio::test]
async fn the_diesel_schemas_match_the_migrated_database() {
    let db = TestDb::new().await;
    let mut conn = db.pool.get().await.unwrap();
    let mut problems = Vec::new();
    let mut seen = 0;
    for (file, text) in SCHEMAS {
        let (found, count) = drift(&mut conn, file, text).await;
        assert!(count > 0, "{file}: no table! blocks found");
        problems.extend(found);
        seen += count;
    }
    assert!(seen >= 20, "only {seen} tables parsed");
    assert!(
        problems.is_empty(),
        "schema drift:\n{}",
        problems.join("\n")
    );

    // It bites: a type changed, a column left out, a nullability flipped.
    let altered = SCHEMAS[0]
        .1
        .replacen("price_minor -> Int8", "price_minor -> Int4", 1)
        .replacen("        description -> Text,\n", "", 1)
        .replacen("parent_id -> Nullable<Uuid>", "parent_id -> Uuid", 1);
    let (found, _) = drift(&mut conn, "altered", &altered).await;
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn the_parser_reads_a_table_block() {
    let tables = declared(
        "diesel::table! {\n    t (id) {\n        id -> Uuid,\n        note -> Nullable<Text>,\n        n -> Int8,\n    }\n}\n",
    );
    assert_eq!(tables.len(), 1);
    assert_eq!(tables[0].0, "t");
    assert_eq!(
        tables[0].1,
        vec![
            Column {
                name: "id".into(),
                udt: "uuid".into(),
                nullable: false
            },
            Column {
                name: "note".into(),
                udt: "text".into(),
                nullable: true
            },
            Column {
                name: "n".into(),
                udt: "int8".into(),
                nullable: false
            },
        ]
    );
}
