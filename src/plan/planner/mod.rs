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
use crate::records::{BackupStatus, InstanceRecord, Recorded, RestoreStatus};

mod due;
mod incremental;
mod rules;
mod schedule;
mod trim;

pub use due::next_drill;
use due::*;
pub use incremental::{PlanCache, RecordChanges, plan_incremental};
pub use schedule::*;
pub use trim::*;

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

pub fn plan(cfg: &Config, rec: &Recorded, now: DateTime<Utc>, opts: PlanOptions) -> Plan {
    let idx = Index::new(rec);
    let mut p = Planner {
        cfg,
        rec,
        now,
        file: cfg.file.display().to_string(),
        idx,
        scope: None,
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
    let mut due = due(cfg, rec, &idx, now, &expiring, &forgotten, None, &mut None);
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
        Details::SwitchInstance { .. } | Details::UpdateSource { .. } => 1,
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
        Self::of(rec.backups.values(), rec.instances.len())
    }

    /// The index of some records (all, or one instance's), given in id order.
    fn of(backups: impl Iterator<Item = &'r BackupRecord>, instances: usize) -> Self {
        // Hash maps while scanning the 400k records, sorted once at the end.
        let mut by_instance: HashMap<&str, Vec<&BackupRecord>> = HashMap::with_capacity(instances);
        let mut on_demand: HashMap<(&str, &str), &BackupRecord> = HashMap::new();
        let mut deleting: HashMap<(&str, &str), &BackupRecord> = HashMap::new();
        for b in backups {
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
    /// `Some(name)`: plan that one instance only (the incremental plan's per-instance
    /// part; `idx` then holds its records only).
    scope: Option<&'a str>,
    actions: Vec<Action>,
    refusals: Vec<Refusal>,
    notes: Vec<String>,
}

impl<'a> Planner<'a> {
    /// The file's instances in scope, in name order.
    fn cfg_instances(&self) -> Box<dyn Iterator<Item = (&'a String, &'a Instance)> + 'a> {
        scoped(&self.cfg.instances, self.scope)
    }

    /// The recorded instances in scope, in name order.
    fn rec_instances(&self) -> Box<dyn Iterator<Item = (&'a String, &'a InstanceRecord)> + 'a> {
        scoped(&self.rec.instances, self.scope)
    }
}

/// All of `map`, or only the entry of `scope`.
fn scoped<'a, V>(
    map: &'a BTreeMap<String, V>,
    scope: Option<&'a str>,
) -> Box<dyn Iterator<Item = (&'a String, &'a V)> + 'a> {
    match scope {
        None => Box::new(map.iter()),
        Some(name) => Box::new(map.get_key_value(name).into_iter()),
    }
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
