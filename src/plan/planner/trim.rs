//! Bounded state: which tombstones are old enough to forget (a pure function, like the rest
//! of the planner; `state::Store::trim` removes them, the daemon asks once a day).

use super::*;

/// How long a tombstone (an `expired` or `deleted` backup record) and a journal entry are
/// kept: 30 days after the data went (`expires_at`, `delete_at`), or after the entry was
/// written. Long past the deletion grace (default 1 day), so `status`, `backups`, `show` and
/// the journal still tell the story of a recent expiry or deletion.
pub const TOMBSTONE_RETENTION_DAYS: i64 = 30;

/// What may be forgotten at `now`: the ids of tombstones past [`TOMBSTONE_RETENTION_DAYS`],
/// the time before which finished journal entries go, and the journal addresses kept
/// whatever their age (restores under way or interrupted: recovery reads their entries).
///
/// **Nothing live is trimmed**: completed, failed, running, skipped and `deleting` records
/// stay; an expired on-demand backup whose key the file still declares stays (its tombstone
/// is what keeps the key from being taken again).
pub fn trimmable(cfg: &Config, rec: &Recorded, now: DateTime<Utc>) -> Trim {
    let cutoff = now - Duration::days(TOMBSTONE_RETENTION_DAYS);
    let declared = |b: &BackupRecord| {
        b.key.as_ref().is_some_and(|k| {
            cfg.instances
                .get(&b.instance)
                .is_some_and(|i| i.backups.contains_key(k))
        })
    };
    let backups = rec
        .backups
        .values()
        .filter(|b| match b.status {
            BackupStatus::Deleted => b.delete_at.unwrap_or(b.created_at) <= cutoff,
            BackupStatus::Expired => {
                b.expires_at.unwrap_or(b.created_at) <= cutoff
                    && !(b.kind == BackupKind::OnDemand && declared(b))
            }
            _ => false,
        })
        .map(|b| b.id)
        .collect();
    let keep_journal = rec
        .restores
        .values()
        .filter(|r| matches!(r.status, RestoreStatus::Pending | RestoreStatus::Running))
        .map(|r| format!("restore.{}", r.key))
        .collect();
    Trim {
        backups,
        journal_before: cutoff,
        keep_journal,
    }
}

/// See [`trimmable`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trim {
    pub backups: Vec<Uuid>,
    pub journal_before: DateTime<Utc>,
    pub keep_journal: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{RestoreRecord, RestoreStatus};

    const FILE: &str = r#"
[schedule]
daily_at = "02:00"
timezone = "UTC"
[instances.a]
type = "sandbox"
version = "1.0"
source = { kind = "directory", path = "/srv/a" }
[instances.a.backups.kept]
label = "still in the file"
"#;

    fn backup(n: u128, kind: BackupKind, key: Option<&str>, status: BackupStatus) -> BackupRecord {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap();
        BackupRecord {
            id: Uuid::from_u128(n),
            instance: "a".into(),
            source_kind: crate::config::SourceKind::Directory,
            kind,
            key: key.map(Into::into),
            created_by: kind.created_by(),
            label: String::new(),
            notes: String::new(),
            storage: "local".into(),
            status,
            created_at: t,
            completed_at: Some(t),
            expires_at: Some(t + Duration::days(3)),
            size_bytes: None,
            snapshot_id: None,
            error: None,
            attempts: 1,
            failed_at: None,
            date: None,
            version: None,
            delete_at: (status == BackupStatus::Deleted || status == BackupStatus::Deleting)
                .then(|| t + Duration::days(1)),
            status_before_delete: None,
            versions: Default::default(),
            unreadable: None,
        }
    }

    #[test]
    fn only_old_tombstones_go_and_nothing_live() {
        let cfg = crate::config::parse(std::path::Path::new("/etc/backplan.toml"), FILE)
            .unwrap()
            .0;
        use BackupKind::*;
        use BackupStatus::*;
        let mut rec = Recorded::default();
        let all = [
            backup(1, Daily, None, Expired),
            backup(2, OnDemand, Some("gone"), Deleted),
            backup(3, OnDemand, Some("kept"), Expired), // its key is still in the file
            backup(4, OnDemand, Some("removed"), Expired),
            backup(5, Daily, None, Completed),
            backup(6, Daily, None, Failed),
            backup(7, Daily, None, Skipped),
            backup(8, OnDemand, Some("deleting"), Deleting),
            backup(9, PreUpdate, None, Running),
        ];
        for b in all {
            rec.backups.insert(b.id, b);
        }
        rec.restores.insert(
            "r1".into(),
            RestoreRecord {
                key: "r1".into(),
                from: "a/kept".into(),
                backup_id: None,
                to: "a".into(),
                status: RestoreStatus::Running,
                requested_at: Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap(),
                completed_at: None,
                safety_backup: None,
                error: None,
            },
        );
        // 29 days after the expiry (and 31 after the deletion).
        let early = Utc.with_ymd_and_hms(2026, 2, 2, 2, 0, 0).unwrap();
        let t = trimmable(&cfg, &rec, early);
        assert_eq!(t.backups, [Uuid::from_u128(2)]);
        // Long after: every tombstone but the one the file still names; nothing live.
        let late = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let mut t = trimmable(&cfg, &rec, late);
        t.backups.sort();
        assert_eq!(
            t.backups,
            [1, 2, 4].map(Uuid::from_u128),
            "completed, failed, skipped, deleting and running records stay"
        );
        assert_eq!(t.journal_before, late - Duration::days(30));
        assert_eq!(t.keep_journal, ["restore.r1".to_string()].into());
    }
}
