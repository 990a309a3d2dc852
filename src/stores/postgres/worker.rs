//! The store's connection, on a thread of its own: the synchronous client
//! runs its own small runtime and may not be driven from inside the async
//! runtime apply runs on, and the session's advisory lock must live exactly
//! as long as the store. Jobs run in the order sent; [`Worker::call`] waits
//! for each result.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use postgres::Client;

use super::schema::Names;
use crate::state::StateError;

type Job = Box<dyn FnOnce(&mut Client) + Send>;

pub(crate) struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    names: Arc<Names>,
}

/// How a worker whose connection was lost connects again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reconnect {
    /// Never: the session holds what a new one would not (a state store's
    /// exclusive lock); every later call fails, and the run stops.
    Never,
    /// Before the next call after the loss, with backoff (at most every
    /// [`MAX_PAUSE`]): for a long-running service on the card ledger, whose
    /// claims are rows and whose shared lock `setup` takes again.
    WithBackoff,
}

/// The longest pause between attempts to connect again.
const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl Worker {
    /// Start the thread, connect on it, and run `setup` first (migrations,
    /// the lock); an error of either ends the worker. A lost connection is
    /// made again as `reconnect` says.
    pub fn start(
        connect: impl Fn() -> Result<Client, StateError> + Send + 'static,
        names: Arc<Names>,
        reconnect: Reconnect,
        setup: impl Fn(&mut Client) -> Result<(), StateError> + Send + 'static,
    ) -> Result<Self, StateError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("cardform-pg".into())
            .spawn(move || {
                let mut client = match connect() {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ok = setup(&mut client);
                let failed = ok.is_err();
                let _ = ready_tx.send(ok);
                if failed {
                    return;
                }
                let mut pause = std::time::Duration::from_millis(100);
                let mut next = std::time::Instant::now();
                for job in rx {
                    if reconnect == Reconnect::WithBackoff
                        && client.is_closed()
                        && std::time::Instant::now() >= next
                    {
                        match connect().and_then(|mut c| setup(&mut c).map(|_| c)) {
                            Ok(c) => {
                                client = c;
                                pause = std::time::Duration::from_millis(100);
                            }
                            Err(_) => {
                                next = std::time::Instant::now() + pause;
                                pause = (pause * 2).min(MAX_PAUSE);
                            }
                        }
                    }
                    // (On a closed connection the job fails at once with
                    // the lost-connection error.)
                    job(&mut client);
                }
                // The sender is gone: the store was dropped. The session's
                // advisory locks are released here, before the store's drop
                // returns: closing the connection alone frees them only when
                // the server's backend has ended, a moment later, and a run
                // that opens the state next would find it still locked.
                let _ = client.batch_execute("SELECT pg_advisory_unlock_all()");
                let _ = client.close();
            })
            .map_err(|e| StateError::Io(format!("cannot start the PostgreSQL thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| StateError::Io("the PostgreSQL thread stopped".into()))??;
        Ok(Worker {
            jobs: Some(tx),
            thread: Some(thread),
            names,
        })
    }

    pub fn names(&self) -> Arc<Names> {
        self.names.clone()
    }

    /// Run `f` on the connection and wait for its result.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, StateError> + Send + 'static,
    ) -> Result<R, StateError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .as_ref()
            .expect("bug: jobs are sent only while the worker lives")
            .send(job)
            .map_err(|_| StateError::Io("the PostgreSQL thread stopped".into()))?;
        rx.recv()
            .map_err(|_| StateError::Io("the PostgreSQL thread stopped".into()))?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Close the queue; the thread finishes what was sent, then closes the
        // connection (and with it the locks).
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `f` on a connection of its own, on a thread of its own (the
/// synchronous client may not run inside the async runtime), then close it.
pub(crate) fn once<R: Send + 'static>(
    connect: impl FnOnce() -> Result<Client, StateError> + Send + 'static,
    f: impl FnOnce(&mut Client) -> Result<R, StateError> + Send + 'static,
) -> Result<R, StateError> {
    std::thread::Builder::new()
        .name("cardform-pg".into())
        .spawn(move || {
            let mut c = connect()?;
            let r = f(&mut c);
            let _ = c.close();
            r
        })
        .map_err(|e| StateError::Io(format!("cannot start the PostgreSQL thread: {e}")))?
        .join()
        .map_err(|_| StateError::Io("the PostgreSQL thread panicked".into()))?
}
