//! Prometheus metrics (text format 0.0.4), served on `metrics_listen` at `/metrics`.
//!
//! Two sources, both in memory: the recorded state (the daemon's `Arc<Recorded>`, never a
//! read of the store) gives what is true of the records (last good backup, backups by
//! status); [`Metrics`], the daemon's own counters, gives what it saw happen since it started
//! (operations and their durations, bytes, verification, reloads, refusals, repository sizes).
//! Names follow Prometheus' conventions: base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total`, timestamps are `_timestamp_seconds`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::records::{BackupStatus, Recorded};

/// The operations counted; every one starts at zero for both results, so that a first
/// failure is an increase (`increase()` cannot see a series that appears at 1).
pub const OPERATIONS: &[&str] = &[
    "backup", "restore", "update", "expire", "purge", "prune", "verify", "drill",
];

/// Upper bounds of the duration histogram, in seconds: from a small tree to a large dump.
const BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`].
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (operation, `success`/`failure`) -> count.
    operations: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    read_bytes: BTreeMap<String, u64>,
    added_bytes: BTreeMap<String, u64>,
    repository_bytes: BTreeMap<String, u64>,
    last_verify: Option<(DateTime<Utc>, bool)>,
    config_loaded_at: Option<DateTime<Utc>>,
    refusals: usize,
    started_at: Option<DateTime<Utc>>,
}

/// The daemon's own counters (what it saw happen since it started).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new(started_at: DateTime<Utc>) -> Metrics {
        let mut inner = Inner {
            started_at: Some(started_at),
            ..Inner::default()
        };
        for op in OPERATIONS {
            for result in ["success", "failure"] {
                inner.operations.insert((op.to_string(), result), 0);
            }
            inner.durations.insert(op.to_string(), Histogram::default());
        }
        Metrics {
            inner: Mutex::new(inner),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// One operation ended: counted, its duration observed, and for a backup its bytes.
    pub fn operation(
        &self,
        op: &str,
        instance: &str,
        ok: bool,
        took: Duration,
        bytes: Option<(u64, u64)>,
    ) {
        self.with(|m| {
            let result = if ok { "success" } else { "failure" };
            *m.operations.entry((op.to_string(), result)).or_default() += 1;
            let h = m.durations.entry(op.to_string()).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
            if let Some((read, added)) = bytes {
                *m.read_bytes.entry(instance.to_string()).or_default() += read;
                *m.added_bytes.entry(instance.to_string()).or_default() += added;
            }
        });
    }

    pub fn verified(&self, at: DateTime<Utc>, ok: bool) {
        self.with(|m| m.last_verify = Some((at, ok)));
    }

    /// A file was put in force (at start or by a reload).
    pub fn config_loaded(&self, at: DateTime<Utc>) {
        self.with(|m| m.config_loaded_at = Some(at));
    }

    /// The refusals of the plan the daemon made last.
    pub fn refusals(&self, n: usize) {
        self.with(|m| m.refusals = n);
    }

    pub fn repository_size(&self, storage: &str, bytes: u64) {
        self.with(|m| {
            m.repository_bytes.insert(storage.to_string(), bytes);
        });
    }

    pub fn last_verify(&self) -> Option<(DateTime<Utc>, bool)> {
        self.with(|m| m.last_verify)
    }
}

/// Measures the size of every local repository of the configuration (the files under its
/// folder, links not followed) into `metrics`. Blocking; run after work that changed them.
pub fn measure_repositories(cfg: &Config, metrics: &Metrics) {
    for name in cfg.storages.keys() {
        let Ok(resolved) = crate::storage::resolve(cfg, name) else {
            continue; // a storage this version lacks: nothing local to measure
        };
        if let Some(bytes) = folder_bytes(&resolved.repo.path) {
            metrics.repository_size(name, bytes);
        }
    }
}

fn folder_bytes(path: &Path) -> Option<u64> {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_dir() {
        return None;
    }
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    Some(total)
}

/// What a scrape shows beside the records and the counters.
pub struct Scrape<'a> {
    pub recorded: &'a Recorded,
    pub config: Option<&'a Config>,
    /// The file on disk is invalid (or not put in force): the last reload did not succeed.
    pub config_rejected: bool,
}

/// The exposition text.
pub fn render(s: &Scrape, m: &Metrics) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(
        o,
        "backplan_build_info",
        "gauge",
        "The version of the running daemon (always 1).",
    );
    sample(
        o,
        "backplan_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    // From the records in memory.
    family(
        o,
        "backplan_instance_info",
        "gauge",
        "Each recorded instance, with its type, version and kind of store (always 1).",
    );
    for r in s.recorded.instances.values() {
        sample(
            o,
            "backplan_instance_info",
            &[
                ("instance_name", &r.name),
                ("type", &r.kind.to_string()),
                ("version", &r.version.to_string()),
                ("source_kind", &r.source.kind().to_string()),
            ],
            1.0,
        );
    }
    let mut last_good: BTreeMap<(&str, &str), DateTime<Utc>> = BTreeMap::new();
    let mut counts: BTreeMap<(&str, &str, BackupStatus), u64> = BTreeMap::new();
    // The newest backup that ended, per instance and kind: when, and whether it completed.
    let mut last_ended: BTreeMap<(&str, &str), (DateTime<Utc>, bool)> = BTreeMap::new();
    for b in s.recorded.backups.values() {
        let ended = match b.status {
            BackupStatus::Completed => Some((b.finished_at(), true)),
            BackupStatus::Failed => Some((b.failed_at.unwrap_or(b.created_at), false)),
            BackupStatus::Skipped => Some((b.created_at, false)),
            _ => None,
        };
        if let Some((at, ok)) = ended {
            let e = last_ended
                .entry((&b.instance, b.kind.as_str()))
                .or_insert((at, ok));
            if at >= e.0 {
                *e = (at, ok);
            }
        }
        *counts
            .entry((&b.instance, b.kind.as_str(), b.status))
            .or_default() += 1;
        // A backup whose snapshot was stored, even if it has expired or is being deleted since.
        if let (Some(at), Some(_)) = (b.completed_at, &b.snapshot_id)
            && b.status != BackupStatus::Failed
        {
            let e = last_good
                .entry((&b.instance, b.kind.as_str()))
                .or_insert(at);
            *e = (*e).max(at);
        }
    }
    family(
        o,
        "backplan_last_successful_backup_timestamp_seconds",
        "gauge",
        "When the newest backup of this instance and kind completed (Unix time).",
    );
    for ((instance, kind), at) in &last_good {
        sample(
            o,
            "backplan_last_successful_backup_timestamp_seconds",
            &[("instance_name", instance), ("kind", kind)],
            unix(at),
        );
    }
    family(
        o,
        "backplan_last_backup_success",
        "gauge",
        "Whether the newest backup of this instance and kind that ended completed (1) or failed or was skipped (0).",
    );
    for ((instance, kind), (_, ok)) in &last_ended {
        sample(
            o,
            "backplan_last_backup_success",
            &[("instance_name", instance), ("kind", kind)],
            f64::from(u8::from(*ok)),
        );
    }
    family(
        o,
        "backplan_backups",
        "gauge",
        "Recorded backups by instance, kind and status.",
    );
    for ((instance, kind, status), n) in &counts {
        sample(
            o,
            "backplan_backups",
            &[
                ("instance_name", instance),
                ("kind", kind),
                ("status", &status.to_string()),
            ],
            *n as f64,
        );
    }
    family(
        o,
        "backplan_backup_interval_seconds",
        "gauge",
        "How often each instance gets a system backup (the daily slot).",
    );
    if s.config.is_some() {
        sample(o, "backplan_backup_interval_seconds", &[], 86_400.0);
    }
    family(
        o,
        "backplan_last_restore_success",
        "gauge",
        "Whether the newest restore into this instance completed (1) or failed (0).",
    );
    let mut last_restore: BTreeMap<&str, (DateTime<Utc>, bool)> = BTreeMap::new();
    for r in s.recorded.restores.values() {
        let ok = match r.status {
            crate::records::RestoreStatus::Completed => r.error.is_none(),
            crate::records::RestoreStatus::Failed => false,
            _ => continue,
        };
        let at = r.completed_at.unwrap_or(r.requested_at);
        let e = last_restore.entry(&r.to).or_insert((at, ok));
        if at >= e.0 {
            *e = (at, ok);
        }
    }
    for (instance, (_, ok)) in &last_restore {
        sample(
            o,
            "backplan_last_restore_success",
            &[("instance_name", instance)],
            f64::from(u8::from(*ok)),
        );
    }

    drills(o, s);

    // The daemon's own counters.
    m.with(|m| {
        family(
            o,
            "backplan_operations_total",
            "counter",
            "Operations the daemon carried out since it started, by operation and result.",
        );
        for ((op, result), n) in &m.operations {
            sample(
                o,
                "backplan_operations_total",
                &[("operation", op), ("result", result)],
                *n as f64,
            );
        }
        family(
            o,
            "backplan_operation_duration_seconds",
            "histogram",
            "How long operations took, by operation.",
        );
        for (op, h) in &m.durations {
            for (i, bound) in BUCKETS.iter().enumerate() {
                sample(
                    o,
                    "backplan_operation_duration_seconds_bucket",
                    &[("operation", op), ("le", &bound.to_string())],
                    h.counts[i] as f64,
                );
            }
            sample(
                o,
                "backplan_operation_duration_seconds_bucket",
                &[("operation", op), ("le", "+Inf")],
                h.count as f64,
            );
            sample(
                o,
                "backplan_operation_duration_seconds_sum",
                &[("operation", op)],
                h.sum,
            );
            sample(
                o,
                "backplan_operation_duration_seconds_count",
                &[("operation", op)],
                h.count as f64,
            );
        }
        family(
            o,
            "backplan_backup_read_bytes_total",
            "counter",
            "Bytes read from instances by backups since the daemon started.",
        );
        for (instance, n) in &m.read_bytes {
            sample(
                o,
                "backplan_backup_read_bytes_total",
                &[("instance_name", instance)],
                *n as f64,
            );
        }
        family(
            o,
            "backplan_backup_added_bytes_total",
            "counter",
            "Bytes backups added to the repositories (after deduplication and compression) since the daemon started.",
        );
        for (instance, n) in &m.added_bytes {
            sample(
                o,
                "backplan_backup_added_bytes_total",
                &[("instance_name", instance)],
                *n as f64,
            );
        }
        family(
            o,
            "backplan_repository_size_bytes",
            "gauge",
            "Size of each storage's repository, measured after the work that changed it.",
        );
        for (storage, n) in &m.repository_bytes {
            sample(
                o,
                "backplan_repository_size_bytes",
                &[("storage", storage)],
                *n as f64,
            );
        }
        family(
            o,
            "backplan_last_verify_success",
            "gauge",
            "Whether the last verification found no problem (1) or some (0).",
        );
        family(
            o,
            "backplan_last_verify_timestamp_seconds",
            "gauge",
            "When the last verification ended (Unix time).",
        );
        if let Some((at, ok)) = m.last_verify {
            sample(
                o,
                "backplan_last_verify_success",
                &[],
                f64::from(u8::from(ok)),
            );
            sample(o, "backplan_last_verify_timestamp_seconds", &[], unix(&at));
        }
        family(
            o,
            "backplan_config_last_reload_successful",
            "gauge",
            "Whether the file on disk is the one in force (1), or was rejected (0).",
        );
        sample(
            o,
            "backplan_config_last_reload_successful",
            &[],
            f64::from(u8::from(!s.config_rejected)),
        );
        family(
            o,
            "backplan_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the file in force was loaded (Unix time).",
        );
        if let Some(at) = m.config_loaded_at {
            sample(
                o,
                "backplan_config_last_reload_success_timestamp_seconds",
                &[],
                unix(&at),
            );
        }
        family(
            o,
            "backplan_plan_refusals",
            "gauge",
            "Refusals in the plan the daemon made last (nothing from the file is applied while there are any).",
        );
        sample(o, "backplan_plan_refusals", &[], m.refusals as f64);
        family(
            o,
            "backplan_start_time_seconds",
            "gauge",
            "When the daemon started (Unix time).",
        );
        if let Some(at) = m.started_at {
            sample(o, "backplan_start_time_seconds", &[], unix(&at));
        }
    });
    out
}

/// Restore drills, from the records (and each instance's interval from the file).
fn drills(o: &mut String, s: &Scrape) {
    let drills = &s.recorded.drills;
    let last = |name: &str| drills.get(name).and_then(|d| d.last());
    family(
        o,
        "backplan_drill_interval_seconds",
        "gauge",
        "How often each instance gets a restore drill (instances with drills only).",
    );
    if let Some(cfg) = s.config {
        for (name, i) in &cfg.instances {
            if let Some(every) = i.drill {
                sample(
                    o,
                    "backplan_drill_interval_seconds",
                    &[("instance_name", name)],
                    every.as_secs() as f64,
                );
            }
        }
    }
    family(
        o,
        "backplan_drill_last_success_timestamp_seconds",
        "gauge",
        "When a restore drill of this instance last passed (Unix time).",
    );
    for (name, d) in drills {
        if let Some(at) = &d.last_success_at {
            sample(
                o,
                "backplan_drill_last_success_timestamp_seconds",
                &[("instance_name", name)],
                unix(at),
            );
        }
    }
    family(
        o,
        "backplan_drill_last_timestamp_seconds",
        "gauge",
        "When the last restore drill of this instance started (Unix time).",
    );
    family(
        o,
        "backplan_drill_last_success",
        "gauge",
        "Whether the last restore drill of this instance passed (1) or failed (0).",
    );
    family(
        o,
        "backplan_drill_duration_seconds",
        "gauge",
        "How long the last restore drill of this instance took in all (space check, restore, checks, clean-up).",
    );
    family(
        o,
        "backplan_drill_rto_seconds",
        "gauge",
        "The restore time measured by the last restore drill of this instance that got as far as restoring (the RTO).",
    );
    for name in drills.keys() {
        let Some(r) = last(name) else { continue };
        let l = [("instance_name", name.as_str())];
        sample(
            o,
            "backplan_drill_last_timestamp_seconds",
            &l,
            unix(&r.started_at),
        );
        sample(
            o,
            "backplan_drill_last_success",
            &l,
            f64::from(u8::from(r.outcome == crate::records::DrillOutcome::Passed)),
        );
        sample(o, "backplan_drill_duration_seconds", &l, r.duration_seconds);
        if let Some(rto) = drills[name].runs.iter().find_map(|r| r.rto_seconds) {
            sample(o, "backplan_drill_rto_seconds", &l, rto);
        }
    }
    family(
        o,
        "backplan_drill_failures_total",
        "counter",
        "Restore drills of this instance that failed, in all (kept in the state: it survives restarts).",
    );
    for (name, d) in drills {
        sample(
            o,
            "backplan_drill_failures_total",
            &[("instance_name", name)],
            d.failures_total as f64,
        );
    }
}

fn unix(t: &DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            let _ = write!(o, "{k}=\"{}\"", escape_label(v));
        }
        o.push('}');
    }
    let _ = writeln!(o, " {value}");
}

/// A label value as the text format wants it: backslash, double quote and line feed escaped.
/// Names come from the file (validated), but label values never break the format.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut o = String::new();
        sample(&mut o, "x", &[("a", "q\"\\\nz")], 1.0);
        assert_eq!(o, "x{a=\"q\\\"\\\\\\nz\"} 1\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(Utc::now());
        m.operation("backup", "a", true, Duration::from_secs(3), Some((10, 4)));
        m.operation("backup", "a", false, Duration::from_secs(100), None);
        let text = render(
            &Scrape {
                recorded: &Recorded::default(),
                config: None,
                config_rejected: false,
            },
            &m,
        );
        for line in [
            "backplan_operation_duration_seconds_bucket{operation=\"backup\",le=\"1\"} 0",
            "backplan_operation_duration_seconds_bucket{operation=\"backup\",le=\"5\"} 1",
            "backplan_operation_duration_seconds_bucket{operation=\"backup\",le=\"300\"} 2",
            "backplan_operation_duration_seconds_bucket{operation=\"backup\",le=\"+Inf\"} 2",
            "backplan_operation_duration_seconds_count{operation=\"backup\"} 2",
            "backplan_operations_total{operation=\"backup\",result=\"failure\"} 1",
            "backplan_operations_total{operation=\"restore\",result=\"failure\"} 0",
            "backplan_backup_read_bytes_total{instance_name=\"a\"} 10",
            "backplan_backup_added_bytes_total{instance_name=\"a\"} 4",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
