//! Liveness of the work under way, for systemd's watchdog. Live work beats (engine progress,
//! a repository lock wait, a running hook, each journal write); the watchdog is fed while the
//! daemon is idle, or busy and beating, so a hung operation is seen and a long one that makes
//! progress is not killed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Milliseconds since `EPOCH` of the last beat.
static LAST: AtomicU64 = AtomicU64::new(0);
static BUSY: AtomicBool = AtomicBool::new(false);

fn elapsed_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Live work made progress.
pub fn beat() {
    LAST.fetch_max(elapsed_ms(), Ordering::Relaxed);
}

/// Work starts (`true`) or ends (`false`); both count as a beat.
pub fn set_busy(busy: bool) {
    beat();
    BUSY.store(busy, Ordering::SeqCst);
}

/// Whether the watchdog may be fed: idle, or busy with a beat within `within`.
pub fn alive(within: Duration) -> bool {
    if !BUSY.load(Ordering::SeqCst) {
        return true;
    }
    let silent = elapsed_ms().saturating_sub(LAST.load(Ordering::Relaxed));
    silent <= within.as_millis() as u64
}
