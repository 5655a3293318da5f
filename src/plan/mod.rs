//! The plan: what `apply` (or the daemon) will do, and why not when it refuses.
//!
//! [`planner::plan`] computes it; [`render`] prints it as text or JSON (SPEC section 8).
//! **The planner does no I/O**: it is a pure function of (configuration, recorded state, now,
//! options).

pub mod planner;
pub mod render;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::config::values::Version;
use crate::config::{InstanceType, Source};
use crate::records::{BackupKind, BackupRecord};

pub use planner::{PlanOptions, plan};

pub const FORMAT_VERSION: u32 = 1;

/// Times in plans and messages: RFC 3339, UTC, whole seconds (`2026-11-27T02:00:00Z`).
pub fn fmt_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub format_version: u32,
    /// The time the plan was made for.
    pub at: DateTime<Utc>,
    /// Changes from the file, in execution order. Empty when anything was refused.
    pub actions: Vec<Action>,
    /// Time-driven work due at `at`: daily backups, missed slots, expiries, retries.
    pub due: Vec<Due>,
    pub refusals: Vec<Refusal>,
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether applying it would change anything.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty() || !self.due.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Switch,
    Forget,
    Delete,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub op: Op,
    /// `instance.<name>`, `backup.<instance>/<key>` or `restore.<key>`.
    pub address: String,
    pub details: Details,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change<T> {
    pub from: T,
    pub to: T,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Details {
    /// Provision the instance, or adopt it if its store already exists.
    CreateInstance {
        instance: String,
        #[serde(rename = "type")]
        kind: InstanceType,
        version: Version,
        source: Source,
    },
    SwitchInstance {
        instance: String,
        #[serde(rename = "type")]
        kind: Change<InstanceType>,
    },
    /// The same store reached differently (a PostgreSQL user or password file): the new
    /// source is recorded. Metadata only.
    UpdateSource {
        instance: String,
        source: Change<Source>,
    },
    /// Pre-update system backup, then `on_update`, then the new version is recorded.
    UpdateInstance {
        instance: String,
        version: Change<Version>,
        pre_update_backup: Uuid,
        on_update: Vec<String>,
    },
    CreateBackup {
        id: Uuid,
        instance: String,
        key: String,
        label: String,
        notes: String,
        storage: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Metadata only.
    UpdateBackup {
        id: Uuid,
        instance: String,
        key: String,
        label: Option<Change<String>>,
        notes: Option<Change<String>>,
    },
    /// Pre-restore system backup of the target, restore, record.
    Restore {
        restore: String,
        from: String,
        /// The backup restored; `backup_created_by_plan` when an earlier action of this plan
        /// takes it.
        backup: Uuid,
        backup_created_by_plan: bool,
        to: String,
        pre_restore_backup: Uuid,
    },
    /// The backup left the file: it becomes `deleting` until `delete_at` (still restorable
    /// by id, revived by putting the key back); its data is deleted then, by time-driven work.
    /// A record whose data had already expired is removed at once.
    DeleteBackup {
        id: Uuid,
        instance: String,
        key: String,
        storage: String,
        data: DataFate,
        delete_at: Option<DateTime<Utc>>,
    },
    /// A `deleting` backup whose key is back in the file (same storage): its deletion is
    /// cancelled; label and notes changes apply as an edit.
    ReviveBackup {
        id: Uuid,
        instance: String,
        key: String,
        delete_at: Option<DateTime<Utc>>,
        label: Option<Change<String>>,
        notes: Option<Change<String>>,
    },
    /// Stop managing the instance. Its data is never touched; its backups stay and expire on
    /// schedule.
    ForgetInstance {
        instance: String,
        backups_kept: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataFate {
    Deleted,
    KeptInStorage,
    AlreadyExpired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Work {
    SkipDaily,
    DailyBackup,
    Retry,
    Expire,
    Purge,
    /// Last: a drill restores the newest backup, after this run's backups.
    Drill,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Due {
    pub work: Work,
    pub address: String,
    pub details: DueDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DueDetails {
    DailyBackup {
        id: Uuid,
        instance: String,
        date: NaiveDate,
        slot_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A slot missed while nothing ran: recorded as skipped, not taken.
    SkipDaily {
        id: Uuid,
        instance: String,
        date: NaiveDate,
        slot_at: DateTime<Utc>,
        /// Why it is not taken, when it is not that backplan was down (an instance whose
        /// creation failed).
        #[serde(default)]
        reason: Option<String>,
    },
    Retry {
        id: Uuid,
        instance: String,
        kind: BackupKind,
        attempt: u32,
        max_attempts: u32,
        last_error: Option<String>,
    },
    /// Delete the backup's data (then prune the repository) and mark the record expired.
    Expire {
        id: Uuid,
        instance: String,
        kind: BackupKind,
        storage: String,
        expires_at: DateTime<Utc>,
        /// Set when the backup expires only because a backup taken earlier in the same run
        /// (listed above it) becomes the newest good one; skipped if that backup fails.
        #[serde(default)]
        after: Option<Uuid>,
    },
    /// A backup removed from the file whose `deletion_grace` has passed: its data is deleted
    /// (or kept in external storage), the record stays as a `deleted` tombstone.
    Purge {
        id: Uuid,
        instance: String,
        key: Option<String>,
        storage: String,
        delete_at: Option<DateTime<Utc>>,
        data: DataFate,
    },
    /// A restore drill: the backup restored into a scratch folder under `drill_dir` (never an
    /// instance), checked, timed, and the scratch folder removed.
    Drill {
        instance: String,
        backup: Uuid,
        backup_address: String,
        storage: String,
        /// The drill interval of the instance, like `7d`.
        every: crate::config::values::Dur,
        last_drill_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// A stable kebab-case name (`production-removal`, `mass-removal`, ...).
    pub rule: &'static str,
    pub address: String,
    pub message: String,
    pub fix: String,
    /// `FILE:LINE:COLUMN` of what caused it, or just `FILE` when the cause is something
    /// removed from the file.
    pub location: String,
}

/// How a backup is named in plans and lists.
pub fn backup_address(b: &BackupRecord) -> String {
    match (b.kind, &b.key, &b.date, &b.version) {
        (BackupKind::OnDemand, Some(key), _, _) => format!("backup.{}/{key}", b.instance),
        (BackupKind::Daily, _, Some(date), _) => format!("backup.{}@daily:{date}", b.instance),
        (BackupKind::PreUpdate, _, _, Some(v)) => format!("backup.{}@pre-update:{v}", b.instance),
        // Named by what it is, with its short id (one target may have several).
        (BackupKind::PreRestore, _, _, _) => {
            format!(
                "backup.{}@pre-restore:{}",
                b.instance,
                &b.id.to_string()[..8]
            )
        }
        _ => format!("backup.{}", b.id),
    }
}
