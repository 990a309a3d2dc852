//! The state's tables, created and migrated by cardform itself: numbered
//! migrations, each applied once in its own transaction and recorded in
//! `<schema>.migrations`, under a transaction-level advisory lock so that two
//! runs starting at once on a new schema do not both create it.

use postgres::Client;

use super::db_error;
use crate::state::StateError;

/// Qualified table names of one state (the schema name is checked to be a
/// plain identifier before it is spliced in).
#[derive(Debug, Clone)]
pub struct Names {
    pub schema: String,
    pub meta: String,
    pub resources: String,
    pub intents: String,
    pub forgotten: String,
    pub locks: String,
    pub backups: String,
    pub migrations: String,
    /// The card ledger (`cardform cards`): keyed entries, and its salt.
    pub cards: String,
    pub cards_meta: String,
}

impl Names {
    pub fn new(schema: &str) -> Self {
        debug_assert!(super::url::is_identifier(schema));
        let q = |t: &str| format!("{schema}.{t}");
        Names {
            schema: schema.to_string(),
            meta: q("meta"),
            resources: q("resources"),
            intents: q("intents"),
            forgotten: q("forgotten"),
            locks: q("locks"),
            backups: q("backups"),
            migrations: q("migrations"),
            cards: q("cards"),
            cards_meta: q("cards_meta"),
        }
    }
}

/// The migrations, in order; never edit one that shipped, add another.
fn migrations(s: &Names) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE {meta} (
             id int PRIMARY KEY CHECK (id = 1),
             lineage text NOT NULL,
             serial bigint NOT NULL,
             binding text
         );
         CREATE TABLE {resources} (
             address text PRIMARY KEY,
             merchant text NOT NULL,
             serial bigint NOT NULL,
             record text NOT NULL
         );
         CREATE INDEX ON {resources} (merchant);
         CREATE TABLE {intents} (
             address text PRIMARY KEY,
             merchant text NOT NULL,
             intent text NOT NULL
         );
         CREATE TABLE {forgotten} (
             template_id text PRIMARY KEY,
             address text NOT NULL
         );
         CREATE TABLE {locks} (
             scope text PRIMARY KEY,
             backend_pid int NOT NULL,
             info text NOT NULL
         );
         CREATE TABLE {backups} (
             id int PRIMARY KEY CHECK (id = 1),
             written_at timestamptz NOT NULL DEFAULT now(),
             snapshot text NOT NULL
         );",
            meta = s.meta,
            resources = s.resources,
            intents = s.intents,
            forgotten = s.forgotten,
            locks = s.locks,
            backups = s.backups,
        ),
        // 2: the card ledger (issue 16).
        format!(
            "CREATE TABLE {cards} (
             key text PRIMARY KEY,
             entry text NOT NULL
         );
         CREATE TABLE {cards_meta} (
             id int PRIMARY KEY CHECK (id = 1),
             salt bytea NOT NULL
         );",
            cards = s.cards,
            cards_meta = s.cards_meta,
        ),
        // 3: the integrity account (issue 28, see `account`); counted from
        // the rows as they are when the migration runs.
        format!(
            "ALTER TABLE {meta} ADD COLUMN row_count bigint,
                 ADD COLUMN d1 bigint, ADD COLUMN d2 bigint;",
            meta = s.meta,
        ),
    ]
}

/// The advisory-lock key that serializes migrations of one schema.
fn migration_key(schema: &str) -> i64 {
    super::lock::key(&format!("migrate/{schema}"))
}

/// Bring the schema to the current version, creating it (with a new
/// lineage) if needed. Returns the number of migrations applied.
pub fn migrate(c: &mut Client, s: &Names) -> Result<usize, StateError> {
    let mut tx = c.transaction().map_err(db_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_key(&s.schema)],
    )
    .map_err(db_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {migrations} (
             version int PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
        schema = s.schema,
        migrations = s.migrations
    ))
    .map_err(db_error)?;
    let done: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {}", s.migrations),
            &[],
        )
        .map_err(db_error)?
        .get(0);
    let all = migrations(s);
    if done as usize > all.len() {
        return Err(StateError::Refused(format!(
            "the state in schema `{}` was written by a newer cardform (schema version {done}; this one knows {})\nhint: upgrade cardform",
            s.schema,
            all.len()
        )));
    }
    let mut applied = 0;
    for (i, sql) in all.iter().enumerate().skip(done as usize) {
        tx.batch_execute(sql).map_err(db_error)?;
        let version = i as i32 + 1;
        tx.execute(
            &format!("INSERT INTO {} (version) VALUES ($1)", s.migrations),
            &[&version],
        )
        .map_err(db_error)?;
        if version == 1 {
            let lineage = uuid::Uuid::new_v4().to_string();
            tx.execute(
                &format!(
                    "INSERT INTO {} (id, lineage, serial) VALUES (1, $1, 0)",
                    s.meta
                ),
                &[&lineage],
            )
            .map_err(db_error)?;
        }
        if version == 3 {
            let a = super::account::count(&mut tx, s)?;
            super::account::set(&mut tx, s, &a).map_err(db_error)?;
        }
        applied += 1;
    }
    tx.commit().map_err(db_error)?;
    Ok(applied)
}
