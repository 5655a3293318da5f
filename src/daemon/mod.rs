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
mod clock;
mod control;
pub use control::MAX_REQUEST_BYTES;
mod reconcile;
mod storage_check;
mod systemd;
mod wall;
mod watch;
mod web;

pub use clock::{Clock, FileClock, SystemClock};
use control::*;
use reconcile::*;
use systemd::monotonic_usec;
pub use systemd::{sd_notify, spawn_watchdog};
use watch::*;

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
            Reason::Reload => "reload asked (SIGHUP)",
            Reason::Deadline => "expiry, deletion or retry due",
            Reason::Retry => "trying again what failed",
            Reason::FollowUp => "follow-up of the last run",
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
    /// The daemon's counters, for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Held while the status page is made (one at a time).
    page: std::sync::Mutex<()>,
    /// `[notify]`: terminal events, delivered in the background.
    notify: Arc<crate::notify::Notifier>,
    /// The last check of each external storage (at start, and when the file changes it).
    storage_checks: RwLock<std::collections::BTreeMap<String, storage_check::StorageCheck>>,
}

/// A copy of what `lock` holds; a poisoned lock (a panicked writer) still gives its value.
fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Shared {
    fn set_activity(&self, what: String) {
        *self.activity.write().unwrap_or_else(|p| p.into_inner()) = what;
    }

    /// Verifies the repositories against the records (blocking): the report, and whether it
    /// found problems. The outcome is kept for `status`.
    fn verify(&self, cfg: &Config, subset: f64) -> (String, bool) {
        let (report, failed, _) = self.verify_full(cfg, subset);
        (report, failed)
    }

    /// [`Shared::verify`] with what was found (`None` when the state could not be read).
    fn verify_full(
        &self,
        cfg: &Config,
        subset: f64,
    ) -> (String, bool, Option<crate::verify::Verified>) {
        let started = std::time::Instant::now();
        tracing::info!(op = "verify", subset, "verify started");
        let mut out = Vec::new();
        let (verified, problems) = match self.store.load() {
            Ok(rec) => {
                let v = crate::verify::run(cfg, &rec, self.engine.as_ref(), subset);
                v.write_text(subset, &mut out);
                let n = v.problems;
                (Some(v), n)
            }
            Err(e) => {
                out.extend(format!("cannot read the state: {e}\n").bytes());
                (None, 1)
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
        self.metrics.verified(self.clock.now(), problems == 0);
        let took = started.elapsed();
        tracing::info!(op = "verify", subset, problems, duration_s = %format!("{:.3}", took.as_secs_f64()), "verify finished");
        self.metrics
            .operation("verify", "-", problems == 0, took, None);
        if problems > 0 {
            let e = crate::notify::Event::verify_failed(problems, &report, took, self.clock.now());
            self.notify.emit(e);
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
        (report, problems > 0, verified)
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
    #[error("metrics_listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
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
    /// The file changed (written in place, created, removed, ...).
    File,
    /// Another file was renamed over the file: it is whole, no debounce is needed.
    FileReplaced,
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
    // Keys given by `password_file` are checked by validation (a warning above); the keys
    // backplan generated are checked here, at every start.
    for name in cfg.storages.keys() {
        if cfg.storages[name].password_file.is_some() {
            continue;
        }
        let key = crate::storage::generated_key_path(&cfg, name);
        if let Some(mode) = loose_mode(&key) {
            tracing::warn!(
                "the repository key {} can be read by group or others (mode {mode:o}); run `chmod 600 {}`",
                key.display(),
                key.display()
            );
        }
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
    // The master keys of generated keys are kept beside them, as the CLI keeps them: the
    // first backup after a start skips the scrypt derivation (0.4 s and 128 MiB).
    let engine: Arc<dyn Engine> =
        Arc::new(RusticEngine::new().keep_master_keys_of(&cfg.daemon.state_dir.join("keys")));
    let shared = Arc::new(Shared {
        config: RwLock::new(Some(cfg.clone())),
        config_error: RwLock::new(None),
        store: store.clone(),
        clock: s.clock.clone(),
        activity: RwLock::new("starting".into()),
        engine: engine.clone(),
        last_verify: RwLock::new(None),
        work: std::sync::Mutex::new(()),
        metrics: Arc::new(crate::metrics::Metrics::new(s.clock.now())),
        page: std::sync::Mutex::new(()),
        notify: crate::notify::Notifier::start(&cfg),
        storage_checks: RwLock::new(Default::default()),
    });
    storage_check::start(&shared, &cfg, storage_check::to_check(None, &cfg, true));
    shared.metrics.config_loaded(s.clock.now());
    let (wake_tx, mut wake) = mpsc::channel::<Wake>(64);
    let _watcher = watch(&s.config, s.clock_file.as_deref(), wake_tx.clone())?;
    let socket = serve_control(&cfg.daemon.control_socket, shared.clone())?;
    tracing::info!(
        "backplan {} started: file {}, state {}, socket {}; watching {} for changes{}",
        env!("CARGO_PKG_VERSION"),
        s.config.display(),
        cfg.daemon.state_dir.display(),
        cfg.daemon.control_socket.display(),
        s.config.display(),
        s.clock_file
            .as_ref()
            .map(|c| format!(" and the test clock {}", c.display()))
            .unwrap_or_default()
    );
    let mut web = web::start_or_log(cfg.daemon.metrics_listen, &shared);
    // Serving: recovery and the first reconcile can take hours, systemd must not wait for them.
    sd_notify("READY=1\nSTATUS=starting: resolving interrupted work, then reconciling");
    let stop = Arc::new(AtomicBool::new(false));
    let mut last_text = crate::config::read_text(&s.config).unwrap_or_default();
    // What the last plans computed per instance: reconciles and deadlines use it.
    let plan_cache = Arc::new(std::sync::Mutex::new(planner::PlanCache::default()));
    tokio::pin!(shutdown);

    let mut reason = Some(Reason::Start);
    let mut recovered = false;
    let mut retry = Backoff::default();
    let mut follow_ups = 0;
    // The day of the last daily verification (`schedule.verify`, after the slot's backups).
    let mut verified_on = None;
    // The day of the last trim of old tombstones and journal entries (once a day, see `trim`).
    let mut trimmed_on = None;
    // When the last reconcile started: a deadline past the next daily slot after it is that slot.
    let mut last_run: Option<chrono::DateTime<chrono::Utc>> = None;
    // The system clock is waited on with a wall-clock timer (no periodic wake while idle);
    // a test clock, or a system without timerfd, re-reads the time every `Clock::recheck`.
    let wall = s
        .clock
        .is_wall()
        .then(|| {
            wall::WallTimer::new()
                .inspect_err(|e| {
                    tracing::warn!(
                        "no wall-clock timer ({e}): the time is read again every minute while idle"
                    )
                })
                .ok()
        })
        .flatten();
    loop {
        let mut reason_now = None;
        // 1. Reconcile, when something asked for it.
        let cfg = read(&shared.config);
        if let (Some(cfg), Some(reason)) = (cfg, reason.take()) {
            let now = s.clock.now();
            let why = match reason {
                Reason::Deadline
                    if last_run.is_some_and(|t| planner::next_slot(&cfg.schedule, t) <= now) =>
                {
                    "daily slot due"
                }
                r => r.label(),
            };
            last_run = Some(now);
            tracing::info!("reconciling: {why}");
            shared.set_activity(format!("reconciling ({why})"));
            crate::heartbeat::set_busy(true);
            let today = planner::local_date(&cfg.schedule, now);
            let verify = reason == Reason::Deadline
                && verified_on != Some(today)
                && now >= planner::slot_at(&cfg.schedule, today);
            if verify {
                verified_on = Some(today);
            }
            let trim = trimmed_on != Some(today);
            if trim {
                trimmed_on = Some(today);
            }
            let work = tokio::task::spawn_blocking({
                let (store, engine, clock, stop) =
                    (store.clone(), engine.clone(), s.clock.clone(), stop.clone());
                let (cfg, shared, plan_cache) = (cfg.clone(), shared.clone(), plan_cache.clone());
                move || {
                    let _work = shared.work.lock().unwrap_or_else(|p| p.into_inner());
                    let out = reconcile(
                        &cfg,
                        &plan_cache,
                        &store,
                        engine.as_ref(),
                        clock.as_ref(),
                        reason,
                        !recovered,
                        stop,
                        &shared.metrics,
                        &shared.notify,
                    );
                    shared.notify.run_ended();
                    if out.worked || reason == Reason::Start {
                        crate::metrics::measure_repositories(&cfg, &shared.metrics);
                    }
                    if verify {
                        shared.verify(&cfg, cfg.schedule.verify.0);
                    }
                    if trim {
                        trim_state(&cfg, &store, clock.now());
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
        let cfg = read(&shared.config);
        // The records are in memory, but read from the store again after an error (blocking
        // I/O): not on the async workers, which serve the control socket meanwhile.
        let (deadline, instances) = tokio::task::spawn_blocking({
            let (store, clock, plan_cache) = (store.clone(), s.clock.clone(), plan_cache.clone());
            move || {
                // Deadlines after the start of the last run: one that passed while it ran (a
                // slot, an expiry) is due at once, not at the next one after now.
                let since = last_run.unwrap_or_else(|| clock.now());
                let Ok((rec, changed)) = store.load_changes() else {
                    let next = cfg
                        .as_ref()
                        .map(|c| planner::next_deadline(c, &Default::default(), since));
                    return (next, 0);
                };
                // From the cache, brought up to date with what the last run wrote.
                let mut cache = plan_cache.lock().unwrap_or_else(|p| p.into_inner());
                let next = match &cfg {
                    Some(c) => {
                        cache.update(c, &rec, &changed);
                        Some(cache.next_deadline(c, since))
                    }
                    // The changes taken are not known to it any more.
                    None => {
                        *cache = planner::PlanCache::default();
                        None
                    }
                };
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
        let mut replaced = false;
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
            let timer = async {
                match (&wall, next) {
                    (Some(w), Some(t)) => {
                        if let Err(e) = w.until(t).await {
                            tracing::warn!("wall-clock timer: {e}");
                            tokio::time::sleep(sleep).await;
                        }
                    }
                    // Nothing is due, ever: nothing to wake for but events.
                    (Some(_), None) => std::future::pending().await,
                    (None, _) => tokio::time::sleep(sleep).await,
                }
            };
            tokio::select! {
                () = timer => {},
                Some(()) = reload.recv() => break Some(Reason::Reload),
                Some(w) = wake.recv() => match w {
                    Wake::File => break Some(Reason::FileChanged),
                    Wake::FileReplaced => {
                        replaced = true;
                        break Some(Reason::FileChanged);
                    }
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
            tracing::debug!(replaced, "woken: {woke:?}");
            // Debounce: editors write in several steps. A file renamed into place (git,
            // `sed -i`, most tools, many editors) is whole: read at once. Events after it stay
            // queued and wake the loop again, debounced; one already there means more is
            // being written: debounced now.
            if !replaced || wake.try_recv().is_ok() {
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(150), wake.recv()).await
                {
                }
            }
            tracing::debug!("debounced: reading the file");
            // Unchanged, invalid or missing: nothing to reconcile.
            let reloaded = reload_file(&s.config, &mut last_text, &shared, woke == Reason::Reload);
            if reloaded {
                web::follow(&mut web, &shared);
            }
            reloaded.then_some(woke)
        } else {
            Some(woke)
        };
    }
    drop(socket);
    web.stop();
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
fn reload_file(path: &Path, last_text: &mut String, shared: &Arc<Shared>, forced: bool) -> bool {
    let text = match crate::config::read_text(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}; the last valid configuration stays in force");
            let e2 = crate::notify::Event::rejected(path, &e.to_string(), shared.clock.now());
            shared.notify.emit(e2);
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
            let old = read(&shared.config);
            // The store, the default repository, the generated keys and the socket all hang
            // off `state_dir`: a file that moves them is not mixed with the store this process
            // holds. It takes effect at the next start; meanwhile the last file stays in force.
            if let Some(o) = old.as_ref().filter(|o| {
                o.daemon.state_dir != cfg.daemon.state_dir
                    || o.daemon.control_socket != cfg.daemon.control_socket
            }) {
                let why = format!(
                    "{}: `state_dir` or `control_socket` changed (state {} -> {}, socket {} -> {}); they take effect at the next start (`systemctl restart backplan`), and until then the last valid configuration stays in force, without this file's other changes\n",
                    path.display(),
                    o.daemon.state_dir.display(),
                    cfg.daemon.state_dir.display(),
                    o.daemon.control_socket.display(),
                    cfg.daemon.control_socket.display()
                );
                tracing::warn!("{}", why.trim_end());
                *shared
                    .config_error
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Some(why);
                sd_notify("READY=1");
                return false;
            }
            shared.notify.configure(&cfg);
            // Storages added or changed (all of them on SIGHUP) are checked in the background.
            let checks = storage_check::to_check(old.as_deref(), &cfg, forced);
            let cfg = Arc::new(cfg);
            *shared.config.write().unwrap_or_else(|p| p.into_inner()) = Some(cfg.clone());
            storage_check::start(shared, &cfg, checks);
            shared.metrics.config_loaded(shared.clock.now());
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
            let e = crate::notify::Event::rejected(path, &rendered, shared.clock.now());
            shared.notify.emit(e);
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

/// The permission bits of `path` when group or others may read it.
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}
