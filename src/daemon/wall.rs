//! Sleeping until a wall-clock time without waking in between: a `CLOCK_REALTIME` timerfd,
//! absolute and cancelled when the clock is set (`TFD_TIMER_CANCEL_ON_SET`). It fires at the
//! deadline on the wall clock, after a suspend too, and wakes the loop at once when the clock
//! is stepped, so the loop needs no periodic re-reading of the time while idle.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use super::*;

pub(super) struct WallTimer {
    fd: AsyncFd<OwnedFd>,
}

impl WallTimer {
    pub(super) fn new() -> std::io::Result<WallTimer> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the `OwnedFd` is a valid timerfd, owned by the `AsyncFd` and closed only
        // when it is dropped.
        Ok(WallTimer {
            fd: unsafe { AsyncFd::register(fd)? },
        })
    }

    /// Returns at `at` (wall clock), or earlier when the wall clock is set (the caller reads
    /// the time again and decides).
    pub(super) async fn until(&self, at: DateTime<Utc>) -> std::io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                // A time at or before the epoch would disarm the timer: 1 ns after it fires at once.
                tv_sec: at.timestamp().max(0) as libc::time_t,
                tv_nsec: if at.timestamp() > 0 {
                    at.timestamp_subsec_nanos() as libc::c_long
                } else {
                    1
                },
            },
        };
        // SAFETY: a valid timerfd and a fully initialised itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let read = ready.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads 8 bytes into a u64 we own.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(Ok(())) => return Ok(()),
                // The wall clock was set: the caller reads it again.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
