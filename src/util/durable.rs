//! Group commit: many writers, few fsyncs. Each writer, after its write, calls
//! [`GroupFlush::flush`]; one flush covers every write finished before it began,
//! so concurrent writers share one fsync instead of queueing for one each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct GroupFlush {
    /// Writes completed so far.
    written: AtomicU64,
    /// Writes known durable; the mutex also admits one flusher at a time.
    durable: Mutex<u64>,
}

impl GroupFlush {
    /// Call after a write has completed; returns once that write is durable.
    pub fn flush<E>(&self, do_flush: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        let mine = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut durable = self.durable.lock().unwrap_or_else(|p| p.into_inner());
        if *durable >= mine {
            return Ok(());
        }
        let upto = self.written.load(Ordering::SeqCst);
        do_flush()?;
        *durable = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_write_is_covered_and_flushes_are_shared() {
        let g = Arc::new(GroupFlush::default());
        let flushes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, flushes) = (g.clone(), flushes.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        g.flush(|| {
                            flushes.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*g.durable.lock().unwrap(), 400);
        assert!(flushes.load(Ordering::SeqCst) <= 400);
    }
}
