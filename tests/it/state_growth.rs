//! Bounded state (issue 13): the daemon trims tombstones and journal entries past their
//! retention, with a test clock moved over months, and never what is live.

use std::path::Path;

use backplan::records::{BackupKind, BackupStatus};
use chrono::{DateTime, Duration, Utc};

use crate::daemon::{Daemon, has, prepared};
use crate::helpers::*;

const RETENTION_DAYS: i64 = backplan::plan::planner::TOMBSTONE_RETENTION_DAYS;

/// Reads the stopped daemon's state: (backup records, journal entries), after checking that
/// nothing older than the retention is left but what must stay.
fn check(dir: &Path, now: DateTime<Utc>) -> (usize, usize) {
    let state = dir.join("state");
    let rec = backplan::state::read(&state).unwrap();
    let journal = backplan::state::journal(&state).unwrap();
    // A day of slack: the trim runs at the first reconcile of each day.
    let cutoff = now - Duration::days(RETENTION_DAYS + 1);
    for b in rec.backups.values() {
        if b.status == BackupStatus::Expired && b.key.as_deref() != Some("before-import") {
            assert!(
                b.expires_at.unwrap() > cutoff,
                "an old tombstone was left: {b:?}"
            );
        }
    }
    for e in &journal {
        assert!(e.at > cutoff, "an old journal entry was left: {e:?}");
    }
    // Nothing live went: the expired on-demand backup the file still names stays (it keeps
    // its key from being taken again), and each instance keeps its newest completed daily.
    let before_import: Vec<_> = (rec.backups.values())
        .filter(|b| b.key.as_deref() == Some("before-import"))
        .collect();
    assert_eq!(before_import.len(), 1, "{before_import:?}");
    assert_eq!(before_import[0].status, BackupStatus::Expired);
    for name in rec.instances.keys() {
        assert!(
            rec.backups.values().any(|b| &b.instance == name
                && b.kind == BackupKind::Daily
                && b.status == BackupStatus::Completed),
            "{name} kept its newest good daily"
        );
    }
    (rec.backups.len(), journal.len())
}

#[test]
fn the_state_stays_bounded_over_months_and_nothing_live_is_trimmed() {
    let tmp = prepared();
    let dir = tmp.path();
    let clock = dir.join("clock");
    let set = |t: DateTime<Utc>| {
        std::fs::write(dir.join("clock.new"), t.to_rfc3339()).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    let start: DateTime<Utc> = "2026-01-01T01:00:00Z".parse().unwrap();
    set(start);
    let mut d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
    d.wait_for("the first apply", || has(dir, "before-import", "completed"));

    // Every 10 days for 150 days, stopping at 60, 100 and 150 days to count what is stored.
    let mut counts = Vec::new();
    for step in 1..=15 {
        let now = start + Duration::days(10 * step) + Duration::hours(2);
        set(now);
        let date = now.date_naive().to_string();
        d.wait_for(&format!("the daily backups of {date}"), || {
            backups_json(dir)
                .iter()
                .filter(|b| b["date"].as_str() == Some(&date) && b["status"] == "completed")
                .count()
                == 4
        });
        if [6, 10, 15].contains(&step) {
            let (code, _) = d.stop();
            assert_eq!(code, Some(0));
            counts.push((step * 10, check(dir, now)));
            d = Daemon::start(dir, &["--clock-file", "clock"], &[]);
        }
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    assert!(d_log_has_trim(dir), "the daemon logged its trims");
    // Bounded: no more records at 100 and 150 days than at 60 (each instance adds the same
    // records every 10 days, and as many go); without the trim they would grow by half.
    eprintln!("(day, (backup records, journal entries)): {counts:?}");
    let (_, (backups_60, journal_60)) = counts[0];
    for &(day, (backups, journal)) in &counts[1..] {
        assert!(
            backups <= backups_60 + 4 && journal <= journal_60 + 40,
            "day {day}: {backups} backup records and {journal} journal entries, against {backups_60} and {journal_60} at day 60: {counts:?}"
        );
    }
}

fn d_log_has_trim(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("daemon.log"))
        .unwrap_or_default()
        .contains("state trimmed")
}
