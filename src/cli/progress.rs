//! Progress of long operations: a live line on a terminal (bytes, rate, ETA), log lines
//! every few seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::ProgressSink;
use crate::views::human_bytes;

pub struct TermProgress {
    tty: bool,
    state: Mutex<State>,
}

struct State {
    phase: String,
    started: Instant,
    last: Option<Instant>,
    /// A live line is on the terminal.
    shown: bool,
}

impl TermProgress {
    pub fn new() -> Self {
        TermProgress {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                phase: String::new(),
                started: Instant::now(),
                last: None,
                shown: false,
            }),
        }
    }

    /// Removes the live line, if one is shown (the work ended before its total, or had none).
    pub fn clear(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            st.shown = false;
        }
    }
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Default for TermProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// `done` of `total` at the rate since `started`: "412.0 MiB of 700.0 MiB, 120.3 MiB/s, ETA 2s".
pub fn describe(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let mut s = human_bytes(done);
    if let Some(t) = total {
        s += &format!(" of {}", human_bytes(t));
    }
    s += &format!(", {}/s", human_bytes(rate as u64));
    if let (Some(t), true) = (total, rate > 0.0) {
        let left = t.saturating_sub(done) as f64 / rate;
        s += &format!(", ETA {}s", left.ceil() as u64);
    }
    s
}

impl ProgressSink for TermProgress {
    fn update(&self, phase: &str, done: u64, total: Option<u64>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if st.phase != phase {
            st.phase = phase.to_string();
            st.started = now;
            st.last = None;
        }
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let finished = total.is_some_and(|t| done >= t);
        if st.last.is_some_and(|l| now - l < every) && !finished {
            return;
        }
        st.last = Some(now);
        let line = format!("{phase}: {}", describe(done, total, now - st.started));
        if self.tty {
            // A finished phase leaves nothing behind: what it did is reported after it.
            let mut err = std::io::stderr().lock();
            if finished {
                let _ = write!(err, "\r\x1b[2K");
            } else {
                let _ = write!(err, "\r\x1b[2K{line}");
            }
            st.shown = !finished;
            let _ = err.flush();
        } else {
            tracing::info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_bytes_rate_and_eta() {
        let s = describe(50 << 20, Some(100 << 20), Duration::from_secs(1));
        assert_eq!(s, "50.0 MiB of 100.0 MiB, 50.0 MiB/s, ETA 1s");
        assert_eq!(describe(10, None, Duration::from_secs(1)), "10 B, 10 B/s");
    }
}
