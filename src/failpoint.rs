//! Test-only fail points: `failpoint!("restore.exchanged")` marks a phase boundary where the
//! crash tests (`tests/it/crash.rs`) stop the process with SIGKILL, as a power cut or `kill -9`
//! would. The process dies there when `BACKPLAN_FAILPOINT` names that point (read once).
//!
//! **Fail points exist only in debug builds** (`cfg(debug_assertions)`, which `cargo test`
//! builds the binary with): in a release build the macro expands to nothing, so no variable
//! of the environment can stop a production daemon. A call is one line and decides nothing.

/// Stops the process with SIGKILL here when `BACKPLAN_FAILPOINT` is this point's name (debug
/// builds only; nothing in release builds).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {{
        #[cfg(debug_assertions)]
        $crate::failpoint::hit($name);
    }};
}

/// The point named by `BACKPLAN_FAILPOINT`, read once per process.
#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("BACKPLAN_FAILPOINT").ok());
    if at.as_deref() == Some(name) {
        tracing::warn!("fail point {name}: killing this process (SIGKILL)");
        // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        loop {
            std::thread::park();
        }
    }
}
