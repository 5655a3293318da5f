//! Notifications (`[notify]`): the daemon's terminal events sent to a command (the event as
//! one JSON object on stdin), a webhook (the same JSON as a POST, retried with back-off) and
//! dead-man's-switch pings (healthchecks.io's `<url>/start`, `<url>`, `<url>/fail`).
//!
//! **Delivery never blocks the executor**: [`Notifier::emit`] only puts the event in a
//! bounded queue ([`QUEUE`]); one background thread delivers, with a time limit on every
//! command and request. A full queue drops the event (said once in the log), never waits.
//!
//! The URLs are secrets (a webhook's token, a check's id): read from their files when an
//! event is sent, and never logged; messages name a receiver by scheme and host only.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Config, Notify};
use crate::records::{BackupKind, BackupRecord, BackupStatus, RestoreRecord, RestoreStatus};

/// The event JSON's version: a field is added without changing it, never renamed or removed.
pub const FORMAT_VERSION: u32 = 1;
/// Events waiting for delivery at most; more are dropped (and said so, once).
pub const QUEUE: usize = 64;
/// How long the command may run before its process group is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// One HTTP request (connect to last byte).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of one webhook POST or ping, with a back-off of 1 s, 2 s, 4 s ... between them.
pub const ATTEMPTS: u32 = 4;
/// The longest message carried by an event (a rejected file's diagnostics, a verify report).
const MAX_MESSAGE: usize = 8 * 1024;

/// One terminal event, as sent (the documented shape: README, "Notifications").
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub format_version: u32,
    /// `backup_completed`, `backup_failed`, `daily_skipped`, `restore_completed`,
    /// `restore_failed`, `config_rejected`, `verify_failed`.
    pub event: &'static str,
    /// `success`, `failure` or `skipped`.
    pub outcome: &'static str,
    /// The instance backed up, or restored into.
    pub instance: Option<String>,
    pub backup_id: Option<String>,
    /// The backup's kind: `daily`, `on-demand`, `pre-update`, `pre-restore`.
    pub kind: Option<&'static str>,
    pub label: Option<String>,
    /// The plan address (`backup.contoso/before-import`, `restore.r1`, ...).
    pub address: Option<String>,
    pub message: String,
    /// When it ended (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    pub duration_seconds: Option<f64>,
    /// A backup's bytes read, a restore's backup size.
    pub bytes: Option<u64>,
    /// The host the daemon runs on.
    pub host: String,
}

impl Event {
    fn new(
        event: &'static str,
        outcome: &'static str,
        message: String,
        time: DateTime<Utc>,
    ) -> Self {
        let mut message = message;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …");
        }
        Event {
            format_version: FORMAT_VERSION,
            event,
            outcome,
            instance: None,
            backup_id: None,
            kind: None,
            label: None,
            address: None,
            message,
            time,
            duration_seconds: None,
            bytes: None,
            host: hostname(),
        }
    }

    fn of_backup(mut self, b: &BackupRecord, address: &str) -> Self {
        self.instance = Some(b.instance.clone());
        self.backup_id = Some(b.id.to_string());
        self.kind = Some(b.kind.as_str());
        self.label = Some(b.label.clone());
        self.address = Some(address.to_string());
        self
    }

    /// A backup reached its end: completed, failed, or (a missed daily slot) skipped.
    pub fn backup(
        b: &BackupRecord,
        address: &str,
        took: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Self {
        let (event, outcome, message) = match b.status {
            BackupStatus::Completed => (
                "backup_completed",
                "success",
                b.error.clone().unwrap_or_else(|| "backup completed".into()),
            ),
            BackupStatus::Skipped => (
                "daily_skipped",
                "skipped",
                b.error
                    .clone()
                    .unwrap_or_else(|| "daily slot skipped".into()),
            ),
            _ => (
                "backup_failed",
                "failure",
                b.error.clone().unwrap_or_else(|| "backup failed".into()),
            ),
        };
        let mut e = Event::new(event, outcome, message, now).of_backup(b, address);
        e.duration_seconds = took.map(|t| t.as_secs_f64());
        e.bytes = b
            .size_bytes
            .filter(|_| b.status == BackupStatus::Completed)
            .map(|s| s.read);
        e
    }

    /// A backup found interrupted at start (a crash, a stop): it failed; recovery takes it
    /// again.
    pub fn interrupted(b: &BackupRecord, address: &str, why: &str, now: DateTime<Utc>) -> Self {
        Event::new("backup_failed", "failure", why.to_string(), now).of_backup(b, address)
    }

    pub fn restore(
        r: &RestoreRecord,
        address: &str,
        took: Duration,
        bytes: Option<u64>,
        now: DateTime<Utc>,
    ) -> Self {
        let ok = r.status == RestoreStatus::Completed;
        let message = match (&r.error, ok) {
            (Some(e), true) => format!("{} now holds {}, but {e}", r.to, r.from),
            (None, true) => format!("{} now holds {}", r.to, r.from),
            (e, false) => format!(
                "restore failed, {} was left as it was: {}",
                r.to,
                e.as_deref().unwrap_or("")
            ),
        };
        let (event, outcome) = if ok {
            ("restore_completed", "success")
        } else {
            ("restore_failed", "failure")
        };
        let mut e = Event::new(event, outcome, message, now);
        e.instance = Some(r.to.clone());
        e.backup_id = r.backup_id.map(|id| id.to_string());
        e.address = Some(address.to_string());
        e.duration_seconds = Some(took.as_secs_f64());
        e.bytes = bytes;
        e
    }

    /// The file on disk was rejected (its diagnostics, or why it cannot be read); the last
    /// valid one stays in force.
    pub fn rejected(file: &Path, why: &str, now: DateTime<Utc>) -> Self {
        let mut e = Event::new(
            "config_rejected",
            "failure",
            format!(
                "{} was rejected; the last valid configuration stays in force:\n{why}",
                file.display()
            ),
            now,
        );
        e.address = Some(file.display().to_string());
        e
    }

    pub fn verify_failed(
        problems: usize,
        report: &str,
        took: Duration,
        now: DateTime<Utc>,
    ) -> Self {
        let mut e = Event::new(
            "verify_failed",
            "failure",
            format!("verify found {problems} problem(s):\n{report}"),
            now,
        );
        e.duration_seconds = Some(took.as_secs_f64());
        e
    }

    /// Whether the event belongs to the daily run (the pings follow those).
    fn daily(&self) -> bool {
        self.kind == Some(BackupKind::Daily.as_str())
    }
}

fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return String::new();
        }
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
    .clone()
}

/// A receiver's URL: `http` or `https`, with a host. Shown only as [`Url::public`].
#[derive(Debug, Clone)]
pub struct Url(reqwest::Url);

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let u = reqwest::Url::parse(text.trim()).map_err(|_| "not a URL".to_string())?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
            return Err("not an http:// or https:// URL".into());
        }
        Ok(Url(u))
    }

    /// The URL without its secret parts (user, password, path, query): `https://host:port`.
    pub fn public(&self) -> String {
        let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{}{port}",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )
    }

    /// `<url>/<suffix>` (healthchecks.io's `/start`, `/fail`), the query kept.
    fn with_suffix(&self, suffix: &str) -> reqwest::Url {
        let mut u = self.0.clone();
        if !suffix.is_empty() {
            let path = format!("{}/{suffix}", u.path().trim_end_matches('/'));
            u.set_path(&path);
        }
        u
    }
}

fn read_url(file: &Path, key: &str) -> Result<Url, String> {
    // A URL is short: a file of more than 64 KiB is cut there, and then is no URL.
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(64 << 10).read_to_string(&mut text))
        .map_err(|e| format!("`{key}` {}: {e}", file.display()))?;
    Url::parse(&text).map_err(|e| format!("`{key}` {}: {e}", file.display()))
}

/// What one job delivers.
enum What {
    /// An event's JSON, to the command and the webhook.
    Event { name: &'static str, json: String },
    /// A ping: `start`, `` (success) or `fail`, with a short text body.
    Ping { suffix: &'static str, body: String },
}

struct Job {
    what: What,
    to: Arc<Notify>,
    /// Environment variables the command must not see (the file's `*_env` secrets).
    hidden_env: Arc<Vec<String>>,
}

/// The daily run under way, for the pings: the last outcome of each daily backup (a retry
/// that succeeds replaces a failure).
#[derive(Default)]
struct Run {
    started: bool,
    outcomes: BTreeMap<String, (bool, String)>,
}

/// The daemon's notifier: events in, delivered by one background thread.
pub struct Notifier {
    tx: SyncSender<Job>,
    to: RwLock<(Arc<Notify>, Arc<Vec<String>>)>,
    run: Mutex<Run>,
    /// The queue overflowed and this was said; reset when an event fits again.
    dropping: AtomicBool,
    /// Events dropped since the daemon started, told when the queue has room again.
    dropped: AtomicU64,
}

impl Notifier {
    /// Starts the delivery thread with the settings of `cfg`.
    pub fn start(cfg: &Config) -> Arc<Notifier> {
        let (tx, rx) = sync_channel(QUEUE);
        let n = Arc::new(Notifier {
            tx,
            to: RwLock::new(Default::default()),
            run: Mutex::new(Run::default()),
            dropping: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        n.configure(cfg);
        let spawned = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || deliver(rx));
        if let Err(e) = spawned {
            tracing::error!("notifications: cannot start the delivery thread: {e}");
        }
        n
    }

    /// The settings of the file in force (at start and after a reload).
    pub fn configure(&self, cfg: &Config) {
        let hidden = crate::apply::hooks::secret_env_names(cfg);
        *self.to.write().unwrap_or_else(|p| p.into_inner()) =
            (Arc::new(cfg.notify.clone()), Arc::new(hidden));
    }

    fn settings(&self) -> (Arc<Notify>, Arc<Vec<String>>) {
        self.to.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn queue(&self, what: What) {
        let (to, hidden_env) = self.settings();
        let job = Job {
            what,
            to,
            hidden_env,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    let dropped = self.dropped.load(Ordering::Relaxed);
                    tracing::warn!(
                        "notifications: caught up ({dropped} dropped since the daemon started)"
                    );
                }
            }
            Err(TrySendError::Full(job)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    let what = match job.what {
                        What::Event { name, .. } => name,
                        What::Ping { .. } => "ping",
                    };
                    tracing::warn!(
                        "notifications: {QUEUE} waiting for slow receivers; dropping new ones ({what} first) until they catch up"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// A terminal event: queued for the command and the webhook; a daily backup's outcome is
    /// kept for the run's ping, a verify failure pings `/fail`. Never waits.
    pub fn emit(&self, e: Event) {
        let (to, _) = self.settings();
        if to.ping_url_file.is_some() {
            if e.daily()
                && let Some(id) = &e.backup_id
            {
                let what = format!(
                    "{} {}: {}",
                    e.event,
                    e.instance.as_deref().unwrap_or("-"),
                    e.message
                );
                (self.run.lock().unwrap_or_else(|p| p.into_inner()).outcomes)
                    .insert(id.clone(), (e.outcome == "success", what));
            }
            if e.event == "verify_failed" {
                self.queue(What::Ping {
                    suffix: "fail",
                    body: e.message.clone(),
                });
            }
        }
        if to.command.is_empty() && to.webhook_url_file.is_none() {
            return;
        }
        match serde_json::to_string(&e) {
            Ok(json) => self.queue(What::Event {
                name: e.event,
                json,
            }),
            Err(err) => tracing::error!("notifications: cannot encode {}: {err}", e.event),
        }
    }

    /// A daily backup (or its retry) starts: `<url>/start`, once per run.
    pub fn daily_started(&self) {
        if self.settings().0.ping_url_file.is_none() {
            return;
        }
        let first = !std::mem::replace(
            &mut self.run.lock().unwrap_or_else(|p| p.into_inner()).started,
            true,
        );
        if first {
            self.queue(What::Ping {
                suffix: "start",
                body: String::new(),
            });
        }
    }

    /// A reconcile ended: when it carried daily work, `<url>` if every daily backup of it
    /// completed, `<url>/fail` if one failed or a slot was skipped.
    pub fn run_ended(&self) {
        let run = std::mem::take(&mut *self.run.lock().unwrap_or_else(|p| p.into_inner()));
        if run.outcomes.is_empty() || self.settings().0.ping_url_file.is_none() {
            return;
        }
        let failed: Vec<&str> = (run.outcomes.values())
            .filter(|(ok, _)| !ok)
            .map(|(_, what)| what.as_str())
            .collect();
        let (suffix, body) = if failed.is_empty() {
            (
                "",
                format!("{} daily backup(s) completed", run.outcomes.len()),
            )
        } else {
            ("fail", failed.join("\n"))
        };
        self.queue(What::Ping { suffix, body });
    }
}

/// The delivery thread: one job at a time, until the notifier is dropped.
fn deliver(rx: Receiver<Job>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("notifications: cannot start the HTTP runtime: {e}");
            return;
        }
    };
    let mut client: Option<reqwest::Client> = None;
    for job in rx {
        match &job.what {
            What::Event { name, json } => {
                if !job.to.command.is_empty()
                    && let Err(e) =
                        run_command(&job.to.command, json, &job.hidden_env, COMMAND_TIMEOUT)
                {
                    tracing::warn!("notifications: {name} to the command: {e}");
                }
                if let Some(file) = &job.to.webhook_url_file {
                    let sent = read_url(file, "webhook_url_file")
                        .and_then(|url| post(&rt, &mut client, &url, "", "application/json", json));
                    if let Err(e) = sent {
                        tracing::warn!("notifications: {name} to the webhook: {e}");
                    }
                }
            }
            What::Ping { suffix, body } => {
                if let Some(file) = &job.to.ping_url_file {
                    let sent = read_url(file, "ping_url_file")
                        .and_then(|url| post(&rt, &mut client, &url, suffix, "text/plain", body));
                    if let Err(e) = sent {
                        let which = if suffix.is_empty() { "success" } else { suffix };
                        tracing::warn!("notifications: the {which} ping: {e}");
                    }
                }
            }
        }
    }
}

/// POSTs `body` to `url` (with `/suffix`), retried with back-off on network errors, 5xx and
/// 429. The error names the receiver by scheme and host only.
fn post(
    rt: &tokio::runtime::Runtime,
    client: &mut Option<reqwest::Client>,
    url: &Url,
    suffix: &str,
    content_type: &str,
    body: &str,
) -> Result<(), String> {
    let c = match client {
        Some(c) => c.clone(),
        None => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let c = reqwest::Client::builder()
                .connect_timeout(REQUEST_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("backplan/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot set up the HTTP client: {}", e.without_url()))?;
            client.insert(c).clone()
        }
    };
    let target = url.with_suffix(suffix);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            std::thread::sleep(Duration::from_secs(1 << (attempt - 2)));
        }
        let sent = rt.block_on(async {
            c.post(target.clone())
                .header("Content-Type", content_type)
                .body(body.to_string())
                .send()
                .await
        });
        match sent {
            Ok(r) if r.status().is_success() => {
                if attempt > 1 {
                    tracing::info!("notifications: {} answered at try {attempt}", url.public());
                }
                return Ok(());
            }
            Ok(r) => {
                let s = r.status();
                last = format!("answered HTTP {s}");
                if !(s.is_server_error() || s.as_u16() == 429) {
                    return Err(format!("{} {last} (not retried)", url.public()));
                }
            }
            Err(e) => last = error_text(e),
        }
        tracing::debug!("notifications: {} try {attempt}: {last}", url.public());
    }
    Err(format!(
        "{} failed after {ATTEMPTS} tries: {last}",
        url.public()
    ))
}

/// A reqwest error and its causes, without the URL (a secret).
fn error_text(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    if timeout && !text.contains("timed out") {
        text += " (timed out)";
    }
    text
}

/// Variables never passed to the command besides the `*_env` secrets (as for hooks).
const HIDDEN: &[&str] = &["CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"];

/// Runs the command with `json` on its stdin, in a process group of its own killed whole at
/// `limit` ([`COMMAND_TIMEOUT`]). Its stderr (the first 4 KiB) is in the error.
fn run_command(
    argv: &[String],
    json: &str,
    secrets: &[String],
    limit: Duration,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if HIDDEN.contains(&n.as_ref())
            || n.starts_with("WATCHDOG_")
            || secrets.iter().any(|s| *s == n)
        {
            cmd.env_remove(&name);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pgid = child.id() as i32;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is no error (EPIPE once it exited).
        let _ = stdin
            .write_all(json.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut e).take(4096).read_to_end(&mut out);
            // Drained to the end, so that a chatty command never blocks on a full pipe.
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            String::from_utf8_lossy(&out).trim().to_string()
        })
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() >= limit => {
                // SAFETY: kill(2) on the group of a child not reaped yet.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break Err(format!(
                    "{program} timed out after {}s and was killed",
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(format!("waiting for {program}: {e}")),
        }
    };
    // What the group left behind goes with it.
    // SAFETY: as above; the group id is ours until the child is reaped, which it is now.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let said = stderr
        .and_then(|h| {
            let until = Instant::now() + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            h.is_finished().then(|| h.join().ok()).flatten()
        })
        .unwrap_or_default();
    let status = status?;
    if status.success() {
        Ok(())
    } else if said.is_empty() {
        Err(format!("{program} exited with {status}"))
    } else {
        Err(format!("{program} exited with {status}: {said}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_secret_parts() {
        let u = Url::parse("https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ?token=abc\n")
            .unwrap();
        assert_eq!(u.public(), "https://hooks.example.com:8443");
        assert_eq!(
            u.with_suffix("fail").as_str(),
            "https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ/fail?token=abc"
        );
        assert!(Url::parse("ftp://example.com/x").is_err());
        assert!(Url::parse("hooks.example.com/x").is_err());
        assert!(Url::parse("").is_err());
    }

    #[test]
    fn a_long_message_is_cut_on_a_character_boundary() {
        let e = Event::new(
            "verify_failed",
            "failure",
            "é".repeat(MAX_MESSAGE),
            Utc::now(),
        );
        assert!(e.message.len() <= MAX_MESSAGE + 4);
        assert!(e.message.ends_with(" …"));
    }

    #[test]
    fn the_command_gets_the_event_on_stdin_and_is_killed_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let limit = Duration::from_secs(1);
        run_command(
            &sh(&format!("cat > {}", out.display())),
            "{\"a\":1}",
            &[],
            limit,
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"a\":1}\n");
        let e = run_command(&sh("echo nope >&2; exit 3"), "{}", &[], limit).unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("nope"), "{e}");
        // A command that hangs, with a child of its own: both killed at the limit.
        let pid = dir.path().join("pid");
        let started = Instant::now();
        let script = format!("sleep 60 & echo $! > {}; wait", pid.display());
        let e = run_command(&sh(&script), "{}", &[], limit).unwrap_err();
        assert!(e.contains("timed out after 1s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&pid)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(child, 0) } == 0
            && !std::fs::read_to_string(format!("/proc/{child}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        assert!(!alive, "the command's child outlived it");
    }

    #[test]
    fn a_full_queue_drops_events_and_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[notify]\ncommand = [\"sleep\", \"5\"]\n";
        let (cfg, _) = crate::config::parse(&dir.path().join("backplan.toml"), text).unwrap();
        let n = Notifier::start(&cfg);
        let started = Instant::now();
        for _ in 0..(QUEUE * 3) {
            n.emit(Event::verify_failed(1, "x", Duration::ZERO, Utc::now()));
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // The delivery thread takes at most one job while its `sleep 5` runs: whatever the
        // moment it starts, all but the queue and that one were dropped.
        let dropped = n.dropped.load(Ordering::Relaxed) as usize;
        assert!(dropped >= QUEUE * 3 - QUEUE - 1, "{dropped} dropped");
    }
}
