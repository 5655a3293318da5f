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
    /// `ok`, `error`, `not created yet` (in the file, not applied) or `not in the file`.
    pub state: String,
    pub error: Option<String>,
    pub last_good_backup: Option<LastGood>,
    pub next_daily: Option<DateTime<Utc>>,
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
    names
        .into_iter()
        .map(|name| {
            let recorded = rec.instances.get(name);
            let declared = cfg.and_then(|c| c.instances.get(name));
            let last_good = rec
                .backups
                .values()
                .filter(|b| &b.instance == name && b.status == BackupStatus::Completed)
                .max_by_key(|b| (b.finished_at(), b.id))
                .map(|b| LastGood {
                    id: b.id,
                    label: b.label.clone(),
                    completed_at: b.completed_at,
                });
            let (kind, version) = match (recorded, declared) {
                (Some(r), _) => (r.kind, r.version.to_string()),
                (None, Some(d)) => (d.kind, d.version.to_string()),
                (None, None) => unreachable!("the name comes from one of them"),
            };
            let state = match (recorded, declared) {
                (Some(r), Some(_)) if r.error.is_some() => "error",
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
                error: recorded.and_then(|r| r.error.clone()),
                last_good_backup: last_good,
                next_daily: recorded
                    .and(cfg)
                    .map(|c| next_daily(&c.schedule, rec, name, now)),
            }
        })
        .collect()
}

/// One line of the backup list: the record, and what the user may do with it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupView {
    #[serde(flatten)]
    pub record: BackupRecord,
    pub allowed_actions: Vec<&'static str>,
}

/// The backups of one instance (or all), newest first. Expired records are left out: their
/// data is gone.
pub fn backups(rec: &Recorded, instance: Option<&str>) -> Vec<BackupView> {
    let mut list: Vec<BackupView> = rec
        .backups
        .values()
        .filter(|b| instance.is_none_or(|i| b.instance == i) && b.status != BackupStatus::Expired)
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
    if b.status == BackupStatus::Completed {
        v.push("restore");
    }
    v
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
