//! What `status`, `backups` and `show` display, as plain serialisable data computed from the
//! configuration and the recorded state (no I/O): the CLI prints it, the daemon will serve it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::values::BackupRef;
use crate::config::{Config, InstanceType};
use crate::plan::planner::next_daily;
use crate::records::*;

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InstanceType,
    pub version: String,
    /// `ok`, `error` (the last operation on the instance failed), `daily failing` (its last
    /// daily backup failed or was skipped), `not created yet` (in the file, not applied) or
    /// `not in the file`.
    pub state: String,
    pub error: Option<String>,
    /// Since when the instance has not been ok (`daily failing`: the first slot of the run of
    /// daily backups that did not complete).
    pub since: Option<DateTime<Utc>>,
    pub last_good_backup: Option<LastGood>,
    /// Backups removed from the file and still in their deletion grace (restorable by id,
    /// revived by putting their key back), and when the first of them is deleted.
    pub deleting: Option<Deleting>,
    pub next_daily: Option<DateTime<Utc>>,
    /// The last restore drill of the instance, if it had one.
    pub last_drill: Option<DrillView>,
}

/// A restore drill as `status` and `show` display it.
#[derive(Debug, Clone, Serialize)]
pub struct DrillView {
    pub at: DateTime<Utc>,
    pub outcome: DrillOutcome,
    /// The measured restore time, in seconds.
    pub rto_seconds: Option<f64>,
    pub backup_id: uuid::Uuid,
    pub detail: String,
}

impl DrillView {
    pub fn of(r: &DrillRun) -> DrillView {
        DrillView {
            at: r.started_at,
            outcome: r.outcome,
            rto_seconds: r.rto_seconds,
            backup_id: r.backup_id,
            detail: r.detail.clone(),
        }
    }

    /// `passed 2026-11-27 02:05Z, restore 1.2 s` (and what went wrong when it failed).
    pub fn text(&self) -> String {
        let rto = self
            .rto_seconds
            .map(|s| format!(", restore took {}", seconds(s)))
            .unwrap_or_default();
        match self.outcome {
            DrillOutcome::Passed => format!("passed {}{rto}", short_time(&self.at)),
            DrillOutcome::Failed => {
                format!("FAILED {}{rto}: {}", short_time(&self.at), self.detail)
            }
        }
    }
}

/// A duration in seconds as people read it: `0.4 s`, `12 s`, `3 min 20 s`.
pub fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

/// The drills of backup `id` (newest first), from its instance's drill record.
pub fn drills_of(rec: &Recorded, b: &BackupRecord) -> Vec<DrillView> {
    rec.drills
        .get(&b.instance)
        .map(|d| {
            d.runs
                .iter()
                .filter(|r| r.backup_id == b.id)
                .map(DrillView::of)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize)]
pub struct Deleting {
    pub count: usize,
    pub next_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastGood {
    pub id: uuid::Uuid,
    pub label: String,
    pub completed_at: Option<DateTime<Utc>>,
}

/// Without a valid configuration, only what is recorded is shown (no next daily slot).
pub fn status(cfg: Option<&Config>, rec: &Recorded, now: DateTime<Utc>) -> Vec<InstanceStatus> {
    let declared_names = cfg.into_iter().flat_map(|c| c.instances.keys());
    let mut names: Vec<&String> = declared_names.chain(rec.instances.keys()).collect();
    names.sort();
    names.dedup();
    // The backups by instance, in one pass: each instance then looks at its own only.
    let mut by_instance: std::collections::HashMap<&str, Vec<&BackupRecord>> =
        std::collections::HashMap::new();
    for b in rec.backups.values() {
        by_instance.entry(b.instance.as_str()).or_default().push(b);
    }
    names
        .into_iter()
        .map(|name| {
            let recorded = rec.instances.get(name);
            let declared = cfg.and_then(|c| c.instances.get(name));
            let own = by_instance
                .get(name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let last_good = own
                .iter()
                .filter(|b| b.status == BackupStatus::Completed)
                .max_by_key(|b| (b.finished_at(), b.id))
                .map(|b| LastGood {
                    id: b.id,
                    label: b.label.clone(),
                    completed_at: b.completed_at,
                });
            let deleting: Vec<&BackupRecord> = own
                .iter()
                .filter(|b| b.status == BackupStatus::Deleting)
                .copied()
                .collect();
            let deleting = (!deleting.is_empty()).then(|| Deleting {
                count: deleting.len(),
                next_at: deleting.iter().filter_map(|b| b.delete_at).min(),
            });
            let (kind, version) = match (recorded, declared) {
                (Some(r), _) => (r.kind, r.version.to_string()),
                (None, Some(d)) => (d.kind, d.version.to_string()),
                (None, None) => unreachable!("the name comes from one of them"),
            };
            let failing = daily_failing(own);
            let drill_failed = rec
                .drills
                .get(name)
                .and_then(|d| d.last())
                .is_some_and(|r| r.outcome == DrillOutcome::Failed);
            let state = match (recorded, declared) {
                (Some(r), Some(_)) if r.error.is_some() => "error",
                (Some(_), Some(_)) if failing.is_some() => "daily failing",
                (Some(_), Some(_)) if drill_failed => "drill failed",
                (Some(_), Some(_)) => "ok",
                (None, Some(_)) => "not created yet",
                (Some(_), None) if cfg.is_none() => "unknown (invalid file)",
                (Some(_), None) => "not in the file",
                (None, None) => unreachable!(),
            };
            InstanceStatus {
                name: name.clone(),
                kind,
                version,
                state: state.to_string(),
                error: recorded
                    .and_then(|r| r.error.clone())
                    .or_else(|| failing.as_ref().map(|f| f.0.clone())),
                since: failing.map(|f| f.1),
                last_good_backup: last_good,
                deleting,
                next_daily: recorded
                    .and(cfg)
                    .map(|c| next_daily(&c.schedule, rec, name, now)),
                last_drill: rec
                    .drills
                    .get(name)
                    .and_then(|d| d.last())
                    .map(DrillView::of),
            }
        })
        .collect()
}

/// Why an instance's daily backups are not ok, and since when: its newest daily backup failed
/// or was skipped. `None` when the newest one completed (or is under way, or there is none).
/// `own`: the instance's backups.
fn daily_failing(own: &[&BackupRecord]) -> Option<(String, DateTime<Utc>)> {
    let mut dailies: Vec<&BackupRecord> = own
        .iter()
        .copied()
        .filter(|b| b.kind == BackupKind::Daily)
        .filter(|b| !matches!(b.status, BackupStatus::Expired | BackupStatus::Deleting))
        .collect();
    dailies.sort_by_key(|b| (b.date, b.created_at, b.id));
    let bad = |b: &&BackupRecord| matches!(b.status, BackupStatus::Failed | BackupStatus::Skipped);
    let last = *dailies.last().filter(|b| bad(b))?;
    let run: Vec<&BackupRecord> = dailies
        .iter()
        .rev()
        .take_while(|b| bad(b))
        .copied()
        .collect();
    let first = run.last().expect("the last one is in the run");
    let date = |b: &BackupRecord| b.date.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
    let error = last
        .error
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    let what = match last.status {
        BackupStatus::Failed if last.attempts == 1 => format!("failed after 1 try{error}"),
        BackupStatus::Failed => format!("failed after {} tries{error}", last.attempts),
        _ => format!("was skipped{error}"),
    };
    let why = match run.len() {
        1 => format!("the daily backup of {} {what}", date(last)),
        n => format!(
            "{n} daily backups did not complete; the one of {} {what}",
            date(last)
        ),
    };
    Some((why, first.created_at))
}

/// One line of the backup list: the record, and what the user may do with it.
#[derive(Debug, Clone)]
pub struct BackupView {
    pub record: BackupRecord,
    pub allowed_actions: Vec<&'static str>,
}

/// Fields of a backup that are absent from some records; JSON output shows them as `null`
/// (the records leave them out to stay small).
const OPTIONAL_FIELDS: [&str; 7] = [
    "key",
    "failed_at",
    "date",
    "version",
    "delete_at",
    "status_before_delete",
    "unreadable",
];

/// The record's fields (`null` where it has no value), then `allowed_actions`.
impl Serialize for BackupView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(&self.record).map_err(serde::ser::Error::custom)?;
        if let Some(o) = v.as_object_mut() {
            for k in OPTIONAL_FIELDS {
                o.entry(k).or_insert(serde_json::Value::Null);
            }
            o.entry("versions").or_insert(serde_json::json!({}));
            o.insert(
                "allowed_actions".into(),
                self.allowed_actions.clone().into(),
            );
        }
        v.serialize(s)
    }
}

/// The backups of one instance (or all), newest first. Expired and deleted records are left
/// out: their data is gone.
pub fn backups(rec: &Recorded, instance: Option<&str>) -> Vec<BackupView> {
    let mut list: Vec<BackupView> = rec
        .backups
        .values()
        .filter(|b| {
            instance.is_none_or(|i| b.instance == i)
                && !matches!(b.status, BackupStatus::Expired | BackupStatus::Deleted)
        })
        .map(|b| BackupView {
            record: b.clone(),
            allowed_actions: allowed_actions(b),
        })
        .collect();
    list.sort_by(|a, b| {
        (b.record.created_at, b.record.id).cmp(&(a.record.created_at, a.record.id))
    });
    list
}

/// Like the admin tab: on-demand backups can be edited and deleted (in the file); every
/// completed backup can be restored.
pub fn allowed_actions(b: &BackupRecord) -> Vec<&'static str> {
    let mut v = Vec::new();
    if b.kind == BackupKind::OnDemand && b.status != BackupStatus::Deleting {
        v.extend(["edit", "delete"]);
    }
    // In its deletion grace, a backup that had completed is still restorable (by id).
    let restorable = b.status == BackupStatus::Completed
        || (b.status == BackupStatus::Deleting
            && b.status_before_delete == Some(BackupStatus::Completed));
    if restorable {
        v.push("restore");
    }
    v
}

/// The status as a person reads it: a backup in its deletion grace says when its data goes.
pub fn status_text(b: &BackupRecord) -> String {
    match (b.status, b.delete_at) {
        (BackupStatus::Deleting, Some(t)) => {
            format!("deleting on {}", crate::plan::fmt_time(&t))
        }
        (status, _) => status.to_string(),
    }
}

/// The recorded backup a reference names (`backplan show`): the newest that matches.
pub fn find_backup<'r>(rec: &'r Recorded, r: &BackupRef) -> Option<&'r BackupRecord> {
    let matches = |b: &BackupRecord| match r {
        BackupRef::Id { id } => b.id == *id,
        BackupRef::OnDemand { instance, key } => {
            &b.instance == instance
                && b.kind == BackupKind::OnDemand
                && b.key.as_deref() == Some(key.as_str())
        }
        BackupRef::Latest { instance } => {
            &b.instance == instance && b.status == BackupStatus::Completed
        }
        BackupRef::Daily { instance, date } => {
            &b.instance == instance && b.kind == BackupKind::Daily && b.date == Some(*date)
        }
        BackupRef::PreUpdate { instance, version } => {
            &b.instance == instance
                && b.kind == BackupKind::PreUpdate
                && b.version.as_ref() == Some(version)
        }
    };
    rec.backups
        .values()
        .filter(|b| matches(b))
        .max_by_key(|b| (b.finished_at(), b.id))
}

/// Sizes as people read them: `512 B`, `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Times in tables: UTC to the minute (`2026-11-27 02:00Z`); plans, `show` and JSON keep
/// RFC 3339 to the second.
pub fn short_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%MZ").to_string()
}

/// Backup ids in tables: the first `width` characters ([`id_width`]), as restic shows
/// snapshot ids. The command line accepts any unique prefix ([`find_by_prefix`]).
pub fn short_id(id: &uuid::Uuid, width: usize) -> String {
    id.to_string().chars().take(width).collect()
}

/// How many characters of an id tell every recorded backup apart: 8, or more when two ids
/// start with the same 8 (so that every id a table shows is one `show` accepts).
pub fn id_width(rec: &Recorded) -> usize {
    // Ids in order are their text in order (lowercase hex): only neighbours share the
    // longest prefixes.
    let ids: Vec<String> = rec.backups.keys().map(|id| id.to_string()).collect();
    let shared = ids
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    (shared + 1).clamp(8, 36)
}

/// `1 file`, `2 files`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Who created a backup, as people read it (JSON keeps the recorded `System`/`user`).
pub fn created_by(c: CreatedBy) -> &'static str {
    match c {
        CreatedBy::System => "System",
        CreatedBy::User => "User",
    }
}

/// Whether `s` can only be the start of a backup id: hexadecimal digits and dashes, shorter
/// than a whole id.
pub fn is_id_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 36
        && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        && s.chars().any(|c| c.is_ascii_hexdigit())
}

/// The recorded backups whose id starts with `prefix` (case-insensitive), oldest first: one
/// is a match, more are ambiguous.
pub fn find_by_prefix<'r>(rec: &'r Recorded, prefix: &str) -> Vec<&'r BackupRecord> {
    let prefix = prefix.to_ascii_lowercase();
    let mut found: Vec<&BackupRecord> = rec
        .backups
        .values()
        .filter(|b| b.id.to_string().starts_with(&prefix))
        .collect();
    found.sort_by_key(|b| (b.created_at, b.id));
    found
}

/// The daemon's last check of an external storage, as `status` shows it: one line.
pub fn storage_check_line(
    name: &str,
    what: &str,
    at: &DateTime<Utc>,
    outcome: Option<&Result<(), String>>,
) -> String {
    let at = crate::plan::fmt_time(at);
    let state = match outcome {
        None => format!("checking (since {at})"),
        Some(Ok(())) => format!("usable (checked {at})"),
        Some(Err(e)) => format!("FAILED (checked {at}): {e}"),
    };
    let line = format!("Storage {name} ({what}): {state}");
    format!("{}\n", crate::diagnostic::printable(&line, true))
}
