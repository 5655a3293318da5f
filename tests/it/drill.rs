//! Restore drills through the real binary and real repositories: a directory drill that
//! passes and is shown (status, show, metrics); one whose repository was corrupted fails, is
//! shown as failed and touches no instance; SQLite (`integrity_check`) and PostgreSQL
//! (`pg_restore --list`) drills; the free space under `drill_dir` checked first (a small
//! tmpfs); `drill_dir` inside an instance refused; the scratch folder left by a crash removed.

use std::path::Path;

use crate::full_disk::Tmpfs;
use crate::helpers::*;
use crate::trees::*;

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

/// `backplan.toml` with one production instance `name` on `source` (a TOML inline table)
/// and its on-demand backup `first`; `schedule` holds the lines of `[schedule]` (line 5 on),
/// `instance` more lines of the instance's table.
fn drill_config(name: &str, schedule: &str, source: &str, instance: &str) -> String {
    format!(
        r#"[daemon]
state_dir = "state"

[schedule]
{schedule}
[instances.{name}]
type = "production"
version = "1.0"
source = {source}
{instance}
[instances.{name}.backups.first]
label = "First"
"#
    )
}

/// A directory instance `site` with a rich tree, daily drills and an on-demand backup;
/// `extra` goes into `[schedule]` (at line 6).
fn site(extra: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("backplan.toml"),
        drill_config(
            "site",
            &format!("drill = \"daily\"\n{extra}"),
            r#"{ kind = "directory", path = "data/site" }"#,
            "",
        ),
    )
    .unwrap();
    let prod = dir.join("data/site");
    std::fs::create_dir_all(&prod).unwrap();
    rich_tree(&prod);
    tmp
}

/// [`site`] with its backup `first` taken (the drill is due next).
fn site_backed_up(extra: &str) -> tempfile::TempDir {
    let tmp = site(extra);
    let run = apply(tmp.path());
    assert_eq!(run.code, 0, "{}", run.transcript());
    tmp
}

#[test]
fn a_directory_drill_passes_and_is_shown() {
    let tmp = site_backed_up("");
    let dir = tmp.path();
    let prod = dir.join("data/site");
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
    let tmp = site_backed_up("");
    let dir = tmp.path();
    let prod = dir.join("data/site");
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
        drill_config(
            "shop",
            "",
            r#"{ kind = "sqlite", path = "data/shop.db" }"#,
            "drill = \"weekly\"\n",
        ),
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
    let db = crate::postgres::unique("drill");
    let _cleanup = crate::postgres::cleanup(&pg, &[&db]);
    crate::postgres::shop(&pg, &db, 2);
    let source = format!(
        "{{ kind = \"postgres\", url = \"{}\", password_file = \"pg.password\" }}",
        pg.url(&db)
    );
    let tmp = crate::postgres::with_password(
        &pg,
        &drill_config("shop", "drill = \"weekly\"\n", &source, ""),
    );
    let dir = tmp.path();
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
    let tmp = site_backed_up("");
    let dir = tmp.path();
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

#[test]
fn a_drill_dir_under_a_link_into_an_instance_is_refused_and_nothing_is_written_there() {
    // The folder above `drill_dir` is a link: into the instance (relative), to a folder inside
    // it (absolute), to a folder of it not made yet (dangling: the drill would make it), and
    // through a second link. Paths are compared as the system resolves them.
    type Links = fn(&Path);
    let cases: [(&str, Links); 4] = [
        ("into the instance", |d| {
            std::os::unix::fs::symlink("data/site", d.join("shortcut")).unwrap()
        }),
        ("inside the instance, absolute", |d| {
            std::os::unix::fs::symlink(d.join("data/site/sub"), d.join("shortcut")).unwrap()
        }),
        ("dangling, into the instance", |d| {
            std::os::unix::fs::symlink("data/site/later", d.join("shortcut")).unwrap()
        }),
        ("through a second link", |d| {
            std::os::unix::fs::symlink("data/site", d.join("hop")).unwrap();
            std::os::unix::fs::symlink("hop", d.join("shortcut")).unwrap()
        }),
    ];
    for (what, links) in cases {
        let tmp = site("drill_dir = \"shortcut/drills\"\n");
        let dir = tmp.path();
        let prod = dir.join("data/site");
        links(dir);
        let before = snapshot(&prod);
        let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
        assert_eq!(run.code, 1, "{what}: {}", run.transcript());
        assert!(
            run.stderr.contains("drill-dir-overlaps-instance")
                && run.stderr.contains("is inside the data of instance `site`"),
            "{what}: {}",
            run.stderr
        );
        // Located at the setting's value (line 6, column 13).
        assert!(
            run.stderr.contains("backplan.toml:6:13"),
            "{what}: {}",
            run.stderr
        );
        // Twice `apply`: no backup, no drill, nothing written into the instance.
        for _ in 0..2 {
            let run = apply(dir);
            assert_eq!(run.code, 1, "{what}: {}", run.transcript());
        }
        assert_eq!(snapshot(&prod), before, "{what}");
        assert!(!prod.join("later").exists(), "{what}");
        assert!(!prod.join("drills").exists(), "{what}");
    }
    // The same link pointing out of every instance is accepted.
    let tmp = site("drill_dir = \"shortcut/drills\"\n");
    let dir = tmp.path();
    std::fs::create_dir(dir.join("scratch")).unwrap();
    std::os::unix::fs::symlink("scratch", dir.join("shortcut")).unwrap();
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

#[test]
fn a_link_turned_into_an_instance_after_the_file_was_read_gets_no_drill_written_there() {
    // The daemon read the file while the link pointed elsewhere; it now points into the
    // instance, and the file is unchanged (not read again): the drill checks again before
    // it makes anything. The link lives outside the watched folder.
    let away = tempfile::tempdir().unwrap();
    let link = away.path().join("shortcut");
    std::fs::create_dir(away.path().join("scratch")).unwrap();
    std::os::unix::fs::symlink(away.path().join("scratch"), &link).unwrap();
    let tmp = site(&format!(
        "drill_dir = \"{}\"\n",
        link.join("drills").display()
    ));
    let dir = tmp.path();
    let prod = dir.join("data/site");
    let set_clock = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), dir.join("clock")).unwrap();
    };
    set_clock("2026-11-27T01:00:00Z");
    let d = crate::daemon::Daemon::start(dir, &["--clock-file", "clock"], &[]);
    let last_drill = || instance(&status_json(dir), "site")["last_drill"].clone();
    d.wait_for("the first drill", || last_drill()["outcome"] == "passed");
    assert_eq!(
        leftovers(&away.path().join("scratch/drills")),
        Vec::<String>::new()
    );

    let before = snapshot(&prod);
    std::os::unix::fs::symlink(&prod, away.path().join("shortcut.new")).unwrap();
    std::fs::rename(away.path().join("shortcut.new"), &link).unwrap();
    // A day later the next drill is due.
    set_clock("2026-11-28T02:00:00Z");
    d.wait_for("the second drill", || last_drill()["outcome"] == "failed");
    let last = last_drill();
    let detail = last["detail"].as_str().unwrap();
    assert!(
        detail.contains("overlaps the data of instance `site`")
            && detail.contains("nothing was restored"),
        "{last}"
    );
    assert!(
        !prod.join("drills").exists(),
        "a folder made in the instance"
    );
    assert_eq!(snapshot(&prod), before, "the instance was written to");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
