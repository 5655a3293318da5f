//! The planner: SPEC section 3 (rules and guards) and the time-driven part of section 4.
//!
//! **No I/O, no clock, no randomness**: the result depends only on the arguments, so the same
//! inputs always give the same plan (a property test checks it). Identifiers of the backups a
//! plan will take are UUIDv5 of what they are (and of `now` where the same thing may be taken
//! twice), so they are known before anything runs and a re-run after a crash finds them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::config::values::{BackupRef, Retention};
use crate::config::{Config, Instance, Restore, Schedule};
use crate::diagnostic::Loc;
use crate::records::{BackupStatus, Recorded, RestoreStatus};

#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Lift the mass-removal guard (`--allow-mass-removal`).
    pub allow_mass_removal: bool,
}

/// A failed backup is tried at most this many times in all.
pub const MAX_ATTEMPTS: u32 = 5;

const NAMESPACE: Uuid = Uuid::from_u128(0x6b61_6370_6c61_6e00_8000_0000_0000_0001);

/// The daily backup of `instance` for the slot of `date`: the same id however often it is
/// planned, so a restart never takes it twice.
pub fn daily_id(instance: &str, date: NaiveDate) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("daily/{instance}/{date}").as_bytes())
}

fn id_of(what: &str) -> Uuid {
    Uuid::new_v5(&NAMESPACE, what.as_bytes())
}

/// The instant of the daily slot on `date` in the schedule's timezone. On a
/// daylight-saving gap the slot moves to the first valid minute after it; on an overlap it
/// is the first of the two instants.
pub fn slot_at(s: &Schedule, date: NaiveDate) -> DateTime<Utc> {
    let mut local = date.and_time(s.daily_at);
    for _ in 0..=24 * 60 {
        if let Some(t) = s.timezone.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += Duration::minutes(1);
    }
    unreachable!("no timezone has a gap of more than a day")
}

/// The date of `t` in the schedule's timezone.
pub fn local_date(s: &Schedule, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&s.timezone).date_naive()
}

/// The next daily slot strictly after `now`.
pub fn next_slot(s: &Schedule, now: DateTime<Utc>) -> DateTime<Utc> {
    let today = local_date(s, now);
    let mut d = today;
    loop {
        let t = slot_at(s, d);
        if t > now {
            return t;
        }
        d = d.succ_opt().expect("dates do not run out");
    }
}

/// The next daily slot of `instance` after `now` whose backup is not recorded yet (a slot
/// already taken, say before `daily_at` moved later in the day, is not shown as coming).
pub fn next_daily(
    s: &Schedule,
    rec: &Recorded,
    instance: &str,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut t = next_slot(s, now);
    for _ in 0..366 {
        if !rec
            .backups
            .contains_key(&daily_id(instance, local_date(s, t)))
        {
            break;
        }
        t = next_slot(s, t);
    }
    t
}

/// When a failed backup is due for its next try: 1 minute after the first failure, doubling
/// up to an hour. `None` once it has been tried `MAX_ATTEMPTS` times.
pub fn retry_at(b: &BackupRecord) -> Option<DateTime<Utc>> {
    if b.status != BackupStatus::Failed || b.attempts >= MAX_ATTEMPTS {
        return None;
    }
    let n = b.attempts.max(1) - 1;
    let wait = (60i64 << n.min(10)).min(3600);
    Some(b.failed_at.unwrap_or(b.created_at) + Duration::seconds(wait))
}

/// When time-driven work is next due after `now`: the next daily slot, the next expiry or the
/// next retry, whichever comes first. The daemon sleeps until then.
pub fn next_deadline(cfg: &Config, rec: &Recorded, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut next = next_slot(&cfg.schedule, now);
    for b in rec.backups.values() {
        let live = !matches!(
            b.status,
            BackupStatus::Expired | BackupStatus::Running | BackupStatus::Deleting
        );
        let purge = b.delete_at.filter(|_| b.status == BackupStatus::Deleting);
        let candidates = [b.expires_at.filter(|_| live), retry_at(b), purge];
        for t in candidates.into_iter().flatten() {
            if t > now && t < next {
                next = t;
            }
        }
    }
    next
}

pub fn plan(cfg: &Config, rec: &Recorded, now: DateTime<Utc>, opts: PlanOptions) -> Plan {
    let idx = Index::new(rec);
    let mut p = Planner {
        cfg,
        rec,
        now,
        file: cfg.file.display().to_string(),
        idx,
        actions: Vec::new(),
        refusals: Vec::new(),
        notes: Vec::new(),
    };
    let expiring = p.expiring();
    p.instances();
    p.backups();
    p.restores(&expiring);
    p.mass_removal(opts);
    p.retention_notes();

    let Planner {
        mut actions,
        mut refusals,
        mut notes,
        idx,
        ..
    } = p;
    actions.sort_by(|a, b| (rank(a), &a.address).cmp(&(rank(b), &b.address)));
    refusals.sort_by(|a, b| (&a.address, a.rule).cmp(&(&b.address, b.rule)));
    if !refusals.is_empty() && !actions.is_empty() {
        notes.push(format!(
            "{} action(s) from the file are withheld: a plan with a refusal is not applied in part. Time-driven work still runs.",
            actions.len()
        ));
        actions.clear();
    }
    let forgotten: BTreeSet<&str> = actions
        .iter()
        .filter_map(|a| match &a.details {
            Details::ForgetInstance { instance, .. } => Some(instance.as_str()),
            _ => None,
        })
        .collect();
    let mut due = due(cfg, rec, &idx, now, &expiring, &forgotten);
    due.extend(follow_up_expiries(
        cfg, rec, &idx, now, &expiring, &actions, &due,
    ));
    due.sort_by(|a, b| (a.work, &a.address).cmp(&(b.work, &b.address)));
    Plan {
        format_version: FORMAT_VERSION,
        at: now,
        actions,
        due,
        refusals,
        notes,
    }
}

/// Execution order of SPEC section 3.
fn rank(a: &Action) -> u8 {
    match a.details {
        Details::CreateInstance { .. } => 0,
        Details::SwitchInstance { .. } => 1,
        Details::UpdateInstance { .. } => 2,
        Details::UpdateBackup { .. } | Details::ReviveBackup { .. } => 3,
        Details::CreateBackup { .. } => 4,
        Details::Restore { .. } => 5,
        Details::DeleteBackup { .. } => 6,
        Details::ForgetInstance { .. } => 7,
    }
}

/// Recorded backups, arranged for lookups.
struct Index<'r> {
    by_instance: BTreeMap<&'r str, Vec<&'r BackupRecord>>,
    /// Live on-demand backups by (instance, key); records being deleted are not live.
    on_demand: HashMap<(&'r str, &'r str), &'r BackupRecord>,
    /// On-demand backups in their deletion grace (`deleting`), by (instance, key).
    deleting: HashMap<(&'r str, &'r str), &'r BackupRecord>,
}

impl<'r> Index<'r> {
    fn new(rec: &'r Recorded) -> Self {
        // Hash maps while scanning the 400k records, sorted once at the end.
        let mut by_instance: HashMap<&str, Vec<&BackupRecord>> =
            HashMap::with_capacity(rec.instances.len());
        let mut on_demand: HashMap<(&str, &str), &BackupRecord> = HashMap::new();
        let mut deleting: HashMap<(&str, &str), &BackupRecord> = HashMap::new();
        for b in rec.backups.values() {
            by_instance.entry(b.instance.as_str()).or_default().push(b);
            let (BackupKind::OnDemand, Some(key)) = (b.kind, &b.key) else {
                continue;
            };
            let map = match b.status {
                // A tombstone: the key may be taken again.
                BackupStatus::Deleted => continue,
                BackupStatus::Deleting => &mut deleting,
                _ => &mut on_demand,
            };
            let slot = map.entry((b.instance.as_str(), key.as_str())).or_insert(b);
            if (b.created_at, b.id) > (slot.created_at, slot.id) {
                *slot = b;
            }
        }
        Index {
            by_instance: by_instance.into_iter().collect(),
            on_demand,
            deleting,
        }
    }
}

struct Planner<'a> {
    cfg: &'a Config,
    rec: &'a Recorded,
    now: DateTime<Utc>,
    file: String,
    idx: Index<'a>,
    actions: Vec<Action>,
    refusals: Vec<Refusal>,
    notes: Vec<String>,
}

impl Planner<'_> {
    fn at(&self, loc: Loc) -> String {
        format!("{}:{}:{}", self.file, loc.line, loc.col)
    }

    fn refuse(
        &mut self,
        rule: &'static str,
        address: String,
        location: String,
        message: String,
        fix: String,
    ) {
        self.refusals.push(Refusal {
            rule,
            address,
            message,
            fix,
            location,
        });
    }

    fn act(&mut self, op: Op, address: String, details: Details) {
        self.actions.push(Action {
            op,
            address,
            details,
        });
    }

    /// Backups whose expiry has passed and that `keep_last_good` does not protect.
    fn expiring(&self) -> BTreeSet<Uuid> {
        expiring(&self.cfg.schedule, &self.idx, self.now)
    }

    fn instances(&mut self) {
        for (name, inst) in &self.cfg.instances {
            let address = format!("instance.{name}");
            // Not recorded, or its creation failed: created (again).
            let Some(r) = self.rec.instances.get(name).filter(|r| !r.creation_failed) else {
                self.act(
                    Op::Create,
                    address,
                    Details::CreateInstance {
                        instance: name.clone(),
                        kind: inst.kind,
                        version: inst.version.clone(),
                        source: inst.source.clone(),
                    },
                );
                continue;
            };
            if r.source != inst.source {
                self.refuse(
                    "source-changed",
                    address,
                    self.at(inst.source_loc),
                    format!(
                        "the source of `{name}` changed from {} to {}; a different store is a different instance",
                        r.source.describe(),
                        inst.source.describe()
                    ),
                    format!(
                        "put the old source back; to protect the other store, declare it as a new instance under another name (and remove `{name}` separately, switching it to sandbox first if it is production)"
                    ),
                );
                continue;
            }
            if r.kind != inst.kind {
                self.act(
                    Op::Switch,
                    address.clone(),
                    Details::SwitchInstance {
                        instance: name.clone(),
                        kind: Change {
                            from: r.kind,
                            to: inst.kind,
                        },
                    },
                );
            }
            if r.version != inst.version {
                if inst.version < r.version {
                    self.notes.push(format!(
                        "{address}: the version goes down from {} to {}; `on_update` must know how to downgrade",
                        r.version, inst.version
                    ));
                }
                let on_update = inst
                    .on_update
                    .iter()
                    .map(|a| a.replace("{version}", inst.version.as_str()))
                    .collect();
                self.act(
                    Op::Update,
                    address,
                    Details::UpdateInstance {
                        instance: name.clone(),
                        version: Change {
                            from: r.version.clone(),
                            to: inst.version.clone(),
                        },
                        pre_update_backup: id_of(&format!(
                            "pre-update/{name}/{}/{}/{}",
                            r.version,
                            inst.version,
                            self.now.to_rfc3339()
                        )),
                        on_update,
                    },
                );
            }
        }
        for (name, r) in &self.rec.instances {
            if self.cfg.instances.contains_key(name) {
                continue;
            }
            let address = format!("instance.{name}");
            // One whose creation failed never held anything of backplan's: no guard.
            if r.kind == InstanceType::Production && !r.creation_failed {
                self.refuse(
                    "production-removal",
                    address,
                    self.file.clone(),
                    format!("production instance `{name}` is not in the file any more; a production instance cannot be removed in one step"),
                    format!("put [instances.{name}] back with `type = \"sandbox\"`, apply, then remove it"),
                );
                continue;
            }
            let kept = self.idx.by_instance.get(name.as_str()).map_or(0, |v| {
                v.iter()
                    .filter(|b| b.status != BackupStatus::Expired)
                    .count()
            });
            self.act(
                Op::Forget,
                address,
                Details::ForgetInstance {
                    instance: name.clone(),
                    backups_kept: kept,
                },
            );
        }
    }

    fn backups(&mut self) {
        let cfg = self.cfg;
        for (name, inst) in &cfg.instances {
            for (key, decl) in &inst.backups {
                let address = format!("backup.{name}/{key}");
                let deleting = self
                    .idx
                    .deleting
                    .get(&(name.as_str(), key.as_str()))
                    .copied();
                match self.idx.on_demand.get(&(name.as_str(), key.as_str())).copied() {
                    // Put back before its data was deleted (same storage): the same backup.
                    None if deleting.is_some_and(|d| d.storage == decl.storage) => {
                        let d = deleting.expect("checked");
                        let change = |from: &String, to: &String| {
                            (from != to).then(|| Change {
                                from: from.clone(),
                                to: to.clone(),
                            })
                        };
                        self.act(
                            Op::Update,
                            address,
                            Details::ReviveBackup {
                                id: d.id,
                                instance: name.clone(),
                                key: key.clone(),
                                delete_at: d.delete_at,
                                label: change(&d.label, &decl.label),
                                notes: change(&d.notes, &decl.notes),
                            },
                        );
                    }
                    None => self.create_backup(inst, key, address),
                    Some(r) if r.storage != decl.storage => self.refuse(
                        "storage-changed",
                        address,
                        self.at(decl.storage_loc),
                        format!(
                            "backup `{name}/{key}` is stored in `{}`; its storage cannot change to `{}`",
                            r.storage, decl.storage
                        ),
                        format!(
                            "keep `storage = \"{}\"` here, and add a new backup key with `storage = \"{}\"`",
                            r.storage, decl.storage
                        ),
                    ),
                    Some(r) if r.status == BackupStatus::Expired => self.notes.push(format!(
                        "{address} expired{}; only its record is left. Remove it from the file, or add a new key to take a new backup.",
                        r.expires_at.map(|t| format!(" on {}", fmt_time(&t))).unwrap_or_default()
                    )),
                    Some(r) => {
                        let change = |from: &String, to: &String| {
                            (from != to).then(|| Change {
                                from: from.clone(),
                                to: to.clone(),
                            })
                        };
                        let label = change(&r.label, &decl.label);
                        let notes = change(&r.notes, &decl.notes);
                        if label.is_some() || notes.is_some() {
                            self.act(
                                Op::Update,
                                address,
                                Details::UpdateBackup {
                                    id: r.id,
                                    instance: name.clone(),
                                    key: key.clone(),
                                    label,
                                    notes,
                                },
                            );
                        }
                    }
                }
            }
        }
        // Backups removed from the file: they enter their deletion grace (the data is deleted
        // later, by time-driven work). One file lookup per instance, not per backup.
        let by_instance: Vec<(Option<&Instance>, &BackupRecord)> = self
            .idx
            .by_instance
            .iter()
            .flat_map(|(name, list)| {
                let inst = cfg.instances.get(*name);
                list.iter().map(move |b| (inst, *b))
            })
            .collect();
        for (inst, b) in by_instance {
            let (BackupKind::OnDemand, Some(key)) = (b.kind, &b.key) else {
                continue;
            };
            if matches!(b.status, BackupStatus::Deleting | BackupStatus::Deleted) {
                continue;
            }
            let removed = match inst {
                // The instance left the file: its backups stay and expire on schedule.
                None => false,
                Some(inst) => !inst.backups.contains_key(key),
            };
            if !removed {
                continue;
            }
            let data = if b.status == BackupStatus::Expired {
                DataFate::AlreadyExpired
            } else {
                data_fate(cfg, b)
            };
            let delete_at = (data != DataFate::AlreadyExpired)
                .then(|| self.now + cfg.schedule.deletion_grace.to_chrono());
            self.act(
                Op::Delete,
                format!("backup.{}/{key}", b.instance),
                Details::DeleteBackup {
                    id: b.id,
                    instance: b.instance.clone(),
                    key: key.clone(),
                    storage: b.storage.clone(),
                    data,
                    delete_at,
                },
            );
        }
    }

    fn create_backup(&mut self, inst: &Instance, key: &str, address: String) {
        let decl = &inst.backups[key];
        if let Some(min) = &self.cfg.schedule.min_backup_version
            && &inst.version < min
        {
            self.refuse(
                "min-backup-version",
                address,
                self.at(decl.loc),
                format!(
                    "on-demand backups need version {min} or later; `{}` is at {}",
                    inst.name, inst.version
                ),
                format!(
                    "update `{}` to {min} or later first, or lower `min_backup_version`",
                    inst.name
                ),
            );
            return;
        }
        let storage = &self.cfg.storages[&decl.storage];
        self.act(
            Op::Create,
            address,
            Details::CreateBackup {
                id: id_of(&format!(
                    "on-demand/{}/{key}/{}",
                    inst.name,
                    self.now.to_rfc3339()
                )),
                instance: inst.name.clone(),
                key: key.to_string(),
                label: decl.label.clone(),
                notes: decl.notes.clone(),
                storage: decl.storage.clone(),
                expires_at: expiry(storage.retention, self.now),
            },
        );
    }

    fn restores(&mut self, expiring: &BTreeSet<Uuid>) {
        let cfg = self.cfg;
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, r) in &cfg.restores {
            let address = format!("restore.{key}");
            if let Some(done) = self.rec.restores.get(key) {
                // Compared as references, so `from` written with another letter case of the
                // same UUID is the same restore.
                let same_from = BackupRef::parse(&done.from).is_ok_and(|f| f == r.from);
                if !same_from || done.to != r.to {
                    self.refuse(
                        "restore-immutable",
                        address,
                        self.at(r.loc),
                        format!(
                            "restore `{key}` already ran ({} into {}); a restore cannot be changed afterwards",
                            done.from, done.to
                        ),
                        format!("put `{key}` back as it was (or remove it), and add the new restore under a new key"),
                    );
                } else if done.status == RestoreStatus::Failed {
                    self.notes.push(format!(
                        "{address} failed{}{}; restores run once: add a new key to try again",
                        done.completed_at
                            .map(|t| format!(" at {}", fmt_time(&t)))
                            .unwrap_or_default(),
                        done.error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ));
                }
                continue;
            }
            if let Some(other) = targets.insert(r.to.as_str(), key) {
                self.refuse(
                    "one-restore-per-target",
                    address,
                    self.at(r.loc),
                    format!("restores `{other}` and `{key}` both target `{}` in one plan; which one should win is not clear", r.to),
                    "add one restore, apply, then add the next".into(),
                );
                continue;
            }
            if let Err((rule, message, fix)) = self.restore(r, expiring) {
                let loc = match rule {
                    "restore-into-production" | "unknown-instance" => r.to_loc,
                    _ => r.from_loc,
                };
                self.refuse(rule, address, self.at(loc), message, fix);
            }
        }
    }

    /// Checks one new restore and plans it; on refusal returns (rule, message, fix).
    fn restore(
        &mut self,
        r: &Restore,
        expiring: &BTreeSet<Uuid>,
    ) -> Result<(), (&'static str, String, String)> {
        let cfg = self.cfg;
        let Some(target) = cfg.instances.get(&r.to) else {
            return Err((
                "unknown-instance",
                format!("restore target `{}` is not an instance in the file", r.to),
                "name a sandbox instance declared under [instances]".into(),
            ));
        };
        // The file's type is the type after this plan's switches.
        if target.kind == InstanceType::Production {
            return Err((
                "restore-into-production",
                format!(
                    "`{}` is a production instance; only a sandbox can be the target of a restore",
                    r.to
                ),
                format!(
                    "restore into a sandbox instance, or switch `{}` to sandbox first",
                    r.to
                ),
            ));
        }
        let (backup, by_plan, source_kind) = self.resolve(&r.from, expiring)?;
        if source_kind != target.source.kind() {
            return Err((
                "kind-mismatch",
                format!(
                    "backup {} is of a {source_kind} instance and `{}` is a {} instance",
                    r.from,
                    r.to,
                    target.source.kind()
                ),
                "restore into a sandbox of the same kind".into(),
            ));
        }
        let deleted = self
            .actions
            .iter()
            .any(|a| matches!(a.details, Details::DeleteBackup { id, .. } if id == backup));
        if deleted {
            return Err((
                "backup-being-deleted",
                format!("backup {} is deleted by this same plan", r.from),
                "keep the backup in the file until the restore has run".into(),
            ));
        }
        self.act(
            Op::Restore,
            format!("restore.{}", r.key),
            Details::Restore {
                restore: r.key.clone(),
                from: r.from.to_string(),
                backup,
                backup_created_by_plan: by_plan,
                to: r.to.clone(),
                pre_restore_backup: id_of(&format!("pre-restore/{}", r.key)),
            },
        );
        Ok(())
    }

    /// Which backup a reference names: (id, taken by this plan, kind of store).
    fn resolve(
        &self,
        from: &BackupRef,
        expiring: &BTreeSet<Uuid>,
    ) -> Result<(Uuid, bool, crate::config::SourceKind), (&'static str, String, String)> {
        let unknown = || {
            (
                "unknown-backup",
                format!("no recorded backup matches `{from}`"),
                "list the backups with `backplan backups` and name one that exists".to_string(),
            )
        };
        let of = |inst: &str| {
            self.idx
                .by_instance
                .get(inst)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        let found: Option<&BackupRecord> = match from {
            BackupRef::Id { id } => self.rec.backups.get(id),
            BackupRef::OnDemand { instance, key } => {
                match self.idx.on_demand.get(&(instance.as_str(), key.as_str())) {
                    Some(b) => Some(*b),
                    None => {
                        let planned = self.actions.iter().find_map(|a| match &a.details {
                            Details::CreateBackup {
                                id,
                                instance: i,
                                key: k,
                                ..
                            } if i == instance && k == key => Some(*id),
                            _ => None,
                        });
                        if let Some(id) = planned {
                            let kind = self.cfg.instances[instance].source.kind();
                            return Ok((id, true, kind));
                        }
                        None
                    }
                }
            }
            BackupRef::Latest { instance } => newest(
                of(instance)
                    .iter()
                    .filter(|b| b.status == BackupStatus::Completed && !expiring.contains(&b.id)),
            ),
            BackupRef::Daily { instance, date } => newest(
                of(instance)
                    .iter()
                    .filter(|b| b.kind == BackupKind::Daily && b.date == Some(*date)),
            ),
            BackupRef::PreUpdate { instance, version } => {
                // The pre-update backup of an update in this same plan is taken before restores.
                let planned = self.actions.iter().find_map(|a| match &a.details {
                    Details::UpdateInstance {
                        instance: i,
                        version: v,
                        pre_update_backup,
                        ..
                    } if i == instance && &v.to == version => Some(*pre_update_backup),
                    _ => None,
                });
                if let Some(id) = planned {
                    let kind = self.cfg.instances[instance].source.kind();
                    return Ok((id, true, kind));
                }
                newest(of(instance).iter().filter(|b| {
                    b.kind == BackupKind::PreUpdate && b.version.as_ref() == Some(version)
                }))
            }
        };
        let b = found.ok_or_else(unknown)?;
        if b.status == BackupStatus::Deleted {
            return Err((
                "backup-deleted",
                format!(
                    "backup {from} ({}) was removed from the file and its deletion grace has passed; its data is deleted",
                    b.id
                ),
                "restore from another backup; `backplan backups` lists them".into(),
            ));
        }
        let expired = b.status == BackupStatus::Expired || expiring.contains(&b.id);
        if expired {
            return Err((
                "backup-expired",
                format!("backup {from} ({}) has expired", b.id),
                "restore from a newer backup, like `<instance>@latest`".into(),
            ));
        }
        // A backup in its deletion grace is still restorable (by id) if it had completed.
        let status = match (b.status, b.status_before_delete) {
            (BackupStatus::Deleting, Some(before)) => before,
            (BackupStatus::Deleting, None) if b.snapshot_id.is_some() => BackupStatus::Completed,
            (status, _) => status,
        };
        match status {
            BackupStatus::Completed => {}
            BackupStatus::Failed => {
                return Err((
                    "backup-failed",
                    format!(
                        "backup {from} ({}) failed{}",
                        b.id,
                        b.error
                            .as_ref()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                    "restore from a backup that completed; `backplan backups` lists them".into(),
                ));
            }
            BackupStatus::Skipped => {
                return Err((
                    "backup-not-taken",
                    format!(
                        "the daily slot {from} was missed while backplan was not running; no backup was taken"
                    ),
                    "restore from another backup; `backplan backups` lists them".into(),
                ));
            }
            other => {
                return Err((
                    "backup-not-ready",
                    format!("backup {from} ({}) is {other}, not completed", b.id),
                    "wait until the backup has completed, then apply again".into(),
                ));
            }
        }
        if let Some(storage) = self.cfg.storages.get(&b.storage) {
            if let (true, Some(age)) = (storage.is_external(), storage.max_restore_age)
                && self.now - b.created_at > age.to_chrono()
            {
                return Err((
                    "restore-too-old",
                    format!(
                        "backup {from} was taken {} and storage `{}` refuses restores of backups older than {age}",
                        fmt_time(&b.created_at),
                        b.storage
                    ),
                    "restore from a newer backup".into(),
                ));
            }
        } else {
            return Err((
                "unknown-storage",
                format!(
                    "backup {from} is in storage `{}`, which the file no longer declares",
                    b.storage
                ),
                format!("declare [storage.{}] again to restore from it", b.storage),
            ));
        }
        Ok((b.id, false, b.source_kind))
    }

    /// SPEC section 3: more than half of the instances forgotten, or more than half (and more
    /// than 2) of the on-demand backups deleted, is refused unless explicitly allowed.
    fn mass_removal(&mut self, opts: PlanOptions) {
        let forgets = self.actions.iter().filter(|a| a.op == Op::Forget).count()
            + self
                .refusals
                .iter()
                .filter(|r| r.rule == "production-removal")
                .count();
        let instances = self.rec.instances.len();
        let live = |b: &&BackupRecord| {
            b.kind == BackupKind::OnDemand
                && !matches!(
                    b.status,
                    BackupStatus::Expired | BackupStatus::Deleting | BackupStatus::Deleted
                )
        };
        let deletes = self
            .actions
            .iter()
            .filter(|a| {
                matches!(&a.details, Details::DeleteBackup { id, .. } if self.rec.backups.get(id).is_some_and(|b| live(&b)))
            })
            .count();
        let on_demand = self.rec.backups.values().filter(|b| live(b)).count();
        let mass_forget = forgets * 2 > instances && forgets > 0;
        let mass_delete = deletes * 2 > on_demand && deletes > 2;
        if !(mass_forget || mass_delete) {
            return;
        }
        let what = match (mass_forget, mass_delete) {
            (true, true) => format!(
                "{forgets} of {instances} instances and {deletes} of {on_demand} on-demand backups would be removed"
            ),
            (true, false) => format!("{forgets} of {instances} instances would be forgotten"),
            _ => format!("{deletes} of {on_demand} on-demand backups would be deleted"),
        };
        if opts.allow_mass_removal {
            self.notes
                .push(format!("{what}; allowed by --allow-mass-removal"));
            return;
        }
        self.refuse(
            "mass-removal",
            "plan".into(),
            self.file.clone(),
            format!("{what}; that looks like a wrong or truncated file rather than an intended change"),
            "check that the right file is deployed; if the removal is intended, run again with --allow-mass-removal".into(),
        );
    }

    /// A retention change applies to new backups only (SPEC section 4): say so when recorded
    /// backups carry another expiry than the current setting would give.
    fn retention_notes(&mut self) {
        let mut differing: BTreeMap<&str, usize> = BTreeMap::new();
        let mut undeclared: BTreeMap<&str, usize> = BTreeMap::new();
        for b in self.rec.backups.values() {
            if matches!(
                b.status,
                BackupStatus::Expired | BackupStatus::Skipped | BackupStatus::Deleted
            ) {
                continue;
            }
            match self.cfg.storages.get(&b.storage) {
                None => *undeclared.entry(b.storage.as_str()).or_default() += 1,
                Some(s) => {
                    if b.expires_at != expiry(s.retention, b.created_at) {
                        *differing.entry(b.storage.as_str()).or_default() += 1;
                    }
                }
            }
        }
        for (storage, n) in differing {
            let r = self.cfg.storages[storage].retention;
            self.notes.push(format!(
                "storage `{storage}`: retention is now {r}; it applies to new backups only, {n} existing backup(s) keep the expiry fixed when they were taken"
            ));
        }
        for (storage, n) in undeclared {
            self.notes.push(format!(
                "{n} backup(s) are in storage `{storage}`, which the file no longer declares; they cannot be restored, deleted or expired until it is declared again"
            ));
        }
    }
}

fn newest<'r>(it: impl Iterator<Item = &'r &'r BackupRecord>) -> Option<&'r BackupRecord> {
    it.max_by_key(|b| (b.finished_at(), b.created_at, b.id))
        .copied()
}

/// What deleting a backup's record does to its data: external storage keeps it unless
/// `purge_on_delete`.
fn data_fate(cfg: &Config, b: &BackupRecord) -> DataFate {
    match cfg.storages.get(&b.storage) {
        Some(s) if s.is_external() && !s.purge_on_delete => DataFate::KeptInStorage,
        _ => DataFate::Deleted,
    }
}

fn expiry(r: Retention, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    r.duration().map(|d| from + d.to_chrono())
}

fn expiring(schedule: &Schedule, idx: &Index<'_>, now: DateTime<Utc>) -> BTreeSet<Uuid> {
    expiring_with(schedule, idx, now, &HashMap::new())
}

/// Like [`expiring`], as if the backups in `taking` (per instance, how many) completed now:
/// each of them would be newer than every recorded one.
fn expiring_with(
    schedule: &Schedule,
    idx: &Index<'_>,
    now: DateTime<Utc>,
    taking: &HashMap<&str, usize>,
) -> BTreeSet<Uuid> {
    let keep = schedule.keep_last_good as usize;
    let mut out = BTreeSet::new();
    for (instance, backups) in &idx.by_instance {
        let keep = keep.saturating_sub(taking.get(instance).copied().unwrap_or(0));
        let mut good: Vec<&&BackupRecord> = backups
            .iter()
            .filter(|b| b.status == BackupStatus::Completed)
            .collect();
        good.sort_by_key(|b| std::cmp::Reverse((b.finished_at(), b.created_at, b.id)));
        let protected: BTreeSet<Uuid> = good.iter().take(keep).map(|b| b.id).collect();
        for b in backups {
            let in_flight = matches!(
                b.status,
                BackupStatus::Running
                    | BackupStatus::Deleting
                    | BackupStatus::Expired
                    | BackupStatus::Deleted
            );
            if !in_flight && b.expires_at.is_some_and(|e| e <= now) && !protected.contains(&b.id) {
                out.insert(b.id);
            }
        }
    }
    out
}

/// Expiries that follow from the backups this run takes (SPEC section 4, `keep_last_good`):
/// a backup past its expiry, protected only because it is the newest good one, expires once
/// a newer one completes. Listed so that the plan shows everything the run does; the
/// executor checks again, after the backups, that the protection has really gone.
fn follow_up_expiries(
    cfg: &Config,
    rec: &Recorded,
    idx: &Index<'_>,
    now: DateTime<Utc>,
    expiring: &BTreeSet<Uuid>,
    actions: &[Action],
    due: &[Due],
) -> Vec<Due> {
    let mut taking: HashMap<&str, usize> = HashMap::new();
    let mut first: HashMap<&str, Uuid> = HashMap::new();
    let mut take = |instance: &'_ str, id: Uuid| {
        // The instance names live in the recorded state; look them up there.
        if let Some((name, _)) = rec.instances.get_key_value(instance) {
            *taking.entry(name.as_str()).or_default() += 1;
            first.entry(name.as_str()).or_insert(id);
        }
    };
    for a in actions {
        match &a.details {
            Details::CreateBackup { id, instance, .. } => take(instance, *id),
            Details::UpdateInstance {
                instance,
                pre_update_backup,
                ..
            } => take(instance, *pre_update_backup),
            Details::Restore {
                to,
                pre_restore_backup,
                ..
            } => take(to, *pre_restore_backup),
            _ => {}
        }
    }
    for d in due {
        match &d.details {
            DueDetails::DailyBackup { id, instance, .. }
            | DueDetails::Retry { id, instance, .. } => take(instance, *id),
            _ => {}
        }
    }
    if taking.is_empty() {
        return Vec::new();
    }
    let after = expiring_with(&cfg.schedule, idx, now, &taking);
    after
        .difference(expiring)
        .filter_map(|id| rec.backups.get(id))
        .filter(|b| cfg.storages.contains_key(&b.storage))
        .map(|b| Due {
            work: Work::Expire,
            address: backup_address(b),
            details: DueDetails::Expire {
                id: b.id,
                instance: b.instance.clone(),
                kind: b.kind,
                storage: b.storage.clone(),
                expires_at: b.expires_at.expect("only backups with an expiry expire"),
                after: first.get(b.instance.as_str()).copied(),
            },
        })
        .collect()
}

/// The time-driven work due at `now`.
fn due(
    cfg: &Config,
    rec: &Recorded,
    idx: &Index<'_>,
    now: DateTime<Utc>,
    expiring: &BTreeSet<Uuid>,
    forgotten: &BTreeSet<&str>,
) -> Vec<Due> {
    let s = &cfg.schedule;
    let mut out = Vec::new();
    let today = local_date(s, now);
    let window_days = s.retention.as_secs().div_ceil(86_400) as i64;
    let local_retention = cfg.storages["local"].retention;
    for (name, inst) in &rec.instances {
        if forgotten.contains(name.as_str()) {
            continue;
        }
        let backups = idx
            .by_instance
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // The first slot after the instance was first recorded.
        let created = local_date(s, inst.created_at);
        let first = if inst.created_at <= slot_at(s, created) {
            created
        } else {
            created.succ_opt().expect("dates do not run out")
        };
        // Slots already recorded (taken, failed or skipped), by date.
        let recorded: BTreeSet<NaiveDate> = backups
            .iter()
            .filter(|b| b.kind == BackupKind::Daily)
            .filter_map(|b| b.date)
            .collect();
        let taken =
            |d: NaiveDate| recorded.contains(&d) || rec.backups.contains_key(&daily_id(name, d));
        let last_daily = recorded.last().copied();
        let mut d = first
            .max(last_daily.and_then(|d| d.succ_opt()).unwrap_or(first))
            .max(today - Duration::days(window_days));
        // An instance whose creation failed has nothing to back up: its slots are recorded
        // as skipped, with the reason.
        let reason = inst.creation_failed.then(|| {
            format!(
                "not taken: {}",
                inst.error
                    .as_deref()
                    .unwrap_or("the instance could not be created")
            )
        });
        let skip = |d: NaiveDate| Due {
            work: Work::SkipDaily,
            address: format!("backup.{name}@daily:{d}"),
            details: DueDetails::SkipDaily {
                id: daily_id(name, d),
                instance: name.clone(),
                date: d,
                slot_at: slot_at(s, d),
                reason: reason.clone(),
            },
        };
        while d < today {
            // A missed slot already past its expiry is not recorded just to be expired.
            let expired = expiry(local_retention, slot_at(s, d)).is_some_and(|e| e <= now);
            if !taken(d) && !expired {
                out.push(skip(d));
            }
            d = d.succ_opt().expect("dates do not run out");
        }
        let slot = slot_at(s, today);
        let id = daily_id(name, today);
        if today >= first && now >= slot && !taken(today) && reason.is_some() {
            out.push(skip(today));
        } else if today >= first && now >= slot && !taken(today) {
            out.push(Due {
                work: Work::DailyBackup,
                address: format!("backup.{name}@daily:{today}"),
                details: DueDetails::DailyBackup {
                    id,
                    instance: name.clone(),
                    date: today,
                    slot_at: slot,
                    expires_at: expiry(local_retention, now),
                },
            });
        }
    }
    for b in rec.backups.values() {
        // The per-instance lookups only for the (few) failed backups due a retry.
        let managed =
            || rec.instances.contains_key(&b.instance) && !forgotten.contains(b.instance.as_str());
        let removed_from_file = || {
            b.kind == BackupKind::OnDemand
                && cfg
                    .instances
                    .get(&b.instance)
                    .is_some_and(|i| b.key.as_ref().is_none_or(|k| !i.backups.contains_key(k)))
        };
        if let Some(at) = retry_at(b)
            && now >= at
            && managed()
            && !removed_from_file()
            && !expiring.contains(&b.id)
        {
            out.push(Due {
                work: Work::Retry,
                address: backup_address(b),
                details: DueDetails::Retry {
                    id: b.id,
                    instance: b.instance.clone(),
                    kind: b.kind,
                    attempt: b.attempts + 1,
                    max_attempts: MAX_ATTEMPTS,
                    last_error: b.error.clone(),
                },
            });
        }
        if expiring.contains(&b.id) && cfg.storages.contains_key(&b.storage) {
            out.push(Due {
                work: Work::Expire,
                address: backup_address(b),
                details: DueDetails::Expire {
                    id: b.id,
                    instance: b.instance.clone(),
                    kind: b.kind,
                    storage: b.storage.clone(),
                    expires_at: b.expires_at.expect("only backups with an expiry expire"),
                    after: None,
                },
            });
        }
        if b.status == BackupStatus::Deleting
            && b.delete_at.is_none_or(|t| t <= now)
            && cfg.storages.contains_key(&b.storage)
        {
            out.push(Due {
                work: Work::Purge,
                address: backup_address(b),
                details: DueDetails::Purge {
                    id: b.id,
                    instance: b.instance.clone(),
                    key: b.key.clone(),
                    storage: b.storage.clone(),
                    delete_at: b.delete_at,
                    data: data_fate(cfg, b),
                },
            });
        }
    }
    out.sort_by(|a, b| (a.work, &a.address).cmp(&(b.work, &b.address)));
    out
}

impl std::fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackupStatus::Pending => "pending",
            BackupStatus::Running => "running",
            BackupStatus::Completed => "completed",
            BackupStatus::Failed => "failed",
            BackupStatus::Deleting => "deleting",
            BackupStatus::Expired => "expired",
            BackupStatus::Skipped => "skipped",
            BackupStatus::Deleted => "deleted",
        })
    }
}
