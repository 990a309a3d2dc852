//! The card ledger in PostgreSQL: `<schema>.cards` (keys `c:<out_serial_no>`
//! with an entry as JSON, `r:<request_id>` with its out_serial_no) and the
//! salt in `<schema>.cards_meta`; the same contract as the sled ledger, so
//! that pipelines sharing a state share its cards too. One `cards` command
//! at a time: a session advisory lock of its own (released with the
//! session, even by kill -9), independent of the state's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::Client;

use super::db_error;
use super::schema::Names;
use super::worker::{Reconnect, Worker};
use crate::state::backend::LockError;
use crate::state::cards::{CardLedger, Claim, Entry, Once, Tally};
use crate::state::{Durability, StateError};

pub struct PgLedger {
    worker: Worker,
    salt: [u8; 32],
    describe: String,
}

fn ledger_key(s: &Names) -> i64 {
    super::lock::key(&format!("cards/{}", s.schema))
}

impl PgLedger {
    pub(crate) fn open(
        connect: impl Fn() -> Result<Client, StateError> + Send + 'static,
        names: Arc<Names>,
        describe: String,
        timeout: Duration,
    ) -> Result<Self, StateError> {
        let s = names.clone();
        let shown = describe.clone();
        // A service on the ledger outlives a database restart: the
        // connection is made again (claims are rows; the shared lock is
        // taken again).
        let worker = Worker::start(connect, names.clone(), Reconnect::WithBackoff, move |c| {
            let started = Instant::now();
            let mut pause = Duration::from_millis(20);
            loop {
                let got: bool = c
                    // Shared: any number of `cards` commands and `cards serve`
                    // replicas work on one ledger at once, each activation,
                    // row or trade claiming its own key; `state migrate`'s
                    // replace takes it exclusively, so it waits for them all.
                    .query_one("SELECT pg_try_advisory_lock_shared($1)", &[&ledger_key(&s)])
                    .map_err(db_error)?
                    .get(0);
                if got {
                    return Ok(());
                }
                let waited = started.elapsed();
                if waited >= timeout {
                    return Err(LockError::Busy {
                        dir: format!("{shown} (card ledger)"),
                        waited,
                    }
                    .into());
                }
                std::thread::sleep(pause.min(timeout - waited));
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        })?;
        let s = names.clone();
        let salt = worker.call(move |c| {
            let fresh: [u8; 32] = rand::random();
            c.execute(
                &format!(
                    "INSERT INTO {} (id, salt) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                    s.cards_meta
                ),
                &[&fresh.as_slice()],
            )
            .map_err(db_error)?;
            let salt: Vec<u8> = c
                .query_one(&format!("SELECT salt FROM {}", s.cards_meta), &[])
                .map_err(db_error)?
                .get(0);
            salt.try_into().map_err(|_| StateError::Damaged {
                place: format!("PostgreSQL schema `{}`", s.schema),
                backup: "none: the card ledger has no backup".into(),
                reason: "the card ledger's salt is not 32 bytes".into(),
            })
        })?;
        Ok(PgLedger {
            worker,
            salt,
            describe,
        })
    }

    fn corrupt(&self, key: &str, e: impl std::fmt::Display) -> StateError {
        StateError::Corrupt {
            key: format!("{} card ledger: {key}", self.describe),
            reason: e.to_string(),
        }
    }

    fn text(&self, key: String) -> Result<Option<String>, StateError> {
        let s = self.worker.names();
        self.worker.call(move |c| {
            Ok(c.query_opt(
                &format!("SELECT entry FROM {} WHERE key = $1", s.cards),
                &[&key],
            )
            .map_err(db_error)?
            .map(|r| r.get::<_, String>(0)))
        })
    }

    /// Write keyed rows in one transaction.
    fn upsert(
        &self,
        rows: Vec<(String, String)>,
        durability: Durability,
    ) -> Result<(), StateError> {
        let s = self.worker.names();
        self.worker.call(move |c| {
            let mut tx = c.transaction().map_err(db_error)?;
            if durability == Durability::Deferred {
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .map_err(db_error)?;
            }
            for (k, v) in &rows {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (key, entry) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET entry = EXCLUDED.entry",
                        s.cards
                    ),
                    &[k, v],
                )
                .map_err(db_error)?;
            }
            tx.commit().map_err(db_error)
        })
    }

    fn forget_key(&self, key: String) -> Result<(), StateError> {
        let s = self.worker.names();
        self.worker.call(move |c| {
            c.execute(&format!("DELETE FROM {} WHERE key = $1", s.cards), &[&key])
                .map(|_| ())
                .map_err(db_error)
        })
    }
}

impl CardLedger for PgLedger {
    fn salt(&self) -> [u8; 32] {
        self.salt
    }

    fn get(&self, out_serial_no: &str) -> Result<Option<Entry>, StateError> {
        let key = format!("c:{out_serial_no}");
        match self.text(key.clone())? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| self.corrupt(&key, e)),
        }
    }

    fn put(&self, entry: &Entry, durability: Durability) -> Result<(), StateError> {
        let mut rows = vec![(
            format!("c:{}", entry.out_serial_no),
            serde_json::to_string(entry).map_err(|e| StateError::Io(e.to_string()))?,
        )];
        if let Some(r) = &entry.request_id {
            rows.push((format!("r:{r}"), entry.out_serial_no.clone()));
        }
        if let Some(b) = &entry.biz_card_no {
            rows.push((format!("b:{b}"), entry.out_serial_no.clone()));
        }
        self.upsert(rows, durability)
    }

    fn by_biz(&self, biz_card_no: &str) -> Result<Option<String>, StateError> {
        self.text(format!("b:{biz_card_no}"))
    }

    fn once(&self, key: &str) -> Result<Option<Once>, StateError> {
        let key = format!("o:{key}");
        match self.text(key.clone())? {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| self.corrupt(&key, e)),
        }
    }

    fn put_once(&self, once: &Once, durability: Durability) -> Result<(), StateError> {
        let row = (
            format!("o:{}", once.key),
            serde_json::to_string(once).map_err(|e| StateError::Io(e.to_string()))?,
        );
        self.upsert(vec![row], durability)
    }

    fn forget_once(&self, key: &str) -> Result<(), StateError> {
        self.forget_key(format!("o:{key}"))
    }

    fn forget(&self, out_serial_no: &str) -> Result<(), StateError> {
        self.forget_key(format!("c:{out_serial_no}"))
    }

    fn by_request(&self, request_id: &str) -> Result<Option<String>, StateError> {
        self.text(format!("r:{request_id}"))
    }

    fn flush(&self) -> Result<(), StateError> {
        let s = self.worker.names();
        // A synchronous commit puts every earlier asynchronous one on disk.
        self.worker.call(move |c| {
            c.execute(&format!("UPDATE {} SET salt = salt", s.cards_meta), &[])
                .map(|_| ())
                .map_err(db_error)
        })
    }

    fn claim(&self, key: &str, holder: &str, stale: Duration) -> Result<Claim, StateError> {
        let s = self.worker.names();
        let (key, holder) = (format!("q:{key}"), holder.to_string());
        let stale_ms = stale.as_millis() as i64;
        self.worker.call(move |c| {
            // On the server's clock: replicas' clocks need not agree.
            let won = c
                .query_opt(
                    &format!(
                        "INSERT INTO {t} (key, entry)
                         VALUES ($1, json_build_object('holder', $2::text, 'at',
                                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint)::text)
                         ON CONFLICT (key) DO UPDATE SET entry = EXCLUDED.entry
                         WHERE {t}.entry::json->>'holder' = $2
                            OR ({t}.entry::json->>'at')::bigint
                               < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $3
                         RETURNING key",
                        t = s.cards
                    ),
                    &[&key, &holder, &stale_ms],
                )
                .map_err(db_error)?;
            if won.is_some() {
                return Ok(Claim::Ours);
            }
            let who: Option<String> = c
                .query_opt(
                    &format!(
                        "SELECT entry::json->>'holder' FROM {} WHERE key = $1",
                        s.cards
                    ),
                    &[&key],
                )
                .map_err(db_error)?
                .and_then(|r| r.get(0));
            Ok(Claim::Held {
                holder: who.unwrap_or_default(),
            })
        })
    }

    fn clear_claim(&self, key: &str) -> Result<(), StateError> {
        self.forget_key(format!("q:{key}"))
    }

    fn release(&self, key: &str, holder: &str) -> Result<(), StateError> {
        let s = self.worker.names();
        let (key, holder) = (format!("q:{key}"), holder.to_string());
        self.worker.call(move |c| {
            c.execute(
                &format!(
                    "DELETE FROM {} WHERE key = $1 AND entry::json->>'holder' = $2",
                    s.cards
                ),
                &[&key, &holder],
            )
            .map(|_| ())
            .map_err(db_error)
        })
    }

    fn export(&self) -> Result<Vec<(String, String)>, StateError> {
        let s = self.worker.names();
        self.worker.call(move |c| {
            Ok(c.query(
                &format!("SELECT key, entry FROM {} ORDER BY key", s.cards),
                &[],
            )
            .map_err(db_error)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
    }

    fn replace(&self, salt: [u8; 32], rows: &[(String, String)]) -> Result<(), StateError> {
        let s = self.worker.names();
        let rows = rows.to_vec();
        let lock = ledger_key(&s);
        let shown = self.describe.clone();
        // One transaction: committed whole, or not at all; only while no
        // other process has the ledger open.
        self.worker.call(move |c| {
            let mut tx = c.transaction().map_err(db_error)?;
            let alone: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&lock])
                .map_err(db_error)?
                .get(0);
            if !alone {
                return Err(StateError::Refused(format!(
                    "the card ledger of {shown} is in use by a `cardform cards` command or `cards serve`\nhint: stop them first"
                )));
            }
            tx.execute(&format!("DELETE FROM {}", s.cards), &[])
                .map_err(db_error)?;
            tx.execute(
                &format!(
                    "INSERT INTO {} (id, salt) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET salt = EXCLUDED.salt",
                    s.cards_meta
                ),
                &[&salt.as_slice()],
            )
            .map_err(db_error)?;
            let insert = tx
                .prepare(&format!("INSERT INTO {} (key, entry) VALUES ($1, $2)", s.cards))
                .map_err(db_error)?;
            for (k, v) in &rows {
                tx.execute(&insert, &[k, v]).map_err(db_error)?;
            }
            tx.commit().map_err(db_error)
        })
    }

    fn tally(&self) -> Result<Tally, StateError> {
        let s = self.worker.names();
        let texts: Vec<(String, String)> = self.worker.call(move |c| {
            Ok(c.query(
                &format!("SELECT key, entry FROM {} WHERE key LIKE 'c:%'", s.cards),
                &[],
            )
            .map_err(db_error)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })?;
        let mut t = Tally::default();
        for (k, v) in texts {
            let e: Entry = serde_json::from_str(&v).map_err(|e| self.corrupt(&k, e))?;
            if e.deleted_at.is_some() {
                t.deleted += 1;
            } else if e.biz_card_no.is_some() {
                t.opened += 1;
            } else {
                t.in_doubt += 1;
            }
        }
        Ok(t)
    }
}
