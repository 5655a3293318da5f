//! A bound on the pack data a restore holds in memory.
//!
//! rustic_core 0.13 restores file contents on a pool of 20 reader threads (a private constant),
//! each reading a run of blobs of up to 40 MiB from one pack and keeping it until every blob of
//! the run is decrypted and queued for writing: a tree whose packs are read by ten threads at
//! once peaked at 470–550 MiB. This backend wraps the repository's and lets at most `permits`
//! pack reads made on the restore's threads be alive at once: the permit is released when the
//! buffer it read is dropped. A thread waiting for a permit does the pool's other pending work
//! meanwhile (the writes queued by the threads that hold one), so waiting threads keep the
//! queued data flowing to disk instead of piling up.
//!
//! Reads outside a rayon pool (trees, index, snapshots: made by the operation's own thread and
//! dropped at once) are not counted, so nothing outside the reader pool can wait on a permit.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rustic_core::{BytesList, FileType, Id, ReadBackend, RusticResult, WriteBackend};

/// How many pack reads a restore may hold at once (each up to 40 MiB, usually a whole pack).
/// Measured on the 705 MiB benchmark tree (BENCHMARKS.md): the peak was 546 MiB with 4, 462–552
/// with 2 and 254–375 with 1, at restic's restore speed: the holder decodes its whole run
/// while the writes queue (a pack of SQL text is ~5x larger decoded), so each read held costs
/// its run decoded as well.
pub(super) const RESTORE_PACK_READS: usize = 1;

#[derive(Debug)]
pub(super) struct PackReadLimit {
    inner: Arc<dyn WriteBackend>,
    permits: Arc<Permits>,
}

#[derive(Debug)]
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

thread_local! {
    /// This thread is already waiting for a permit further up its stack.
    static WAITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Permits {
    fn take(&self) {
        // Work done while waiting can be another read job that waits in turn: it waits
        // without doing more work, so a thread's stack holds at most two waits.
        let outermost = !WAITING.with(|w| w.replace(true));
        self.wait_for_one(outermost);
        if outermost {
            WAITING.with(|w| w.set(false));
        }
    }

    fn wait_for_one(&self, may_work: bool) {
        loop {
            {
                let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
                if *free > 0 {
                    *free -= 1;
                    return;
                }
            }
            // Do a queued write (or another read job, which takes its own permit) meanwhile;
            // rayon runs work queued by other threads before new read jobs.
            if may_work && let Some(rayon::Yield::Executed) = rayon::yield_now() {
                continue;
            }
            let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            if *free == 0 {
                // A timeout: work queued meanwhile is picked up by the next round.
                let _ = self
                    .freed
                    .wait_timeout(free, Duration::from_millis(2))
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    fn give_back(&self) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.freed.notify_one();
    }
}

/// A buffer read under a permit; the permit goes back when the last view of it is dropped.
struct Held {
    bytes: Bytes,
    permits: Arc<Permits>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.bytes = Bytes::new();
        self.permits.give_back();
    }
}

impl PackReadLimit {
    pub(super) fn new(inner: Arc<dyn WriteBackend>, permits: usize) -> Self {
        PackReadLimit {
            inner,
            permits: Arc::new(Permits {
                free: Mutex::new(permits.max(1)),
                freed: Condvar::new(),
            }),
        }
    }
}

impl ReadBackend for PackReadLimit {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        if tpe != FileType::Pack || rayon::current_thread_index().is_none() {
            return self.inner.read_partial(tpe, id, cacheable, offset, length);
        }
        self.permits.take();
        match self.inner.read_partial(tpe, id, cacheable, offset, length) {
            Ok(bytes) => Ok(Bytes::from_owner(Held {
                bytes,
                permits: self.permits.clone(),
            })),
            Err(e) => {
                self.permits.give_back();
                Err(e)
            }
        }
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for PackReadLimit {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        self.inner.write_bytes(tpe, id, cacheable, content)
    }
    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `n` buffers alive at once, every permit back at the end (no deadlock with one
    /// permit either), with work queued by the holders to run meanwhile.
    #[test]
    fn at_most_n_reads_alive_and_every_permit_comes_back() {
        for n in [1, 2] {
            reads_alive_at_most(n);
        }
    }

    fn reads_alive_at_most(n: usize) {
        let permits = Arc::new(Permits {
            free: Mutex::new(n),
            freed: Condvar::new(),
        });
        let alive = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(8)
            .build()
            .unwrap();
        pool.in_place_scope(|s| {
            for _ in 0..32 {
                let (permits, alive, peak) = (permits.clone(), alive.clone(), peak.clone());
                s.spawn(move |s1| {
                    permits.take();
                    let held = Bytes::from_owner(Held {
                        bytes: Bytes::from(vec![1u8; 1024]),
                        permits: permits.clone(),
                    });
                    let now = alive.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    // A queued write that a waiting thread may run.
                    s1.spawn(|_| std::thread::sleep(Duration::from_millis(1)));
                    std::thread::sleep(Duration::from_millis(2));
                    alive.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(held);
                });
            }
        });
        assert!(peak.load(std::sync::atomic::Ordering::SeqCst) <= n);
        assert_eq!(*permits.free.lock().unwrap(), n, "every permit came back");
    }
}
