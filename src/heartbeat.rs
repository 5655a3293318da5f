//! Liveness of the work under way, for systemd's watchdog. Live work beats (engine progress,
//! a repository lock wait, a running hook, each journal write); the watchdog is fed while the
//! daemon is idle, or busy and beating, so a hung operation is seen and a long one that makes
//! progress is not killed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn elapsed_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The process's one heart (the functions below); tests make their own.
static HEART: Heart = Heart::new();

pub struct Heart {
    /// Milliseconds since `EPOCH` of the last beat.
    last: AtomicU64,
    busy: AtomicBool,
}

impl Heart {
    pub const fn new() -> Heart {
        Heart {
            last: AtomicU64::new(0),
            busy: AtomicBool::new(false),
        }
    }

    pub fn beat(&self) {
        self.last.fetch_max(elapsed_ms(), Ordering::Relaxed);
    }

    pub fn set_busy(&self, busy: bool) {
        self.beat();
        self.busy.store(busy, Ordering::SeqCst);
    }

    pub fn alive(&self, within: Duration) -> bool {
        if !self.busy.load(Ordering::SeqCst) {
            return true;
        }
        let silent = elapsed_ms().saturating_sub(self.last.load(Ordering::Relaxed));
        silent <= within.as_millis() as u64
    }

    pub fn during<T>(&self, limit: Duration, f: impl FnOnce() -> T) -> T {
        let done = AtomicBool::new(false);
        // The limit counts from the call, not from when the beating thread got to run.
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::SeqCst) && start.elapsed() < limit {
                    self.beat();
                    std::thread::sleep(Duration::from_millis(200));
                }
            });
            let r = f();
            done.store(true, Ordering::SeqCst);
            r
        })
    }
}

impl Default for Heart {
    fn default() -> Self {
        Heart::new()
    }
}

/// Live work made progress.
pub fn beat() {
    HEART.beat();
}

/// Work starts (`true`) or ends (`false`); both count as a beat.
pub fn set_busy(busy: bool) {
    HEART.set_busy(busy);
}

/// Whether the watchdog may be fed: idle, or busy with a beat within `within`.
pub fn alive(within: Duration) -> bool {
    HEART.alive(within)
}

/// Runs `f`, one blocking call that reports no progress of its own (a filesystem flush),
/// beating meanwhile for at most `limit`: a flush that takes longer is taken for a hang.
pub fn during<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    HEART.during(limit, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_silent_is_not_alive() {
        let h = Heart::new();
        h.set_busy(true);
        assert!(h.alive(Duration::from_millis(300)));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!h.alive(Duration::from_millis(300)), "silent for 500 ms");
        h.beat();
        assert!(h.alive(Duration::from_millis(300)));
        h.set_busy(false);
        std::thread::sleep(Duration::from_millis(500));
        assert!(h.alive(Duration::from_millis(300)), "idle is alive");
    }

    #[test]
    fn a_long_flush_beats_up_to_its_limit() {
        let h = Heart::new();
        h.set_busy(true);
        let began = elapsed_ms();
        // Beats come while the call runs: wait (a loaded machine may delay the beater) for one
        // 600 ms into it, well after the one `set_busy` gave.
        let beat_late = h.during(Duration::from_secs(60), || {
            let give_up = Instant::now() + Duration::from_secs(30);
            while Instant::now() < give_up {
                if h.last.load(Ordering::Relaxed) >= began + 600 {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(beat_late, "no beat during the call");
        h.during(Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_millis(1200))
        });
        assert!(!h.alive(Duration::from_millis(500)), "beats past the limit");
    }
}
