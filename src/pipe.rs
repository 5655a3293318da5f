//! Wider pipes to and from the programs backplan streams with (`pg_dump` into a backup, a
//! snapshot into `pg_restore`).

use std::os::fd::{AsFd, AsRawFd};

/// The capacity asked for such a pipe (Linux's default is 64 KiB; an unprivileged process may
/// raise it to `/proc/sys/fs/pipe-max-size`, 1 MiB by default). Streams move in blobs of about
/// 1 MiB: a bigger pipe lets one side run ahead instead of waking the other every 64 KiB.
pub const CAPACITY: libc::c_int = 1 << 20;

/// Asks for a [`CAPACITY`] pipe; a refusal (an older kernel, a lower system limit) leaves the
/// pipe as it was, which is slower but correct.
pub fn widen(pipe: &impl AsFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own; it changes only the pipe's capacity.
    let _ = unsafe { libc::fcntl(pipe.as_fd().as_raw_fd(), libc::F_SETPIPE_SZ, CAPACITY) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_child_s_pipe_is_widened() {
        let max: i64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        // SAFETY: F_GETPIPE_SZ only reads the pipe's capacity.
        let size = || unsafe { libc::fcntl(out.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let before = size();
        widen(&out);
        let after = size();
        if max >= i64::from(CAPACITY) {
            assert_eq!(after, CAPACITY, "{before} -> {after}");
        } else {
            // A lower system limit: refused (or granted to a privileged process); never less.
            assert!(after >= before, "{before} -> {after}");
        }
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
