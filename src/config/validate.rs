//! From the file as written ([`RawConfig`]) to the model ([`Config`]): defaults, value
//! parsing, path resolution and the checks that need no recorded state. Every problem is
//! collected; the model is returned only when there is no error.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveTime;
use chrono_tz::Tz;

use super::model::*;
use super::raw::*;
use super::values::{BackupRef, Dur, Percent, Retention, Version, parse_time_of_day};
use crate::diagnostic::{Diagnostic, LineIndex, did_you_mean};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/backplan";
/// The longest backup label, in characters (it is one cell of the `backups` table).
/// How long an instance's hook may run unless `hook_timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Dur = Dur::from_secs(10 * 60);

pub const MAX_LABEL_CHARS: usize = 200;
/// The longest backup notes, in characters.
pub const MAX_NOTES_CHARS: usize = 2000;

/// A correct example for each kind of value, shown as the hint of a value that did not parse.
fn example_for(rule: &str) -> &'static str {
    match rule {
        "bad-duration" => {
            "durations are a whole number and one unit: `30s`, `10m`, `12h`, `3d`, `2w`, `3y`"
        }
        "bad-time" => "write the time as `HH:MM` on a 24-hour clock, like `daily_at = \"02:00\"`",
        "bad-timezone" => {
            "use an IANA time zone name, like `UTC`, `Europe/Paris` or `America/New_York`"
        }
        "bad-version" => {
            "write numbers separated by dots, like `9.0` or `8.10.2` (no `v` prefix, no letters)"
        }
        "bad-percentage" => {
            "write a share of the repository from above 0 to 100, like `verify = \"5%\"`"
        }
        "bad-backup-ref" => {
            "write `<instance>/<backup-key>`, `<instance>@latest`, `<instance>@daily:2026-11-26`, `<instance>@pre-update:9.1` or a backup UUID"
        }
        _ => "see the configuration reference in SPEC section 2",
    }
}

/// `skipped` names instances the reader left out (their problems are already reported).
/// `raw` is consumed: the instances' strings (labels, notes, commands) move into the model
/// instead of being copied.
pub fn validate(
    mut raw: RawConfig,
    skipped: &BTreeSet<String>,
    file: &Path,
    src: &str,
) -> (Option<Config>, Vec<Diagnostic>) {
    let base = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let mut v = Validator {
        skipped,
        broken_storages: BTreeSet::new(),
        diags: Vec::new(),
        base,
        lines: LineIndex::new(src),
        resolver: Resolver::default(),
    };
    let daemon = v.daemon(&raw.daemon);
    let mut schedule = v.schedule(&raw.schedule);
    schedule.drill_dir = v.drill_dir(&raw.schedule, &daemon);
    let storages = v.storages(&raw, &daemon, &schedule);
    v.schedule_storage(&raw.schedule, &storages);
    let instances = v.instances(&mut raw, &schedule, &storages);
    v.overlapping_sources(&raw, &instances, &daemon, &storages);
    v.drill_dir_apart(&raw.schedule, &schedule, &instances);
    let restores = v.restores(&raw, &instances);
    let notify = v.notify(&raw.notify);
    let ok = !v
        .diags
        .iter()
        .any(|d| d.severity == crate::diagnostic::Severity::Error);
    let cfg = ok.then(|| Config {
        file: file.to_path_buf(),
        daemon,
        schedule,
        storages,
        instances,
        restores,
        notify,
    });
    (cfg, v.diags)
}

struct Validator<'s> {
    skipped: &'s BTreeSet<String>,
    /// Storages declared but not valid (already reported): backups naming them are not
    /// reported again.
    broken_storages: BTreeSet<String>,
    diags: Vec<Diagnostic>,
    base: PathBuf,
    lines: LineIndex<'s>,
    /// The paths of the checks that compare stores as the system resolves them.
    resolver: Resolver,
}

impl Validator<'_> {
    fn err(
        &mut self,
        rule: &'static str,
        span: Range<usize>,
        msg: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(rule, span, msg).hint(hint));
    }

    /// Parses an optional value, reporting a parse failure at its span.
    fn parse<T>(
        &mut self,
        rule: &'static str,
        v: &Option<S<String>>,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse_one(rule, v.as_ref()?, f)
    }

    /// As [`Self::parse`], for a value that is there.
    fn parse_one<T>(
        &mut self,
        rule: &'static str,
        v: &S<String>,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(v.get_ref()) {
            Ok(t) => Some(t),
            Err(msg) => {
                // A message that says how to write the value keeps the problem, and that
                // becomes the hint (a hint never repeats its message).
                let d = match msg.split_once("; write ") {
                    Some((what, how)) => {
                        Diagnostic::error(rule, v.span(), what).hint(format!("write {how}"))
                    }
                    None => Diagnostic::error(rule, v.span(), msg).hint(example_for(rule)),
                };
                self.diags.push(d);
                None
            }
        }
    }

    /// A path from the file, relative to the file's folder, with `.` and `..` taken away
    /// (by name: every use of the path then means the same folder, whatever links lie on it).
    fn path(&self, p: &str) -> PathBuf {
        lexical(&self.base.join(p))
    }

    fn int_in(
        &mut self,
        v: &Option<S<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: u32,
    ) -> u32 {
        match v {
            None => default,
            Some(n) if range.contains(n.get_ref()) => *n.get_ref() as u32,
            Some(n) => {
                self.err(
                    "out-of-range",
                    n.span(),
                    format!(
                        "`{key}` is {}, outside {}..={}",
                        n.get_ref(),
                        range.start(),
                        range.end()
                    ),
                    format!(
                        "set `{key}` to a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    fn daemon(&mut self, d: &RawDaemon) -> Daemon {
        let state_dir = d
            .state_dir
            .as_ref()
            .map(|p| self.path(p.get_ref()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let control_socket = d
            .control_socket
            .as_ref()
            .map(|p| self.path(p.get_ref()))
            .unwrap_or_else(|| state_dir.join("backplan.sock"));
        let metrics_listen = d.metrics_listen.as_ref().and_then(|m| {
            match parse_listen(m.get_ref()) {
                Ok(addr) => {
                    if !addr.ip().is_loopback() {
                        self.diags.push(
                            Diagnostic::warning(
                                "listen-not-loopback",
                                m.span(),
                                format!("`metrics_listen` {addr} can be reached from other hosts: the metrics and the status page (instance names, labels, errors) are served to anyone without authentication"),
                            )
                            .hint("listen on 127.0.0.1 (write only the port) and put a reverse proxy with authentication, or a firewall, in front"),
                        );
                    }
                    Some(addr)
                }
                Err(msg) => {
                    self.err(
                        "bad-address",
                        m.span(),
                        msg,
                        "write `PORT` (loopback), `127.0.0.1:PORT`, `[::1]:PORT` or `0.0.0.0:PORT`, like `metrics_listen = \"127.0.0.1:9464\"`",
                    );
                    None
                }
            }
        });
        // Settings whose feature this version lacks are refused, never accepted and ignored.
        let max_parallel = self.int_in(&d.max_parallel, "max_parallel", 1..=64, 1);
        if let (Some(n), 2..) = (&d.max_parallel, max_parallel) {
            self.err(
                "not-supported",
                n.span(),
                format!(
                    "`max_parallel = {max_parallel}` is not supported by this version: it runs one operation at a time"
                ),
                "remove `max_parallel` (or set it to 1)",
            );
        }
        Daemon {
            state_dir,
            control_socket,
            metrics_listen,
        }
    }

    fn schedule(&mut self, s: &RawSchedule) -> Schedule {
        let daily_at = self
            .parse("bad-time", &s.daily_at, parse_time_of_day)
            .unwrap_or(NaiveTime::from_hms_opt(2, 0, 0).expect("valid"));
        let timezone = self
            .parse("bad-timezone", &s.timezone, |name| {
                Tz::from_str(name).map_err(|_| {
                    let names = chrono_tz::TZ_VARIANTS.iter().map(|t| t.name());
                    match did_you_mean(name, names) {
                        Some(n) => format!("`{name}` is not an IANA time zone; did you mean `{n}`?"),
                        None => format!("`{name}` is not an IANA time zone; write a name like `UTC` or `Europe/Paris`"),
                    }
                })
            })
            .unwrap_or(Tz::UTC);
        let retention = self
            .parse("bad-duration", &s.retention, Dur::parse)
            .unwrap_or(Dur::from_secs(3 * 86_400));
        let keep_last_good = self.int_in(&s.keep_last_good, "keep_last_good", 0..=1000, 1);
        let min_backup_version = self.parse("bad-version", &s.min_backup_version, Version::parse);
        let verify = self
            .parse("bad-percentage", &s.verify, Percent::parse)
            .unwrap_or(Percent(5.0));
        let deletion_grace = self
            .parse("bad-duration", &s.deletion_grace, Dur::parse)
            .unwrap_or(Dur::from_secs(86_400));
        let drill = s
            .drill
            .as_ref()
            .and_then(|d| self.drill_interval(d.get_ref(), d.span()));
        Schedule {
            daily_at,
            timezone,
            retention,
            keep_last_good,
            min_backup_version,
            verify,
            deletion_grace,
            storage: s
                .storage
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_else(|| "local".into()),
            drill,
            drill_dir: PathBuf::new(),
        }
    }

    /// A drill interval: `off` (`None`), `daily`, `weekly` or a duration of at least an hour.
    fn drill_interval(&mut self, text: &str, span: Range<usize>) -> Option<Dur> {
        let hint = "write `off`, `daily`, `weekly` or a duration of at least `1h`, like `drill = \"weekly\"` or `drill = \"3d\"`";
        let d = match text.trim() {
            "off" => return None,
            "daily" => Dur::from_secs(86_400),
            "weekly" => Dur::from_secs(7 * 86_400),
            other => match Dur::parse(other) {
                Ok(d) => d,
                Err(msg) => {
                    let msg = msg
                        .split_once("; ")
                        .map_or(msg.as_str(), |m| m.0)
                        .to_string();
                    self.err("bad-drill", span, format!("`drill`: {msg}"), hint);
                    return None;
                }
            },
        };
        if d.as_secs() < 3_600 {
            self.err(
                "bad-drill",
                span,
                format!("`drill = \"{text}\"` would restore every instance's newest backup more often than once an hour"),
                hint,
            );
            return None;
        }
        Some(d)
    }

    /// `[schedule] drill_dir`, relative to the file; `<state_dir>/drills` by default.
    fn drill_dir(&mut self, s: &RawSchedule, daemon: &Daemon) -> PathBuf {
        match &s.drill_dir {
            Some(p) if p.get_ref().trim().is_empty() => {
                self.err(
                    "bad-value",
                    p.span(),
                    "`drill_dir` is empty",
                    "name a scratch folder apart from every instance, like `drill_dir = \"/var/tmp/backplan-drills\"`, or remove it for `<state_dir>/drills`",
                );
                daemon.state_dir.join("drills")
            }
            Some(p) => self.path(p.get_ref()),
            None => daemon.state_dir.join("drills"),
        }
    }

    /// The drill folder is scratch that drills fill and empty: it must not be, hold or be
    /// inside any instance's store (paths compared as the system resolves them).
    fn drill_dir_apart(
        &mut self,
        s: &RawSchedule,
        schedule: &Schedule,
        instances: &BTreeMap<String, Instance>,
    ) {
        let drill = self.resolver.resolved(&schedule.drill_dir);
        let span = s.drill_dir.as_ref().map(|p| p.span());
        for i in instances.values() {
            let (Source::Directory { path } | Source::Sqlite { path }) = &i.source else {
                continue;
            };
            let store = self.resolver.resolved(path);
            let how = if drill == store {
                "is"
            } else if drill.starts_with(&store) {
                "is inside"
            } else if store.starts_with(&drill) {
                "holds"
            } else {
                continue;
            };
            // The default folder is under the state folder, which no instance may overlap
            // (reported there).
            let Some(span) = span.clone() else { continue };
            self.err(
                "drill-dir-overlaps-instance",
                span,
                format!(
                    "`drill_dir` ({}) {how} the data of instance `{}` ({})",
                    schedule.drill_dir.display(),
                    i.name,
                    i.source.describe()
                ),
                "give drills a scratch folder apart from every instance, like `drill_dir = \"/var/tmp/backplan-drills\"`; a drill must never write into an instance",
            );
        }
    }

    /// `[schedule] storage` names a declared storage.
    fn schedule_storage(&mut self, s: &RawSchedule, storages: &BTreeMap<String, Storage>) {
        let Some(name) = &s.storage else { return };
        let n = name.get_ref();
        if storages.contains_key(n)
            || self.broken_storages.contains(n)
            || self.skipped.contains(&format!("storage.{n}"))
        {
            return;
        }
        let hint = match did_you_mean(n, storages.keys().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? Storages are declared as [storage.<name>]"),
            None => format!(
                "declare [storage.{n}] or use one of: {}",
                storages.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        self.err(
            "unknown-storage",
            name.span(),
            format!("storage `{n}` does not exist"),
            hint,
        );
    }

    /// `[notify]`: a command that names a program; URL files that exist, are not empty and
    /// hold an `http://` or `https://` URL (never shown).
    fn notify(&mut self, n: &RawNotify) -> Notify {
        let command = match &n.command {
            Some(cmd) if cmd.get_ref().first().is_none_or(|c| c.trim().is_empty()) => {
                self.err(
                    "bad-value",
                    cmd.span(),
                    "`command` must start with a program to run",
                    "write the command as a list, like [\"/usr/local/bin/page-oncall\"] (it gets the event as JSON on stdin), or remove the key",
                );
                Vec::new()
            }
            Some(cmd) => cmd.get_ref().clone(),
            None => Vec::new(),
        };
        let mut url_file = |v: &Option<S<String>>, key: &str| {
            let v = v.as_ref()?;
            let path = self.secret_file(v, key);
            let text = std::fs::read_to_string(&path).ok()?;
            let url = text.trim();
            if !url.is_empty() && crate::notify::Url::parse(url).is_err() {
                self.err(
                    "bad-url",
                    v.span(),
                    format!(
                        "`{key}` names {}, which does not hold an http:// or https:// URL (its content is not shown: it is a secret)",
                        path.display()
                    ),
                    "write the URL alone in the file, like https://hc-ping.com/<uuid>",
                );
            }
            Some(path)
        };
        let webhook_url_file = url_file(&n.webhook_url_file, "webhook_url_file");
        let ping_url_file = url_file(&n.ping_url_file, "ping_url_file");
        Notify {
            command,
            webhook_url_file,
            ping_url_file,
        }
    }

    /// A `*_file` secret: missing is an error, readable by group or others a warning.
    fn secret_file(&mut self, v: &S<String>, key: &str) -> PathBuf {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY");
        let path = match credential_path(v.get_ref(), dir.as_deref()) {
            None => self.path(v.get_ref()),
            Some(Ok(path)) => path,
            Some(Err((message, hint))) => {
                self.err(
                    "credentials-directory",
                    v.span(),
                    format!("`{key}`: {message}"),
                    hint,
                );
                return PathBuf::from(v.get_ref());
            }
        };
        match std::fs::metadata(&path) {
            Err(e) => self.err(
                "secret-file",
                v.span(),
                format!("`{key}` names {}, which cannot be read: {e}", path.display()),
                "create the file (mode 0600, owned by the user backplan runs as) or fix the path; under systemd, LoadCredential= puts it in $CREDENTIALS_DIRECTORY",
            ),
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                // Read as the secret's user reads it (restic trims whitespace); a file this
                // user cannot read is left to the run.
                let empty = m.is_file()
                    && m.len() < 64 << 10
                    && std::fs::read(&path).is_ok_and(|b| b.trim_ascii().is_empty());
                if empty {
                    self.err(
                        "secret-file-empty",
                        v.span(),
                        format!(
                            "`{key}` names {}, which is empty (or holds only whitespace)",
                            path.display()
                        ),
                        "write the secret in the file (surrounding spaces and line ends are not part of it)",
                    );
                }
                if m.permissions().mode() & 0o077 != 0 {
                    self.diags.push(
                        Diagnostic::warning(
                            "secret-file-mode",
                            v.span(),
                            format!(
                                "`{key}` names {}, which group or others can read (mode {:o})",
                                path.display(),
                                m.permissions().mode() & 0o777
                            ),
                        )
                        .hint(format!("run `chmod 600 {}`", path.display())),
                    );
                }
            }
        }
        path
    }

    fn secret(
        &mut self,
        file: &Option<S<String>>,
        env: &Option<S<String>>,
        key: &str,
        span: Range<usize>,
        what: &str,
    ) -> Option<SecretSource> {
        match (file, env) {
            (Some(f), None) => Some(SecretSource::File(
                self.secret_file(f, &format!("{key}_file")),
            )),
            (None, Some(e)) if e.get_ref().trim().is_empty() => {
                self.err(
                    "bad-value",
                    e.span(),
                    format!("`{key}_env` is empty"),
                    format!("name the environment variable that holds the secret, like `{key}_env = \"BACKPLAN_SECRET\"`"),
                );
                None
            }
            (None, Some(e)) => Some(SecretSource::Env(e.get_ref().clone())),
            (Some(_), Some(e)) => {
                self.err(
                    "conflicting-keys",
                    e.span(),
                    format!("{what} gives both `{key}_file` and `{key}_env`"),
                    format!("keep one of `{key}_file` and `{key}_env`"),
                );
                None
            }
            (None, None) => {
                self.err(
                    "missing-key",
                    span,
                    format!("{what} has no `{key}_file` or `{key}_env`"),
                    format!("add `{key}_file = \"/run/credentials/backplan.service/...\"` or `{key}_env = \"VARIABLE\"`"),
                );
                None
            }
        }
    }

    /// The folder of a repository inside a container or bucket: `/`-separated names, no
    /// `.` or `..`; `None` when refused (reported).
    fn prefix(&mut self, v: &Option<S<String>>) -> Option<String> {
        let Some(v) = v else {
            return Some(String::new());
        };
        let p = v.get_ref().trim_matches('/');
        if p.split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !p.is_empty()))
            || p.chars().any(|c| c.is_control() || c == '\\')
        {
            self.err(
                "bad-value",
                v.span(),
                format!("`path` {:?} is not a folder inside the container or bucket", v.get_ref()),
                "use `/`-separated names without `.`, `..`, empty names or `\\`, like `path = \"backplan/prod\"`",
            );
            return None;
        }
        Some(p.to_string())
    }

    fn storages(
        &mut self,
        raw: &RawConfig,
        daemon: &Daemon,
        schedule: &Schedule,
    ) -> BTreeMap<String, Storage> {
        let mut out = BTreeMap::new();
        for (name, s) in &raw.storage {
            let what = format!("[storage.{}]", name.get_ref());
            let kind = match (&s.kind, name.get_ref().as_str()) {
                (Some(k), _) => *k.get_ref(),
                (None, "local") => StorageKind::Local,
                (None, _) => {
                    self.err(
                        "missing-key",
                        name.span(),
                        format!("{what} has no `kind`"),
                        "add `kind = \"azure\"`, `kind = \"s3\"` or `kind = \"local\"`",
                    );
                    self.broken_storages.insert(name.get_ref().clone());
                    continue;
                }
            };
            if name.get_ref() == "local" && kind != StorageKind::Local {
                let span = s.kind.as_ref().map(|k| k.span()).unwrap_or(name.span());
                self.err(
                    "local-is-local",
                    span,
                    "the storage named `local` is the local repository and must have `kind = \"local\"`",
                    "give the external storage another name, like [storage.archive]",
                );
                self.broken_storages.insert(name.get_ref().clone());
                continue;
            }
            // Keys that belong to another kind are mistakes, not noise.
            let applies: &[&str] = match kind {
                StorageKind::Local => &["path"],
                StorageKind::Azure => &[
                    "path",
                    "account",
                    "container",
                    "access_key_file",
                    "access_key_env",
                    "endpoint",
                ],
                StorageKind::S3 => &[
                    "path",
                    "bucket",
                    "region",
                    "access_key_id",
                    "secret_access_key_file",
                    "secret_access_key_env",
                    "endpoint",
                ],
            };
            let specific = [
                ("path", &s.path),
                ("account", &s.account),
                ("container", &s.container),
                ("access_key_file", &s.access_key_file),
                ("access_key_env", &s.access_key_env),
                ("bucket", &s.bucket),
                ("region", &s.region),
                ("access_key_id", &s.access_key_id),
                ("secret_access_key_file", &s.secret_access_key_file),
                ("secret_access_key_env", &s.secret_access_key_env),
                ("endpoint", &s.endpoint),
            ];
            for (key, v) in specific {
                if let (Some(v), false) = (v, applies.contains(&key)) {
                    self.err(
                        "key-not-for-kind",
                        v.span(),
                        format!("`{key}` does not apply to a storage of kind `{kind}`"),
                        format!(
                            "remove `{key}`, or change `kind`; for `{kind}` the keys are: {}",
                            applies.join(", ")
                        ),
                    );
                }
            }
            let need = |v: &mut Self, val: &Option<S<String>>, key: &str| -> Option<String> {
                match val {
                    Some(x) if !x.get_ref().is_empty() => Some(x.get_ref().clone()),
                    Some(x) => {
                        v.err(
                            "bad-value",
                            x.span(),
                            format!("`{key}` is empty"),
                            format!("give `{key}` a value"),
                        );
                        None
                    }
                    None => {
                        v.err(
                            "missing-key",
                            name.span(),
                            format!("{what} (kind `{kind}`) has no `{key}`"),
                            format!("add `{key} = ...`"),
                        );
                        None
                    }
                }
            };
            let location = match kind {
                StorageKind::Local => {
                    let path = match (&s.path, name.get_ref().as_str()) {
                        (Some(p), _) => Some(self.path(p.get_ref())),
                        (None, "local") => Some(daemon.state_dir.join("repository")),
                        (None, _) => need(self, &None, "path").map(PathBuf::from),
                    };
                    path.map(|path| StorageLocation::Local { path })
                }
                StorageKind::Azure => {
                    let prefix = self.prefix(&s.path);
                    let account = need(self, &s.account, "account");
                    let container = need(self, &s.container, "container");
                    let key = self.secret(
                        &s.access_key_file,
                        &s.access_key_env,
                        "access_key",
                        name.span(),
                        &what,
                    );
                    match (account, container, key, prefix) {
                        (Some(account), Some(container), Some(access_key), Some(path)) => {
                            Some(StorageLocation::Azure {
                                account,
                                container,
                                path,
                                endpoint: s.endpoint.as_ref().map(|e| e.get_ref().clone()),
                                access_key,
                            })
                        }
                        _ => None,
                    }
                }
                StorageKind::S3 => {
                    let prefix = self.prefix(&s.path);
                    let bucket = need(self, &s.bucket, "bucket");
                    let key_id = need(self, &s.access_key_id, "access_key_id");
                    let secret = self.secret(
                        &s.secret_access_key_file,
                        &s.secret_access_key_env,
                        "secret_access_key",
                        name.span(),
                        &what,
                    );
                    match (bucket, key_id, secret, prefix) {
                        (
                            Some(bucket),
                            Some(access_key_id),
                            Some(secret_access_key),
                            Some(path),
                        ) => Some(StorageLocation::S3 {
                            bucket,
                            path,
                            region: s.region.as_ref().map(|r| r.get_ref().clone()),
                            endpoint: s.endpoint.as_ref().map(|e| e.get_ref().clone()),
                            access_key_id,
                            secret_access_key,
                        }),
                        _ => None,
                    }
                }
            };
            let password_file = s
                .password_file
                .as_ref()
                .map(|p| self.secret_file(p, "password_file"));
            let external = kind != StorageKind::Local;
            // A key generated into the state dir would be lost with the host, and with it
            // every backup in the external storage. (Not said of a storage already refused.)
            if external && location.is_some() && s.password_file.is_none() {
                self.err(
                    "missing-key",
                    name.span(),
                    format!("{what} (kind `{kind}`) has no `password_file`"),
                    "external storage needs its repository key in a file you keep elsewhere too: add `password_file = \"/run/credentials/backplan.service/<name>.key\"` (a generated key would be lost with this host)",
                );
            }
            let retention = self.parse("bad-duration", &s.retention, Retention::parse);
            let max_restore_age = self.parse("bad-duration", &s.max_restore_age, Dur::parse);
            if let (false, Some(p)) = (external, &s.purge_on_delete) {
                self.err(
                    "key-not-for-kind",
                    p.span(),
                    "`purge_on_delete` applies to external storage only; local backup data is always deleted with the backup",
                    "remove `purge_on_delete`",
                );
            }
            if location.is_none() {
                self.broken_storages.insert(name.get_ref().clone());
            }
            if let Some(location) = location {
                out.insert(
                    name.get_ref().clone(),
                    Storage {
                        name: name.get_ref().clone(),
                        location,
                        password_file,
                        retention: retention.unwrap_or(if external {
                            Retention::Forever
                        } else {
                            Retention::For(schedule.retention)
                        }),
                        // The product's rule: external backups older than 3 years are not
                        // restored unless the file says otherwise.
                        max_restore_age: max_restore_age
                            .or(external.then_some(Dur::from_secs(3 * 365 * 86_400))),
                        purge_on_delete: s
                            .purge_on_delete
                            .as_ref()
                            .map(|p| *p.get_ref())
                            .unwrap_or(false),
                        // A cloud charges for reading back: drills there are opted into.
                        drill: s.drill.as_ref().map_or(!external, |d| *d.get_ref()),
                    },
                );
            }
        }
        out.entry("local".to_string()).or_insert_with(|| Storage {
            name: "local".into(),
            location: StorageLocation::Local {
                path: daemon.state_dir.join("repository"),
            },
            password_file: None,
            retention: Retention::For(schedule.retention),
            max_restore_age: None,
            purge_on_delete: false,
            drill: true,
        });
        out
    }

    fn instances(
        &mut self,
        raw: &mut RawConfig,
        schedule: &Schedule,
        storages: &BTreeMap<String, Storage>,
    ) -> BTreeMap<String, Instance> {
        let mut out = Vec::with_capacity(raw.instances.len());
        // The commands, exclusions and backups move into the model; the later checks read
        // only the instances' names and sources from `raw`.
        for (name, i) in raw.instances.iter_mut() {
            let version = self.parse_one("bad-version", &i.version, Version::parse);
            let source = self.source(&i.source);
            let on_update = self.command(&mut i.on_update, "on_update");
            let hooks = InstanceHooks {
                before_restore: self.command(&mut i.before_restore, "before_restore"),
                after_restore: self.command(&mut i.after_restore, "after_restore"),
                before_backup: self.command(&mut i.before_backup, "before_backup"),
                after_backup: self.command(&mut i.after_backup, "after_backup"),
            };
            let hook_timeout = self
                .parse("bad-duration", &i.hook_timeout, Dur::parse)
                .unwrap_or(DEFAULT_HOOK_TIMEOUT);
            let exclude = self.exclude(&mut i.exclude, *i.source.kind.get_ref());
            let drill = match &i.drill {
                None => schedule.drill,
                Some(d) => match d.get_ref() {
                    RawDrill::Switch(false) => None,
                    RawDrill::Switch(true) => {
                        Some(schedule.drill.unwrap_or(Dur::from_secs(7 * 86_400)))
                    }
                    RawDrill::Every(text) => self.drill_interval(text, d.span()),
                },
            };
            // Read in key order: the map is built at once from the sorted list.
            let mut backups = Vec::with_capacity(i.backups.len());
            for (key, b) in std::mem::take(&mut i.backups) {
                for (v, what, max) in [
                    (&b.label, "label", MAX_LABEL_CHARS),
                    (&b.notes, "notes", MAX_NOTES_CHARS),
                ] {
                    let Some(v) = v else { continue };
                    // No more bytes than allowed characters: short enough without counting.
                    if v.get_ref().len() <= max {
                        continue;
                    }
                    let n = v.get_ref().chars().count();
                    if n > max {
                        self.err(
                            "too-long",
                            v.span(),
                            format!(
                                "`{what}` of backup `{}` has {n} characters; at most {max} are allowed",
                                key.get_ref()
                            ),
                            format!("shorten `{what}` to {max} characters or fewer"),
                        );
                    }
                }
                let storage = b
                    .storage
                    .as_ref()
                    .map(|s| s.get_ref().as_str())
                    .unwrap_or("local");
                let storage_span = b.storage.as_ref().map(|s| s.span()).unwrap_or(key.span());
                // A storage declared but broken is already reported (the name is formatted
                // only for a storage that is not declared valid).
                if !storages.contains_key(storage)
                    && !self.broken_storages.contains(storage)
                    && !self.skipped.contains(&format!("storage.{storage}"))
                {
                    let hint = match did_you_mean(storage, storages.keys().map(String::as_str)) {
                        Some(s) => {
                            format!("did you mean `{s}`? Storages are declared as [storage.<name>]")
                        }
                        None => format!(
                            "declare [storage.{storage}] or use one of: {}",
                            storages.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    self.err(
                        "unknown-storage",
                        storage_span.clone(),
                        format!("storage `{storage}` does not exist"),
                        hint,
                    );
                }
                if let (Some(min), Some(v)) = (&schedule.min_backup_version, &version)
                    && v < min
                {
                    self.err(
                            "min-backup-version",
                            key.span(),
                            format!(
                                "on-demand backup `{}` needs instance version {min} or later, and `{}` is at {v}",
                                key.get_ref(),
                                name.get_ref()
                            ),
                            format!("update the instance to version {min} or later first, or lower `min_backup_version`"),
                        );
                }
                let loc = self.lines.loc(key.span().start);
                let (storage, storage_loc) = match b.storage {
                    Some(s) => (s.into_inner(), self.lines.loc(storage_span.start)),
                    None => ("local".to_string(), loc), // the key's span: the same place
                };
                let key = key.into_inner();
                let label = match b.label {
                    Some(label) => label.into_inner(),
                    None => key.clone(),
                };
                backups.push((
                    key,
                    BackupDecl {
                        label,
                        notes: b.notes.map(S::into_inner).unwrap_or_default(),
                        storage,
                        loc,
                        storage_loc,
                    },
                ));
            }
            let backups = BTreeMap::from_iter(backups);
            if let (Some(version), Some(source)) = (version, source) {
                out.push((
                    name.get_ref().clone(),
                    Instance {
                        name: name.get_ref().clone(),
                        kind: *i.kind.get_ref(),
                        version,
                        source,
                        on_update,
                        hooks,
                        hook_timeout,
                        exclude,
                        drill,
                        backups,
                        loc: self.lines.loc(name.span().start),
                        version_loc: self.lines.loc(i.version.span().start),
                        source_loc: self.lines.loc(i.source.kind.span().start),
                    },
                ));
            }
        }
        // In name order (the file's map): built at once.
        BTreeMap::from_iter(out)
    }

    /// An operator's command (`on_update`, `before_restore`, ...): a list starting with a
    /// program.
    fn command(&mut self, cmd: &mut Option<S<Vec<String>>>, key: &str) -> Vec<String> {
        match cmd {
            Some(cmd) if cmd.get_ref().first().is_none_or(|c| c.trim().is_empty()) => {
                self.err(
                    "bad-value",
                    cmd.span(),
                    format!("`{key}` must start with a program to run"),
                    if key == "on_update" {
                        "write the command as a list, like [\"/usr/local/bin/migrate\", \"--to\", \"{version}\"], or remove the key"
                    } else {
                        "write the command as a list, like [\"systemctl\", \"stop\", \"app\"], or remove the key"
                    },
                );
                Vec::new()
            }
            Some(cmd) => std::mem::take(cmd.get_mut()),
            None => Vec::new(),
        }
    }

    /// `exclude`: directory instances only; each pattern non-empty and not a negation.
    fn exclude(&mut self, v: &mut Option<S<Vec<String>>>, kind: SourceKind) -> Vec<String> {
        let Some(v) = v else { return Vec::new() };
        if kind != SourceKind::Directory {
            self.err(
                "not-supported",
                v.span(),
                format!("`exclude` applies to directory instances only, and this one is {kind}"),
                format!("remove `exclude`: a {kind} instance is backed up whole"),
            );
            return Vec::new();
        }
        for p in v.get_ref() {
            if p.trim().is_empty() || p.starts_with('!') {
                self.err(
                    "bad-value",
                    v.span(),
                    format!("`exclude` pattern `{p}` is empty or starts with `!`"),
                    "write patterns of what to leave out, like [\"cache/**\", \"*.tmp\"]; negations are not supported",
                );
                return Vec::new();
            }
            // Checked with the builder rustic's walk uses, so that no pattern the engine
            // would refuse reaches a backup.
            let mut globs = ignore::overrides::OverrideBuilder::new("/");
            if let Err(e) = globs.add(&format!("!{p}")).and_then(|g| g.build()) {
                let why = e.to_string();
                let why = why.rsplit_once(": ").map_or(why.as_str(), |(_, w)| w);
                self.err(
                    "bad-value",
                    v.span(),
                    format!("`exclude` pattern `{p}` is not a valid glob: {why}"),
                    "fix the pattern (`*`, `**`, `?`, `[abc]` and `{a,b}` are understood; escape a literal `[` or `{` with `\\`)",
                );
                return Vec::new();
            }
        }
        std::mem::take(v.get_mut())
    }

    fn source(&mut self, s: &RawSource) -> Option<Source> {
        let kind = *s.kind.get_ref();
        let wrong = |v: &mut Self, val: &Option<S<String>>, key: &str, right: &str| {
            if let Some(x) = val {
                v.err(
                    "key-not-for-kind",
                    x.span(),
                    format!("a `{kind}` source has no `{key}`"),
                    format!("a `{kind}` source is given by `{right}`"),
                );
            }
        };
        match kind {
            SourceKind::Directory | SourceKind::Sqlite => {
                wrong(self, &s.url, "url", "path");
                wrong(self, &s.password_file, "password_file", "path");
                wrong(self, &s.bin_dir, "bin_dir", "path");
                let Some(p) = &s.path else {
                    self.err(
                        "missing-key",
                        s.kind.span(),
                        format!("a `{kind}` source has no `path`"),
                        format!("write `source = {{ kind = \"{kind}\", path = \"/srv/...\" }}`"),
                    );
                    return None;
                };
                if p.get_ref().is_empty() {
                    self.err(
                        "bad-value",
                        p.span(),
                        "`path` is empty",
                        "give the path of the data",
                    );
                    return None;
                }
                let path = self.path(p.get_ref());
                Some(match kind {
                    SourceKind::Directory => Source::Directory { path },
                    _ => Source::Sqlite { path },
                })
            }
            SourceKind::Postgres => {
                wrong(self, &s.path, "path", "url");
                let Some(u) = &s.url else {
                    self.err(
                        "missing-key",
                        s.kind.span(),
                        "a `postgres` source has no `url`",
                        "write `source = { kind = \"postgres\", url = \"postgres://backplan@localhost/db\" }`",
                    );
                    return None;
                };
                let url = u.get_ref();
                let Some(rest) = url
                    .strip_prefix("postgres://")
                    .or_else(|| url.strip_prefix("postgresql://"))
                else {
                    self.err(
                        "bad-value",
                        u.span(),
                        format!("`{url}` is not a PostgreSQL URL"),
                        "write `postgres://user@host[:port]/database`",
                    );
                    return None;
                };
                let userinfo = rest
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .rsplit_once('@')
                    .map(|(u, _)| u);
                if userinfo.is_some_and(|u| u.contains(':')) || url.contains("password=") {
                    self.diags.push(
                        Diagnostic::error(
                            "inline-secret",
                            u.span(),
                            "the URL holds a password, which would put a secret in the file",
                        )
                        .hint("remove the password from the URL and give it with `password_file` (or a ~/.pgpass of the backplan user)")
                        .redact(u.span()),
                    );
                    return None;
                }
                let after = &rest[rest.find(['/', '?']).unwrap_or(rest.len())..];
                let db = after.strip_prefix('/').unwrap_or("");
                if db.split('?').next().unwrap_or("").is_empty() {
                    self.err(
                        "bad-value",
                        u.span(),
                        format!("`{url}` names no database"),
                        "write `postgres://user@host[:port]/database`: an instance is one database, which backplan creates, backs up and replaces",
                    );
                    return None;
                }
                let password_file = s
                    .password_file
                    .as_ref()
                    .map(|p| self.secret_file(p, "password_file"));
                let bin_dir = s.bin_dir.as_ref().and_then(|b| {
                    if b.get_ref().is_empty() {
                        self.err(
                            "bad-value",
                            b.span(),
                            "`bin_dir` is empty",
                            "give the folder of pg_dump, pg_restore and psql, like \"/usr/lib/postgresql/16/bin\", or remove `bin_dir` to use the PATH",
                        );
                        return None;
                    }
                    Some(self.path(b.get_ref()))
                });
                Some(Source::Postgres {
                    url: url.clone(),
                    password_file,
                    bin_dir,
                })
            }
        }
    }

    /// Two instances on the same store, or a folder inside another's: a restore into one
    /// would write into the other, so this is refused. Likewise an instance on backplan's own
    /// state folder, a repository or a key file. Paths are compared as the system resolves
    /// them where they exist (symbolic links followed), so no spelling of a path hides it.
    fn overlapping_sources(
        &mut self,
        raw: &RawConfig,
        instances: &BTreeMap<String, Instance>,
        daemon: &Daemon,
        storages: &BTreeMap<String, Storage>,
    ) {
        enum Owner<'c> {
            Instance(&'c Instance),
            Own(String, &'c std::path::Path),
        }
        // Sorted and swept, not compared in pairs (10,000 instances would be 50M pairs). In component order every path that
        // has `p` as a prefix comes right after `p`, so a stack of the open ancestors finds
        // every nested pair in O(n log n + pairs).
        let mut paths: Vec<(PathBuf, Owner)> = Vec::new();
        // Databases by identity (host, port, name), not by how they are reached.
        let mut urls: BTreeMap<String, Vec<&Instance>> = BTreeMap::new();
        for i in instances.values() {
            match &i.source {
                Source::Directory { path } | Source::Sqlite { path } => {
                    paths.push((self.resolver.resolved(path), Owner::Instance(i)))
                }
                Source::Postgres { .. } => urls.entry(i.source.identity()).or_default().push(i),
            }
        }
        let mut own = vec![(
            "backplan's state folder (`state_dir`)".to_string(),
            &daemon.state_dir,
        )];
        for (name, s) in storages {
            if let StorageLocation::Local { path } = &s.location {
                own.push((format!("the repository of storage `{name}`"), path));
            }
            if let Some(key) = &s.password_file {
                own.push((format!("the key file of storage `{name}`"), key));
            }
        }
        for (what, path) in own {
            paths.push((self.resolver.resolved(path), Owner::Own(what, path)));
        }
        let name_of = |o: &Owner| match o {
            Owner::Instance(i) => i.name.clone(),
            Owner::Own(w, _) => w.clone(),
        };
        paths.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| name_of(&a.1).cmp(&name_of(&b.1)))
        });
        let mut pairs: Vec<(&Instance, &Instance)> = Vec::new();
        let mut own_hits: Vec<(&Instance, &str, &std::path::Path)> = Vec::new();
        let mut stack: Vec<(&std::path::Path, &Owner)> = Vec::new();
        for (p, o) in &paths {
            while let Some((top, _)) = stack.last() {
                if p.starts_with(top) {
                    break;
                }
                stack.pop();
            }
            for (_, a) in &stack {
                match (a, o) {
                    (Owner::Instance(a), Owner::Instance(i)) => {
                        pairs.push(if a.name < i.name { (*a, *i) } else { (*i, *a) })
                    }
                    (Owner::Instance(i), Owner::Own(w, p))
                    | (Owner::Own(w, p), Owner::Instance(i)) => own_hits.push((*i, w.as_str(), *p)),
                    (Owner::Own(..), Owner::Own(..)) => {}
                }
            }
            stack.push((p.as_path(), o));
        }
        for list in urls.values() {
            for (k, a) in list.iter().enumerate() {
                for b in &list[k + 1..] {
                    pairs.push((*a, *b));
                }
            }
        }
        let span_of = |name: &str| {
            raw.instances
                .get(name)
                .map(|r| {
                    let src = &r.source;
                    src.path
                        .as_ref()
                        .or(src.url.as_ref())
                        .map_or(src.kind.span(), |p| p.span())
                })
                .unwrap_or(0..0)
        };
        pairs.sort_by(|x, y| (&x.0.name, &x.1.name).cmp(&(&y.0.name, &y.1.name)));
        for (a, b) in pairs {
            let span = span_of(b.name.as_str());
            self.err(
                "shared-source",
                span,
                format!(
                    "instances `{}` and `{}` share data ({} and {})",
                    a.name,
                    b.name,
                    a.source.describe(),
                    b.source.describe()
                ),
                "give each instance its own store; a restore into one would otherwise overwrite the other",
            );
        }
        own_hits.sort_by(|x, y| (&x.0.name, x.1).cmp(&(&y.0.name, y.1)));
        for (i, what, path) in own_hits {
            let span = span_of(i.name.as_str());
            self.err(
                "shared-source",
                span,
                format!(
                    "instance `{}` ({}) overlaps {what} ({}): one is, holds or is inside the other",
                    i.name,
                    i.source.describe(),
                    path.display()
                ),
                "give the instance a folder apart from backplan's own files; a restore into it would otherwise replace them",
            );
        }
    }

    fn restores(
        &mut self,
        raw: &RawConfig,
        instances: &BTreeMap<String, Instance>,
    ) -> BTreeMap<String, Restore> {
        let mut out = BTreeMap::new();
        for (key, r) in &raw.restores {
            let from = self.parse("bad-backup-ref", &Some(r.from.clone()), BackupRef::parse);
            let to = r.to.get_ref();
            let target = instances.get(to.as_str());
            match target {
                // An instance with problems of its own: already reported there.
                None if raw.instances.contains_key(to.as_str())
                    || self.skipped.contains(&format!("instances.{to}")) => {}
                None => {
                    let hint = match did_you_mean(to, instances.keys().map(String::as_str)) {
                        Some(n) => format!("did you mean `{n}`?"),
                        None => "name a sandbox instance declared under [instances]".to_string(),
                    };
                    self.err(
                        "unknown-instance",
                        r.to.span(),
                        format!("restore target `{to}` is not an instance in this file"),
                        hint,
                    );
                }
                Some(t) if t.kind == InstanceType::Production => {
                    self.err(
                        "restore-into-production",
                        r.to.span(),
                        format!("restore `{}` targets `{to}`, which is a production instance", key.get_ref()),
                        format!(
                            "restores only go into sandbox instances: restore into a sandbox, or set `type = \"sandbox\"` on `{to}` if it really is one; if this restore has already run, remove it from the file (its record stays in the history)"
                        ),
                    );
                }
                Some(_) => {}
            }
            if let Some(from) = &from {
                self.restore_source(from, &r.from, target, instances, |n| {
                    raw.instances.contains_key(n)
                });
            }
            if let Some(from) = from {
                out.insert(
                    key.get_ref().clone(),
                    Restore {
                        key: key.get_ref().clone(),
                        from,
                        to: to.clone(),
                        loc: self.lines.loc(key.span().start),
                        to_loc: self.lines.loc(r.to.span().start),
                        from_loc: self.lines.loc(r.from.span().start),
                    },
                );
            }
        }
        out
    }

    fn restore_source(
        &mut self,
        from: &BackupRef,
        span: &S<String>,
        target: Option<&Instance>,
        instances: &BTreeMap<String, Instance>,
        raw_has: impl Fn(&str) -> bool,
    ) {
        let Some(inst_name) = from.instance() else {
            return; // a UUID: only the recorded state can say what it is
        };
        let Some(inst) = instances.get(inst_name) else {
            if self.skipped.contains(&format!("instances.{inst_name}")) || raw_has(inst_name) {
                return;
            }
            let hint = match did_you_mean(inst_name, instances.keys().map(String::as_str)) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "to restore a backup of an instance no longer in the file, name the backup by its UUID (see `backplan backups`)".into(),
            };
            self.err(
                "unknown-instance",
                span.span(),
                format!("`{inst_name}` is not an instance in this file"),
                hint,
            );
            return;
        };
        if let BackupRef::OnDemand { key, .. } = from
            && !inst.backups.contains_key(key)
        {
            let hint = match did_you_mean(key, inst.backups.keys().map(String::as_str)) {
                Some(n) => format!("did you mean `{inst_name}/{n}`?"),
                None => format!(
                    "declare it as [instances.{inst_name}.backups.{key}], or use `{inst_name}@latest`; if this restore has already run, remove it from the file (its record stays in the history)"
                ),
            };
            self.err(
                "unknown-backup",
                span.span(),
                format!("`{inst_name}` has no on-demand backup `{key}` in this file"),
                hint,
            );
        }
        if let Some(t) = target
            && t.source.kind() != inst.source.kind()
        {
            self.err(
                "kind-mismatch",
                span.span(),
                format!(
                    "a backup of `{inst_name}` ({}) cannot be restored into `{}` ({})",
                    inst.source.kind(),
                    t.name,
                    t.source.kind()
                ),
                "restore into a sandbox of the same kind",
            );
        }
    }
}

/// `p` with `.` and `..` components removed by name (`a/b/../c` is `a/c`).
pub fn lexical(p: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `p` as the system resolves it: symbolic links followed one component at a time (a
/// dangling one too, to where it points: the folder may appear later), `..` taken after the
/// link before it, and what does not exist by name. Creates nothing.
pub fn resolved(p: &std::path::Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Walk::default().through(&p).out
}

/// Where a walk of [`resolved`] stands after some components.
#[derive(Debug, Clone, Default)]
struct Walk {
    out: PathBuf,
    /// Under a missing folder nothing exists: no more look-ups.
    missing: bool,
    /// Links followed so far.
    links: u32,
}

impl Walk {
    /// The walk continued through the components of `p`.
    fn through(mut self, p: &std::path::Path) -> Walk {
        use std::path::Component;
        let mut parts = p.components();
        while let Some(c) = parts.next() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    self.out.pop();
                }
                c => {
                    let next = self.out.join(c);
                    // 40 links, as the kernel allows; past that, names.
                    if !self.missing && self.links < 40 {
                        match std::fs::read_link(&next) {
                            // A relative target is read from the link's folder.
                            Ok(target) => {
                                let rest = self.out.join(target).join(parts.as_path());
                                return Walk {
                                    out: PathBuf::new(),
                                    missing: false,
                                    links: self.links + 1,
                                }
                                .through(&rest);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                self.missing = true
                            }
                            Err(_) => {}
                        }
                    }
                    self.out = next;
                }
            }
        }
        self
    }
}

/// [`resolved`] for many paths, each folder looked up once: 10,000 instances under `/srv`
/// are 10,002 look-ups (`/`, `/srv`, each instance's folder), not 30,000 per pass (and
/// validation resolves each store twice). The same answers as [`resolved`]: a path's walk is
/// its parent folder's walk, remembered, continued through its last component.
#[derive(Debug, Default)]
pub struct Resolver {
    walks: std::collections::HashMap<PathBuf, Walk>,
}

impl Resolver {
    pub fn resolved(&mut self, p: &std::path::Path) -> PathBuf {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        self.walk(&p).out
    }

    fn walk(&mut self, p: &std::path::Path) -> Walk {
        if let Some(w) = self.walks.get(p) {
            return w.clone();
        }
        let w = match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => self.walk(parent).through(std::path::Path::new(name)),
            _ => Walk::default().through(p),
        };
        self.walks.insert(p.to_path_buf(), w.clone());
        w
    }
}

/// `metrics_listen`: an IP address and a port, or a port alone (`9464`, `:9464`) for the
/// loopback address. Host names are not resolved (validation does no network I/O).
fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let t = text.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Some(Ok(port)) = t.strip_prefix("localhost:").map(str::parse::<u16>) {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    t.parse::<std::net::SocketAddr>().map_err(|_| {
        format!("`{t}` is not an address to listen on (an IP address and a port, or a port alone)")
    })
}

/// A `*_file` value written as `$CREDENTIALS_DIRECTORY/<name>` (or `${CREDENTIALS_DIRECTORY}/`),
/// the folder where systemd puts the service's credentials (`LoadCredential=`): the path in
/// `dir`, the variable's value when the file is read. `None`: the value names a path of its
/// own. Err (message, hint): another variable, a name that is not one file name, or the
/// variable unset.
fn credential_path(
    value: &str,
    dir: Option<&std::ffi::OsStr>,
) -> Option<Result<PathBuf, (String, String)>> {
    if !value.starts_with('$') {
        return None;
    }
    let name = value
        .strip_prefix("$CREDENTIALS_DIRECTORY/")
        .or_else(|| value.strip_prefix("${CREDENTIALS_DIRECTORY}/"));
    let Some(name) = name else {
        return Some(Err((
            format!("`{value}` names a variable backplan does not expand"),
            "write a path, or `$CREDENTIALS_DIRECTORY/<name>` for a credential systemd provides (LoadCredential=); no other variable is expanded".into(),
        )));
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Some(Err((
            format!("`{name}` is not the name of a credential"),
            "name one file of the credentials folder, like `$CREDENTIALS_DIRECTORY/azure-key`"
                .into(),
        )));
    }
    let Some(dir) = dir.filter(|d| !d.is_empty()) else {
        return Some(Err((
            format!("`{value}` needs $CREDENTIALS_DIRECTORY, which is not set"),
            "systemd sets it for the service (LoadCredential= in the unit); to run a command by hand, set it to the service's folder: `sudo CREDENTIALS_DIRECTORY=/run/credentials/backplan.service backplan plan`".into(),
        )));
    };
    let dir = Path::new(dir);
    if !dir.is_absolute() {
        return Some(Err((
            format!("$CREDENTIALS_DIRECTORY is `{}`, not an absolute path", dir.display()),
            "set it to the folder systemd gives the service, like /run/credentials/backplan.service".into(),
        )));
    }
    Some(Ok(dir.join(name)))
}

#[cfg(test)]
mod listen_tests {
    #[test]
    fn listen_addresses() {
        let p = |t| super::parse_listen(t).map(|a| a.to_string());
        assert_eq!(p("9464").unwrap(), "127.0.0.1:9464");
        assert_eq!(p(":9464").unwrap(), "127.0.0.1:9464");
        assert_eq!(p("localhost:9464").unwrap(), "127.0.0.1:9464");
        assert_eq!(p("0.0.0.0:80").unwrap(), "0.0.0.0:80");
        assert_eq!(p("[::1]:9464").unwrap(), "[::1]:9464");
        assert!(p("example.com:9464").is_err());
        assert!(p("127.0.0.1").is_err());
        assert!(p("127.0.0.1:70000").is_err());
    }

    #[test]
    fn credentials_directory_is_expanded_for_one_name_only() {
        use super::credential_path;
        use std::path::PathBuf;
        let dir = Some(std::ffi::OsStr::new("/run/credentials/backplan.service"));
        let ok = |v: &str| credential_path(v, dir).unwrap().unwrap();
        assert_eq!(
            ok("$CREDENTIALS_DIRECTORY/azure-key"),
            PathBuf::from("/run/credentials/backplan.service/azure-key")
        );
        assert_eq!(
            ok("${CREDENTIALS_DIRECTORY}/k"),
            PathBuf::from("/run/credentials/backplan.service/k")
        );
        assert!(credential_path("keys/a.key", dir).is_none());
        for bad in [
            "$CREDENTIALS_DIRECTORY/../shadow",
            "$CREDENTIALS_DIRECTORY/a/b",
            "$CREDENTIALS_DIRECTORY/",
            "$HOME/key",
            "$CREDENTIALS_DIRECTORYx/k",
        ] {
            assert!(credential_path(bad, dir).unwrap().is_err(), "{bad}");
        }
        assert!(
            credential_path("$CREDENTIALS_DIRECTORY/k", None)
                .unwrap()
                .is_err()
        );
        let relative = Some(std::ffi::OsStr::new("creds"));
        assert!(
            credential_path("$CREDENTIALS_DIRECTORY/k", relative)
                .unwrap()
                .is_err()
        );
    }
}

#[cfg(test)]
mod resolver_tests {
    use super::{Resolver, resolved};
    use std::os::unix::fs::symlink;

    /// The memoised walk gives what the walk of each whole path gives, through relative,
    /// absolute, chained, looping and dangling links, `..` after a link, and paths asked
    /// twice or after their parent.
    #[test]
    fn the_resolver_resolves_as_each_path_alone() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::create_dir_all(d.join("real/sub")).unwrap();
        symlink("real", d.join("rel")).unwrap();
        symlink(d.join("real/sub"), d.join("abs")).unwrap();
        symlink("rel/sub", d.join("chain")).unwrap();
        symlink("nowhere/yet", d.join("dangling")).unwrap();
        symlink("loop2", d.join("loop1")).unwrap();
        symlink("loop1", d.join("loop2")).unwrap();
        symlink("..", d.join("real/up")).unwrap();
        let names = [
            "real",
            "real/sub",
            "real/sub/x",
            "rel",
            "rel/sub",
            "rel/sub/x",
            "abs",
            "abs/x",
            "abs/../x",
            "chain",
            "chain/x/y",
            "dangling",
            "dangling/x",
            "loop1",
            "loop1/x",
            "real/up",
            "real/up/rel/sub",
            "rel/../abs/x",
            "missing",
            "missing/x/y",
            ".",
            "real/./sub",
            "rel/sub/../..",
        ];
        let mut r = Resolver::default();
        for _ in 0..2 {
            for n in names {
                let p = d.join(n);
                assert_eq!(r.resolved(&p), resolved(&p), "{n}");
            }
        }
        assert_eq!(
            r.resolved(&d.join("chain/x")),
            resolved(&d.join("real/sub/x"))
        );
    }
}
