//! The incremental plan: the daemon's plan after a small change (an edit of the file, a few
//! records written, time moving on) re-plans only the instances that change touched.
//!
//! Almost all of a plan belongs to one instance: its actions, refusals, notes and
//! time-driven work depend on its declaration in the file, its records and `now`, plus the
//! file's global parts (schedule, storages). [`PlanCache`] keeps, per instance, that part of
//! the last plan (a [`Part`]) and the facts the global parts of a plan are made of (counts
//! for the mass-removal guard and the retention notes, the instance's next deadlines).
//! [`PlanCache::plan`] recomputes the parts that are out of date and assembles the plan
//! from them: the same plan as [`plan`](super::plan), which a property test checks after
//! every one of a series of random edits.
//!
//! **A part is keyed on the instance's declaration (compared exactly, locations included),
//! on its records (the writes the caller reports in [`RecordChanges`]) and on the interval
//! of `now` it stays true for** (until the next expiry, retry, purge, drill or daily slot of
//! the instance, or the local date changes; a part that embeds `now`, like a backup to take,
//! is true at its own `now` only). Anything else (the file's global parts, records written
//! that the caller cannot name) rebuilds the whole cache. A plan that would hold a refusal,
//! or a restore not run yet, is planned in full: those are the parts of a plan that cross
//! instances, and they are rare.

use std::sync::Arc;

use super::rules::{
    live_on_demand, mass_removal, mass_removal_allowed, retention_count, retention_notes,
};
use super::*;
use crate::config::InstanceHooks;
use crate::config::model::BackupDecl;

/// Records written since the last call, as the store saw them (the daemon's store notes each
/// write; see `state::Store::load_changes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordChanges {
    /// Records were read again or written wholesale: nothing can be reused.
    pub everything: bool,
    /// Instance and drill records written or removed, by instance name.
    pub instances: BTreeSet<String>,
    /// Backup records written or removed: id → its instance.
    pub backups: BTreeMap<Uuid, String>,
}

impl RecordChanges {
    pub fn everything() -> Self {
        RecordChanges {
            everything: true,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.everything && self.instances.is_empty() && self.backups.is_empty()
    }

    /// Adds `other` (changes seen later).
    pub fn merge(&mut self, other: RecordChanges) {
        self.everything |= other.everything;
        self.instances.extend(other.instances);
        self.backups.extend(other.backups);
    }
}

/// What the last plans computed, per instance (see the module's text). Empty at first: the
/// first use computes everything.
#[derive(Debug, Default)]
pub struct PlanCache {
    /// The file the slots were computed from (`None`: nothing computed yet).
    cfg: Option<Arc<Config>>,
    /// The global parts of that file the slots depend on (file name, schedule, storages).
    global: String,
    slots: BTreeMap<String, Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    /// Its backup records, in id order.
    ids: Vec<Uuid>,
    /// The times its records (and its drill) make work due, sorted ([`next_deadline`]).
    deadlines: Vec<DateTime<Utc>>,
    /// Its part of the last plan; `None`: to compute.
    part: Option<Part>,
}

/// One instance's part of a plan made at `at`.
#[derive(Debug)]
struct Part {
    at: DateTime<Utc>,
    /// The local date of `at`.
    today: NaiveDate,
    /// The part holds for `now` in `at..until` on the same local date (`None`: at `at` only).
    until: Option<DateTime<Utc>>,
    /// In the order of the full plan before its sort (see [`plan`](super::plan)).
    actions: Vec<Action>,
    refusals: Vec<Refusal>,
    /// Notes of the instance rules, then of its backups (the plan lists all of the first
    /// kind before the second).
    instance_notes: Vec<String>,
    backup_notes: Vec<String>,
    /// Its time-driven work, sorted, then the follow-up expiries.
    due: Vec<Due>,
    /// Counts for the mass-removal guard.
    forgets: usize,
    live_deletes: usize,
    live_on_demand: usize,
    /// Counts for the retention notes: storage, differing expiry, undeclared storage.
    retention: Vec<(String, usize, usize)>,
}

/// [`PlanCache::update`] then [`PlanCache::plan`]: the plan, equal to
/// [`plan`](super::plan)`(cfg, rec, now, opts)`, and the cache for the next one. `changed`
/// are the records written since the cache was last used (all of them for a new cache).
pub fn plan_incremental(
    mut cache: PlanCache,
    cfg: &Arc<Config>,
    rec: &Recorded,
    changed: &RecordChanges,
    now: DateTime<Utc>,
    opts: PlanOptions,
) -> (Plan, PlanCache) {
    cache.update(cfg, rec, changed);
    let plan = cache.plan(cfg, rec, now, opts);
    (plan, cache)
}

impl PlanCache {
    /// Brings the cache to `cfg` and `rec`, given the records written since the last call:
    /// the instances whose declaration or records changed are marked to plan again.
    ///
    /// Returns the file the cache held when `cfg` is another one: the cache lets go of it,
    /// and the caller frees it where that delays nothing (the daemon: once the plan is
    /// applied, see `daemon::reconcile`): the model of 10,000 instances is hundreds of
    /// thousands of allocations to free.
    pub fn update(
        &mut self,
        cfg: &Arc<Config>,
        rec: &Recorded,
        changed: &RecordChanges,
    ) -> Option<Arc<Config>> {
        let global = global_key(cfg);
        let Some(prev) = self.cfg.clone() else {
            self.rebuild(cfg, rec);
            return None;
        };
        let replaced = (!Arc::ptr_eq(&prev, cfg)).then(|| prev.clone());
        if changed.everything || global != self.global {
            self.rebuild(cfg, rec);
            return replaced;
        }
        let mut dirty: BTreeSet<&str> = changed.instances.iter().map(String::as_str).collect();
        for (id, instance) in &changed.backups {
            dirty.insert(instance);
            let ids = &mut self.slots.entry(instance.clone()).or_default().ids;
            let now_there = rec.backups.get(id).is_some_and(|b| &b.instance == instance);
            match ids.binary_search(id) {
                Ok(i) if !now_there => {
                    ids.remove(i);
                }
                Err(i) if now_there => ids.insert(i, *id),
                _ => {}
            }
        }
        if !Arc::ptr_eq(&prev, cfg) {
            // Both in name order: side by side while the names match, lookups after.
            let mut old = prev.instances.iter();
            let mut new = cfg.instances.iter();
            loop {
                match (old.next(), new.next()) {
                    (Some((a, x)), Some((b, y))) if a == b => {
                        if !same_instance(x, y) {
                            dirty.insert(b);
                        }
                    }
                    (None, None) => break,
                    _ => {
                        for (name, inst) in &cfg.instances {
                            if !prev
                                .instances
                                .get(name)
                                .is_some_and(|p| same_instance(p, inst))
                            {
                                dirty.insert(name);
                            }
                        }
                        for name in prev.instances.keys() {
                            if !cfg.instances.contains_key(name) {
                                dirty.insert(name);
                            }
                        }
                        break;
                    }
                }
            }
        }
        for name in dirty {
            let slot = self.slots.entry(name.to_string()).or_default();
            slot.part = None;
            let backups = records(rec, name, &slot.ids);
            slot.deadlines = deadlines(cfg, rec, name, &backups);
            let gone = slot.ids.is_empty()
                && !cfg.instances.contains_key(name)
                && !rec.instances.contains_key(name)
                && !rec.drills.contains_key(name);
            if gone {
                self.slots.remove(name);
            }
        }
        self.cfg = Some(cfg.clone());
        replaced
    }

    /// Forgets everything and takes the instances and their records from `rec`: one pass
    /// over the records.
    fn rebuild(&mut self, cfg: &Arc<Config>, rec: &Recorded) {
        self.cfg = Some(cfg.clone());
        self.global = global_key(cfg);
        let idx = Index::new(rec);
        let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
        for (name, list) in &idx.by_instance {
            slots.insert(
                name.to_string(),
                Slot {
                    ids: list.iter().map(|b| b.id).collect(),
                    deadlines: deadlines(cfg, rec, name, list),
                    part: None,
                },
            );
        }
        let names = cfg
            .instances
            .keys()
            .chain(rec.instances.keys())
            .chain(rec.drills.keys());
        for name in names {
            if !slots.contains_key(name) {
                slots.insert(
                    name.clone(),
                    Slot {
                        deadlines: deadlines(cfg, rec, name, &[]),
                        ..Slot::default()
                    },
                );
            }
        }
        self.slots = slots;
    }

    /// The plan at `now`, from the parts still true and those computed again. `cfg` and `rec`
    /// must be those of the last [`PlanCache::update`].
    pub fn plan(
        &mut self,
        cfg: &Arc<Config>,
        rec: &Recorded,
        now: DateTime<Utc>,
        opts: PlanOptions,
    ) -> Plan {
        debug_assert!(self.cfg.as_ref().is_some_and(|c| Arc::ptr_eq(c, cfg)));
        let file = cfg.file.display().to_string();
        let today = local_date(&cfg.schedule, now);
        let next_slot = next_slot(&cfg.schedule, now);
        for (name, slot) in &mut self.slots {
            let fresh = slot.part.as_ref().is_some_and(|p| {
                p.at == now || (p.at < now && p.today == today && p.until.is_some_and(|u| now < u))
            });
            if !fresh {
                let backups = records(rec, name, &slot.ids);
                slot.part = Some(part(cfg, rec, name, &backups, now, &file, next_slot));
            }
        }
        self.assemble(cfg, rec, now, opts, file)
            .unwrap_or_else(|| super::plan(cfg, rec, now, opts))
    }

    /// The plan from the parts, as [`plan`](super::plan) puts it together; `None` when it
    /// must be planned in full (a refusal, a restore to run).
    fn assemble(
        &self,
        cfg: &Config,
        rec: &Recorded,
        now: DateTime<Utc>,
        opts: PlanOptions,
        file: String,
    ) -> Option<Plan> {
        let parts: Vec<&Part> = self
            .slots
            .values()
            .filter_map(|s| s.part.as_ref())
            .collect();
        if parts.iter().any(|p| !p.refusals.is_empty()) {
            return None;
        }
        if cfg.restores.keys().any(|k| !rec.restores.contains_key(k)) {
            return None;
        }
        let mut notes: Vec<String> = Vec::new();
        for p in &parts {
            notes.extend(p.instance_notes.iter().cloned());
        }
        for p in &parts {
            notes.extend(p.backup_notes.iter().cloned());
        }
        // The restores: all of them ran already, so only the checks against their records.
        let mut restores = Planner {
            cfg,
            rec,
            now,
            file,
            idx: Index::of(std::iter::empty(), 0),
            scope: None,
            actions: Vec::new(),
            refusals: Vec::new(),
            notes: Vec::new(),
        };
        restores.restores(&BTreeSet::new());
        if !restores.refusals.is_empty() {
            return None;
        }
        notes.append(&mut restores.notes);
        let sum = |f: fn(&Part) -> usize| parts.iter().map(|p| f(p)).sum::<usize>();
        let what = mass_removal(
            sum(|p| p.forgets),
            rec.instances.len(),
            sum(|p| p.live_deletes),
            sum(|p| p.live_on_demand),
        );
        if let Some(what) = what {
            if !opts.allow_mass_removal {
                return None;
            }
            notes.push(mass_removal_allowed(&what));
        }
        let mut differing: BTreeMap<&str, usize> = BTreeMap::new();
        let mut undeclared: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &parts {
            for (storage, d, u) in &p.retention {
                if *d > 0 {
                    *differing.entry(storage).or_default() += d;
                }
                if *u > 0 {
                    *undeclared.entry(storage).or_default() += u;
                }
            }
        }
        notes.extend(retention_notes(cfg, &differing, &undeclared));
        let mut actions: Vec<Action> = parts.iter().flat_map(|p| p.actions.clone()).collect();
        actions.sort_by(|a, b| (rank(a), &a.address).cmp(&(rank(b), &b.address)));
        let mut due: Vec<Due> = parts.iter().flat_map(|p| p.due.clone()).collect();
        due.sort_by(|a, b| (a.work, &a.address).cmp(&(b.work, &b.address)));
        Some(Plan {
            format_version: FORMAT_VERSION,
            at: now,
            actions,
            due,
            refusals: Vec::new(),
            notes,
        })
    }

    /// When time-driven work is next due after `since`: [`next_deadline`] from the cache
    /// (after [`PlanCache::update`] with the same `cfg`).
    pub fn next_deadline(&self, cfg: &Config, since: DateTime<Utc>) -> DateTime<Utc> {
        let mut next = next_slot(&cfg.schedule, since);
        for slot in self.slots.values() {
            let i = slot.deadlines.partition_point(|t| *t <= since);
            if let Some(t) = slot.deadlines.get(i) {
                next = next.min(*t);
            }
        }
        next
    }
}

/// The records of `name` with these ids (a record that moved to another instance is not
/// its any more).
fn records<'r>(rec: &'r Recorded, name: &str, ids: &[Uuid]) -> Vec<&'r BackupRecord> {
    ids.iter()
        .filter_map(|id| rec.backups.get(id))
        .filter(|b| b.instance == name)
        .collect()
}

/// The times after which [`next_deadline`] looks at the records of one instance (and its
/// drill), sorted.
fn deadlines(
    cfg: &Config,
    rec: &Recorded,
    name: &str,
    backups: &[&BackupRecord],
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    for b in backups {
        let live = !matches!(
            b.status,
            BackupStatus::Expired | BackupStatus::Running | BackupStatus::Deleting
        );
        let purge = b.delete_at.filter(|_| b.status == BackupStatus::Deleting);
        out.extend(
            [b.expires_at.filter(|_| live), retry_at(b), purge]
                .into_iter()
                .flatten(),
        );
    }
    out.extend(next_drill(cfg, rec, name));
    out.sort();
    out
}

/// One instance's part of the plan at `now`: what [`plan`](super::plan) does, for it alone.
fn part(
    cfg: &Config,
    rec: &Recorded,
    name: &str,
    backups: &[&BackupRecord],
    now: DateTime<Utc>,
    file: &str,
    next_slot: DateTime<Utc>,
) -> Part {
    let mut p = Planner {
        cfg,
        rec,
        now,
        file: file.to_string(),
        idx: Index::of(backups.iter().copied(), 1),
        scope: Some(name),
        actions: Vec::new(),
        refusals: Vec::new(),
        notes: Vec::new(),
    };
    let expiring = p.expiring();
    p.instances();
    let instance_notes = std::mem::take(&mut p.notes);
    p.backups();
    let backup_notes = std::mem::take(&mut p.notes);
    let Planner {
        mut actions,
        refusals,
        idx,
        ..
    } = p;
    actions.sort_by(|a, b| (rank(a), &a.address).cmp(&(rank(b), &b.address)));
    let forgets = actions.iter().filter(|a| a.op == Op::Forget).count();
    let live_deletes = actions
        .iter()
        .filter(|a| {
            matches!(&a.details, Details::DeleteBackup { id, .. } if rec.backups.get(id).is_some_and(live_on_demand))
        })
        .count();
    let forgotten: BTreeSet<&str> = actions
        .iter()
        .filter_map(|a| match &a.details {
            Details::ForgetInstance { instance, .. } => Some(instance.as_str()),
            _ => None,
        })
        .collect();
    let mut until = None;
    let mut due = due(
        cfg,
        rec,
        &idx,
        now,
        &expiring,
        &forgotten,
        Some(name),
        &mut until,
    );
    due.extend(follow_up_expiries(
        cfg, rec, &idx, now, &expiring, &actions, &due,
    ));
    let mut retention: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut differing = BTreeMap::new();
    let mut undeclared = BTreeMap::new();
    for b in backups {
        retention_count(cfg, b, &mut differing, &mut undeclared);
    }
    for (s, n) in differing {
        retention.entry(s).or_default().0 = n;
    }
    for (s, n) in undeclared {
        retention.entry(s).or_default().1 = n;
    }
    // How long the part holds: until a time one of its records or its drill names, or the
    // next daily slot; never when it embeds `now` (a backup to take, a deletion's grace).
    let embeds_now = actions.iter().any(|a| {
        matches!(
            a.details,
            Details::CreateBackup { .. }
                | Details::DeleteBackup {
                    delete_at: Some(_),
                    ..
                }
        )
    }) || due.iter().any(|d| d.work == Work::DailyBackup);
    let until = (!embeds_now).then(|| {
        let times = backups
            .iter()
            .flat_map(|b| [b.expires_at, retry_at(b), b.delete_at])
            .chain([next_drill(cfg, rec, name), until])
            .flatten()
            .filter(|t| *t > now);
        times.fold(next_slot, DateTime::min)
    });
    Part {
        at: now,
        today: local_date(&cfg.schedule, now),
        until,
        actions,
        refusals,
        instance_notes,
        backup_notes,
        due,
        forgets,
        live_deletes,
        live_on_demand: backups.iter().filter(|b| live_on_demand(b)).count(),
        retention: retention
            .into_iter()
            .map(|(s, (d, u))| (s.to_string(), d, u))
            .collect(),
    }
}

/// The parts of the file every instance's part depends on, exactly (`Debug` keeps a
/// version's text, which its `==` does not).
fn global_key(cfg: &Config) -> String {
    format!("{:?}\n{:?}\n{:?}", cfg.file, cfg.schedule, cfg.storages)
}

/// Whether two declarations of an instance are the same to the letter (its `Version` by
/// text: `9.0` and `9` compare equal but print differently). Every field is named, so a new
/// one cannot be forgotten here.
fn same_instance(a: &Instance, b: &Instance) -> bool {
    let Instance {
        name,
        kind,
        version,
        source,
        on_update,
        hooks,
        hook_timeout,
        exclude,
        drill,
        backups,
        loc,
        version_loc,
        source_loc,
    } = a;
    let InstanceHooks {
        before_restore,
        after_restore,
        before_backup,
        after_backup,
    } = hooks;
    let same_backups = backups.len() == b.backups.len()
        && backups.iter().zip(&b.backups).all(|((k, x), (l, y))| {
            let BackupDecl {
                label,
                notes,
                storage,
                loc,
                storage_loc,
            } = x;
            k == l
                && label == &y.label
                && notes == &y.notes
                && storage == &y.storage
                && loc == &y.loc
                && storage_loc == &y.storage_loc
        });
    same_backups
        && name == &b.name
        && kind == &b.kind
        && version.as_str() == b.version.as_str()
        && same_source(source, &b.source)
        && on_update == &b.on_update
        && before_restore == &b.hooks.before_restore
        && after_restore == &b.hooks.after_restore
        && before_backup == &b.hooks.before_backup
        && after_backup == &b.hooks.after_backup
        && hook_timeout == &b.hook_timeout
        && exclude == &b.exclude
        && drill == &b.drill
        && loc == &b.loc
        && version_loc == &b.version_loc
        && source_loc == &b.source_loc
}

/// Sources compared as written (`==` on paths ignores a trailing `/`, which the plan prints).
fn same_source(a: &Source, b: &Source) -> bool {
    let path = |x: &std::path::Path, y: &std::path::Path| x.as_os_str() == y.as_os_str();
    let opt = |x: &Option<std::path::PathBuf>, y: &Option<std::path::PathBuf>| match (x, y) {
        (Some(x), Some(y)) => path(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    match (a, b) {
        (Source::Directory { path: x }, Source::Directory { path: y })
        | (Source::Sqlite { path: x }, Source::Sqlite { path: y }) => path(x, y),
        (
            Source::Postgres {
                url,
                password_file,
                bin_dir,
            },
            Source::Postgres {
                url: u,
                password_file: p,
                bin_dir: d,
            },
        ) => url == u && opt(password_file, p) && opt(bin_dir, d),
        (Source::Directory { .. } | Source::Sqlite { .. } | Source::Postgres { .. }, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceKind;
    use crate::records::InstanceRecord;

    const FILE: &str = r#"
[schedule]
daily_at = "02:00"
timezone = "Europe/Paris"
retention = "36h"
[instances.a]
type = "sandbox"
version = "1.0"
source = { kind = "directory", path = "/srv/a" }
[instances.b]
type = "sandbox"
version = "1.0"
source = { kind = "directory", path = "/srv/b" }
"#;

    /// Time alone moves the plan on (missed slots leave it as they expire, dailies fall
    /// due, a drill-less instance's backups expire): the cache follows, half an hour at a
    /// time over three days, with no record written.
    #[test]
    fn time_alone_moves_the_incremental_plan_like_the_full_one() {
        let cfg = Arc::new(
            crate::config::parse(std::path::Path::new("/etc/backplan.toml"), FILE)
                .unwrap()
                .0,
        );
        let t = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let mut rec = Recorded::default();
        // `b` failed to be created: its slots are skipped (not taken), the past ones listed
        // until they expire.
        for name in ["a", "b"] {
            rec.instances.insert(
                name.into(),
                InstanceRecord {
                    name: name.into(),
                    kind: InstanceType::Sandbox,
                    version: Version::parse("1.0").unwrap(),
                    source: cfg.instances[name].source.clone(),
                    created_at: t - Duration::days(4),
                    updated_at: t - Duration::days(4),
                    error: (name == "b").then(|| "no space".into()),
                    creation_failed: name == "b",
                },
            );
        }
        // `a`: today's and the next two days' dailies are taken (no backup is due), and
        // expire.
        for days in [0, 1, 2] {
            let date = local_date(&cfg.schedule, t) + Duration::days(days);
            let at = slot_at(&cfg.schedule, date);
            let id = daily_id("a", date);
            rec.backups.insert(
                id,
                BackupRecord {
                    id,
                    instance: "a".into(),
                    source_kind: SourceKind::Directory,
                    kind: BackupKind::Daily,
                    key: None,
                    created_by: BackupKind::Daily.created_by(),
                    label: String::new(),
                    notes: String::new(),
                    storage: "local".into(),
                    status: BackupStatus::Completed,
                    created_at: at,
                    completed_at: Some(at),
                    expires_at: Some(at + Duration::hours(36)),
                    size_bytes: None,
                    snapshot_id: Some("s".into()),
                    error: None,
                    attempts: 1,
                    failed_at: None,
                    date: Some(date),
                    version: None,
                    delete_at: None,
                    status_before_delete: None,
                    versions: Default::default(),
                    unreadable: None,
                },
            );
        }
        let mut cache = PlanCache::default();
        let mut changed = RecordChanges::everything();
        let mut reused = 0;
        for step in 0..(3 * 48) {
            let now = t + Duration::minutes(30 * step);
            let full = super::super::plan(&cfg, &rec, now, PlanOptions::default());
            cache.update(&cfg, &rec, &changed);
            changed = RecordChanges::default();
            reused += cache
                .slots
                .values()
                .filter(|s| s.part.as_ref().is_some_and(|p| p.at < now))
                .count();
            let incremental = cache.plan(&cfg, &rec, now, PlanOptions::default());
            assert_eq!(
                serde_json::to_string_pretty(&incremental).unwrap(),
                serde_json::to_string_pretty(&full).unwrap(),
                "at {now}"
            );
            assert_eq!(
                cache.next_deadline(&cfg, now),
                next_deadline(&cfg, &rec, now)
            );
        }
        assert!(reused > 0, "the cache was used");
    }
}
