//! The file as written: serde types that keep the span of every value, and the reader that
//! fills them from TOML while collecting **every** structural problem (syntax, unknown keys,
//! wrong types, missing keys, inline secrets) instead of stopping at the first.
//!
//! The same types derive `Deserialize` (so `toml::from_str::<RawConfig>` reads a valid file
//! identically, a test checks it) and `JsonSchema` (the editor schema in
//! `config/backplan.schema.json`). The reader's lists of known keys are `KEYS` constants that
//! a test compares against the schema, so the three cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::ops::Range;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::doc::{self, Item, Table, Value};
use crate::diagnostic::{Diagnostic, did_you_mean};

pub type S<T> = Spanned<T>;

/// backplan configuration: the instances to protect, their on-demand backups and the restores
/// wanted. See SPEC section 2.
#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(title = "backplan configuration")]
pub struct RawConfig {
    /// Settings of the daemon process.
    #[serde(default)]
    pub daemon: RawDaemon,
    /// When the daily system backup runs and how long backups are kept.
    #[serde(default)]
    pub schedule: RawSchedule,
    /// Repositories that hold backup data. `local` always exists.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawStorage>")]
    pub storage: BTreeMap<S<String>, RawStorage>,
    /// The data stores backplan protects, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawInstance>")]
    pub instances: BTreeMap<S<String>, RawInstance>,
    /// One-shot restores of a backup into a sandbox instance, by key.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawRestore>")]
    pub restores: BTreeMap<S<String>, RawRestore>,
    /// Notifications of terminal events (the daemon's): a command, a webhook, ping URLs.
    #[serde(default)]
    pub notify: RawNotify,
}

impl RawConfig {
    pub const KEYS: &[&str] = &[
        "daemon",
        "schedule",
        "storage",
        "instances",
        "restores",
        "notify",
    ];
}

/// `[notify]`: where the daemon sends its terminal events. URLs are secrets (a webhook's
/// token, a ping check's id): only their `*_file` form is accepted.
#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// A command run for every event, the event as one JSON object on its stdin, like
    /// `["/usr/local/bin/page-oncall"]`.
    #[schemars(with = "Option<Vec<String>>")]
    pub command: Option<S<Vec<String>>>,
    /// A file holding the URL that receives every event as a JSON POST (retried).
    #[schemars(with = "Option<String>")]
    pub webhook_url_file: Option<S<String>>,
    /// A file holding a dead-man's-switch URL (healthchecks.io style): `<url>/start` when a
    /// daily run starts, `<url>` when it succeeded, `<url>/fail` when it failed.
    #[schemars(with = "Option<String>")]
    pub ping_url_file: Option<S<String>>,
}

impl RawNotify {
    pub const KEYS: &[&str] = &["command", "webhook_url_file", "ping_url_file"];
}

#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    /// Folder of the state store and of the default local repository. Default `/var/lib/backplan`.
    #[schemars(with = "Option<String>")]
    pub state_dir: Option<S<String>>,
    /// Unix socket of the control interface. Default `<state_dir>/backplan.sock`.
    #[schemars(with = "Option<String>")]
    pub control_socket: Option<S<String>>,
    /// `host:port` (or a port alone, on loopback) of the metrics and the status page. Default: none.
    #[schemars(with = "Option<String>")]
    pub metrics_listen: Option<S<String>>,
    /// Backups and restores running at once. Default 1; this version supports only 1.
    #[schemars(with = "Option<u32>", range(min = 1, max = 64))]
    pub max_parallel: Option<S<i64>>,
}

impl RawDaemon {
    pub const KEYS: &[&str] = &[
        "state_dir",
        "control_socket",
        "metrics_listen",
        "max_parallel",
    ];
}

#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    /// Local time `HH:MM` of the daily system backup. Default `02:00`.
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    )]
    pub daily_at: Option<S<String>>,
    /// IANA time zone of `daily_at`. Default `UTC`.
    #[schemars(with = "Option<String>")]
    pub timezone: Option<S<String>>,
    /// How long system backups and local on-demand backups are kept, like `3d`. Default `3d`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+[smhdwy]$"))]
    pub retention: Option<S<String>>,
    /// The newest N completed backups of an instance never expire. Default 1.
    #[schemars(with = "Option<u32>", range(min = 0, max = 1000))]
    pub keep_last_good: Option<S<i64>>,
    /// On-demand backups need an instance version at least this, like `8.1`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+(\.[0-9]+)*$"))]
    pub min_backup_version: Option<S<String>>,
    /// Share of the repository read back by the daily check, like `5%`. Default `5%`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+(\.[0-9]+)?%$"))]
    pub verify: Option<S<String>>,
    /// How long a backup removed from the file is kept (restorable by id, revived by putting
    /// its key back) before its data is deleted, like `1d`. Default `1d`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+[smhdwy]$"))]
    pub deletion_grace: Option<S<String>>,
    /// Where system backups (daily, pre-update, pre-restore) go: a storage's name. Default
    /// `local`.
    #[schemars(with = "Option<String>")]
    pub storage: Option<S<String>>,
    /// Restore drills: how often the newest backup of each instance is restored into
    /// `drill_dir`, checked and timed: `off`, `daily`, `weekly` or a duration of at least `1h`,
    /// like `3d`. Default `off`.
    #[schemars(
        with = "Option<String>",
        regex(pattern = r"^(off|daily|weekly|[0-9]+[smhdwy])$")
    )]
    pub drill: Option<S<String>>,
    /// The scratch folder restore drills restore into (never an instance's). Default
    /// `<state_dir>/drills`.
    #[schemars(with = "Option<String>")]
    pub drill_dir: Option<S<String>>,
}

impl RawSchedule {
    pub const KEYS: &[&str] = &[
        "daily_at",
        "timezone",
        "retention",
        "keep_last_good",
        "min_backup_version",
        "verify",
        "deletion_grace",
        "storage",
        "drill",
        "drill_dir",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    Azure,
    S3,
}

/// A repository. The keys that apply depend on `kind`.
#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// `local`, `azure` or `s3`. Default `local` for the storage named `local`.
    #[schemars(with = "Option<StorageKind>")]
    pub kind: Option<S<StorageKind>>,
    /// local: folder of the repository. Default `<state_dir>/repository` for `local`.
    /// azure, s3: the repository's folder inside the container or bucket. Default: its top.
    #[schemars(with = "Option<String>")]
    pub path: Option<S<String>>,
    /// File holding the repository password. Default: a key generated into the state dir.
    #[schemars(with = "Option<String>")]
    pub password_file: Option<S<String>>,
    /// azure: storage account name.
    #[schemars(with = "Option<String>")]
    pub account: Option<S<String>>,
    /// azure: blob container.
    #[schemars(with = "Option<String>")]
    pub container: Option<S<String>>,
    /// azure: file holding the account key.
    #[schemars(with = "Option<String>")]
    pub access_key_file: Option<S<String>>,
    /// azure: environment variable holding the account key.
    #[schemars(with = "Option<String>")]
    pub access_key_env: Option<S<String>>,
    /// s3: bucket name.
    #[schemars(with = "Option<String>")]
    pub bucket: Option<S<String>>,
    /// s3: region.
    #[schemars(with = "Option<String>")]
    pub region: Option<S<String>>,
    /// s3: access key id (not a secret).
    #[schemars(with = "Option<String>")]
    pub access_key_id: Option<S<String>>,
    /// s3: file holding the secret access key.
    #[schemars(with = "Option<String>")]
    pub secret_access_key_file: Option<S<String>>,
    /// s3: environment variable holding the secret access key.
    #[schemars(with = "Option<String>")]
    pub secret_access_key_env: Option<S<String>>,
    /// azure, s3: service URL (emulators, sovereign clouds).
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<S<String>>,
    /// How long backups here are kept: a duration or `forever`. Default: the schedule's
    /// retention for local storage, `forever` for external storage.
    #[schemars(with = "Option<String>")]
    pub retention: Option<S<String>>,
    /// Restores of backups older than this are refused, like `3y`. Default `3y` for external
    /// storage, none for local storage.
    #[schemars(with = "Option<String>")]
    pub max_restore_age: Option<S<String>>,
    /// Whether removing a backup from the file also deletes its data here. Default false for
    /// external storage; local data is always deleted.
    #[schemars(with = "Option<bool>")]
    pub purge_on_delete: Option<S<bool>>,
    /// Whether restore drills may restore backups kept here (reading them back costs egress
    /// from a cloud). Default true for local storage, false for azure and s3.
    #[schemars(with = "Option<bool>")]
    pub drill: Option<S<bool>>,
}

impl RawStorage {
    pub const KEYS: &[&str] = &[
        "kind",
        "path",
        "password_file",
        "account",
        "container",
        "access_key_file",
        "access_key_env",
        "bucket",
        "region",
        "access_key_id",
        "secret_access_key_file",
        "secret_access_key_env",
        "endpoint",
        "retention",
        "max_restore_age",
        "purge_on_delete",
        "drill",
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceType {
    Production,
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Directory,
    Sqlite,
    Postgres,
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    /// `production` or `sandbox`. Only a sandbox can be the target of a restore.
    #[serde(rename = "type")]
    #[schemars(with = "InstanceType")]
    pub kind: S<InstanceType>,
    /// Dotted version of the data store, like `9.0`. Changing it runs an update.
    #[schemars(with = "String", regex(pattern = r"^[0-9]+(\.[0-9]+)*$"))]
    pub version: S<String>,
    /// Where the data is.
    pub source: RawSource,
    /// Command run after the pre-update backup when `version` changes; `{version}` is replaced.
    #[schemars(with = "Option<Vec<String>>")]
    pub on_update: Option<S<Vec<String>>>,
    /// Command run right before a restore swaps this instance's data (for example
    /// `["systemctl", "stop", "app"]`); a failure cancels the restore, the data untouched.
    #[schemars(with = "Option<Vec<String>>")]
    pub before_restore: Option<S<Vec<String>>>,
    /// Command run right after a restore swapped this instance's data.
    #[schemars(with = "Option<Vec<String>>")]
    pub after_restore: Option<S<Vec<String>>>,
    /// Command run before every backup of this instance (quiesce it); a failure fails the
    /// backup.
    #[schemars(with = "Option<Vec<String>>")]
    pub before_backup: Option<S<Vec<String>>>,
    /// Command run after every backup of this instance whose `before_backup` succeeded,
    /// whatever the backup's outcome.
    #[schemars(with = "Option<Vec<String>>")]
    pub after_backup: Option<S<Vec<String>>>,
    /// How long each hook of this instance may run before it is killed, like `10m`. Default
    /// `10m`.
    #[schemars(with = "Option<String>", regex(pattern = r"^[0-9]+[smhdwy]$"))]
    pub hook_timeout: Option<S<String>>,
    /// directory instances: glob patterns left out of backups, like `["cache/**", "*.tmp"]`.
    /// A pattern with a `/` is relative to the instance's folder; one without matches a
    /// name at any depth.
    #[schemars(with = "Option<Vec<String>>")]
    pub exclude: Option<S<Vec<String>>>,
    /// Restore drills of this instance: `false` (none), `true` (the schedule's interval,
    /// `weekly` when it has none), or its own interval (`daily`, `weekly`, a duration).
    /// Default: the schedule's `drill`.
    #[schemars(with = "Option<RawDrill>")]
    pub drill: Option<S<RawDrill>>,
    /// On-demand backups of this instance, by key.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawBackup>")]
    pub backups: BTreeMap<S<String>, RawBackup>,
}

/// An instance's `drill`: on or off, or an interval.
#[derive(Debug, Clone, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum RawDrill {
    Switch(bool),
    Every(String),
}

impl RawInstance {
    pub const KEYS: &[&str] = &[
        "type",
        "version",
        "source",
        "on_update",
        "before_restore",
        "after_restore",
        "before_backup",
        "after_backup",
        "hook_timeout",
        "exclude",
        "drill",
        "backups",
    ];
}

/// `{ kind = "directory", path = ... }`, `{ kind = "sqlite", path = ... }` or
/// `{ kind = "postgres", url = ... }`.
#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[schemars(with = "SourceKind")]
    pub kind: S<SourceKind>,
    /// directory, sqlite: the folder or database file.
    #[schemars(with = "Option<String>")]
    pub path: Option<S<String>>,
    /// postgres: connection URL without a password.
    #[schemars(with = "Option<String>")]
    pub url: Option<S<String>>,
    /// postgres: file holding the password.
    #[schemars(with = "Option<String>")]
    pub password_file: Option<S<String>>,
    /// postgres: the folder holding `pg_dump`, `pg_restore` and `psql` (default: the `PATH`).
    #[schemars(with = "Option<String>")]
    pub bin_dir: Option<S<String>>,
}

impl RawSource {
    pub const KEYS: &[&str] = &["kind", "path", "url", "password_file", "bin_dir"];
}

#[derive(Debug, Default, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// Shown in the backup list, at most 200 characters. Default: the key.
    #[schemars(with = "Option<String>", length(max = super::validate::MAX_LABEL_CHARS))]
    pub label: Option<S<String>>,
    /// Free text shown with the backup, at most 2000 characters.
    #[schemars(with = "Option<String>", length(max = super::validate::MAX_NOTES_CHARS))]
    pub notes: Option<S<String>>,
    /// Name of a storage. Default `local`. Cannot change once the backup exists.
    #[schemars(with = "Option<String>")]
    pub storage: Option<S<String>>,
}

impl RawBackup {
    pub const KEYS: &[&str] = &["label", "notes", "storage"];
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRestore {
    /// The backup: `<instance>/<key>`, `<instance>@latest`, `<instance>@daily:YYYY-MM-DD`,
    /// `<instance>@pre-update:<version>` or a backup UUID.
    #[schemars(with = "String")]
    pub from: S<String>,
    /// Name of the sandbox instance to restore into.
    #[schemars(with = "String")]
    pub to: S<String>,
}

impl RawRestore {
    pub const KEYS: &[&str] = &["from", "to"];
}

// ---------------------------------------------------------------------------------------------
// The reader.

/// What [`read`] made of a text.
pub struct Read {
    /// `None` only when the text is not TOML at all. Otherwise holds everything that could be
    /// read; entries with problems are left out and `skipped` names them.
    pub config: Option<RawConfig>,
    /// Entries left out because of a problem (already reported), as `instances.<name>` or
    /// `storage.<name>`, so that later checks do not call them unknown.
    pub skipped: BTreeSet<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads a TOML text into [`RawConfig`], with every structural problem found.
pub fn read(src: &str) -> Read {
    let mut root = match doc::parse(src) {
        Ok(root) => root,
        Err(errors) => return syntax_errors(errors),
    };
    let mut r = Reader {
        diags: Vec::new(),
        skipped: BTreeSet::new(),
    };
    let t = &mut root;
    r.keys(t, &"the top level", RawConfig::KEYS);
    let cfg = RawConfig {
        daemon: r.section(t, "daemon", Reader::daemon),
        schedule: r.section(t, "schedule", |r, t| RawSchedule {
            daily_at: r.string(t, "daily_at"),
            timezone: r.string(t, "timezone"),
            retention: r.string(t, "retention"),
            keep_last_good: r.int(t, "keep_last_good"),
            min_backup_version: r.string(t, "min_backup_version"),
            verify: r.string(t, "verify"),
            deletion_grace: r.string(t, "deletion_grace"),
            storage: r.string(t, "storage"),
            drill: r.string(t, "drill"),
            drill_dir: r.string(t, "drill_dir"),
        }),
        storage: r.map(t.get_mut("storage"), &"storage", |r, t, _, name| {
            r.storage(t, name)
        }),
        instances: r.map(t.get_mut("instances"), &"instances", |r, t, span, name| {
            r.instance(t, span, name)
        }),
        restores: r.map(t.get_mut("restores"), &"restores", |r, t, span, name| {
            let what = format_args!("[restores.{name}]");
            let from = r.required(t, span.clone(), "from", &what, Reader::string);
            let to = r.required(t, span, "to", &what, Reader::string);
            r.keys(t, &what, RawRestore::KEYS);
            Some(RawRestore {
                from: from?,
                to: to?,
            })
        }),
        notify: r.notify(t),
    };
    Read {
        config: Some(cfg),
        skipped: r.skipped,
        diagnostics: r.diags,
    }
}

/// The `[daemon]` section alone, for commands that show what is recorded even when the rest
/// of the file is invalid. `Err` with the first problem when the section cannot be trusted:
/// the file is not TOML, or the section itself has a problem (a misspelled `state_dir` would
/// send them to the wrong state).
pub fn read_daemon(src: &str) -> Result<RawDaemon, Diagnostic> {
    let root = match doc::parse(src) {
        Ok(root) => root,
        // Not TOML: the reader's syntax diagnostic.
        Err(errors) => return Err(syntax_errors(errors).diagnostics.swap_remove(0)),
    };
    let mut r = Reader {
        diags: Vec::new(),
        skipped: BTreeSet::new(),
    };
    let daemon = r.section(&root, "daemon", Reader::daemon);
    match r.diags.into_iter().next() {
        Some(d) => Err(d),
        None => Ok(daemon),
    }
}

/// The text is not TOML: one diagnostic per error toml reports.
fn syntax_errors(errors: Vec<toml::de::Error>) -> Read {
    let diagnostics = errors
        .into_iter()
        .map(|e| {
            let span = e.span().unwrap_or(0..0);
            Diagnostic::error("syntax", span, e.message().trim().to_string())
                .hint("the file is not valid TOML; see https://toml.io for the syntax")
        })
        .collect();
    Read {
        config: None,
        skipped: BTreeSet::new(),
        diagnostics,
    }
}

struct Reader {
    diags: Vec<Diagnostic>,
    skipped: BTreeSet<String>,
}

impl Reader {
    fn daemon(&mut self, t: &Table<'_>) -> RawDaemon {
        RawDaemon {
            state_dir: self.string(t, "state_dir"),
            control_socket: self.string(t, "control_socket"),
            metrics_listen: self.string(t, "metrics_listen"),
            max_parallel: self.int(t, "max_parallel"),
        }
    }

    /// `[notify]`: an inline URL (`webhook_url`, `ping_url`, `url`) is refused as a secret
    /// in the file, its value never shown; other unknown keys as usual.
    fn notify(&mut self, root: &Table<'_>) -> RawNotify {
        let Some(v) = root.get("notify") else {
            return RawNotify::default();
        };
        let Some(t) = self.table(v, &"[notify]") else {
            return RawNotify::default();
        };
        let out = RawNotify {
            command: self.string_array(t, "command"),
            webhook_url_file: self.string(t, "webhook_url_file"),
            ping_url_file: self.string(t, "ping_url_file"),
        };
        let before = self.diags.len();
        self.keys(t, &"[notify]", RawNotify::KEYS);
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            if RawNotify::KEYS.contains(&key) || !(key == "url" || key.ends_with("_url")) {
                continue;
            }
            // Reported as unknown above, value shown: replaced by the refusal of a secret.
            let span = k.span();
            let mut i = before;
            while i < self.diags.len() {
                if self.diags[i].span == span {
                    self.diags.remove(i);
                } else {
                    i += 1;
                }
            }
            let home = if key.starts_with("ping") {
                "ping_url_file"
            } else {
                "webhook_url_file"
            };
            self.diags.push(
                Diagnostic::error(
                    "inline-secret",
                    span,
                    format!("`{key}` would put a URL in the file, and a webhook's or a ping check's URL is a secret (its token or id lets anyone post to it)"),
                )
                .hint(format!("put the URL in a file readable only by backplan and name it with `{home}`; under systemd use LoadCredential= and $CREDENTIALS_DIRECTORY"))
                .redact(v.span()),
            );
        }
        out
    }

    /// Reports the keys of `t` that are not in `known`.
    /// `what` names the table in messages; it is formatted only when a problem is reported.
    fn keys(&mut self, t: &Table<'_>, what: &dyn Display, known: &[&str]) {
        self.keys_with_secrets(t, what, known, None)
    }

    /// Like [`Self::keys`]; `secret_homes` are the `*_file` / `*_env` keys to suggest for an
    /// inline secret when the key itself has none (default: those of `known`).
    fn keys_with_secrets(
        &mut self,
        t: &Table<'_>,
        what: &dyn Display,
        known: &[&str],
        secret_homes: Option<&[&str]>,
    ) {
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            if known.contains(&key) {
                continue;
            }
            let suggestion = did_you_mean(key, known.iter().copied());
            // A misspelt secret (`pasword = "..."`) is never shown either: reported as an
            // inline secret, or, when a key close to it exists, as unknown with its value masked.
            let secret = looks_secret(key, suggestion);
            let d = if is_inline_secret(key) || (secret && suggestion.is_none()) {
                let is_home = |k: &&&str| k.ends_with("_file") || k.ends_with("_env");
                let own: Vec<&&str> = known
                    .iter()
                    .filter(|k| is_home(k) && k.starts_with(key))
                    .collect();
                let homes: Vec<String> = if !own.is_empty() {
                    own.iter().map(|k| format!("`{k}`")).collect()
                } else {
                    secret_homes
                        .unwrap_or(known)
                        .iter()
                        .filter(|k| is_home(k))
                        .map(|k| format!("`{k}`"))
                        .collect()
                };
                let how = if homes.is_empty() {
                    format!("{what} takes no secret; remove it")
                } else {
                    format!(
                        "put the secret in a file readable only by backplan (or an environment variable) and name it with {}",
                        homes.join(" or ")
                    )
                };
                Diagnostic::error(
                    "inline-secret",
                    k.span(),
                    format!(
                        "`{key}` would put a secret in the file, which is kept in version control"
                    ),
                )
                .hint(format!(
                    "{how}; under systemd use LoadCredential= and $CREDENTIALS_DIRECTORY"
                ))
                .redact(v.span())
            } else {
                let mut d = Diagnostic::error(
                    "unknown-key",
                    k.span(),
                    format!("unknown key `{key}` in {what}"),
                );
                if secret {
                    d = d.redact(v.span());
                }
                match suggestion {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None => d.hint(format!("the keys allowed here are: {}", known.join(", "))),
                }
            };
            self.diags.push(d);
        }
    }

    fn table<'t, 'i>(&mut self, v: &'t Item<'i>, what: &dyn Display) -> Option<&'t Table<'i>> {
        match v.get_ref() {
            Value::Table(t) => Some(t),
            other => {
                self.type_error(v.span(), what, "a table", other);
                None
            }
        }
    }

    /// As [`Self::table`], for a table the reader frees once read.
    fn table_mut<'t, 'i>(
        &mut self,
        v: &'t mut Item<'i>,
        what: &dyn Display,
    ) -> Option<&'t mut Table<'i>> {
        let span = v.span();
        match v.get_mut() {
            Value::Table(t) => Some(t),
            other => {
                self.type_error(span, what, "a table", other);
                None
            }
        }
    }

    fn type_error(
        &mut self,
        span: Range<usize>,
        what: &dyn Display,
        expected: &str,
        found: &Value<'_>,
    ) {
        self.diags.push(Diagnostic::error(
            "wrong-type",
            span,
            format!(
                "{what} must be {expected}, not {}",
                with_article(found.type_str())
            ),
        ));
    }

    /// A fixed section such as `[daemon]`: absent is the default.
    fn section<T: Default>(
        &mut self,
        root: &Table<'_>,
        name: &str,
        f: impl FnOnce(&mut Self, &Table<'_>) -> T,
    ) -> T {
        let Some(v) = root.get(name) else {
            return T::default();
        };
        let what = format_args!("[{name}]");
        let Some(t) = self.table(v, &what) else {
            return T::default();
        };
        let out = f(self, t);
        let known = match name {
            "daemon" => RawDaemon::KEYS,
            _ => RawSchedule::KEYS,
        };
        self.keys(t, &what, known);
        out
    }

    /// A map section such as `[instances.<name>]`. Entries that could not be read are left out
    /// (their problems are reported). Each entry's table is freed once read, while it is still
    /// in the cache (rather than in the walk that frees the whole tree afterwards).
    fn map<T>(
        &mut self,
        section: Option<&mut Item<'_>>,
        name: &dyn Display,
        mut f: impl FnMut(&mut Self, &mut Table<'_>, Range<usize>, &str) -> Option<T>,
    ) -> BTreeMap<S<String>, T> {
        let Some(v) = section else {
            return BTreeMap::new();
        };
        let Some(t) = self.table_mut(v, &format_args!("[{name}]")) else {
            return BTreeMap::new();
        };
        // Read in the tree's order, which is the map's: built at once from the sorted list.
        let mut out = Vec::with_capacity(t.len());
        for (k, v) in t.iter_mut() {
            let key: &str = k.get_ref();
            let what = format_args!("[{name}.{key}]");
            if let Err(msg) = crate::config::values::check_name(key) {
                self.diags.push(Diagnostic::error("bad-name", k.span(), msg).hint(format!(
                    "rename {what}; names appear in plan addresses and in backup references like `<instance>/<backup-key>`, so they cannot hold spaces, `/` or `@`"
                )));
                self.skipped.insert(format!("{name}.{key}"));
                continue;
            }
            let item = self.table_mut(v, &what).and_then(|entry| {
                let item = f(self, entry, k.span(), key);
                drop(std::mem::take(entry));
                item
            });
            match item {
                Some(item) => {
                    out.push((Spanned::new(k.span(), key.to_string()), item));
                }
                None => {
                    self.skipped.insert(format!("{name}.{key}"));
                }
            }
        }
        BTreeMap::from_iter(out)
    }

    /// `None` when `kind` is given but unreadable: the storage is then left out whole.
    fn storage(&mut self, t: &Table<'_>, name: &str) -> Option<RawStorage> {
        let s = RawStorage {
            kind: self.keyword(
                t,
                "kind",
                &[
                    ("local", StorageKind::Local),
                    ("azure", StorageKind::Azure),
                    ("s3", StorageKind::S3),
                ],
            ),
            path: self.string(t, "path"),
            password_file: self.string(t, "password_file"),
            account: self.string(t, "account"),
            container: self.string(t, "container"),
            access_key_file: self.string(t, "access_key_file"),
            access_key_env: self.string(t, "access_key_env"),
            bucket: self.string(t, "bucket"),
            region: self.string(t, "region"),
            access_key_id: self.string(t, "access_key_id"),
            secret_access_key_file: self.string(t, "secret_access_key_file"),
            secret_access_key_env: self.string(t, "secret_access_key_env"),
            endpoint: self.string(t, "endpoint"),
            retention: self.string(t, "retention"),
            max_restore_age: self.string(t, "max_restore_age"),
            purge_on_delete: self.boolean(t, "purge_on_delete"),
            drill: self.boolean(t, "drill"),
        };
        let homes: &[&str] = match s.kind.as_ref().map(|k| *k.get_ref()) {
            Some(StorageKind::Azure) => &["access_key_file", "access_key_env"],
            Some(StorageKind::S3) => &["secret_access_key_file", "secret_access_key_env"],
            _ => &["password_file"],
        };
        self.keys_with_secrets(
            t,
            &format_args!("[storage.{name}]"),
            RawStorage::KEYS,
            Some(homes),
        );
        (s.kind.is_some() || t.get("kind").is_none()).then_some(s)
    }

    fn instance(
        &mut self,
        t: &mut Table<'_>,
        span: Range<usize>,
        name: &str,
    ) -> Option<RawInstance> {
        let what = format_args!("[instances.{name}]");
        let kind = self.required(t, span.clone(), "type", &what, |r, t, k| {
            r.keyword(
                t,
                k,
                &[
                    ("production", InstanceType::Production),
                    ("sandbox", InstanceType::Sandbox),
                ],
            )
        });
        let version = self.required(t, span.clone(), "version", &what, Reader::string);
        let source = self.required(t, span, "source", &what, |r, t, k| {
            let v = t.get(k)?;
            let st = r.table(v, &format_args!("`source` of {what}"))?;
            let kind = r.required(
                st,
                v.span(),
                "kind",
                &format_args!("`source` of {what}"),
                |r, t, k| {
                    r.keyword(
                        t,
                        k,
                        &[
                            ("directory", SourceKind::Directory),
                            ("sqlite", SourceKind::Sqlite),
                            ("postgres", SourceKind::Postgres),
                        ],
                    )
                },
            );
            let src = RawSource {
                kind: kind?,
                path: r.string(st, "path"),
                url: r.string(st, "url"),
                password_file: r.string(st, "password_file"),
                bin_dir: r.string(st, "bin_dir"),
            };
            r.keys(st, &format_args!("`source` of {what}"), RawSource::KEYS);
            Some(src)
        });
        let on_update = self.string_array(t, "on_update");
        let before_restore = self.string_array(t, "before_restore");
        let after_restore = self.string_array(t, "after_restore");
        let before_backup = self.string_array(t, "before_backup");
        let after_backup = self.string_array(t, "after_backup");
        let hook_timeout = self.string(t, "hook_timeout");
        let exclude = self.string_array(t, "exclude");
        let drill = self.drill(t, "drill");
        let backups = self.map(
            t.get_mut("backups"),
            &format_args!("instances.{name}.backups"),
            |r, b, _, key| {
                let out = RawBackup {
                    label: r.string(b, "label"),
                    notes: r.string(b, "notes"),
                    storage: r.string(b, "storage"),
                };
                r.keys(
                    b,
                    &format_args!("[instances.{name}.backups.{key}]"),
                    RawBackup::KEYS,
                );
                Some(out)
            },
        );
        self.keys(t, &what, RawInstance::KEYS);
        Some(RawInstance {
            kind: kind?,
            version: version?,
            source: source?,
            on_update,
            before_restore,
            after_restore,
            before_backup,
            after_backup,
            hook_timeout,
            exclude,
            drill,
            backups,
        })
    }

    /// An instance's `drill`: `true`, `false` or a string (read by validation).
    fn drill(&mut self, t: &Table<'_>, key: &str) -> Option<S<RawDrill>> {
        let v = t.get(key)?;
        match v.get_ref() {
            Value::Boolean(b) => Some(Spanned::new(v.span(), RawDrill::Switch(*b))),
            Value::String(s) => Some(Spanned::new(v.span(), RawDrill::Every(s.to_string()))),
            other => {
                self.type_error(
                    v.span(),
                    &format_args!("`{key}`"),
                    "`true`, `false` or an interval like \"weekly\"",
                    other,
                );
                None
            }
        }
    }

    /// A key that must be present; a missing one is reported at the table's name.
    fn required<T>(
        &mut self,
        t: &Table<'_>,
        table_span: Range<usize>,
        key: &str,
        what: &dyn Display,
        f: impl FnOnce(&mut Self, &Table<'_>, &str) -> Option<T>,
    ) -> Option<T> {
        if t.get(key).is_none() {
            self.diags.push(
                Diagnostic::error("missing-key", table_span, format!("{what} has no `{key}`"))
                    .hint(format!("add {}; it has no default", example(key))),
            );
            return None;
        }
        f(self, t, key)
    }

    fn string(&mut self, t: &Table<'_>, key: &str) -> Option<S<String>> {
        let v = t.get(key)?;
        match v.get_ref() {
            Value::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            other => {
                self.type_error(v.span(), &format_args!("`{key}`"), "a string", other);
                None
            }
        }
    }

    fn int(&mut self, t: &Table<'_>, key: &str) -> Option<S<i64>> {
        let v = t.get(key)?;
        match v.get_ref() {
            Value::Integer(i) => {
                match i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
                    Ok(n) => Some(Spanned::new(v.span(), n)),
                    Err(_) => {
                        self.diags.push(Diagnostic::error(
                            "out-of-range",
                            v.span(),
                            format!("`{key}` is too large"),
                        ));
                        None
                    }
                }
            }
            other => {
                self.type_error(v.span(), &format_args!("`{key}`"), "an integer", other);
                None
            }
        }
    }

    fn boolean(&mut self, t: &Table<'_>, key: &str) -> Option<S<bool>> {
        let v = t.get(key)?;
        match v.get_ref() {
            Value::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            other => {
                self.type_error(
                    v.span(),
                    &format_args!("`{key}`"),
                    "`true` or `false`",
                    other,
                );
                None
            }
        }
    }

    fn string_array(&mut self, t: &Table<'_>, key: &str) -> Option<S<Vec<String>>> {
        let v = t.get(key)?;
        let what = format_args!("`{key}`");
        let Value::Array(items) = v.get_ref() else {
            self.type_error(v.span(), &what, "an array of strings", v.get_ref());
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                Value::String(s) => out.push(s.to_string()),
                other => {
                    self.type_error(
                        item.span(),
                        &format_args!("each item of {what}"),
                        "a string",
                        other,
                    );
                    return None;
                }
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    fn keyword<T: Copy>(&mut self, t: &Table<'_>, key: &str, words: &[(&str, T)]) -> Option<S<T>> {
        // As `string`, without copying the text.
        let v = t.get(key)?;
        let Value::String(s) = v.get_ref() else {
            self.type_error(v.span(), &format_args!("`{key}`"), "a string", v.get_ref());
            return None;
        };
        let s: &str = s;
        if let Some((_, w)) = words.iter().find(|(w, _)| *w == s) {
            return Some(Spanned::new(v.span(), *w));
        }
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let mut d = Diagnostic::error(
            "unknown-value",
            v.span(),
            format!("`{key}` cannot be `{s}`"),
        );
        d = match did_you_mean(s, names.iter().copied()) {
            Some(n) => d.hint(format!(
                "did you mean `{n}`? (one of: {})",
                names.join(", ")
            )),
            None => d.hint(format!("write one of: {}", names.join(", "))),
        };
        self.diags.push(d);
        None
    }
}

/// How to write a required key, for hints.
fn example(key: &str) -> String {
    match key {
        "type" => "`type = \"production\"` or `type = \"sandbox\"`".into(),
        "version" => "the instance's version, like `version = \"9.0\"`".into(),
        "source" => "where the data is, like `source = { kind = \"directory\", path = \"/srv/app\" }`".into(),
        "kind" => "`kind = \"directory\"`, `\"sqlite\"` or `\"postgres\"`".into(),
        "from" => "the backup to restore, like `from = \"<instance>/<backup-key>\"` or `\"<instance>@latest\"`".into(),
        "to" => "the sandbox instance to restore into, like `to = \"contoso-sandbox\"`".into(),
        _ => format!("`{key} = ...`"),
    }
}

fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

/// Words that name a secret in a key.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "access_key",
    "account_key",
    "api_key",
    "private_key",
    "connection_string",
    "credential",
];

/// Keys that would hold a secret inline. Their `_file` / `_env` forms are fine.
fn is_inline_secret(key: &str) -> bool {
    if key.ends_with("_file") || key.ends_with("_env") || key == "access_key_id" {
        return false;
    }
    SECRET_WORDS.iter().any(|w| key.contains(w)) || key == "key"
}

/// Whether an unknown key may hold a secret, so that its value is never shown: did-you-mean
/// leads to a secret key (or its `_file` / `_env` home), a word of it is `key`, or a word (or
/// two words) of it is a misspelt secret word (`pasword`, `acces_key`, `secert`). Masking a
/// value that was no secret costs nothing; showing one that was is the harm.
fn looks_secret(key: &str, suggestion: Option<&str>) -> bool {
    let home = |s: &str| {
        s.strip_suffix("_file")
            .or_else(|| s.strip_suffix("_env"))
            .unwrap_or(s)
            .to_string()
    };
    if suggestion.is_some_and(|s| is_inline_secret(&home(s))) {
        return true;
    }
    let key = key.to_ascii_lowercase();
    let words: Vec<&str> = key.split(['_', '-', '.']).collect();
    let pairs = words.windows(2).map(|w| format!("{}_{}", w[0], w[1]));
    let close = |w: &str| {
        SECRET_WORDS.iter().any(|s| {
            let allowed = if s.len() >= 6 { 2 } else { 1 };
            crate::diagnostic::levenshtein(w, s) <= allowed
        })
    };
    words
        .iter()
        .any(|w| matches!(*w, "key" | "keys") || close(w))
        || pairs.into_iter().any(|p| close(&p))
        || close(&key)
}
