//! systemd's notification protocol and watchdog, without libsystemd.

use super::*;

/// systemd's notification protocol, without libsystemd: one datagram to `$NOTIFY_SOCKET`.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    // Never block the daemon on its supervisor: a full queue drops the message.
    let _ = sock.set_nonblocking(true);
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify: {e}");
    }
}

/// CLOCK_MONOTONIC in microseconds, as systemd expects with RELOADING=1.
pub(super) fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Sends WATCHDOG=1 at half the interval systemd asked for (`WATCHDOG_USEC`), while the
/// daemon is idle or its work under way beats (see [`crate::heartbeat`]): a hung operation
/// stops the pings, and systemd restarts the service.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let every = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut fed = true;
        loop {
            if crate::heartbeat::alive(every) {
                sd_notify("WATCHDOG=1");
                fed = true;
            } else if fed {
                tracing::error!(
                    "the operation under way has shown no progress for {}s: the watchdog is no longer fed",
                    every.as_secs()
                );
                fed = false;
            }
            tokio::time::sleep(every).await;
        }
    }))
}
