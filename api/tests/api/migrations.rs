//! The two migration folders build the same schema: the same tables, columns (and
//! whether each may be null), indexes and named constraints, read back from a SQLite
//! file and a PostgreSQL database migrated by a replica. Editing one folder and not
//! the other fails here.

use std::collections::{BTreeMap, BTreeSet};

use ecanteen_api::db::Db;

use crate::helpers::*;

/// What the test compares of a schema.
#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    /// Each table's columns, as `name` or `name not null`.
    tables: BTreeMap<String, BTreeSet<String>>,
    indexes: BTreeSet<String>,
    /// Named check and unique constraints.
    constraints: BTreeSet<String>,
    /// Each table's primary key, as `table(columns)`.
    primary_keys: BTreeSet<String>,
    /// Foreign keys, as `table.column -> table.column`.
    foreign_keys: BTreeSet<String>,
}

/// The differences the engines need, each argued where it is made.
const ONLY_ON_POSTGRES: &[&str] = &[
    // pictures.rs: SQLite's serialised writers make the cleanup's check exact; on
    // PostgreSQL a foreign key backs it.
    "products_image_ref_fkey",
];

/// Tables that are not the migrations' own (sqlx's ledger, the session store's).
fn ours(table: &str) -> bool {
    !table.starts_with("_sqlx") && !table.starts_with("sqlite_") && table != "tower_sessions"
}

fn column(name: String, not_null: bool) -> String {
    if not_null {
        format!("{name} not null")
    } else {
        name
    }
}

async fn sqlite_schema(db: &Db) -> Schema {
    let mut schema = Schema::default();
    let tables: Vec<(String, String)> = db
        .fetch_all(&Sql::new(
            "select name, sql from sqlite_master where type = 'table'",
        ))
        .await
        .unwrap();
    for (table, sql) in tables.into_iter().filter(|(t, _)| ours(t)) {
        let columns: Vec<(String, i64, i64)> = db
            .fetch_all(
                &Sql::new("select name, \"notnull\", pk from pragma_table_info($1)")
                    .arg(table.as_str()),
            )
            .await
            .unwrap();
        let mut key: Vec<(i64, String)> = columns
            .iter()
            .filter(|c| c.2 > 0)
            .map(|c| (c.2, c.0.clone()))
            .collect();
        key.sort();
        let key: Vec<String> = key.into_iter().map(|(_, c)| c).collect();
        schema
            .primary_keys
            .insert(format!("{table}({})", key.join(",")));
        let references: Vec<(String, String, Option<String>)> = db
            .fetch_all(
                &Sql::new("select \"from\", \"table\", \"to\" from pragma_foreign_key_list($1)")
                    .arg(table.as_str()),
            )
            .await
            .unwrap();
        for (from, to_table, to) in references {
            schema.foreign_keys.insert(format!(
                "{table}.{from} -> {to_table}.{}",
                to.unwrap_or_else(|| "id".into())
            ));
        }
        schema.tables.insert(
            table,
            columns
                .into_iter()
                .map(|(name, not_null, pk)| column(name, not_null == 1 || pk == 1))
                .collect(),
        );
        let lower = sql.to_lowercase();
        let mut words = lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        while let Some(word) = words.next() {
            if word == "constraint" {
                let name = words.find(|w| !w.is_empty()).unwrap_or_default().to_owned();
                // Primary keys are compared by their columns (PostgreSQL names each).
                if words.find(|w| !w.is_empty()) != Some("primary") {
                    schema.constraints.insert(name);
                }
            }
        }
    }
    let indexes: Vec<(String,)> = db
        .fetch_all(&Sql::new(
            "select name from sqlite_master where type = 'index' and sql is not null",
        ))
        .await
        .unwrap();
    schema.indexes = indexes
        .into_iter()
        .map(|(n,)| n)
        .filter(|n| ours(n))
        .collect();
    schema
}

async fn postgres_schema(db: &Db) -> Schema {
    let mut schema = Schema::default();
    let columns: Vec<(String, String, String)> = db
        .fetch_all(&Sql::new(
            "select c.table_name::text, c.column_name::text, c.is_nullable::text
             from information_schema.columns c join information_schema.tables t
               on t.table_schema = c.table_schema and t.table_name = c.table_name
             where c.table_schema = 'public' and t.table_type = 'BASE TABLE'",
        ))
        .await
        .unwrap();
    for (table, name, nullable) in columns.into_iter().filter(|(t, _, _)| ours(t)) {
        schema
            .tables
            .entry(table)
            .or_default()
            .insert(column(name, nullable == "NO"));
    }
    let indexes: Vec<(String,)> = db
        .fetch_all(&Sql::new(
            "select i.indexname::text from pg_indexes i
             where i.schemaname = 'public'
               and not exists (select 1 from pg_constraint c where c.conname = i.indexname)",
        ))
        .await
        .unwrap();
    schema.indexes = indexes
        .into_iter()
        .map(|(n,)| n)
        .filter(|n| ours(n))
        .collect();
    let constraints: Vec<(String,)> = db
        .fetch_all(&Sql::new(
            "select c.conname::text from pg_constraint c join pg_namespace n on n.oid = c.connamespace
             join pg_class t on t.oid = c.conrelid
             where n.nspname = 'public' and c.contype in ('c', 'u', 'x')
               and t.relname not like '\\_sqlx%'",
        ))
        .await
        .unwrap();
    schema.constraints = constraints.into_iter().map(|(n,)| n).collect();
    let keys: Vec<(String, String)> = db
        .fetch_all(&Sql::new(
            "select t.relname::text, string_agg(a.attname::text, ',' order by array_position(c.conkey, a.attnum))
             from pg_constraint c join pg_class t on t.oid = c.conrelid
             join pg_namespace n on n.oid = c.connamespace
             join pg_attribute a on a.attrelid = c.conrelid and a.attnum = any(c.conkey)
             where n.nspname = 'public' and c.contype = 'p'
             group by t.relname",
        ))
        .await
        .unwrap();
    schema.primary_keys = keys
        .into_iter()
        .filter(|(t, _)| ours(t))
        .map(|(t, k)| format!("{t}({k})"))
        .collect();
    let references: Vec<(String, String, String, String, String)> = db
        .fetch_all(&Sql::new(
            "select c.conname::text, t.relname::text, a.attname::text, r.relname::text, ra.attname::text
             from pg_constraint c join pg_namespace n on n.oid = c.connamespace
             join pg_class t on t.oid = c.conrelid join pg_class r on r.oid = c.confrelid
             join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
             join pg_attribute ra on ra.attrelid = c.confrelid and ra.attnum = c.confkey[1]
             where n.nspname = 'public' and c.contype = 'f'",
        ))
        .await
        .unwrap();
    schema.foreign_keys = references
        .into_iter()
        .filter(|r| !ONLY_ON_POSTGRES.contains(&r.0.as_str()))
        .map(|(_, t, a, r, ra)| format!("{t}.{a} -> {r}.{ra}"))
        .collect();
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_migration_folders_build_the_same_schema() {
    let lite = TestApp::new(Engine::Sqlite).await;
    let pg = TestApp::new(Engine::Postgres).await;
    let a = sqlite_schema(lite.state.service.db()).await;
    let b = postgres_schema(pg.state.service.db()).await;
    assert!(!a.tables.is_empty() && !a.constraints.is_empty(), "{a:?}");
    assert_eq!(a.tables, b.tables, "tables and columns");
    assert_eq!(a.indexes, b.indexes, "indexes");
    assert_eq!(a.constraints, b.constraints, "named constraints");
    assert_eq!(a.primary_keys, b.primary_keys, "primary keys");
    assert_eq!(a.foreign_keys, b.foreign_keys, "foreign keys");
}
