//! restic's repository locks, which rustic_core 0.13 does not write. Every operation on a
//! repository holds one, so that the stock `restic` (an operator's `restic prune`) or a second
//! host on the same bucket never works on a repository backplan is changing, and the reverse.
//!
//! The protocol is restic's (`internal/restic/lock.go`):
//! - a lock is the JSON `{time, exclusive, hostname, username, pid, uid, gid}` (uid and gid left
//!   out when 0, as Go's `omitempty` does), encrypted with the repository's master key like
//!   every file outside packs (16-byte nonce ‖ AES-256-CTR ‖ Poly1305-AES tag), stored as
//!   `locks/<SHA-256 of the stored bytes>`;
//! - an exclusive lock (forget, prune) conflicts with every other lock, a shared one (backup,
//!   restore, listing, verification) only with an exclusive one;
//! - the taker looks for conflicts, writes its lock, waits 200 ms and looks again (a writer
//!   that started at the same time is then seen by one of the two); on a conflict it removes
//!   its lock (backplan: when the operation ends, see below);
//! - a holder refreshes its lock every 5 minutes (writes a new one, removes the old), from a
//!   thread of its own that stops when the lock is released;
//! - a lock is stale when older than 30 minutes, or when it names this host and its process is
//!   gone. Stale locks are ignored; one of this host whose process is gone (a backplan or
//!   restic that was killed) is removed, as `restic unlock` would. Empty lock files are
//!   ignored (an upload cut short); a lock that cannot be read is a conflict (restic ≥ 0.15
//!   does the same), since it may be someone's lock.
//!
//! **The settle overlapped with read-only work.** restic waits the 200 ms before it does
//! anything. backplan starts the operation's read-only work (open, index, parent trees, walk,
//! chunking) as soon as its lock file has landed, and does the second look at the first write
//! or remove (`gate.rs`: every write and remove of the operation's rustic handle goes through
//! [`Settle::pass`], which waits out what is left of the 200 ms first), or before the
//! operation reports success or writes anything outside the repository (a restore's files),
//! whichever comes first. **Nothing is written to a repository before the second look of its
//! lock.** Why this is as safe as restic's order, for a peer P that follows the protocol:
//! - P modifies nothing before its own second look, and that look, 200 ms after P's lock
//!   landed, saw no lock of ours (else P backs off): so P's lock landed more than 200 ms
//!   before ours did.
//! - Our first look started less than 200 ms before our lock landed ([`try_once`] measures it;
//!   when it took longer, the second look is done right there, before any read, as restic
//!   does). So P's lock was already there at our first look, and we would not have gone on.
//! - Hence no peer modifies the repository while our read-only work runs, except one we see at
//!   our second look (its lock landed while ours did): then the operation fails with nothing
//!   written, its lock is removed as it ends, and the engine runs it again from the start
//!   (fresh handle, index and walk) once that lock is gone, within the same wait bound
//!   (`run_again_after_late_conflicts` in `rustic.rs`). A restore passes the second look before
//!   it writes into its staging folder, so running it again finds the folder still empty.
//! - What the read-only work saw is therefore what the repository held when the operation's
//!   writes start, as after restic's 200 ms wait. A peer coming after our lock landed sees our
//!   lock at its first or second look, and waits or backs off.
//!
//! On a conflict backplan waits, looking again with growing pauses, up to [`WAIT`] (restic
//! itself fails at once); then the operation fails with an error naming the holder (host,
//! pid, user, age, exclusive or not). The lock is released (its file removed) when the
//! [`RepoLock`] is dropped, on every exit path of the operation.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes256ctr_poly1305aes::aead::Aead;
use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, Key, Nonce};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::engine::EngineError;

/// How long an operation waits for a conflicting lock before it fails.
pub(super) const WAIT: Duration = Duration::from_secs(60);
/// How often a held lock is refreshed (restic's interval).
pub(super) const REFRESH: Duration = Duration::from_secs(5 * 60);
/// restic's wait between writing a lock and looking for conflicts again.
const SETTLE: Duration = Duration::from_millis(200);
/// A lock not refreshed for this long is stale (restic's `StaleLockTimeout`).
const STALE: Duration = Duration::from_secs(30 * 60);

/// The wait bound; in debug builds (the tests) `BACKPLAN_LOCK_WAIT` (seconds) sets it, so a
/// test of a conflict need not wait a minute. Release builds read no variable.
pub(super) fn wait_bound() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(secs) = std::env::var("BACKPLAN_LOCK_WAIT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return Duration::from_secs_f64(secs.max(0.0));
    }
    WAIT
}

/// What is left of [`wait_bound`] for the operation running on this thread (an operation run
/// again after a conflict at its second look waits no longer in all).
pub(super) fn wait_left() -> Duration {
    match STARTED.with(|s| s.get()) {
        Some((started, true)) => wait_bound().saturating_sub(started.elapsed()),
        _ => wait_bound(),
    }
}

/// Test hook (debug builds only): `BACKPLAN_TEST_LOCK_HOLD=exclusive:SECONDS` (or
/// `shared:SECONDS`) keeps the operation waiting that long right after it took such a lock,
/// so that a test can meet a backplan holding it. Release builds read no variable.
pub(super) fn hold_for_tests(mode: Mode) {
    #[cfg(debug_assertions)]
    if let Ok(v) = std::env::var("BACKPLAN_TEST_LOCK_HOLD")
        && let Some((which, secs)) = v.split_once(':')
        && which
            == if mode == Mode::Exclusive {
                "exclusive"
            } else {
                "shared"
            }
        && let Ok(secs) = secs.parse::<f64>()
    {
        tracing::warn!("test hook: holding the {which} repository lock for {secs} s");
        let d = Duration::from_secs_f64(secs);
        crate::heartbeat::during(d + Duration::from_secs(1), || std::thread::sleep(d));
    }
    #[cfg(not(debug_assertions))]
    let _ = mode;
}

/// The `locks/` folder of a repository: a folder of this host or an object store's prefix.
pub(super) trait LockFiles: Send + Sync {
    /// The lock files' names (64 hex digits) and sizes.
    fn list(&self) -> Result<Vec<(String, u64)>, String>;
    /// A lock file's bytes; `None` when it is gone.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
    /// Writes a lock file whole (a reader never sees part of it).
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String>;
    /// Removes a lock file; one already gone is no error.
    fn remove(&self, name: &str) -> Result<(), String>;
}

/// `locks/` in a repository folder of this host.
pub(super) struct LocalLocks(pub(super) PathBuf);

impl LockFiles for LocalLocks {
    fn list(&self) -> Result<Vec<(String, u64)>, String> {
        let entries = match std::fs::read_dir(&self.0) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("listing {}: {e}", self.0.display())),
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| format!("listing {}: {e}", self.0.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_lock_name(&name) {
                continue;
            }
            match e.metadata() {
                Ok(m) if m.is_file() => out.push((name, m.len())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(format!("reading {}: {err}", e.path().display())),
            }
        }
        Ok(out)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.0.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.0)
            .map_err(|e| format!("creating {}: {e}", self.0.display()))?;
        // Written beside, then renamed: restic lists only names that are ids.
        let tmp = self.0.join(format!(".{name}.tmp"));
        let path = self.0.join(name);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("writing {}: {e}", path.display()));
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<(), String> {
        let path = self.0.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", path.display())),
        }
    }
}

/// A restic lock file's name: the SHA-256 of its stored bytes, in hex.
pub(super) fn is_lock_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A lock as restic writes it (field names and order as restic's JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct LockInfo {
    pub time: String,
    pub exclusive: bool,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl LockInfo {
    /// This process's lock, taken now.
    fn ours(exclusive: bool) -> LockInfo {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LockInfo {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
            exclusive,
            hostname: hostname(),
            username: username(uid),
            pid: i64::from(std::process::id()),
            uid,
            gid,
        }
    }

    fn taken_at(&self) -> Option<DateTime<FixedOffset>> {
        DateTime::parse_from_rfc3339(&self.time).ok()
    }

    /// How long ago it was taken (or refreshed); zero when in the future.
    fn age(&self) -> Option<Duration> {
        let at = self.taken_at()?;
        Some(
            Utc::now()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default(),
        )
    }

    /// Whether its process is certainly gone: it names this host, and no process has its pid.
    fn dead_here(&self) -> bool {
        if self.hostname != hostname() || self.pid <= 0 {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return true;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    /// Stale as restic means it: not refreshed for 30 minutes, or of a dead process here.
    fn stale(&self) -> bool {
        self.age().is_some_and(|a| a > STALE) || self.dead_here()
    }

    /// The holder, for messages: "an exclusive lock of root@host (pid 42), taken 3m 2s ago".
    pub(super) fn describe(&self) -> String {
        let age = match self.age() {
            Some(a) => format!("taken {} ago", human(a)),
            None => format!("taken at {:?}", self.time),
        };
        format!(
            "{} lock of {}@{} (pid {}), {age}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared (non-exclusive)"
            },
            if self.username.is_empty() {
                "?"
            } else {
                &self.username
            },
            self.hostname,
            self.pid
        )
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The host's name as Go's `os.Hostname` gives it (the kernel's hostname).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The user name of `uid` (as Go's `user.Current`), else the number.
fn username(uid: libc::uid_t) -> String {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; the name is read only when found.
    let r = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if r == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    uid.to_string()
}

/// The repository's master key as the cipher restic's unpacked files use.
#[derive(Clone)]
pub(super) struct Sealer(Key);

impl Sealer {
    /// From the master key's parts: the AES key, and Poly1305-AES's `k` and `r`.
    pub(super) fn new(encrypt: &[u8], k: &[u8], r: &[u8]) -> Result<Sealer, String> {
        if encrypt.len() != 32 || k.len() != 16 || r.len() != 16 {
            return Err("the repository's master key has an unexpected size".into());
        }
        let mut key = Key::default();
        key[..32].copy_from_slice(encrypt);
        key[32..48].copy_from_slice(k);
        key[48..].copy_from_slice(r);
        Ok(Sealer(key))
    }

    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = Nonce::default();
        random(&mut nonce)?;
        let sealed = Aes256CtrPoly1305Aes::new(&self.0)
            .encrypt(&nonce, plain)
            .map_err(|_| "encrypting the lock failed".to_string())?;
        let mut out = Vec::with_capacity(16 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < 32 {
            return Err("too short".into());
        }
        let nonce = Nonce::from_slice(&sealed[..16]);
        Aes256CtrPoly1305Aes::new(&self.0)
            .decrypt(nonce, &sealed[16..])
            .map_err(|_| "it does not decrypt with the repository key".to_string())
    }

    /// A lock's stored bytes and name.
    fn encode(&self, info: &LockInfo) -> Result<(String, Vec<u8>), String> {
        let json = serde_json::to_vec(info).map_err(|e| e.to_string())?;
        let stored = self.seal(&json)?;
        Ok((hex(&sha2::Sha256::digest(&stored)), stored))
    }

    /// A lock from its stored bytes: plain JSON (restic ≤ 0.14) or, in a version 2
    /// repository, the byte 2 followed by zstd-compressed JSON (later restic).
    pub(super) fn decode(&self, stored: &[u8]) -> Result<LockInfo, String> {
        let plain = self.open(stored)?;
        let json = match plain.first() {
            Some(2) => zstd::stream::decode_all(&plain[1..]).map_err(|e| e.to_string())?,
            _ => plain,
        };
        serde_json::from_slice(&json).map_err(|e| format!("not a lock: {e}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("reading random bytes: {e}"))
}

/// A held repository lock; dropping it stops its refresher and removes its file.
pub(super) struct RepoLock {
    files: Arc<dyn LockFiles>,
    /// The name of the lock file in place (it changes at each refresh). Held by the
    /// refresher for a whole refresh, and by the second look.
    current: Arc<Mutex<String>>,
    /// The second look of restic's protocol, done at the first write or before the end.
    settle: Arc<Settle>,
    /// The gate of the operation's handle (`gate.rs`): where its writes went.
    pub(super) gate: Option<Arc<super::gate::Gate>>,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
    what: String,
}

impl RepoLock {
    /// The lock file's current name (for tests).
    #[cfg(test)]
    fn name(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl RepoLock {
    /// The gate the operation's writes go through (see [`Settle`]).
    pub(super) fn settle(&self) -> Arc<Settle> {
        self.settle.clone()
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        // An operation that wrote nothing (or failed early) still has the second look done
        // while its lock is in place: its verdict is what the engine reports (a conflict
        // turns a success into a retry, see `OperationLocks`).
        let _ = self.settle.pass();
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Err(e) = remove_held(&*self.files, &name) {
            tracing::warn!(
                "could not release the lock of {} ({e}); this process removes it at its next operation there, and it turns stale in 30 minutes",
                self.what
            );
        }
    }
}

/// The lock files this process holds now (names are unique: hashes of randomly sealed
/// bytes). A lock of this host and this pid that is not among them is a leftover of this
/// process (its removal failed): stale, though the process is alive.
static HELD: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());

fn held(name: &str, yes: bool) {
    let mut h = HELD.lock().unwrap_or_else(|p| p.into_inner());
    if yes {
        h.insert(name.to_string());
    } else {
        h.remove(name);
    }
}

/// Writes a lock file, known as held before it exists.
fn write_held(files: &dyn LockFiles, name: &str, bytes: &[u8]) -> Result<(), String> {
    held(name, true);
    files.write(name, bytes).inspect_err(|_| held(name, false))
}

/// Removes a lock file, known as held no more even when that fails: the next look for
/// conflicts then removes it as this process's leftover.
fn remove_held(files: &dyn LockFiles, name: &str) -> Result<(), String> {
    held(name, false);
    files.remove(name)
}

/// Lock files larger than this are not read (restic's are about 150 bytes).
const MAX_LOCK_SIZE: u64 = 64 * 1024;

/// Why a try did not take the lock.
enum Refused {
    /// Someone else's lock that conflicts (or an unreadable one).
    Held(String),
    Failed(String),
}

/// What an operation needs: restic's non-exclusive lock (backup, restore, listing,
/// verification) or its exclusive one (forget, prune).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Shared,
    Exclusive,
}

/// Takes a lock on the repository whose `locks/` folder is `files` (named `what` in
/// messages), waiting up to `wait` for conflicting locks to go, refreshed every `refresh`
/// while held.
pub(super) fn acquire(
    files: Arc<dyn LockFiles>,
    sealer: Sealer,
    mode: Mode,
    what: &Path,
    wait: Duration,
    refresh: Duration,
) -> Result<RepoLock, EngineError> {
    let exclusive = mode == Mode::Exclusive;
    let fail = |message: String| EngineError::Repository {
        repo: what.to_path_buf(),
        message,
    };
    let start = Instant::now();
    let mut pause = Duration::from_millis(500);
    let mut told = false;
    let (name, pending) = loop {
        match try_once(&*files, &sealer, exclusive) {
            Ok(taken) => break taken,
            Err(Refused::Failed(m)) => {
                return Err(fail(format!("cannot take the repository lock: {m}")));
            }
            Err(Refused::Held(holder)) => {
                let waited = start.elapsed();
                if waited >= wait {
                    return Err(fail(format!(
                        "the repository is locked by {holder}; waited {}. If that process is gone (a crash on another host), `restic unlock` removes its lock",
                        human(waited)
                    )));
                }
                if !told {
                    tracing::info!(
                        "repository {} is locked by {holder}; waiting up to {}",
                        what.display(),
                        human(wait)
                    );
                    told = true;
                }
                let nap = pause.min(wait - waited);
                crate::heartbeat::during(nap + Duration::from_secs(1), || std::thread::sleep(nap));
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    let current = Arc::new(Mutex::new(name));
    let settle = Arc::new(Settle {
        state: Mutex::new(match pending {
            Some(landed) => Look::Pending(landed),
            None => Look::Passed,
        }),
        files: files.clone(),
        sealer: sealer.clone(),
        exclusive,
        current: current.clone(),
    });
    OperationLocks::note(&settle);
    let (stop, stopped) = mpsc::channel::<()>();
    let refresher = {
        let (files, current, what) = (files.clone(), current.clone(), what.to_path_buf());
        std::thread::Builder::new()
            .name("repository lock".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(refresh) {
                    refresh_once(&*files, &sealer, exclusive, &current, &what);
                }
            })
            .map_err(|e| fail(format!("cannot start the lock's refresher: {e}")))
    };
    let mut lock = RepoLock {
        files,
        current,
        settle,
        gate: None,
        stop: Some(stop),
        refresher: None,
        what: what.display().to_string(),
    };
    // On an error here the lock is dropped, so removed.
    lock.refresher = Some(refresher?);
    if pending.is_some() {
        landed_for_tests();
    }
    Ok(lock)
}

/// Test hook (debug builds only): with `BACKPLAN_TEST_LOCK_LANDED=FILE`, the first operation
/// whose lock lands with its second look still to do writes FILE and waits (up to a minute)
/// until a test writes `go` into it, so that a test can put a lock in place inside the settle
/// window. FILE already there: no wait. Release builds read no variable.
fn landed_for_tests() {
    #[cfg(debug_assertions)]
    if let Ok(path) = std::env::var("BACKPLAN_TEST_LOCK_LANDED")
        && std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .is_ok()
    {
        tracing::warn!("test hook: lock landed, waiting for `go` in {path}");
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until
            && std::fs::read_to_string(&path).map_or(true, |s| s.trim() != "go")
        {
            crate::heartbeat::beat();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Writes a new lock with the time of now, then removes the old one.
fn refresh_once(
    files: &dyn LockFiles,
    sealer: &Sealer,
    exclusive: bool,
    current: &Mutex<String>,
    what: &Path,
) {
    // Held throughout: the second look never sees our old and new lock at once.
    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
    let written = sealer
        .encode(&LockInfo::ours(exclusive))
        .and_then(|(name, bytes)| write_held(files, &name, &bytes).map(|()| name));
    match written {
        Ok(name) => {
            let old = std::mem::replace(&mut *current, name);
            if let Err(e) = remove_held(files, &old) {
                tracing::warn!(
                    "repository {}: removing the lock replaced by a fresh one: {e}",
                    what.display()
                );
            }
        }
        Err(e) => tracing::warn!(
            "repository {}: cannot refresh the repository lock ({e}); it turns stale 30 minutes after the last refresh",
            what.display()
        ),
    }
}

/// One try of restic's protocol: look, write; then either the 200 ms and the second look
/// right here (`None`: settled), or, when the look and the write took less than the 200 ms
/// (the usual case), the instant the lock landed: its second look is left to the gate
/// ([`Settle::pass`]), before the operation's first write (see the module's doc).
fn try_once(
    files: &dyn LockFiles,
    sealer: &Sealer,
    exclusive: bool,
) -> Result<(String, Option<Instant>), Refused> {
    let looked = Instant::now();
    if let Some(holder) = conflict(files, sealer, exclusive, None)? {
        return Err(Refused::Held(holder));
    }
    let (name, bytes) = sealer
        .encode(&LockInfo::ours(exclusive))
        .map_err(Refused::Failed)?;
    write_held(files, &name, &bytes).map_err(Refused::Failed)?;
    let landed = Instant::now();
    if landed.duration_since(looked) < SETTLE {
        return Ok((name, Some(landed)));
    }
    // A slow first look: an exclusive peer may have taken its lock after it started and be
    // at work before ours landed; read nothing before the second look.
    std::thread::sleep(SETTLE);
    match conflict(files, sealer, exclusive, Some(&name)) {
        Ok(None) => Ok((name, None)),
        other => {
            let _ = remove_held(files, &name);
            match other {
                Ok(Some(holder)) => Err(Refused::Held(holder)),
                Err(e) => Err(e),
                Ok(None) => unreachable!(),
            }
        }
    }
}

/// Where the second look of a lock stands.
enum Look {
    /// The lock landed then; the second look is still to do.
    Pending(Instant),
    Passed,
    /// The second look found this conflicting lock (or could not be done: `conflict` false).
    Failed {
        why: String,
        conflict: bool,
    },
}

/// The second look of a held lock, shared by the lock and the gate of the operation's
/// repository writes (`gate.rs`): done once, by the first write, remove or end of the
/// operation that needs it, at the earliest 200 ms after the lock landed.
pub(super) struct Settle {
    state: Mutex<Look>,
    files: Arc<dyn LockFiles>,
    sealer: Sealer,
    exclusive: bool,
    current: Arc<Mutex<String>>,
}

impl Settle {
    /// Waits out what is left of the 200 ms, then looks again (once); Err: the conflicting
    /// lock (or why the look failed), for this and every later call.
    pub(super) fn pass(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Look::Pending(landed) = *state {
            let left = SETTLE.saturating_sub(landed.elapsed());
            tracing::debug!(
                waits_ms = left.as_millis() as u64,
                "repository lock: second look, {} ms after it landed",
                landed.elapsed().as_millis()
            );
            if !left.is_zero() {
                std::thread::sleep(left);
            }
            // Not while the refresher swaps our lock file (both of ours would be listed).
            let ours = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *state = match conflict(&*self.files, &self.sealer, self.exclusive, Some(&ours)) {
                Ok(None) => Look::Passed,
                Ok(Some(holder)) => Look::Failed {
                    why: holder,
                    conflict: true,
                },
                Err(Refused::Held(h) | Refused::Failed(h)) => Look::Failed {
                    why: format!("cannot look for conflicting locks: {h}"),
                    conflict: false,
                },
            };
        }
        match &*state {
            Look::Failed { why, .. } => Err(why.clone()),
            _ => Ok(()),
        }
    }

    /// The conflicting lock the second look found, if it found one.
    fn conflict(&self) -> Option<String> {
        match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            Look::Failed {
                why,
                conflict: true,
            } => Some(why.clone()),
            _ => None,
        }
    }
}

/// The locks the operation running on this thread took (the engine runs each operation on a
/// thread of its own): after it, whether a second look found a conflict, which makes the
/// engine run the operation again (it wrote nothing) after the usual wait.
pub(super) struct OperationLocks;

thread_local! {
    static TAKEN: std::cell::RefCell<Vec<Arc<Settle>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// When the operation first started, and whether this is a try after the first.
    static STARTED: std::cell::Cell<Option<(Instant, bool)>> = const { std::cell::Cell::new(None) };
}

impl OperationLocks {
    fn note(settle: &Arc<Settle>) {
        TAKEN.with(|t| t.borrow_mut().push(settle.clone()));
    }

    /// An operation starts on this thread (`again`: the same one, run again): forgets the
    /// locks of the earlier try.
    pub(super) fn start(again: bool) {
        TAKEN.with(|t| t.borrow_mut().clear());
        STARTED.with(|s| match s.get() {
            Some((started, _)) if again => s.set(Some((started, true))),
            _ => s.set(Some((Instant::now(), false))),
        });
    }

    /// The conflicting lock a second look of this operation found, if any.
    pub(super) fn conflict() -> Option<String> {
        TAKEN.with(|t| t.borrow().iter().find_map(|s| s.conflict()))
    }
}

/// The first lock (other than `ours`) that conflicts with taking one `exclusive` or not,
/// described; removes stale locks of dead processes of this host on the way.
fn conflict(
    files: &dyn LockFiles,
    sealer: &Sealer,
    exclusive: bool,
    ours: Option<&str>,
) -> Result<Option<String>, Refused> {
    for (name, size) in files.list().map_err(Refused::Failed)? {
        if Some(name.as_str()) == ours || size == 0 {
            continue;
        }
        if size > MAX_LOCK_SIZE {
            return Ok(Some(format!(
                "a lock file locks/{name} of {size} bytes, too large to be a lock (`restic unlock --remove-all` removes it when nothing else uses the repository)"
            )));
        }
        let Some(stored) = files.read(&name).map_err(Refused::Failed)? else {
            continue;
        };
        if stored.is_empty() {
            continue;
        }
        let info = match sealer.decode(&stored) {
            Ok(info) => info,
            Err(e) => {
                return Ok(Some(format!(
                    "an unreadable lock file locks/{name} ({e}; `restic unlock --remove-all` removes it when nothing else uses the repository)"
                )));
            }
        };
        let leftover = info.hostname == hostname()
            && info.pid == i64::from(std::process::id())
            && !HELD
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&name);
        if info.dead_here() || leftover {
            tracing::warn!(
                "removing the stale lock locks/{name}: {}, whose {}",
                info.describe(),
                if leftover {
                    "release failed earlier in this process"
                } else {
                    "process is gone"
                }
            );
            if let Err(e) = files.remove(&name) {
                tracing::warn!("could not remove the stale lock locks/{name}: {e}");
            }
            continue;
        }
        if info.stale() {
            tracing::info!("ignoring the stale lock locks/{name}: {}", info.describe());
            continue;
        }
        if exclusive || info.exclusive {
            return Ok(Some(info.describe()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&[7u8; 32], &[8u8; 16], &[9u8; 16]).unwrap()
    }

    fn folder() -> (tempfile::TempDir, Arc<dyn LockFiles>) {
        let tmp = tempfile::tempdir().unwrap();
        let files: Arc<dyn LockFiles> = Arc::new(LocalLocks(tmp.path().join("locks")));
        (tmp, files)
    }

    fn names(files: &dyn LockFiles) -> Vec<String> {
        let mut n: Vec<String> = files.list().unwrap().into_iter().map(|(n, _)| n).collect();
        n.sort();
        n
    }

    fn take(
        files: &Arc<dyn LockFiles>,
        exclusive: bool,
        wait: Duration,
    ) -> Result<RepoLock, EngineError> {
        let mode = if exclusive {
            Mode::Exclusive
        } else {
            Mode::Shared
        };
        acquire(
            files.clone(),
            sealer(),
            mode,
            Path::new("test"),
            wait,
            REFRESH,
        )
    }

    fn plant(files: &dyn LockFiles, info: &LockInfo) -> String {
        let (name, bytes) = sealer().encode(info).unwrap();
        files.write(&name, &bytes).unwrap();
        name
    }

    fn other_host(exclusive: bool) -> LockInfo {
        LockInfo {
            hostname: "elsewhere".into(),
            pid: 4242,
            ..LockInfo::ours(exclusive)
        }
    }

    #[test]
    fn a_lock_is_named_by_the_hash_of_its_bytes_and_reads_back() {
        let (_tmp, files) = folder();
        let lock = take(&files, true, Duration::ZERO).unwrap();
        let name = lock.name();
        let stored = files.read(&name).unwrap().unwrap();
        assert_eq!(hex(&sha2::Sha256::digest(&stored)), name);
        let info = sealer().decode(&stored).unwrap();
        assert!(info.exclusive);
        assert_eq!(info.pid, i64::from(std::process::id()));
        assert_eq!(info.hostname, hostname());
        drop(lock);
        assert!(names(&*files).is_empty(), "released");
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_do_not() {
        let (_tmp, files) = folder();
        plant(&*files, &other_host(false));
        let shared = take(&files, false, Duration::ZERO).unwrap();
        let refused = take(&files, true, Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.contains("a shared (non-exclusive) lock of"),
            "{refused}"
        );
        drop(shared);
        let (_tmp2, files) = folder();
        plant(&*files, &other_host(true));
        let start = Instant::now();
        let refused = take(&files, false, Duration::from_millis(1200))
            .err()
            .unwrap()
            .to_string();
        assert!(start.elapsed() >= Duration::from_millis(1200), "it waited");
        assert!(refused.contains("an exclusive lock of"), "{refused}");
        assert!(
            refused.contains("@elsewhere (pid 4242), taken "),
            "{refused}"
        );
        assert_eq!(names(&*files).len(), 1, "its own lock was removed");
    }

    #[test]
    fn a_conflict_that_goes_away_within_the_wait_is_waited_for() {
        let (_tmp, files) = folder();
        let held = plant(&*files, &other_host(true));
        let f = files.clone();
        let remover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            f.remove(&held).unwrap();
        });
        let lock = take(&files, true, Duration::from_secs(10)).unwrap();
        remover.join().unwrap();
        assert_eq!(names(&*files), vec![lock.name()]);
    }

    #[test]
    fn stale_locks_are_ignored_and_dead_ones_of_this_host_removed() {
        let (_tmp, files) = folder();
        let old = LockInfo {
            time: (Utc::now() - chrono::Duration::minutes(31)).to_rfc3339(),
            ..other_host(true)
        };
        let old = plant(&*files, &old);
        // A pid that no process has (above the kernel's maximum).
        let dead = plant(
            &*files,
            &LockInfo {
                pid: 1 << 30,
                ..LockInfo::ours(true)
            },
        );
        files.write(&"0".repeat(64), b"").unwrap();
        let lock = take(&files, true, Duration::ZERO).unwrap();
        let left = names(&*files);
        assert!(left.contains(&old), "another host's stale lock is left");
        assert!(!left.contains(&dead), "the dead process's lock is removed");
        drop(lock);
        // A live process of this host (ours is alive) holds its lock.
        plant(
            &*files,
            &LockInfo {
                pid: 1,
                ..LockInfo::ours(true)
            },
        );
        assert!(take(&files, false, Duration::ZERO).is_err());
    }

    #[test]
    fn the_json_is_restics_and_compressed_locks_of_later_restic_read() {
        let info = LockInfo {
            time: "2020-12-01T17:33:41.27469046Z".into(),
            exclusive: true,
            hostname: "vm".into(),
            username: "root".into(),
            pid: 3968,
            uid: 0,
            gid: 0,
        };
        // As restic 0.14 wrote it (seen with `restic cat lock`): uid and gid 0 left out.
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"time":"2020-12-01T17:33:41.27469046Z","exclusive":true,"hostname":"vm","username":"root","pid":3968}"#
        );
        let json = serde_json::to_vec(&LockInfo { uid: 1000, ..info }).unwrap();
        let mut compressed = vec![2u8];
        compressed.extend(zstd::stream::encode_all(&json[..], 3).unwrap());
        let read = sealer()
            .decode(&sealer().seal(&compressed).unwrap())
            .unwrap();
        assert_eq!((read.uid, read.pid, read.exclusive), (1000, 3968, true));
        assert!(read.stale(), "a lock of 2020 is older than 30 minutes");
    }

    #[test]
    fn a_leftover_lock_of_this_process_is_removed() {
        let (_tmp, files) = folder();
        // This process's lock whose release failed: written, never known as held.
        let leftover = plant(&*files, &LockInfo::ours(true));
        let lock = take(&files, true, Duration::ZERO).unwrap();
        assert_eq!(names(&*files), vec![lock.name()], "{leftover} removed");
        // While held, the same process's lock is a conflict (another thread of it).
        assert!(take(&files, false, Duration::ZERO).is_err());
    }

    #[test]
    fn an_unreadable_lock_is_a_conflict() {
        let (_tmp, files) = folder();
        let other = Sealer::new(&[1u8; 32], &[2u8; 16], &[3u8; 16]).unwrap();
        let (name, bytes) = other.encode(&other_host(false)).unwrap();
        files.write(&name, &bytes).unwrap();
        let refused = take(&files, false, Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("unreadable lock file"), "{refused}");
        // Nor is a file too large to be a lock read into memory.
        let (_tmp, files) = folder();
        files.write(&"a".repeat(64), &vec![0u8; 100_000]).unwrap();
        let refused = take(&files, false, Duration::ZERO)
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("too large to be a lock"), "{refused}");
    }

    #[test]
    fn the_second_look_comes_200_ms_after_the_lock_landed_and_sees_a_late_lock() {
        let (_tmp, files) = folder();
        let asked = Instant::now();
        let lock = take(&files, false, Duration::ZERO).unwrap();
        let settle = lock.settle();
        settle.pass().unwrap();
        assert!(
            asked.elapsed() >= SETTLE,
            "the second look waited out the settle"
        );
        drop(lock);

        // An exclusive lock of another host lands while ours settles.
        let lock = take(&files, false, Duration::ZERO).unwrap();
        let settle = lock.settle();
        let late = plant(&*files, &other_host(true));
        let refused = settle.pass().unwrap_err();
        assert!(refused.contains("an exclusive lock of"), "{refused}");
        assert!(
            settle.conflict().is_some(),
            "a conflict, for the engine's retry"
        );
        assert!(settle.pass().is_err(), "and for every later write");
        drop(lock);
        assert_eq!(names(&*files), vec![late], "ours removed at the end");
    }

    #[test]
    fn a_held_lock_is_refreshed_and_the_old_file_removed() {
        let (_tmp, files) = folder();
        let lock = acquire(
            files.clone(),
            sealer(),
            Mode::Shared,
            Path::new("test"),
            Duration::ZERO,
            Duration::from_millis(300),
        )
        .unwrap();
        let first = lock.name();
        // Refreshed every 300 ms: wait for one (a loaded machine may start the refresher late).
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        while lock.name() == first && std::time::Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Listed while holding what the refresher holds for a whole refresh: never mid-swap.
        let current = lock.current.lock().unwrap();
        assert_ne!(first, *current, "refreshed");
        assert_eq!(
            names(&*files),
            vec![current.clone()],
            "one lock file at a time"
        );
        drop(current);
        drop(lock);
        assert!(names(&*files).is_empty());
    }
}
