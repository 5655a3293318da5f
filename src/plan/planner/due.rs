//! Time-driven work (SPEC section 4): daily slots, missed slots, retries, expiry with
//! `keep_last_good`, the follow-ups of the run's own backups, and deletions after their grace.

use super::*;

pub(super) fn expiring(schedule: &Schedule, idx: &Index<'_>, now: DateTime<Utc>) -> BTreeSet<Uuid> {
    expiring_with(schedule, idx, now, &HashMap::new())
}

/// Like [`expiring`], as if the backups in `taking` (per instance, how many) completed now:
/// each of them would be newer than every recorded one.
pub(super) fn expiring_with(
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
pub(super) fn follow_up_expiries(
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
        .map(|b| expire(b, first.get(b.instance.as_str()).copied()))
        .collect()
}

/// The time-driven work due at `now`.
#[allow(clippy::too_many_arguments)]
pub(super) fn due(
    cfg: &Config,
    rec: &Recorded,
    idx: &Index<'_>,
    now: DateTime<Utc>,
    expiring: &BTreeSet<Uuid>,
    forgotten: &BTreeSet<&str>,
    scope: Option<&str>,
    until: &mut Option<DateTime<Utc>>,
) -> Vec<Due> {
    let s = &cfg.schedule;
    let mut out = Vec::new();
    let today = local_date(s, now);
    let window_days = s.retention.as_secs().div_ceil(86_400) as i64;
    let local_retention = cfg.storages["local"].retention;
    for (name, inst) in scoped(&rec.instances, scope) {
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
                // It is not listed any more once it has expired.
                if let Some(e) = expiry(local_retention, slot_at(s, d)) {
                    *until = Some(until.map_or(e, |u| u.min(e)));
                }
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
    // Instance by instance (each in id order): the same work as going through every record
    // in id order, once sorted below.
    for b in idx.by_instance.values().flatten().copied() {
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
            out.push(expire(b, None));
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
    out.extend(drills(cfg, rec, idx, now, expiring, forgotten, scope));
    out.sort_by(|a, b| (a.work, &a.address).cmp(&(b.work, &b.address)));
    out
}

/// Restore drills due at `now`: for each managed instance with a drill interval, when the
/// interval has passed since its last drill (or it never had one), on its newest completed
/// backup in a storage drills may read (`drill = true`; external storage only when opted in).
/// A drill that failed is tried again after the interval, like one that passed.
fn drills(
    cfg: &Config,
    rec: &Recorded,
    idx: &Index<'_>,
    now: DateTime<Utc>,
    expiring: &BTreeSet<Uuid>,
    forgotten: &BTreeSet<&str>,
    scope: Option<&str>,
) -> Vec<Due> {
    let mut out = Vec::new();
    for (name, inst) in scoped(&rec.instances, scope) {
        let Some(every) = cfg.instances.get(name).and_then(|i| i.drill) else {
            continue;
        };
        if forgotten.contains(name.as_str()) || inst.creation_failed {
            continue;
        }
        let last = rec.drills.get(name).and_then(|d| d.last());
        if last.is_some_and(|l| now < l.started_at + every.to_chrono()) {
            continue;
        }
        let drillable = idx
            .by_instance
            .get(name.as_str())
            .into_iter()
            .flatten()
            .filter(|b| b.status == BackupStatus::Completed && b.snapshot_id.is_some())
            .filter(|b| !expiring.contains(&b.id))
            .filter(|b| cfg.storages.get(&b.storage).is_some_and(|s| s.drill));
        let Some(b) = newest(drillable) else { continue };
        out.push(Due {
            work: Work::Drill,
            address: format!("drill.{name}"),
            details: DueDetails::Drill {
                instance: name.clone(),
                backup: b.id,
                backup_address: backup_address(b),
                storage: b.storage.clone(),
                every,
                last_drill_at: last.map(|l| l.started_at),
            },
        });
    }
    out
}

/// When the next restore drill of an instance falls due after its last one (`None`: no
/// drills, or never drilled: due as soon as it has a backup to drill).
pub fn next_drill(cfg: &Config, rec: &Recorded, instance: &str) -> Option<DateTime<Utc>> {
    let every = cfg.instances.get(instance)?.drill?;
    let last = rec.drills.get(instance)?.last()?;
    Some(last.started_at + every.to_chrono())
}

/// The expiry of `b`; `after`: a backup of this run that must complete first.
fn expire(b: &BackupRecord, after: Option<Uuid>) -> Due {
    Due {
        work: Work::Expire,
        address: backup_address(b),
        details: DueDetails::Expire {
            id: b.id,
            instance: b.instance.clone(),
            kind: b.kind,
            storage: b.storage.clone(),
            expires_at: b.expires_at.expect("only backups with an expiry expire"),
            after,
        },
    }
}
