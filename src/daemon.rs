//! The daemon (`backplan run`): one loop that reconciles the host with the file, then sleeps
//! until the next deadline (daily slot, expiry, retry) or an event (the file changed, SIGHUP,
//! the test clock moved), with no polling. The control socket answers queries meanwhile.
//!
//! Like mini-redis, [`run`] takes its shutdown signal as a parameter, so tests can run the real
//! daemon in-process; blocking work (the engine, sled) goes to `spawn_blocking`.
//!
//! **An invalid or deleted file changes nothing**: the last valid one stays in force and the
//! problem is shown by `status`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::apply::Executor;
use crate::config::Config;
use crate::engine::{Engine, ProgressSink, RusticEngine};
use crate::plan::{PlanOptions, planner};
use crate::query::{Answer, Context, Query};
use crate::state::Store;

/// Where "now" comes from: the system clock, or (tests) a file holding an RFC 3339 time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// The longest the loop sleeps before reading the time again: a sleep runs on the
    /// monotonic clock, which neither follows steps of the wall clock nor counts a suspend.
    fn recheck(&self) -> Duration {
        Duration::from_secs(60)
    }
}

pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
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

pub struct Settings {
    pub config: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// A file whose changes wake the loop (the test clock).
    pub clock_file: Option<PathBuf>,
    /// How long a stop waits for the operation under way before leaving it to recovery.
    pub grace: Duration,
}

/// Why the loop runs a reconcile (logged with each run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    FileChanged,
    Reload,
    Deadline,
    /// Something failed earlier: tried again (with back-off).
    Retry,
    /// The previous run did work; what it made due is done at once.
    FollowUp,
}

impl Reason {
    /// Shown by `status` while the reconcile runs.
    fn label(self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::FileChanged => "file changed",
            Reason::Reload => "reload",
            Reason::Deadline => "scheduled",
            Reason::Retry => "retry",
            Reason::FollowUp => "follow-up",
        }
    }

    /// The operator asked for this one: hooks and restores may run.
    fn operator_caused(self) -> bool {
        matches!(self, Reason::Start | Reason::FileChanged | Reason::Reload)
    }
}

/// What the control socket and the status line see.
struct Shared {
    config: RwLock<Option<Arc<Config>>>,
    /// Rendered diagnostics of the file on disk when it is invalid, or why it cannot be read.
    config_error: RwLock<Option<String>>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// What the loop is doing (`reconciling (start)`, `waiting; next run ...`), for `status`.
    activity: RwLock<String>,
    engine: Arc<dyn Engine>,
    /// The outcome of the last verification (daily, or asked for), for `status`.
    last_verify: RwLock<Option<String>>,
    /// Held while a plan is carried out: the loop's reconciles and approved plans (from the
    /// control socket) run one at a time.
    work: std::sync::Mutex<()>,
}

impl Shared {
    fn set_activity(&self, what: String) {
        *self.activity.write().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// Verifies the repositories against the records (blocking): the report, and whether it
    /// found problems. The outcome is kept for `status`.
    fn verify(&self, cfg: &Config, subset: f64) -> (String, bool) {
        let mut out = Vec::new();
        let problems = match self.store.load() {
            Ok(rec) => crate::cli::verify::check(cfg, &rec, self.engine.as_ref(), subset, &mut out),
            Err(e) => {
                out.extend(format!("cannot read the state: {e}\n").bytes());
                1
            }
        };
        let report = String::from_utf8_lossy(&out).into_owned();
        for line in report.lines() {
            if problems > 0 {
                tracing::error!("verify: {line}");
            } else {
                tracing::info!("verify: {line}");
            }
        }
        let outcome = if problems == 0 {
            format!("OK ({subset}% of the data read back)")
        } else {
            format!("{problems} problem(s); see `backplan verify` or the log")
        };
        *self.last_verify.write().unwrap_or_else(|p| p.into_inner()) = Some(format!(
            "{}: {outcome}",
            crate::plan::fmt_time(&self.clock.now())
        ));
        (report, problems > 0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("control socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watching {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Watcher events that wake the loop (SIGHUP comes through the `reload` channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    File,
    Clock,
}

/// Runs the daemon until `shutdown` completes. `reload` delivers SIGHUP (or any request to
/// re-read the file).
pub async fn run(
    s: Settings,
    mut reload: mpsc::Receiver<()>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // The file must be valid at start: there is no last good one yet.
    let loaded = crate::config::load(&s.config).map_err(|e| DaemonError::Config(e.to_string()))?;
    let cfg = Arc::new(loaded.config);
    for w in &loaded.warnings {
        tracing::warn!("{}: {}", s.config.display(), w.message);
    }
    // A CLI command reading the state holds it for a moment: wait for it, not for a second
    // daemon (that one keeps it, and this start fails after 10 s).
    let store = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(&cfg.daemon.state_dir) {
                Err(crate::state::StateError::Locked { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break Arc::new(other?),
            }
        }
    };
    let engine: Arc<dyn Engine> = Arc::new(RusticEngine::new());
    let shared = Arc::new(Shared {
        config: RwLock::new(Some(cfg.clone())),
        config_error: RwLock::new(None),
        store: store.clone(),
        clock: s.clock.clone(),
        activity: RwLock::new("starting".into()),
        engine: engine.clone(),
        last_verify: RwLock::new(None),
        work: std::sync::Mutex::new(()),
    });
    let (wake_tx, mut wake) = mpsc::channel::<Wake>(64);
    let _watcher = watch(&s.config, s.clock_file.as_deref(), wake_tx.clone())?;
    let socket = serve_control(&cfg.daemon.control_socket, shared.clone())?;
    // Serving: recovery and the first reconcile can take hours, systemd must not wait for them.
    sd_notify("READY=1\nSTATUS=starting: resolving interrupted work, then reconciling");
    let stop = Arc::new(AtomicBool::new(false));
    let mut last_text = crate::config::read_text(&s.config).unwrap_or_default();
    tokio::pin!(shutdown);

    let mut reason = Some(Reason::Start);
    let mut recovered = false;
    let mut retry = Backoff::default();
    let mut follow_ups = 0;
    // The day of the last daily verification (`schedule.verify`, after the slot's backups).
    let mut verified_on = None;
    loop {
        let mut reason_now = None;
        // 1. Reconcile, when something asked for it.
        let cfg = shared
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let (Some(cfg), Some(reason)) = (cfg, reason.take()) {
            tracing::info!(reason = ?reason, "reconciling");
            shared.set_activity(format!("reconciling ({})", reason.label()));
            crate::heartbeat::set_busy(true);
            let now = s.clock.now();
            let today = planner::local_date(&cfg.schedule, now);
            let verify = reason == Reason::Deadline
                && verified_on != Some(today)
                && now >= planner::slot_at(&cfg.schedule, today);
            if verify {
                verified_on = Some(today);
            }
            let work = tokio::task::spawn_blocking({
                let (store, engine, clock, stop) =
                    (store.clone(), engine.clone(), s.clock.clone(), stop.clone());
                let (cfg, shared) = (cfg.clone(), shared.clone());
                move || {
                    let _work = shared.work.lock().unwrap_or_else(|p| p.into_inner());
                    let out = reconcile(
                        &cfg,
                        &store,
                        engine.as_ref(),
                        clock.as_ref(),
                        reason,
                        !recovered,
                        stop,
                    );
                    if verify {
                        shared.verify(&cfg, cfg.schedule.verify.0);
                    }
                    out
                }
            });
            tokio::pin!(work);
            tokio::select! {
                r = &mut work => {
                    crate::heartbeat::set_busy(false);
                    match r {
                        Ok(out) => {
                            tracing::info!("{}", out.summary);
                            recovered |= out.recovered;
                            if out.failed {
                                let at = retry.failed(s.clock.now());
                                tracing::warn!("what failed is tried again at {}", crate::plan::fmt_time(&at));
                            } else {
                                retry = Backoff::default();
                            }
                            // Work done can make more work due at once (a new backup lets an
                            // older one expire): look again, a bounded number of times.
                            if out.worked && follow_ups < 2 {
                                follow_ups += 1;
                                reason_now = Some(Reason::FollowUp);
                            } else {
                                follow_ups = 0;
                            }
                        }
                        Err(e) => {
                            tracing::error!("reconcile stopped unexpectedly: {e}");
                            retry.failed(s.clock.now());
                        }
                    }
                },
                () = &mut shutdown => {
                    stop.store(true, Ordering::SeqCst);
                    sd_notify("STOPPING=1\nSTATUS=stopping: waiting for the operation under way");
                    // A running hook is waited for longer (it is killed at its own limit,
                    // within the unit's stop timeout).
                    let started = std::time::Instant::now();
                    let mut limit = s.grace;
                    let finished = loop {
                        if tokio::time::timeout(Duration::from_millis(100), &mut work).await.is_ok() {
                            break true;
                        }
                        if crate::apply::hooks::running() {
                            limit = limit.max(crate::apply::hooks::STOP_GRACE + Duration::from_secs(2));
                        }
                        if started.elapsed() >= limit {
                            break false;
                        }
                    };
                    if !finished {
                        tracing::warn!("stopping during an operation: it is resumed or discarded safely at the next start");
                    }
                    break;
                }
            }
        }
        if reason_now.is_some() {
            reason = reason_now;
            continue;
        }
        // 2. Wait until the next deadline or an event. The records do not change meanwhile
        // (only this loop writes them); the clock is read again at least every
        // `Clock::recheck`, so a step of the wall clock or a suspend never sleeps past a slot.
        let cfg = shared
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Loading the records is blocking I/O: not on the async workers, which serve the
        // control socket meanwhile.
        let (deadline, instances) = tokio::task::spawn_blocking({
            let (store, clock) = (store.clone(), s.clock.clone());
            move || {
                let rec = store.load().unwrap_or_default();
                let next = cfg
                    .as_ref()
                    .map(|c| planner::next_deadline(c, &rec, clock.now()));
                (next, rec.instances.len())
            }
        })
        .await
        .unwrap_or((None, 0));
        let next = match (deadline, retry.at) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        let error = shared
            .config_error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let next_text = next
            .map(|t| crate::plan::fmt_time(&t))
            .unwrap_or_else(|| "-".into());
        shared.set_activity(format!(
            "waiting; next run {next_text}{}",
            if retry.at.is_some() {
                " (to try again what failed)"
            } else {
                ""
            }
        ));
        sd_notify(&format!(
            "STATUS={} instances{}; next run {next_text}",
            instances,
            if error {
                "; the file on disk is INVALID, the last valid one is in force"
            } else {
                ""
            },
        ));
        let woke = loop {
            let now = s.clock.now();
            if let Some(t) = next
                && t <= now
            {
                break Some(if retry.at.is_some_and(|r| r <= now) {
                    Reason::Retry
                } else {
                    Reason::Deadline
                });
            }
            let sleep = next
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::MAX)
                .min(s.clock.recheck());
            tracing::debug!(?sleep, "waiting");
            tokio::select! {
                () = tokio::time::sleep(sleep) => {},
                Some(()) = reload.recv() => break Some(Reason::Reload),
                Some(w) = wake.recv() => match w {
                    Wake::File => break Some(Reason::FileChanged),
                    // The test clock moved: read it again.
                    Wake::Clock => {},
                },
                () = &mut shutdown => break None,
            }
        };
        let Some(woke) = woke else {
            sd_notify("STOPPING=1");
            break;
        };
        reason = if matches!(woke, Reason::FileChanged | Reason::Reload) {
            // Debounce: editors write in several steps.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(150), wake.recv()).await
            {}
            // Unchanged, invalid or missing: nothing to reconcile.
            reload_file(&s.config, &mut last_text, &shared, woke == Reason::Reload).then_some(woke)
        } else {
            Some(woke)
        };
    }
    drop(socket);
    let _ = std::fs::remove_file(&cfg.daemon.control_socket);
    tracing::info!("stopped");
    Ok(())
}

/// When to try again what failed: 1 minute after the first failure, doubling up to an hour,
/// until a reconcile succeeds.
#[derive(Debug, Default)]
struct Backoff {
    at: Option<DateTime<Utc>>,
    failures: u32,
}

impl Backoff {
    const FIRST: i64 = 60;
    const MAX: i64 = 3600;

    /// A reconcile failed: when to try again. A try already planned stands (a follow-up
    /// that fails the same way does not push it back).
    fn failed(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        if let Some(at) = self.at.filter(|at| *at > now) {
            return at;
        }
        let wait = (Self::FIRST << self.failures.min(10)).min(Self::MAX);
        self.failures += 1;
        let at = now + chrono::Duration::seconds(wait);
        self.at = Some(at);
        at
    }
}

/// Re-reads the file. Returns whether a reconcile is needed: the content changed (or a reload
/// was asked for) and it is valid. An invalid or missing file keeps the last valid one.
fn reload_file(path: &Path, last_text: &mut String, shared: &Shared, forced: bool) -> bool {
    let text = match crate::config::read_text(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}; the last valid configuration stays in force");
            *shared
                .config_error
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some(format!(
                "{e}; the last valid configuration stays in force\n"
            ));
            return false;
        }
    };
    if text == *last_text && !forced {
        return false; // an event that left the content unchanged
    }
    *last_text = text.clone();
    sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    let result = match crate::config::parse(path, &text) {
        Ok((cfg, _)) => {
            let old = shared
                .config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if old
                .as_ref()
                .is_some_and(|o| o.daemon.state_dir != cfg.daemon.state_dir)
            {
                tracing::warn!("state_dir changed in the file; it takes effect at the next start");
            }
            *shared.config.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(cfg));
            *shared
                .config_error
                .write()
                .unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!("{}: reloaded", path.display());
            true
        }
        Err(diags) => {
            let rendered = crate::diagnostic::render(&path.display().to_string(), &text, &diags);
            tracing::error!(
                "{}: invalid, the last valid configuration stays in force:\n{rendered}",
                path.display()
            );
            *shared
                .config_error
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some(rendered);
            false
        }
    };
    sd_notify("READY=1");
    result
}

/// What one reconcile did.
struct Outcome {
    summary: String,
    /// Something was done: look again at once for what it made due.
    worked: bool,
    /// Something failed that is tried again on its own (with back-off).
    failed: bool,
    /// Interrupted work is resolved (this run or an earlier one).
    recovered: bool,
}

/// One reconcile: resolve interrupted work (until that succeeds), plan, apply. Runs on a
/// blocking thread. Hooks and restores run only on a reconcile the operator caused (start,
/// a changed file, a reload): one that failed is never run again on its own.
fn reconcile(
    cfg: &Config,
    store: &Store,
    engine: &dyn Engine,
    clock: &dyn Clock,
    reason: Reason,
    recover: bool,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let now_fn = || clock.now();
    let mut exec = Executor::new(cfg, store, engine, Arc::new(LogProgress), &now_fn);
    exec.stop = Some(stop);
    let outcome = |summary: String, worked, failed| Outcome {
        summary,
        worked,
        failed,
        recovered: true,
    };
    // At a start, and after the store failed (a full disk): work left `running` is resolved.
    if (recover || store.take_reopened())
        && let Err(e) = exec.recover()
    {
        return Outcome {
            summary: format!("recovery failed: {e}"),
            worked: false,
            failed: true,
            recovered: false,
        };
    }
    let rec = match store.load() {
        Ok(r) => r,
        Err(e) => return outcome(format!("cannot read the state: {e}"), false, true),
    };
    let mut plan = crate::plan::plan(cfg, &rec, clock.now(), PlanOptions::default());
    if !reason.operator_caused() {
        plan.actions.retain(|a| {
            let rerun = match &a.details {
                crate::plan::Details::UpdateInstance { on_update, .. } => !on_update.is_empty(),
                crate::plan::Details::Restore { .. } => true,
                _ => false,
            };
            if rerun {
                tracing::info!(
                    address = %a.address,
                    "not run again on its own: it runs a hook or a restore; change the file or reload to run it"
                );
            }
            !rerun
        });
    }
    for r in &plan.refusals {
        tracing::error!(address = %r.address, rule = r.rule, at = %r.location, "refused: {}; fix: {}", r.message, r.fix);
    }
    if !plan.refusals.is_empty() && plan.due.is_empty() {
        return outcome(
            format!(
                "{} refusal(s): nothing from the file applied",
                plan.refusals.len()
            ),
            false,
            false,
        );
    }
    if !plan.has_changes() {
        return outcome("nothing to do".into(), false, false);
    }
    if let Err(e) = exec.run(&plan) {
        return outcome(format!("apply stopped: {e}"), false, true);
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    outcome(
        format!("applied: {done} done, {failed} failed"),
        done > 0,
        exec.report.retriable_failures() > 0,
    )
}

/// Progress of long operations as log lines.
struct LogProgress;
impl ProgressSink for LogProgress {
    fn update(&self, phase: &str, done: u64, total: Option<u64>) {
        // The CLI's terminal sink throttles; here, a line per 5 % is enough.
        if let Some(t) = total.filter(|t| *t > 0) {
            let pct = done * 100 / t;
            let prev = (done.saturating_sub(1)) * 100 / t;
            if pct / 5 != prev / 5 || done >= t {
                tracing::info!("{phase}: {pct}% of {}", crate::apply::human_bytes(t));
            }
        }
    }
}

/// Watches the file's folder (editors and git save by renaming into place) and the test
/// clock file; events for other names are ignored.
fn watch(
    config: &Path,
    clock_file: Option<&Path>,
    tx: mpsc::Sender<Wake>,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    use notify::{RecursiveMode, Watcher};
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let config = absolute(config);
    let clock = clock_file.map(absolute);
    let config_name = config.file_name().map(|n| n.to_os_string());
    let clock_name = clock
        .as_ref()
        .and_then(|c| c.file_name().map(|n| n.to_os_string()));
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        for p in &ev.paths {
            let name = p.file_name().map(|n| n.to_os_string());
            if name.is_some() && name == config_name {
                let _ = tx.try_send(Wake::File);
            } else if name.is_some() && name == clock_name {
                let _ = tx.try_send(Wake::Clock);
            }
        }
    })
    .map_err(|source| DaemonError::Watch {
        path: config.clone(),
        source,
    })?;
    let mut dirs = vec![config.parent().unwrap_or(Path::new("/")).to_path_buf()];
    if let Some(c) = &clock {
        dirs.push(c.parent().unwrap_or(Path::new("/")).to_path_buf());
    }
    dirs.dedup();
    for d in dirs {
        watcher
            .watch(&d, RecursiveMode::NonRecursive)
            .map_err(|source| DaemonError::Watch {
                path: d.clone(),
                source,
            })?;
    }
    Ok(watcher)
}

/// Connections served at once; more wait in the listen backlog, so a flood of idle clients
/// costs the daemon no descriptors.
const MAX_CONNECTIONS: usize = 64;
/// A request must arrive whole within this time of the connection (or of the previous reply),
/// and a reply must be taken within it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the control socket (mode 0660): one JSON query per line, one JSON answer per line.
/// A malformed request gets an error reply; a client never disturbs the daemon: a request is
/// read at most [`crate::config::MAX_FILE_BYTES`] long, at most [`MAX_CONNECTIONS`] are
/// served at once, and an idle one is closed after [`CLIENT_TIMEOUT`].
fn serve_control(
    path: &Path,
    shared: Arc<Shared>,
) -> Result<tokio::task::JoinHandle<()>, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| DaemonError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a daemon that died: nobody answers on it.
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            // A slot first: beyond the limit, clients wait in the kernel's backlog.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(50);
                    stream
                }
                Err(e) => {
                    // Out of descriptors (EMFILE) and the like: wait, never spin.
                    tracing::warn!("control socket: accept failed: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = serve_client(stream, shared).await;
                drop(slot);
            });
        }
    }))
}

async fn serve_client(stream: tokio::net::UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let limit = crate::config::MAX_FILE_BYTES as usize;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        // Never more than the limit (and the newline) in memory, whatever the client sends.
        let mut line = Vec::new();
        let got = tokio::time::timeout(
            CLIENT_TIMEOUT,
            (&mut read)
                .take(limit as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        let reply = match got {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Ok(()), // idle, broken or closed
            Ok(Ok(_)) if line.len() > limit => crate::control::Reply::Error {
                error: format!("request longer than {limit} bytes; the connection is closed"),
            },
            Ok(Ok(_)) => match crate::control::parse_request(&String::from_utf8_lossy(&line)) {
                Err(error) => crate::control::Reply::Error { error },
                Ok(q) => {
                    let shared = shared.clone();
                    match tokio::task::spawn_blocking(move || answer(&q, &shared)).await {
                        Ok(a) => crate::control::Reply::Answer(a),
                        Err(e) => crate::control::Reply::Error {
                            error: e.to_string(),
                        },
                    }
                }
            },
        };
        let close = line.len() > limit;
        let mut out = serde_json::to_string(&reply).expect("replies serialise");
        out.push('\n');
        tokio::time::timeout(CLIENT_TIMEOUT, write.write_all(out.as_bytes()))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if close {
            return Ok(());
        }
    }
}

fn answer(q: &Query, shared: &Shared) -> Answer {
    if let Query::Apply {
        allow_mass_removal,
        approved,
    } = q
    {
        return approve(shared, *allow_mass_removal, approved);
    }
    let cfg = shared
        .config
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let (Query::Verify { subset }, Some(cfg)) = (q, &cfg) {
        let (report, problems) = shared.verify(cfg, *subset);
        return Answer {
            exit: u8::from(problems),
            stdout: report,
            stderr: String::new(),
        };
    }
    let error = shared
        .config_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // A store that cannot be read (a full disk) still answers with what it held last.
    let (rec, stale) = match shared.store.load() {
        Ok(r) => (r, None),
        Err(e) => match shared.store.last_read() {
            Some(r) => (
                r,
                Some(format!(
                    "warning: the state store cannot be read ({e}); showing what it held when last read\n"
                )),
            ),
            None => {
                return Answer {
                    exit: 1,
                    stdout: String::new(),
                    stderr: format!("error: {e}\n"),
                };
            }
        },
    };
    let journal = || shared.store.journal_entries().map_err(|e| e.to_string());
    let mut a = crate::query::answer(
        q,
        &Context {
            config: cfg.as_deref(),
            config_error: error.as_deref(),
            recorded: &rec,
            journal: &journal,
            now: shared.clock.now(),
        },
    );
    if let Some(w) = stale {
        a.stderr.insert_str(0, &w);
    }
    if matches!(q, Query::Status { json: false }) {
        let activity = shared.activity.read().unwrap_or_else(|p| p.into_inner());
        let verified = shared.last_verify.read().unwrap_or_else(|p| p.into_inner());
        let verified = verified
            .as_ref()
            .map(|v| format!("Last verify: {v}\n"))
            .unwrap_or_default();
        a.stdout = format!("Daemon: {activity}\n{verified}\n{}", a.stdout);
    }
    a
}

/// `apply` with the daemon running: carries out the plan of the file in force once, with the
/// options the operator gave (`--allow-mass-removal` approves one refused mass removal), if its
/// actions are the ones the operator saw and approved. Whoever may use the socket may do this.
fn approve(shared: &Shared, allow_mass_removal: bool, approved: &str) -> Answer {
    let refuse = |why: String| Answer {
        exit: 1,
        stdout: String::new(),
        stderr: format!("error: {why}\n"),
    };
    // After the loop's reconcile under way, if any; the file in force and the state are read,
    // and the plan made and carried out, under the same lock.
    let _work = shared.work.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = shared
        .config
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let error = shared
        .config_error
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(cfg) = cfg else {
        return refuse("the daemon has no valid configuration".into());
    };
    if let Some(e) = error {
        return refuse(format!(
            "the file on disk is invalid, so the daemon keeps the last valid one; nothing was applied. Fix the file, then run apply again:\n{e}"
        ));
    }
    let rec = match shared.store.load() {
        Ok(r) => r,
        Err(e) => return refuse(e.to_string()),
    };
    let plan = crate::plan::plan(
        &cfg,
        &rec,
        shared.clock.now(),
        PlanOptions { allow_mass_removal },
    );
    if crate::control::approved_actions(&plan) != approved {
        return refuse(
            "the daemon's plan is not the one shown (the file in force or the recorded state changed since); nothing was applied. Run apply again to see the current plan".into(),
        );
    }
    if !plan.refusals.is_empty() {
        return refuse("the plan has refusals; nothing was applied".into());
    }
    tracing::info!(
        allow_mass_removal,
        "carrying out a plan approved on the control socket"
    );
    let now = || shared.clock.now();
    let mut exec = Executor::new(
        &cfg,
        &shared.store,
        shared.engine.as_ref(),
        Arc::new(LogProgress),
        &now,
    );
    if let Err(e) = exec.run(&plan) {
        return refuse(format!("apply stopped: {e}"));
    }
    let mut stdout = String::new();
    for (outcome, address, what) in &exec.report.lines {
        let tag = match outcome {
            crate::apply::Outcome::Done => "ok  ",
            crate::apply::Outcome::Failed | crate::apply::Outcome::FailedForGood => "FAIL",
        };
        stdout += &format!("  {tag} {address}: {what}\n");
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    stdout += &format!("\nApply complete (by the daemon): {done} done, {failed} failed.\n");
    Answer {
        exit: u8::from(failed > 0),
        stdout,
        stderr: String::new(),
    }
}

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
fn monotonic_usec() -> u64 {
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
