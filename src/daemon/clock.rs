//! Where "now" comes from: the system clock, or (tests) a file holding an RFC 3339 time.

use super::*;

/// Where "now" comes from: the system clock, or (tests) a file holding an RFC 3339 time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// The longest the loop sleeps before reading the time again: a sleep runs on the
    /// monotonic clock, which neither follows steps of the wall clock nor counts a suspend.
    fn recheck(&self) -> Duration {
        Duration::from_secs(60)
    }
    /// The system's wall clock: the daemon waits on a wall-clock timer instead of re-reading
    /// the time every `recheck`.
    fn is_wall(&self) -> bool {
        false
    }
}

pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn is_wall(&self) -> bool {
        true
    }
}

/// Test clock: the time written in a file (read at each use). While the file is being
/// rewritten it may read empty: the last time read stands then, never the system time.
pub struct FileClock {
    path: PathBuf,
    last: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl FileClock {
    pub fn new(path: PathBuf) -> Self {
        FileClock {
            path,
            last: std::sync::Mutex::new(None),
        }
    }
}

impl Clock for FileClock {
    fn now(&self) -> DateTime<Utc> {
        let read = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if read.is_some() {
            *last = read;
        }
        last.unwrap_or_else(Utc::now)
    }
    /// The file may change without an event the loop sees (written through a link): read
    /// it often.
    fn recheck(&self) -> Duration {
        Duration::from_secs(1)
    }
}
