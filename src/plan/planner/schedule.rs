//! Schedule arithmetic: daily slots in the schedule's timezone (daylight-saving gaps and
//! overlaps), retries with back-off, the next deadline.

use super::*;

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

/// When time-driven work is next due after `now`: the next daily slot, the next expiry, the
/// next retry or the next restore drill, whichever comes first. The daemon sleeps until then.
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
    for name in rec.drills.keys() {
        if let Some(t) = next_drill(cfg, rec, name)
            && t > now
            && t < next
        {
            next = t;
        }
    }
    next
}
