//! The catalogue in the repository: each snapshot carries its backup's record as tags, so that
//! a new host with an empty state can rebuild the catalogue of a storage from its snapshots
//! (`backplan storage adopt`). Plain data both ways, and the adopt plan (a pure function of
//! the snapshots, what is recorded and the file).
//!
//! Tags, one `name=value` each (values as they are, commas and all):
//! `backplan`, `instance=`, `backup=`, `kind=` (SPEC section 6), then `source=` (the store's
//! kind), `label=`, `notes=` (when not empty), `key=` (on-demand), `created=` (RFC 3339),
//! `expires=` (RFC 3339 or `never`), `date=` (daily), `update-to=` (pre-update),
//! `versions.<name>=` (what made it, as `Kind::versions` says), and `deleted=` (RFC 3339) once
//! a backup left the catalogue while its data stays in storage. Created by follows from the
//! kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{Config, SourceKind};
use crate::engine::{SnapshotInfo, SnapshotTags};
use crate::plan::{backup_address, fmt_time};
use crate::records::*;

/// The tags of a backup's snapshot: its record, as it is now.
pub fn snapshot_tags(b: &BackupRecord) -> SnapshotTags {
    let mut meta = vec![
        format!("source={}", source_name(b.source_kind)),
        format!("label={}", b.label),
    ];
    if !b.notes.is_empty() {
        meta.push(format!("notes={}", b.notes));
    }
    if let Some(k) = &b.key {
        meta.push(format!("key={k}"));
    }
    meta.push(format!("created={}", rfc3339(&b.created_at)));
    meta.push(format!(
        "expires={}",
        b.expires_at
            .map(|t| rfc3339(&t))
            .unwrap_or_else(|| "never".into())
    ));
    if let Some(d) = b.date {
        meta.push(format!("date={d}"));
    }
    if let Some(v) = &b.version {
        meta.push(format!("update-to={v}"));
    }
    for (k, v) in &b.versions {
        meta.push(format!("versions.{k}={v}"));
    }
    SnapshotTags {
        instance: b.instance.clone(),
        backup: b.id,
        kind: b.kind.as_str().to_string(),
        meta,
    }
}

/// The tags of a backup removed from the catalogue whose data stays in storage: `adopt`
/// leaves it out.
pub fn deleted_tags(b: &BackupRecord, at: DateTime<Utc>) -> SnapshotTags {
    let mut t = snapshot_tags(b);
    t.meta.push(format!("deleted={}", rfc3339(&at)));
    t
}

/// RFC 3339 in UTC (`Z`), with the fraction of a second when there is one: read back the same.
fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn source_name(k: SourceKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What a snapshot says about its backup.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The record, rebuilt (status `completed`, in `storage`).
    Record(Box<BackupRecord>),
    /// Removed from the catalogue (at that time) with its data kept in storage.
    Deleted {
        record: Box<BackupRecord>,
        at: String,
    },
    /// Not a backplan snapshot, or one without its record: why.
    Unreadable { why: String },
}

/// The record a snapshot carries, as it would be recorded in `storage`.
pub fn record_of(s: &SnapshotInfo, storage: &str) -> Found {
    let mut one: BTreeMap<&str, &str> = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for t in &s.tags {
        if let Some((k, v)) = t.split_once('=') {
            if let Some(name) = k.strip_prefix("versions.") {
                versions.insert(name.to_string(), v.to_string());
            } else {
                one.entry(k).or_insert(v);
            }
        }
    }
    let Some(id) = s.backup_id() else {
        return Found::Unreadable {
            why: "not a backplan snapshot (no `backup=` tag)".into(),
        };
    };
    let fail = |why: String| Found::Unreadable {
        why: format!("backup {id}: {why}"),
    };
    let Some(instance) = one.get("instance") else {
        return fail("no `instance=` tag".into());
    };
    let kind = match one.get("kind").copied() {
        Some("daily") => BackupKind::Daily,
        Some("pre-update") => BackupKind::PreUpdate,
        Some("pre-restore") => BackupKind::PreRestore,
        Some("on-demand") => BackupKind::OnDemand,
        other => return fail(format!("unknown kind {other:?}")),
    };
    // What a snapshot says is checked as the file's values are (it may come from anywhere).
    for (what, name) in [("instance", Some(instance)), ("key", one.get("key"))] {
        if let Some(Err(e)) = name.map(|n| crate::config::values::check_name(n)) {
            return fail(format!("{what} `{}`: {e}", name.unwrap_or(&"")));
        }
    }
    let too_long = |k: &str, max: usize| one.get(k).is_some_and(|v| v.chars().count() > max);
    if too_long("label", crate::config::validate::MAX_LABEL_CHARS)
        || too_long("notes", crate::config::validate::MAX_NOTES_CHARS)
    {
        return fail("its label or notes are longer than a file may give".into());
    }
    let Some(source) = one.get("source") else {
        return fail(
            "its snapshot carries no record (taken by a backplan that did not write one): restore it with restic".into(),
        );
    };
    let Ok(source_kind) = serde_json::from_value::<SourceKind>(serde_json::json!(source)) else {
        return fail(format!("unknown store kind `{source}`"));
    };
    let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
        match one.get(k) {
            None | Some(&"never") => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| format!("`{k}={v}`: {e}")),
        }
    };
    let (created, expires) = match (time("created"), time("expires")) {
        (Ok(c), Ok(e)) => (c, e),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    if !one.contains_key("expires") {
        return fail("no `expires=` tag".into());
    }
    let date = match one.get("date").map(|d| d.parse()) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return fail(format!("`date`: {e}")),
        None => None,
    };
    let version = match one
        .get("update-to")
        .map(|v| crate::config::values::Version::parse(v))
    {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => return fail(format!("`update-to`: {e}")),
        None => None,
    };
    let record = Box::new(BackupRecord {
        id,
        instance: instance.to_string(),
        source_kind,
        kind,
        key: one.get("key").map(|k| k.to_string()),
        created_by: kind.created_by(),
        label: one.get("label").unwrap_or(&"").to_string(),
        notes: one.get("notes").unwrap_or(&"").to_string(),
        storage: storage.to_string(),
        status: BackupStatus::Completed,
        created_at: created.unwrap_or(s.time),
        completed_at: Some(s.time),
        expires_at: expires,
        size_bytes: Some(Size {
            read: s.bytes_read,
            added: s.bytes_added,
        }),
        snapshot_id: Some(s.id.clone()),
        error: None,
        attempts: 1,
        failed_at: None,
        date,
        version,
        delete_at: None,
        status_before_delete: None,
        versions,
        unreadable: None,
    });
    match one.get("deleted") {
        Some(at) => Found::Deleted {
            record,
            at: DateTime::parse_from_rfc3339(at)
                .map(|t| fmt_time(&t.with_timezone(&Utc)))
                .unwrap_or_else(|_| at.to_string()),
        },
        None => Found::Record(record),
    }
}

/// What `storage adopt` will do with each snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct AdoptPlan {
    pub storage: String,
    /// Records to write, in time order.
    pub import: Vec<BackupRecord>,
    /// (what, why): left alone.
    pub skipped: Vec<(String, String)>,
    /// Collisions with a backup this host holds: not imported.
    pub refused: Vec<Refused>,
    /// Remarks about records imported (a key no longer in the file, ...).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub address: String,
    pub why: String,
    pub fix: String,
}

/// The adopt plan of `storage`'s snapshots against what is recorded and the file. **Never
/// overwrites a record**: a backup recorded already is skipped (or refused when the record is
/// another one than the snapshot's), a backup recorded or tagged as deleted is skipped, and an
/// on-demand backup whose instance and key belong to another live backup here is refused.
pub fn adopt_plan(
    cfg: &Config,
    recorded: &Recorded,
    storage: &str,
    snapshots: &[SnapshotInfo],
) -> AdoptPlan {
    let mut plan = AdoptPlan {
        storage: storage.to_string(),
        import: Vec::new(),
        skipped: Vec::new(),
        refused: Vec::new(),
        notes: Vec::new(),
    };
    let mut seen: BTreeSet<Uuid> = BTreeSet::new();
    let live = |b: &BackupRecord| {
        !matches!(
            b.status,
            BackupStatus::Deleted | BackupStatus::Expired | BackupStatus::Skipped
        )
    };
    for s in snapshots {
        let short = &s.id[..s.id.len().min(8)];
        let b = match record_of(s, storage) {
            Found::Record(b) => *b,
            Found::Deleted { record, at } => {
                plan.skipped.push((
                    backup_address(&record),
                    format!("removed from the catalogue on {at}; its data was kept in storage (snapshot {short})"),
                ));
                continue;
            }
            Found::Unreadable { why } => {
                plan.skipped.push((format!("snapshot {short}"), why));
                continue;
            }
        };
        let address = backup_address(&b);
        if !seen.insert(b.id) {
            plan.skipped.push((
                address,
                format!(
                    "another snapshot of the same backup comes first (snapshot {short} left alone)"
                ),
            ));
            continue;
        }
        if let Some(r) = recorded.backups.get(&b.id) {
            if r.status == BackupStatus::Deleted {
                plan.skipped
                    .push((address, "recorded as deleted on this host".into()));
            } else if r.storage == storage && r.snapshot_id == b.snapshot_id {
                plan.skipped
                    .push((address, "already in the catalogue".into()));
            } else if !live(r) {
                plan.skipped
                    .push((address, format!("recorded as {} on this host", r.status)));
            } else {
                plan.refused.push(Refused {
                    address,
                    why: format!(
                        "backup {} is recorded here already, in storage `{}` with snapshot {}; adopt never overwrites a record",
                        b.id,
                        r.storage,
                        r.snapshot_id.as_deref().map_or("(none)", |s| &s[..s.len().min(8)])
                    ),
                    fix: "nothing to do if the recorded one is the backup you want; otherwise restore the storage's snapshot with restic (README, \"Recovering without backplan\")".into(),
                });
            }
            continue;
        }
        if let Some(key) = &b.key {
            let holder = recorded.backups.values().find(|r| {
                live(r) && r.instance == b.instance && r.key.as_deref() == Some(key.as_str())
            });
            let holder = holder.or_else(|| {
                plan.import
                    .iter()
                    .find(|r| r.instance == b.instance && r.key.as_deref() == Some(key.as_str()))
            });
            if let Some(r) = holder {
                plan.refused.push(Refused {
                    address: address.clone(),
                    why: format!(
                        "`{}/{key}` is backup {} (taken {}), not the storage's backup {} (taken {}); one key names one backup",
                        b.instance,
                        r.id,
                        fmt_time(&r.created_at),
                        b.id,
                        fmt_time(&b.created_at)
                    ),
                    fix: format!(
                        "the storage's backup stays in storage untouched; to adopt it, free the key: remove `[instances.{}.backups.{key}]` from the file and apply, and run `storage adopt` again once this host's backup is deleted",
                        b.instance
                    ),
                });
                continue;
            }
            let declared = cfg
                .instances
                .get(&b.instance)
                .is_some_and(|i| i.backups.contains_key(key));
            if !declared {
                plan.notes.push(format!(
                    "{address} is not in the file: the next plan deletes it unless `[instances.{}.backups.{key}]` is put back",
                    b.instance
                ));
            }
        }
        plan.import.push(b);
    }
    plan
}

impl AdoptPlan {
    /// The plan for people, in the planner's style (labels and notes quoted, control
    /// characters escaped).
    pub fn text(&self, storage_what: &str) -> String {
        let mut o = String::new();
        let w = &mut o;
        let quoted = |s: &str| format!("{s:?}");
        if self.import.is_empty() {
            let _ = writeln!(
                w,
                "Nothing to adopt from storage `{}` ({storage_what}).",
                self.storage
            );
        } else {
            let _ = writeln!(
                w,
                "backplan will adopt the following backups from storage `{}` ({storage_what}):\n",
                self.storage
            );
        }
        for b in &self.import {
            let address = backup_address(b);
            let _ = writeln!(
                w,
                "  # {address} will be imported into the catalogue (restorable by id)"
            );
            let _ = writeln!(w, "  + {address}");
            let mut field = |k: &str, v: String| {
                let _ = writeln!(w, "      {k:<9} = {v}");
            };
            field("id", b.id.to_string());
            field(
                "kind",
                format!(
                    "{} (created by {})",
                    b.kind.as_str(),
                    match b.created_by {
                        CreatedBy::System => "System",
                        CreatedBy::User => "user",
                    }
                ),
            );
            field("label", quoted(&b.label));
            if !b.notes.is_empty() {
                field("notes", quoted(&b.notes));
            }
            field("source", b.source_kind.to_string());
            field("created", fmt_time(&b.created_at));
            field(
                "expires",
                b.expires_at
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "never".into()),
            );
            if let Some(s) = &b.snapshot_id {
                field("snapshot", s[..s.len().min(8)].to_string());
            }
            w.push('\n');
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(w, "Left alone ({}):\n", self.skipped.len());
            for (what, why) in &self.skipped {
                let _ = writeln!(w, "  . {what}: {why}");
            }
            w.push('\n');
        }
        if !self.refused.is_empty() {
            let _ = writeln!(w, "Refused ({}):\n", self.refused.len());
            for r in &self.refused {
                let _ = writeln!(w, "  x {} [adopt-collision]", r.address);
                let _ = writeln!(w, "      why: {}", r.why);
                let _ = writeln!(w, "      fix: {}\n", r.fix);
            }
        }
        let _ = writeln!(
            w,
            "Adopt: {} to import, {} left alone, {} refused.",
            self.import.len(),
            self.skipped.len(),
            self.refused.len()
        );
        if !self.notes.is_empty() {
            let _ = writeln!(w, "\nNotes:");
            for n in &self.notes {
                let _ = writeln!(w, "  - {n}");
            }
        }
        crate::diagnostic::printable(&o, true).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BackupRecord {
        let t = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        BackupRecord {
            id: Uuid::from_u128(7),
            instance: "contoso".into(),
            source_kind: SourceKind::Postgres,
            kind: BackupKind::OnDemand,
            key: Some("before-import".into()),
            created_by: CreatedBy::User,
            label: "Before import, step 2 = done".into(),
            notes: "line one\nline two, with commas".into(),
            storage: "archive".into(),
            status: BackupStatus::Completed,
            created_at: t,
            completed_at: Some(t),
            expires_at: None,
            size_bytes: Some(Size { read: 5, added: 3 }),
            snapshot_id: Some("ab".repeat(32)),
            error: None,
            attempts: 1,
            failed_at: None,
            date: None,
            version: None,
            delete_at: None,
            status_before_delete: None,
            versions: [("server_version_num".to_string(), "160004".to_string())].into(),
            unreadable: None,
        }
    }

    fn snapshot(tags: &SnapshotTags, b: &BackupRecord) -> SnapshotInfo {
        SnapshotInfo {
            id: b.snapshot_id.clone().unwrap(),
            time: b.completed_at.unwrap(),
            tags: tags.to_tags(),
            bytes_read: 5,
            bytes_added: 3,
            files: 1,
        }
    }

    #[test]
    fn a_record_survives_the_round_trip_through_tags() {
        let mut b = record();
        let s = snapshot(&snapshot_tags(&b), &b);
        assert_eq!(record_of(&s, "archive"), Found::Record(Box::new(b.clone())));
        b.kind = BackupKind::PreUpdate;
        b.created_by = CreatedBy::System;
        b.key = None;
        b.version = Some(crate::config::values::Version::parse("9.1").unwrap());
        b.expires_at = Some(b.created_at + chrono::Duration::days(3));
        let s = snapshot(&snapshot_tags(&b), &b);
        assert_eq!(record_of(&s, "archive"), Found::Record(Box::new(b)));
    }

    #[test]
    fn deleted_and_foreign_snapshots_are_not_records() {
        let b = record();
        let s = snapshot(&deleted_tags(&b, b.created_at), &b);
        assert!(matches!(record_of(&s, "archive"), Found::Deleted { .. }));
        let mut s = snapshot(&snapshot_tags(&b), &b);
        s.tags = vec!["restic-made".into()];
        assert!(matches!(record_of(&s, "archive"), Found::Unreadable { .. }));
        // Tags written by hand are checked as the file's values are.
        for (from, to) in [
            ("instance=contoso", "instance=../etc"),
            ("key=before-import", "key=a/b"),
            ("kind=on-demand", "kind=weekly"),
            ("source=postgres", "source=oracle"),
        ] {
            let mut s = snapshot(&snapshot_tags(&b), &b);
            for t in s.tags.iter_mut() {
                if t == from {
                    *t = to.to_string();
                }
            }
            assert!(
                matches!(record_of(&s, "archive"), Found::Unreadable { .. }),
                "{to}"
            );
        }
        let mut long = b.clone();
        long.label = "x".repeat(201);
        let s = snapshot(&snapshot_tags(&long), &long);
        assert!(matches!(record_of(&s, "archive"), Found::Unreadable { .. }));
    }
}
