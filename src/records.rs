//! What backplan has recorded: instances it manages, backups, restores, the operations
//! journal. Plain data: `state` stores it in sled, the planner reads it, the CLI prints it.
//! Field names are the snake_case names of SPEC section 4 (they are also the `--json` output).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::values::Version;
use crate::config::{InstanceType, Source, SourceKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: InstanceType,
    pub version: Version,
    pub source: Source,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when the last operation on the instance failed (a failing `on_update` hook, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its creation failed (`error` says why): it is created again at the next run, and its
    /// daily slots are recorded as skipped with that reason meanwhile.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creation_failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    Daily,
    PreUpdate,
    PreRestore,
    OnDemand,
}

impl BackupKind {
    pub fn created_by(self) -> CreatedBy {
        match self {
            BackupKind::OnDemand => CreatedBy::User,
            _ => CreatedBy::System,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Daily => "daily",
            BackupKind::PreUpdate => "pre-update",
            BackupKind::PreRestore => "pre-restore",
            BackupKind::OnDemand => "on-demand",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreatedBy {
    System,
    #[serde(rename = "user")]
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Deleting,
    /// Removed by expiry: the data is gone, the record stays so that an expired on-demand
    /// backup still in the file is not taken again and a restore from it is refused clearly.
    Expired,
    /// A daily slot missed while the daemon was down (SPEC section 4): recorded, not taken.
    Skipped,
    /// Removed from the file and purged after its `deletion_grace`: the data is gone (or left
    /// in external storage), the record stays as a tombstone.
    Deleted,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Bytes read from the instance.
    pub read: u64,
    /// Bytes added to the repository after deduplication and compression.
    pub added: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: Uuid,
    pub instance: String,
    /// The kind of store it was taken from; a backup restores only into the same kind.
    pub source_kind: SourceKind,
    pub kind: BackupKind,
    /// The key in the file, for on-demand backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_by: CreatedBy,
    pub label: String,
    #[serde(default)]
    pub notes: String,
    pub storage: String,
    pub status: BackupStatus,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// `None`: kept until deleted.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub size_bytes: Option<Size>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// Tries made so far (retries with back-off, SPEC section 4).
    #[serde(default)]
    pub attempts: u32,
    /// When the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
    /// Daily backups: the slot's date in the schedule's timezone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<NaiveDate>,
    /// Pre-update backups: the version being updated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// `deleting` backups: when their data is deleted (`deletion_grace` after they left the
    /// file). `None` on a `deleting` record of an older version: due at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_at: Option<DateTime<Utc>>,
    /// `deleting` backups: the status to go back to if the key is put back in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_before_delete: Option<BackupStatus>,
    /// The versions of the software that made it, as its kind reports them (`Kind::versions`:
    /// a database server's, a dump tool's); a restore target may refuse by them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    /// A backup that failed because items of its source could not be read: which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Unreadable>,
}

/// The items of a source a backup could not read: the first [`Unreadable::MAX_LISTED`] of
/// them, and how many there were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    pub total: usize,
    pub paths: Vec<String>,
}

impl Unreadable {
    /// A record stays small: more than this many paths are counted, not listed.
    pub const MAX_LISTED: usize = 100;
}

impl BackupRecord {
    /// When the record last changed state, for "newest" comparisons.
    pub fn finished_at(&self) -> DateTime<Utc> {
        self.completed_at.unwrap_or(self.created_at)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub key: String,
    /// The backup reference as written in the file.
    pub from: String,
    /// The backup it resolved to.
    pub backup_id: Option<Uuid>,
    pub to: String,
    pub status: RestoreStatus,
    pub requested_at: DateTime<Utc>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// The pre-restore system backup of the target.
    #[serde(default)]
    pub safety_backup: Option<Uuid>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Started,
    Finished,
    Failed,
}

/// One line of the operations journal: each operation is written before it starts and when
/// it ends, so that a restart can tell what was interrupted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub op: String,
    pub address: String,
    pub phase: Phase,
    #[serde(default)]
    pub detail: String,
}

/// The repository a storage writes to, recorded the first time it was used: a repository at
/// the storage's path (a changed path, a remounted disk) is accepted only if it is this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageRecord {
    pub name: String,
    /// The id in the repository's `config` file.
    pub repository_id: String,
    /// Where it was when recorded (shown in errors).
    pub path: std::path::PathBuf,
    pub recorded_at: DateTime<Utc>,
}

/// Everything recorded, in memory: the planner's view of the state store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(default)]
    pub instances: BTreeMap<String, InstanceRecord>,
    #[serde(default)]
    pub backups: BTreeMap<Uuid, BackupRecord>,
    #[serde(default)]
    pub restores: BTreeMap<String, RestoreRecord>,
    /// Restore drills, by instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drills: BTreeMap<String, DrillRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillOutcome {
    Passed,
    Failed,
}

impl std::fmt::Display for DrillOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrillOutcome::Passed => "passed",
            DrillOutcome::Failed => "failed",
        })
    }
}

/// One restore drill: the backup restored into scratch, checked, timed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRun {
    pub backup_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub outcome: DrillOutcome,
    /// The measured restore time (the RTO): the engine's restore into scratch, in seconds.
    #[serde(default)]
    pub rto_seconds: Option<f64>,
    /// The whole drill (space check, restore, checks, clean-up), in seconds.
    pub duration_seconds: f64,
    /// What was checked (passed) or what went wrong (failed).
    pub detail: String,
}

/// The restore drills of one instance: the newest first, at most [`DRILL_HISTORY`] kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub instance: String,
    pub runs: Vec<DrillRun>,
    /// When a drill last passed (kept when older runs are dropped).
    #[serde(default)]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Drills that failed, in all (a counter: never goes down).
    #[serde(default)]
    pub failures_total: u64,
}

/// How many drills of an instance are kept.
pub const DRILL_HISTORY: usize = 10;

impl DrillRecord {
    pub fn last(&self) -> Option<&DrillRun> {
        self.runs.first()
    }

    /// The record with `run` added as the newest.
    pub fn with_run(prev: Option<DrillRecord>, instance: &str, run: DrillRun) -> DrillRecord {
        let mut r = prev.unwrap_or_else(|| DrillRecord {
            instance: instance.to_string(),
            runs: Vec::new(),
            last_success_at: None,
            failures_total: 0,
        });
        match run.outcome {
            DrillOutcome::Passed => r.last_success_at = Some(run.started_at),
            DrillOutcome::Failed => r.failures_total += 1,
        }
        r.runs.insert(0, run);
        r.runs.truncate(DRILL_HISTORY);
        r
    }
}
