//! A restored tree written back to disk while the restore is still writing it.
//!
//! rustic writes a restore's files and syncs none of them; the kernel starts writing dirty
//! pages back only after ~30 s or when they pass its background limit (10% of memory), so on
//! a machine with memory to spare a whole restore is still in the page cache when it ends, and
//! the `syncfs` that makes it durable before the swap writes it all then (~1.2 s for the
//! benchmark's 700 MiB, BENCHMARKS.md "Storage engine vs restic"). [`while_flushing`] runs the
//! restore with a thread that flushes the destination's filesystem every [`INTERVAL`], so the
//! disk writes while the restore decrypts and decompresses, and the final `syncfs` (kept: it
//! is what makes the tree durable) finds little left. A flush that fails fails the restore.

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::EngineError;

/// How often the tree written so far is flushed during a restore.
pub(super) const INTERVAL: Duration = Duration::from_millis(250);

/// Runs `restore` while a second thread calls `flush` every `interval` (after waiting
/// `interval` first) until `restore` returns. A flush that fails stops the flushing and makes
/// the result that error (the restore's own error first, if it failed too).
pub(super) fn while_flushing<T>(
    interval: Duration,
    flush: impl Fn() -> std::io::Result<()> + Sync,
    restore: impl FnOnce() -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let done = Mutex::new(false);
    let wake = Condvar::new();
    std::thread::scope(|s| {
        let flusher = std::thread::Builder::new()
            .name("restore flush".to_string())
            .spawn_scoped(s, || -> std::io::Result<()> {
                let mut finished = done.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    finished = wake
                        .wait_timeout_while(finished, interval, |f| !*f)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if *finished {
                        return Ok(());
                    }
                    drop(finished);
                    flush()?;
                    finished = done.lock().unwrap_or_else(|p| p.into_inner());
                }
            });
        // Ends the flushing however `restore` ends: a panic in it (rustic's reader threads
        // unwrap their errors) unwinds through here, and the scope waits for the flusher.
        struct Stop<'a>(&'a Mutex<bool>, &'a Condvar);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                *self.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.1.notify_all();
            }
        }
        let stop = Stop(&done, &wake);
        let result = restore();
        drop(stop);
        let flushed = match flusher {
            // The flusher may be inside a long `syncfs` (a slow disk, much dirty memory): live
            // work for the watchdog while it ends, as the final sync is (up to half an hour).
            Ok(handle) => crate::heartbeat::during(Duration::from_secs(1800), || handle.join())
                .unwrap_or_else(|_| Err(std::io::Error::other("the flush thread panicked"))),
            // No thread: nothing flushed early; the final sync does it all.
            Err(_) => Ok(()),
        };
        let value = result?;
        flushed.map_err(|source| EngineError::Io {
            op: "syncing the restored tree",
            source,
        })?;
        Ok(value)
    })
}

/// Flushes the filesystem holding `path` (`syncfs`): during the restore and once after it.
/// In debug builds, `BACKPLAN_FAIL_RESTORE_SYNC` set makes it fail with EIO, as a disk
/// whose write-back failed would (the tests' way to reach that path).
pub(super) fn sync_filesystem_of(path: &Path) -> std::io::Result<()> {
    #[cfg(debug_assertions)]
    if std::env::var_os("BACKPLAN_FAIL_RESTORE_SYNC").is_some() {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs takes a valid open descriptor, held by `f` for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn the_tree_is_flushed_while_the_restore_runs() {
        let flushes = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let got = while_flushing(
            Duration::from_millis(1),
            || {
                flushes.fetch_add(1, Ordering::SeqCst);
                let _ = tx.lock().unwrap().send(());
                Ok(())
            },
            || {
                // The restore ends only once a flush ran (however late the thread starts).
                rx.recv_timeout(Duration::from_secs(120)).expect("a flush");
                Ok(7)
            },
        );
        assert_eq!(got.unwrap(), 7);
        assert!(flushes.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn a_failed_flush_fails_the_restore() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let got = while_flushing(
            Duration::from_millis(1),
            || {
                let _ = tx.lock().unwrap().send(());
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            },
            || {
                rx.recv_timeout(Duration::from_secs(120)).expect("a flush");
                Ok(())
            },
        );
        let e = got.unwrap_err().to_string();
        assert!(e.contains("syncing the restored tree"), "{e}");
        assert!(e.contains("Input/output error"), "{e}");
    }

    #[test]
    fn a_panicking_restore_stops_the_flushing() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while_flushing(
                Duration::from_millis(1),
                || {
                    let _ = tx.lock().unwrap().send(());
                    Ok(())
                },
                || -> Result<(), EngineError> {
                    rx.recv_timeout(Duration::from_secs(120)).expect("a flush");
                    panic!("a reader thread's unwrap")
                },
            )
        }));
        // Returns (the panic passed on) instead of flushing for ever.
        assert!(got.is_err());
    }

    #[test]
    fn the_restore_error_comes_first_and_a_quick_restore_needs_no_flush() {
        let flushes = AtomicUsize::new(0);
        let got: Result<(), _> = while_flushing(
            Duration::from_secs(3600),
            || {
                flushes.fetch_add(1, Ordering::SeqCst);
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            },
            || {
                Err(EngineError::Io {
                    op: "restoring",
                    source: std::io::Error::other("boom"),
                })
            },
        );
        assert!(got.unwrap_err().to_string().contains("boom"));
        // An hour's interval: the restore ended long before the first flush was due.
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
    }
}
