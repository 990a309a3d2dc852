//! The PostgreSQL backend as a whole: connecting (migrating the schema on
//! the way), locking, reading without a lock, the backup row, recovery.

use std::sync::Arc;
use std::time::Duration;

use postgres::{Client, NoTls};

use super::lock::{self, Scope};
use super::schema::{self, Names};
use super::worker::{self, Reconnect, Worker};
use super::{PgStore, PgUrl, db_error, read_snapshot};
use crate::state::backend::{Backend, LockInfo, Recovered};
use crate::state::{Snapshot, StateError, StateStore};

pub struct PgBackend {
    url: PgUrl,
    names: Arc<Names>,
}

/// How long to wait for the server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl PgBackend {
    pub fn new(url: &PgUrl) -> Self {
        PgBackend {
            url: url.clone(),
            names: Arc::new(Names::new(url.schema())),
        }
    }

    /// A connector for a worker thread: connects, migrates the schema.
    fn connector(&self) -> impl Fn() -> Result<Client, StateError> + Send + 'static {
        let url = self.url.clone();
        let names = self.names.clone();
        move || {
            let mut config = url.config().map_err(|reason| StateError::Open {
                dir: url.to_string(),
                reason,
            })?;
            config.connect_timeout(CONNECT_TIMEOUT);
            // Which state a session serves, for whoever reads
            // pg_stat_activity (a DBA, the suite cutting one state's sessions).
            config.application_name(&format!("cardform:{}", names.schema));
            let mut client = config.connect(NoTls).map_err(|e| StateError::Open {
                dir: url.to_string(),
                reason: connect_reason(&e),
            })?;
            schema::migrate(&mut client, &names)?;
            Ok(client)
        }
    }

    /// Open a store whose lock covers `scope`.
    pub fn open_scope(
        &self,
        operation: &str,
        timeout: Duration,
        scope: Scope,
    ) -> Result<PgStore, StateError> {
        let names = self.names.clone();
        let info = LockInfo::current(operation);
        let describe = self.describe();
        let worker = Worker::start(
            self.connector(),
            self.names.clone(),
            Reconnect::Never,
            move |c| lock::acquire(c, &names, &scope, &info, timeout, &describe),
        )?;
        Ok(PgStore::new(worker))
    }

    /// Open the card ledger in this state's schema, holding its own lock
    /// (one `cardform cards` command at a time, beside any state writer).
    pub fn open_ledger(&self, timeout: Duration) -> Result<super::cards::PgLedger, StateError> {
        super::cards::PgLedger::open(
            self.connector(),
            self.names.clone(),
            self.describe(),
            timeout,
        )
    }

    fn once<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &Names) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let names = self.names.clone();
        worker::once(self.connector(), move |c| f(c, &names))
    }
}

/// Why a connection failed, without the password (the driver's messages
/// never include it; the URL is printed redacted by the caller).
fn connect_reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

impl Backend for PgBackend {
    fn describe(&self) -> String {
        format!("`{}`", self.url)
    }

    fn open(&self, operation: &str, timeout: Duration) -> Result<Box<dyn StateStore>, StateError> {
        Ok(Box::new(self.open_scope(
            operation,
            timeout,
            Scope::Whole,
        )?))
    }

    fn open_for(
        &self,
        operation: &str,
        timeout: Duration,
        merchants: &std::collections::BTreeSet<String>,
    ) -> Result<Box<dyn StateStore>, StateError> {
        Ok(Box::new(self.open_scope(
            operation,
            timeout,
            Scope::Merchants(merchants.clone()),
        )?))
    }

    fn read(&self, _operation: &str, _timeout: Duration) -> Result<Snapshot, StateError> {
        // No lock: the last committed state, whatever runs.
        self.once(read_snapshot)
    }

    fn exists(&self) -> bool {
        // Whether the schema is there is known only by connecting; a read
        // that finds none says so.
        true
    }

    fn open_cards(
        &self,
        _operation: &str,
        timeout: Duration,
    ) -> Result<Box<dyn crate::state::cards::CardLedger>, StateError> {
        Ok(Box::new(self.open_ledger(timeout)?))
    }

    fn lock_holder(&self) -> Option<LockInfo> {
        self.once(lock::live_rows)
            .ok()?
            .into_iter()
            .next()
            .map(|(_, info)| info)
    }

    fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        if let Some(holder) = self.lock_holder() {
            return Err(StateError::Refused(format!(
                "`cardform {}` (pid {} on {}) is still connected and holds the lock; a PostgreSQL lock is released when its run ends or its connection drops, so there is nothing to break\nhint: wait for it, or stop that run",
                holder.operation, holder.pid, holder.host
            )));
        }
        Ok(self.once(lock::clear_stale)?.into_iter().next())
    }

    fn write_backup(&self, snap: &Snapshot) -> Result<(), StateError> {
        let text = serde_json::to_string(snap).map_err(|e| StateError::Io(e.to_string()))?;
        self.once(move |c, s| {
            c.execute(
                &format!(
                    "INSERT INTO {} (id, snapshot) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET snapshot = $1, written_at = now()",
                    s.backups
                ),
                &[&text],
            )
            .map_err(db_error)
            .map(|_| ())
        })
    }

    fn recover(&self, force: bool) -> Result<Recovered, StateError> {
        let store = self.open_scope("state recover", Duration::ZERO, Scope::Whole)?;
        let described = self.describe();
        // The state as it is, read leniently (a damaged one too).
        let (salvaged, damage) = self.once(|c, s| {
            let damage = match super::read_snapshot(c, s) {
                Ok(_) => None,
                Err(e @ StateError::Damaged { .. }) | Err(e @ StateError::Corrupt { .. }) => {
                    Some(e.to_string())
                }
                Err(e) => return Err(e),
            };
            Ok((super::salvage(c, s)?, damage))
        })?;
        if damage.is_none() && !force {
            return Err(StateError::Refused(format!(
                "the state in {described} is not damaged; recovering would replace it with the backup written after the last successful apply\nhint: pass --force to do so anyway"
            )));
        }
        let backup: Option<String> = self.once(|c, s| {
            Ok(
                c.query_opt(&format!("SELECT snapshot FROM {}", s.backups), &[])
                    .map_err(db_error)?
                    .map(|r| r.get(0)),
            )
        })?;
        let Some(text) = backup else {
            return Err(StateError::Refused(format!(
                "there is no backup in {described} (one is written after every successful apply)\nhint: if the templates exist at the gateway, bring them back into the state with import blocks"
            )));
        };
        let backup: Snapshot = serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
            key: "backups".into(),
            reason: e.to_string(),
        })?;
        // The damaged rows are kept beside the state, as sled keeps its
        // damaged store.
        let stamp = format!(
            "{}_{:04x}",
            chrono::Utc::now().format("%Y%m%dt%H%M%Sz"),
            rand::random::<u16>()
        );
        let kept = self.once(move |c, s| {
            let tables = [
                (&s.resources, "resources"),
                (&s.intents, "intents"),
                (&s.forgotten, "forgotten"),
            ];
            let mut kept = Vec::new();
            for (table, name) in tables {
                let copy = format!("{}.{name}_damaged_{stamp}", s.schema);
                c.batch_execute(&format!("CREATE TABLE {copy} AS SELECT * FROM {table}"))
                    .map_err(db_error)?;
                kept.push(copy);
            }
            Ok(kept)
        })?;
        let mut restored = backup.clone();
        restored.meta.serial = backup.meta.serial.max(salvaged.meta.serial) + 1;
        store.replace_all(&restored)?;
        let not_restored = crate::state::backend::not_restored(&backup, &salvaged);
        Ok(Recovered {
            backup: format!("{described} (table backups)"),
            moved_to: format!("tables {}", kept.join(", ")),
            restored: restored.resources.len(),
            serial: restored.meta.serial,
            not_restored,
        })
    }
}
