//! Property tests of the planner over random files and recorded states:
//! - planning is deterministic (same inputs, same plan, to the byte of its JSON);
//! - a plan never does what SPEC forbids: no forget of a production instance, no restore
//!   into an instance that is production after the plan, no action at all beside a refusal,
//!   no deletion of a system backup from the file, no expiry of the newest `keep_last_good`
//!   completed backups, no restore from a backup that is not completed;
//! - the daemon's incremental plan is the full plan, after every edit of a random series.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use backplan::config::values::Version;
use backplan::config::{InstanceType, Source, SourceKind};
use backplan::plan::planner::{PlanCache, RecordChanges, next_deadline, plan_incremental};
use backplan::plan::{Details, DueDetails, PlanOptions, plan};
use backplan::records::*;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

const NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const KEYS: [&str; 3] = ["k1", "k2", "k3"];
const VERSIONS: [&str; 4] = ["8.9", "8.10", "9.0", "9.1"];

#[derive(Debug, Clone)]
struct FileInstance {
    name: usize,
    production: bool,
    version: usize,
    moved: bool,
    backups: Vec<(usize, bool, bool)>, // key, label variant, external storage
}

#[derive(Debug, Clone)]
struct FileRestore {
    key: usize,
    from: (usize, u8, usize), // instance, form (0 key, 1 latest, 2 uuid), key or backup index
    to: usize,
}

fn file_instance() -> impl Strategy<Value = FileInstance> {
    (
        0..NAMES.len(),
        any::<bool>(),
        0..VERSIONS.len(),
        prop::bool::weighted(0.05),
        prop::collection::vec(
            (0..KEYS.len(), any::<bool>(), prop::bool::weighted(0.2)),
            0..3,
        ),
    )
        .prop_map(|(name, production, version, moved, backups)| FileInstance {
            name,
            production,
            version,
            moved,
            backups,
        })
}

fn file_restore() -> impl Strategy<Value = FileRestore> {
    (
        0..3usize,
        (0..NAMES.len(), 0..3u8, 0..12usize),
        0..NAMES.len(),
    )
        .prop_map(|(key, from, to)| FileRestore { key, from, to })
}

fn render(
    instances: &[FileInstance],
    restores: &[FileRestore],
    ids: &[Uuid],
    mass: bool,
) -> String {
    let mut s = String::from("[daemon]\nstate_dir = \"state\"\n[schedule]\nkeep_last_good = 1\n");
    let _ = writeln!(
        s,
        "[storage.archive]\nkind = \"azure\"\naccount = \"a\"\ncontainer = \"c\"\naccess_key_env = \"K\"\nmax_restore_age = \"30d\"\npurge_on_delete = {mass}\npassword_file = \"{}/tests/fixtures/plans/13-on-demand-removed-external-kept/archive.key\"",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut seen = BTreeSet::new();
    for i in instances {
        if !seen.insert(i.name) {
            continue;
        }
        let name = NAMES[i.name];
        let path = if i.moved {
            format!("/srv/{name}-moved")
        } else {
            format!("/srv/{name}")
        };
        let _ = writeln!(
            s,
            "[instances.{name}]\ntype = \"{}\"\nversion = \"{}\"\nsource = {{ kind = \"directory\", path = \"{path}\" }}",
            if i.production {
                "production"
            } else {
                "sandbox"
            },
            VERSIONS[i.version]
        );
        let mut keys = BTreeSet::new();
        for (k, variant, external) in &i.backups {
            if keys.insert(*k) {
                let _ = writeln!(
                    s,
                    "[instances.{name}.backups.{}]\nlabel = \"label {variant}\"\nstorage = \"{}\"",
                    KEYS[*k],
                    if *external { "archive" } else { "local" }
                );
            }
        }
    }
    // Restores name instances and keys of this file, so that most of them are valid.
    let declared: Vec<&FileInstance> = {
        let mut seen = BTreeSet::new();
        instances.iter().filter(|i| seen.insert(i.name)).collect()
    };
    let sandboxes: Vec<&&FileInstance> = declared.iter().filter(|i| !i.production).collect();
    let mut rkeys = BTreeSet::new();
    for r in restores {
        if sandboxes.is_empty() || !rkeys.insert(r.key) {
            continue;
        }
        let (inst, form, n) = r.from;
        let src = declared[inst % declared.len()];
        let name = NAMES[src.name];
        let from = match (form, src.backups.get(n % 3)) {
            (0, Some((k, _, _))) => format!("{name}/{}", KEYS[*k]),
            (2, _) if n < ids.len() => ids[n].to_string(),
            _ => format!("{name}@latest"),
        };
        let to = NAMES[sandboxes[r.to % sandboxes.len()].name];
        let _ = writeln!(s, "[restores.r{}]\nfrom = \"{from}\"\nto = \"{to}\"", r.key);
    }
    s
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap()
}

#[derive(Debug, Clone)]
struct RecBackup {
    instance: usize,
    kind: u8,
    key: usize,
    status: u8,
    hours: i64,
    external: bool,
}

fn rec_backup() -> impl Strategy<Value = RecBackup> {
    (
        0..NAMES.len(),
        0..4u8,
        0..KEYS.len(),
        0..7u8,
        0..(24 * 8i64),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(instance, kind, key, status, hours, external)| RecBackup {
            instance,
            kind,
            key,
            status,
            hours,
            external,
        })
}

fn recorded(instances: &[(usize, bool, usize, bool)], backups: &[RecBackup]) -> Recorded {
    let mut rec = Recorded::default();
    for (n, production, version, moved) in instances {
        let name = NAMES[*n];
        let path = if *moved {
            format!("/srv/{name}-moved")
        } else {
            format!("/srv/{name}")
        };
        rec.instances.insert(
            name.to_string(),
            InstanceRecord {
                name: name.to_string(),
                kind: if *production {
                    InstanceType::Production
                } else {
                    InstanceType::Sandbox
                },
                version: Version::parse(VERSIONS[*version]).unwrap(),
                source: Source::Directory { path: path.into() },
                created_at: t0(),
                updated_at: t0(),
                error: None,
                creation_failed: false,
            },
        );
    }
    for (i, b) in backups.iter().enumerate() {
        let id = Uuid::from_u128(i as u128 + 1);
        let kind = [
            BackupKind::Daily,
            BackupKind::PreUpdate,
            BackupKind::PreRestore,
            BackupKind::OnDemand,
        ][b.kind as usize];
        let status = [
            BackupStatus::Pending,
            BackupStatus::Running,
            BackupStatus::Completed,
            BackupStatus::Failed,
            BackupStatus::Deleting,
            BackupStatus::Expired,
            BackupStatus::Skipped,
        ][b.status as usize];
        let created = t0() + Duration::hours(b.hours);
        rec.backups.insert(
            id,
            BackupRecord {
                id,
                instance: NAMES[b.instance].to_string(),
                source_kind: SourceKind::Directory,
                kind,
                key: (kind == BackupKind::OnDemand).then(|| KEYS[b.key].to_string()),
                created_by: kind.created_by(),
                label: "x".into(),
                notes: String::new(),
                storage: if b.external {
                    "archive".into()
                } else {
                    "local".into()
                },
                status,
                created_at: created,
                completed_at: Some(created + Duration::minutes(5)),
                expires_at: (!b.external).then(|| created + Duration::days(3)),
                size_bytes: None,
                snapshot_id: None,
                error: None,
                attempts: if status == BackupStatus::Failed {
                    (b.hours % 6) as u32
                } else {
                    1
                },
                failed_at: (status == BackupStatus::Failed).then_some(created),
                date: (kind == BackupKind::Daily).then(|| created.date_naive()),
                version: None,
                delete_at: None,
                status_before_delete: None,
                versions: Default::default(),
                unreadable: None,
            },
        );
    }
    rec
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, .. ProptestConfig::default() })]

    #[test]
    fn plans_are_deterministic_and_never_do_what_spec_forbids(
        file in prop::collection::vec(file_instance(), 0..5),
        restores in prop::collection::vec(file_restore(), 0..3),
        rec_instances in prop::collection::vec((0..NAMES.len(), any::<bool>(), 0..VERSIONS.len(), prop::bool::weighted(0.1)), 0..5),
        rec_backups in prop::collection::vec(rec_backup(), 0..14),
        hours in 0..(24 * 10i64),
        allow_mass_removal in any::<bool>(),
        purge in any::<bool>(),
    ) {
        let rec = recorded(&rec_instances, &rec_backups);
        let ids: Vec<Uuid> = rec.backups.keys().copied().collect();
        let text = render(&file, &restores, &ids, purge);
        let Ok((cfg, _)) = backplan::config::parse(Path::new("/etc/backplan/backplan.toml"), &text) else {
            return Ok(()); // invalid files are never planned; the corpus covers them
        };
        let now = t0() + Duration::hours(hours);
        let opts = PlanOptions { allow_mass_removal };
        let p = plan(&cfg, &rec, now, opts);

        // Deterministic.
        let again = plan(&cfg, &rec.clone(), now, opts);
        prop_assert_eq!(serde_json::to_string(&p).unwrap(), serde_json::to_string(&again).unwrap());

        // All or nothing.
        if !p.refusals.is_empty() {
            prop_assert!(p.actions.is_empty(), "actions beside refusals: {:?}", p.actions);
        }
        let final_type: BTreeMap<&str, InstanceType> = cfg.instances.iter().map(|(n, i)| (n.as_str(), i.kind)).collect();
        let planned: BTreeSet<Uuid> = p.actions.iter().filter_map(|a| match a.details {
            Details::CreateBackup { id, .. } => Some(id),
            _ => None,
        }).collect();
        for a in &p.actions {
            match &a.details {
                Details::ForgetInstance { instance, .. } => {
                    prop_assert_eq!(rec.instances[instance].kind, InstanceType::Sandbox, "forgot a production instance");
                }
                Details::Restore { to, backup, .. } => {
                    prop_assert_eq!(final_type[to.as_str()], InstanceType::Sandbox, "restore into production");
                    let ok = planned.contains(backup)
                        || rec.backups.get(backup).is_some_and(|b| b.status == BackupStatus::Completed);
                    prop_assert!(ok, "restore from a backup that is not completed");
                }
                Details::DeleteBackup { id, delete_at, .. } => {
                    prop_assert_eq!(rec.backups[id].kind, BackupKind::OnDemand, "deleted a system backup");
                    // Deletion is never immediate: data waits out the grace.
                    if rec.backups[id].status != BackupStatus::Expired {
                        prop_assert!(delete_at.is_some_and(|t| t > now), "deleted without a grace");
                    }
                }
                _ => {}
            }
        }
        // keep_last_good = 1: the newest completed backup of each instance never expires.
        let mut newest: BTreeMap<&str, &BackupRecord> = BTreeMap::new();
        for b in rec.backups.values().filter(|b| b.status == BackupStatus::Completed) {
            let e = newest.entry(b.instance.as_str()).or_insert(b);
            if (b.finished_at(), b.created_at, b.id) > (e.finished_at(), e.created_at, e.id) {
                *e = b;
            }
        }
        for d in &p.due {
            if let DueDetails::Expire { id, expires_at, after, .. } = &d.details {
                prop_assert!(*expires_at <= now, "expired before its time");
                let b = &rec.backups[id];
                // Only as a follow-up of a backup this same run takes (checked again when
                // it runs).
                let taken_by_run = after.is_some_and(|a| {
                    planned.contains(&a)
                        || p.due.iter().any(|d| matches!(&d.details,
                            DueDetails::DailyBackup { id, .. } | DueDetails::Retry { id, .. } if *id == a))
                        || p.actions.iter().any(|x| matches!(&x.details,
                            Details::UpdateInstance { pre_update_backup, .. } if *pre_update_backup == a)
                            || matches!(&x.details, Details::Restore { pre_restore_backup, .. } if *pre_restore_backup == a))
                });
                prop_assert!(taken_by_run || newest.get(b.instance.as_str()).is_none_or(|n| n.id != *id), "expired the last good backup");
            }
        }
    }
}

/// One random change between two plans of the daemon.
#[derive(Debug, Clone)]
enum Edit {
    /// The file: an instance added or changed (same name: replaced), or removed.
    PutInstance(FileInstance),
    RemoveInstance(usize),
    /// A backup's label edited in the file (instance, key).
    Label(usize, usize),
    /// The file's restores replaced.
    Restores(Vec<FileRestore>),
    /// Records: a backup written (new, or over an existing one: index into the ids), removed,
    /// its status changed, its label changed.
    PutBackup(RecBackup),
    RemoveBackup(usize),
    Status(usize, u8),
    RecLabel(usize),
    /// An instance record written (or replaced), removed; a failed creation.
    PutRecInstance((usize, bool, usize, bool)),
    RemoveRecInstance(usize),
    CreationFailed(usize),
    /// The daemon takes what the plan says is due: its daily backups recorded as completed.
    TakeDailies,
    /// The file's restores recorded as run (failed or completed), or as run from elsewhere.
    RecordRestores(u8),
    /// Time moves on, by minutes; to the next deadline (and a minute past it), as the daemon
    /// wakes.
    Advance(i64),
    ToDeadline(bool),
    /// The records were read again (the cache cannot know what changed).
    Reload,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => file_instance().prop_map(Edit::PutInstance),
        1 => (0..NAMES.len()).prop_map(Edit::RemoveInstance),
        3 => (0..NAMES.len(), 0..KEYS.len()).prop_map(|(i, k)| Edit::Label(i, k)),
        1 => prop::collection::vec(file_restore(), 0..2).prop_map(Edit::Restores),
        3 => rec_backup().prop_map(Edit::PutBackup),
        1 => (0..64usize).prop_map(Edit::RemoveBackup),
        2 => (0..64usize, 0..7u8).prop_map(|(i, s)| Edit::Status(i, s)),
        1 => (0..64usize).prop_map(Edit::RecLabel),
        1 => (0..NAMES.len(), any::<bool>(), 0..VERSIONS.len(), prop::bool::weighted(0.1)).prop_map(Edit::PutRecInstance),
        1 => (0..NAMES.len()).prop_map(Edit::RemoveRecInstance),
        1 => (0..NAMES.len()).prop_map(Edit::CreationFailed),
        2 => Just(Edit::TakeDailies),
        3 => (0..3u8).prop_map(Edit::RecordRestores),
        4 => prop_oneof![0..120i64, 0..(60 * 72i64)].prop_map(Edit::Advance),
        4 => any::<bool>().prop_map(Edit::ToDeadline),
        1 => Just(Edit::Reload),
    ]
}

/// What the store would report for the writes of one edit.
fn put_backup(rec: &mut Recorded, changes: &mut RecordChanges, b: BackupRecord) {
    changes.backups.insert(b.id, b.instance.clone());
    rec.backups.insert(b.id, b);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// The daemon's incremental plan equals the full plan, to the byte of its JSON, after
    /// every edit of a random series (file, records, time).
    #[test]
    fn the_incremental_plan_is_the_full_plan(
        file in prop::collection::vec(file_instance(), 0..5),
        restores in prop::collection::vec(file_restore(), 0..2),
        rec_instances in prop::collection::vec((0..NAMES.len(), any::<bool>(), 0..VERSIONS.len(), prop::bool::weighted(0.1)), 0..5),
        rec_backups in prop::collection::vec(rec_backup(), 0..14),
        hours in 0..(24 * 10i64),
        edits in prop::collection::vec(edit(), 1..16),
        allow_mass_removal in any::<bool>(),
        retention in prop_oneof![Just(None), Just(Some("36h")), Just(Some("3d"))],
    ) {
        let mut file = file;
        let mut restores = if hours % 3 == 0 { restores } else { Vec::new() };
        let mut rec = recorded(&rec_instances, &rec_backups);
        let mut now = t0() + Duration::hours(hours);
        let opts = PlanOptions { allow_mass_removal };
        let mut cache = PlanCache::default();
        let mut changes = RecordChanges::everything();
        let mut cfg: Option<Arc<backplan::config::Config>> = None;
        let mut text = String::new();
        let mut next_id = 1000u128;
        let mut last: Option<backplan::plan::Plan> = None;
        let mut steps = vec![None];
        steps.extend(edits.into_iter().map(Some));
        for step in steps {
            match step.clone() {
                None => {}
                Some(Edit::PutInstance(i)) => {
                    file.retain(|f| f.name != i.name);
                    file.push(i);
                }
                Some(Edit::RemoveInstance(n)) => file.retain(|f| f.name != n),
                Some(Edit::Label(n, k)) => {
                    if let Some(f) = file.iter_mut().find(|f| f.name == n) {
                        match f.backups.iter_mut().find(|b| b.0 == k) {
                            Some(b) => b.1 = !b.1,
                            None => f.backups.push((k, false, false)),
                        }
                    }
                }
                Some(Edit::Restores(r)) => restores = r,
                Some(Edit::PutBackup(b)) => {
                    let one = recorded(&[], std::slice::from_ref(&b));
                    let mut r = one.backups.into_values().next().unwrap();
                    next_id += 1;
                    r.id = Uuid::from_u128(next_id);
                    put_backup(&mut rec, &mut changes, r);
                }
                Some(Edit::RemoveBackup(i)) => {
                    if let Some(id) = rec.backups.keys().nth(i % rec.backups.len().max(1)).copied() {
                        let b = rec.backups.remove(&id).unwrap();
                        changes.backups.insert(id, b.instance);
                    }
                }
                Some(Edit::Status(i, s)) => {
                    if let Some(b) = rec.backups.values().nth(i % rec.backups.len().max(1)) {
                        let mut b = b.clone();
                        b.status = [
                            BackupStatus::Pending,
                            BackupStatus::Running,
                            BackupStatus::Completed,
                            BackupStatus::Failed,
                            BackupStatus::Deleting,
                            BackupStatus::Expired,
                            BackupStatus::Deleted,
                        ][s as usize];
                        if b.status == BackupStatus::Deleting {
                            b.delete_at = Some(now + Duration::hours(i as i64 % 30));
                        }
                        if b.status == BackupStatus::Failed {
                            b.failed_at = Some(now - Duration::minutes(i as i64));
                        }
                        put_backup(&mut rec, &mut changes, b);
                    }
                }
                Some(Edit::RecLabel(i)) => {
                    if let Some(b) = rec.backups.values().nth(i % rec.backups.len().max(1)) {
                        let mut b = b.clone();
                        b.label = format!("label {}", i % 2 == 0);
                        put_backup(&mut rec, &mut changes, b);
                    }
                }
                Some(Edit::PutRecInstance(i)) => {
                    let one = recorded(&[i], &[]);
                    let (name, mut r) = one.instances.into_iter().next().unwrap();
                    r.created_at = now - Duration::hours(i.2 as i64 * 20);
                    changes.instances.insert(name.clone());
                    rec.instances.insert(name, r);
                }
                Some(Edit::RemoveRecInstance(n)) => {
                    rec.instances.remove(NAMES[n]);
                    changes.instances.insert(NAMES[n].to_string());
                }
                Some(Edit::CreationFailed(n)) => {
                    if let Some(r) = rec.instances.get_mut(NAMES[n]) {
                        r.creation_failed = !r.creation_failed;
                        r.error = Some("no space".into());
                        changes.instances.insert(NAMES[n].to_string());
                    }
                }
                Some(Edit::TakeDailies) => {
                    let due: Vec<_> = last.iter().flat_map(|p| p.due.clone()).collect();
                    for d in due {
                        if let DueDetails::DailyBackup { id, instance, date, expires_at, .. } = d.details {
                            let mut b = recorded(&[], &[RecBackup { instance: 0, kind: 0, key: 0, status: 2, hours: 0, external: false }])
                                .backups.into_values().next().unwrap();
                            b.id = id;
                            b.instance = instance;
                            b.date = Some(date);
                            b.created_at = now;
                            b.completed_at = Some(now);
                            b.expires_at = expires_at;
                            put_backup(&mut rec, &mut changes, b);
                        }
                    }
                }
                Some(Edit::RecordRestores(how)) => {
                    for (key, r) in cfg.iter().flat_map(|c| c.restores.iter()) {
                        rec.restores.insert(key.clone(), RestoreRecord {
                            key: key.clone(),
                            from: if how == 2 { "elsewhere/k1".into() } else { r.from.to_string() },
                            backup_id: None,
                            to: r.to.clone(),
                            status: if how == 0 { RestoreStatus::Failed } else { RestoreStatus::Completed },
                            requested_at: now,
                            completed_at: Some(now),
                            safety_backup: None,
                            error: (how == 0).then(|| "no space".into()),
                        });
                    }
                }
                Some(Edit::Advance(m)) => now += Duration::minutes(m),
                Some(Edit::ToDeadline(past)) => {
                    if let Some(cfg) = &cfg {
                        now = next_deadline(cfg, &rec, now) + Duration::minutes(past as i64);
                    }
                }
                Some(Edit::Reload) => changes.everything = true,
            }
            let ids: Vec<Uuid> = rec.backups.keys().copied().collect();
            let mut new_text = render(&file, &restores, &ids, false);
            if let Some(r) = retention {
                new_text = new_text.replace("keep_last_good = 1\n", &format!("keep_last_good = 1\nretention = \"{r}\"\n"));
            }
            let parsed = (new_text != text)
                .then(|| backplan::config::parse(Path::new("/etc/backplan/backplan.toml"), &new_text).ok())
                .flatten();
            if let Some((c, _)) = parsed {
                cfg = Some(Arc::new(c));
                text = new_text;
            }
            let Some(cfg) = &cfg else { continue };
            let full = plan(cfg, &rec, now, opts);
            let (incremental, next) = plan_incremental(cache, cfg, &rec, &changes, now, opts);
            cache = next;
            changes = RecordChanges::default();
            prop_assert_eq!(
                serde_json::to_string_pretty(&incremental).unwrap(),
                serde_json::to_string_pretty(&full).unwrap(),
                "after {:?}", step
            );
            for since in [now, now - Duration::hours(30), now + Duration::hours(50)] {
                prop_assert_eq!(cache.next_deadline(cfg, since), next_deadline(cfg, &rec, since));
            }
            last = Some(full);
        }
    }
}
