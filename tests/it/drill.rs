//! Restore drills through the real binary and real repositories: a directory drill that
//! passes and is shown (status, show, metrics); one whose repository was corrupted fails, is
//! shown as failed and touches no instance; SQLite (`integrity_check`) and PostgreSQL
//! (`pg_restore --list`) drills; the free space under `drill_dir` checked first (a small
//! tmpfs); `drill_dir` inside an instance refused; the scratch folder left by a crash removed.

use std::path::Path;

use crate::full_disk::Tmpfs;
use crate::helpers::*;
use crate::trees::*;

fn apply(dir: &Path) -> Run {
    backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"])
}

fn status_json(dir: &Path) -> serde_json::Value {
    let run = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    serde_json::from_str(&run.stdout).unwrap()
}

fn instance<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .unwrap()
}

/// What `/metrics` shows of the recorded state in `dir`.
fn metrics(dir: &Path) -> String {
    let rec = backplan::state::read(&dir.join("state")).unwrap();
    let cfg = backplan::config::load(&dir.join("backplan.toml"))
        .unwrap()
        .config;
    backplan::metrics::render(
        &backplan::metrics::Scrape {
            recorded: &rec,
            config: Some(&cfg),
            config_rejected: false,
        },
        &backplan::metrics::Metrics::new(chrono::Utc::now()),
    )
}

/// The entries left under the drill folder (scratch folders must all be gone).
fn leftovers(drills: &Path) -> Vec<String> {
    match std::fs::read_dir(drills) {
        Ok(e) => e
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A directory instance `site` with a rich tree, daily drills and an on-demand backup.
fn site(extra: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("backplan.toml"),
        format!(
            r#"[daemon]
state_dir = "state"

[schedule]
drill = "daily"
{extra}
[instances.site]
type = "production"
version = "1.0"
source = {{ kind = "directory", path = "data/site" }}

[instances.site.backups.first]
label = "First"
"#
        ),
    )
    .unwrap();
    let prod = dir.join("data/site");
    std::fs::create_dir_all(&prod).unwrap();
    rich_tree(&prod);
    tmp
}

#[test]
fn a_directory_drill_passes_and_is_shown() {
    let tmp = site("");
    let dir = tmp.path();
    let prod = dir.join("data/site");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    // The plan shows the drill due, on the backup just taken.
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(
        plan.stdout
            .contains("drill.site  restore drill of backup.site/first into scratch"),
        "{}",
        plan.transcript()
    );
    let before = snapshot(&prod);

    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("ok   drill.site: restore drill of backup.site/first passed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("match the snapshot's listing"),
        "{}",
        run.stdout
    );
    // The instance was not touched, and no scratch folder is left.
    assert_eq!(snapshot(&prod), before);
    assert_eq!(leftovers(&dir.join("state/drills")), Vec::<String>::new());

    // Shown: status (text and JSON), show, metrics.
    let st = status_json(dir);
    let last = &instance(&st, "site")["last_drill"];
    assert_eq!(last["outcome"], "passed", "{st}");
    assert!(last["rto_seconds"].as_f64().unwrap() > 0.0, "{st}");
    assert_eq!(instance(&st, "site")["state"], "ok");
    let text = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert!(
        text.stdout.contains("site: last restore drill passed"),
        "{}",
        text.stdout
    );
    let show = backplan(dir, &["show", "-c", "backplan.toml", "site/first"]);
    assert!(show.stdout.contains("drilled at"), "{}", show.stdout);
    assert!(
        show.stdout.contains("drill         passed"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("drill RTO"), "{}", show.stdout);
    let m = metrics(dir);
    assert!(
        m.contains("backplan_drill_last_success{instance_name=\"site\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("backplan_drill_failures_total{instance_name=\"site\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("backplan_drill_last_success_timestamp_seconds{instance_name=\"site\"}"),
        "{m}"
    );
    assert!(
        m.contains("backplan_drill_interval_seconds{instance_name=\"site\"} 86400"),
        "{m}"
    );
    assert!(
        m.contains("backplan_drill_rto_seconds{instance_name=\"site\"}"),
        "{m}"
    );
    if crate::metrics::tool("promtool") {
        crate::metrics::promtool_check(&m);
    }

    // Not due again before its interval; due once it has passed.
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(!plan.stdout.contains("drill.site"), "{}", plan.stdout);
    let later = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let plan = backplan(dir, &["plan", "-c", "backplan.toml", "--at", &later]);
    assert!(plan.stdout.contains("drill.site"), "{}", plan.stdout);
}

/// Every pack of the repository with bytes overwritten in its middle.
fn corrupt_packs(repo: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![repo.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let mut bytes = std::fs::read(&p).unwrap();
            let (mid, len) = (bytes.len() / 2, bytes.len());
            for b in &mut bytes[mid.saturating_sub(64)..(mid + 64).min(len)] {
                *b ^= 0xff;
            }
            std::fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn a_drill_of_a_corrupted_repository_fails_is_shown_and_touches_no_instance() {
    let tmp = site("");
    let dir = tmp.path();
    let prod = dir.join("data/site");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(corrupt_packs(&dir.join("state/repository")) > 0);
    let before = snapshot(&prod);

    let run = apply(dir);
    assert_ne!(
        run.code,
        0,
        "a failed drill fails the run: {}",
        run.transcript()
    );
    assert!(
        run.stdout
            .contains("FAIL drill.site: restore drill of backup.site/first FAILED"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&prod), before, "the instance was touched");
    assert_eq!(leftovers(&dir.join("state/drills")), Vec::<String>::new());

    let st = status_json(dir);
    let site = instance(&st, "site");
    assert_eq!(site["last_drill"]["outcome"], "failed", "{st}");
    assert_eq!(site["state"], "drill failed", "{st}");
    let text = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert!(
        text.stdout.contains("site: last restore drill FAILED"),
        "{}",
        text.stdout
    );
    let show = backplan(dir, &["show", "-c", "backplan.toml", "site/first"]);
    assert!(
        show.stdout.contains("drill         failed"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("drill error"), "{}", show.stdout);
    let m = metrics(dir);
    assert!(
        m.contains("backplan_drill_last_success{instance_name=\"site\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("backplan_drill_failures_total{instance_name=\"site\"} 1"),
        "{m}"
    );
    // Tried again at the next interval, not at once.
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(!plan.stdout.contains("drill.site"), "{}", plan.stdout);
}

#[test]
fn a_sqlite_drill_runs_integrity_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let db = dir.join("data/shop.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b');",
    )
    .unwrap();
    drop(c);
    std::fs::write(
        dir.join("backplan.toml"),
        r#"[daemon]
state_dir = "state"

[instances.shop]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "data/shop.db" }
drill = "weekly"

[instances.shop.backups.first]
label = "First"
"#,
    )
    .unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("SQLite integrity_check ok"),
        "{}",
        run.stdout
    );
    assert_eq!(leftovers(&dir.join("state/drills")), Vec::<String>::new());
}

#[test]
fn a_postgres_drill_lists_the_restored_dump() {
    let Some(pg) = crate::postgres::server() else {
        return;
    };
    let db = format!("drill_{}", std::process::id());
    struct Drop_<'a>(&'a crate::postgres::Pg, String);
    impl Drop for Drop_<'_> {
        fn drop(&mut self) {
            self.0.drop_db(&self.1);
        }
    }
    let _cleanup = Drop_(&pg, db.clone());
    pg.drop_db(&db);
    pg.must(
        "postgres",
        &format!("CREATE DATABASE {}", crate::postgres::ident(&db)),
    );
    pg.must(
        &db,
        "CREATE TABLE t(id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);",
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(&pg.password_file, dir.join("pg.password")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        format!(
            r#"[daemon]
state_dir = "state"

[schedule]
drill = "weekly"

[instances.shop]
type = "production"
version = "1.0"
source = {{ kind = "postgres", url = "{}", password_file = "pg.password" }}

[instances.shop.backups.first]
label = "First"
"#,
            pg.url(&db)
        ),
    )
    .unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("pg_restore --list read"),
        "{}",
        run.stdout
    );
    // No database was made on the server for the drill (side databases would be named
    // after the instance's; other tests share the server).
    let ours: Vec<String> = pg
        .databases()
        .into_iter()
        .filter(|d| d.contains(&db))
        .collect();
    assert_eq!(ours, vec![db.clone()]);
    assert_eq!(leftovers(&dir.join("state/drills")), Vec::<String>::new());
}

#[test]
fn too_little_free_space_in_drill_dir_is_refused_first() {
    let tmp = site("drill_dir = \"small\"\n");
    let dir = tmp.path();
    let prod = dir.join("data/site");
    // 6 MiB that do not compress, on a 4 MiB disk.
    std::fs::write(prod.join("big.bin"), random_bytes(6 << 20)).unwrap();
    let Some(_mounted) = Tmpfs::mount(&dir.join("small"), "4m") else {
        return;
    };
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run = apply(dir);
    assert_ne!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("not enough free space in drill_dir"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("nothing was restored"),
        "{}",
        run.stdout
    );
    assert_eq!(leftovers(&dir.join("small")), Vec::<String>::new());
    let st = status_json(dir);
    assert_eq!(instance(&st, "site")["last_drill"]["outcome"], "failed");
    // No restore time: nothing was restored.
    assert!(instance(&st, "site")["last_drill"]["rto_seconds"].is_null());
}

#[test]
fn a_drill_dir_inside_an_instance_is_refused() {
    let tmp = site("drill_dir = \"data/site/drills\"\n");
    let run = backplan(tmp.path(), &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stderr.contains("drill-dir-overlaps-instance"),
        "{}",
        run.stderr
    );
    // Located at the setting: line 6 (`drill_dir = ...`), column 13 (its value).
    assert!(run.stderr.contains("backplan.toml:6:13"), "{}", run.stderr);
    // And a folder that holds an instance.
    let tmp = site("drill_dir = \"data\"\n");
    let run = backplan(tmp.path(), &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stderr.contains("holds the data of instance `site`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_scratch_folder_left_by_a_crash_is_removed_at_the_next_start() {
    let tmp = site("");
    let dir = tmp.path();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env("BACKPLAN_CRASH_AFTER", "drill-scratch:started")
        .output()
        .unwrap();
    assert!(
        out.status.code().is_none(),
        "killed with its scratch folder made"
    );
    let left = leftovers(&dir.join("state/drills"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with("backplan-drill-site-"), "{left:?}");
    // A file of the operator's beside it is not touched.
    std::fs::write(dir.join("state/drills/notes.txt"), "mine").unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(
        leftovers(&dir.join("state/drills")),
        vec!["notes.txt".to_string()]
    );
}

#[test]
fn the_daemon_wakes_for_the_next_drill() {
    let tmp = site("");
    let dir = tmp.path();
    std::fs::write(
        dir.join("backplan.toml"),
        std::fs::read_to_string(dir.join("backplan.toml"))
            .unwrap()
            .replace("drill = \"daily\"", "drill = \"6h\"\ndaily_at = \"23:00\""),
    )
    .unwrap();
    let cfg = backplan::config::load(&dir.join("backplan.toml"))
        .unwrap()
        .config;
    let at = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let mut rec = backplan::records::Recorded::default();
    let plain = backplan::plan::planner::next_deadline(&cfg, &rec, at("2026-11-27T01:00:00Z"));
    assert_eq!(plain, at("2026-11-27T23:00:00Z"), "the daily slot");
    rec.drills.insert(
        "site".into(),
        backplan::records::DrillRecord::with_run(
            None,
            "site",
            backplan::records::DrillRun {
                backup_id: uuid::Uuid::nil(),
                started_at: at("2026-11-27T00:30:00Z"),
                outcome: backplan::records::DrillOutcome::Failed,
                rto_seconds: None,
                duration_seconds: 1.0,
                detail: "x".into(),
            },
        ),
    );
    let next = backplan::plan::planner::next_deadline(&cfg, &rec, at("2026-11-27T01:00:00Z"));
    assert_eq!(next, at("2026-11-27T06:30:00Z"), "6 h after the last drill");
}
