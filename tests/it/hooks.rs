//! Instance hooks (`before_restore`, `after_restore`, `before_backup`, `after_backup`,
//! `hook_timeout`) and directory `exclude` patterns, with the real binary and repository.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A shell command as a TOML array; the hooks run in the test's folder.
fn sh(script: &str) -> String {
    format!("[\"/bin/sh\", \"-c\", {}]", toml_string(script))
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A file with `state` in `dir`, a production folder `prod` and a sandbox folder `sandbox`;
/// `prod_extra` and `sandbox_extra` are added to the instances' tables.
fn setup(dir: &Path, prod_extra: &str, sandbox_extra: &str) {
    std::fs::create_dir_all(dir.join("prod")).unwrap();
    std::fs::write(dir.join("prod/a.txt"), "from production\n").unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        format!(
            "[daemon]\nstate_dir = \"state\"\n\n\
             [instances.prod]\ntype = \"production\"\nversion = \"1.0\"\n\
             source = {{ kind = \"directory\", path = \"prod\" }}\n{prod_extra}\n\n\
             [instances.prod.backups.first]\nlabel = \"First\"\n\n\
             [instances.sandbox]\ntype = \"sandbox\"\nversion = \"1.0\"\n\
             source = {{ kind = \"directory\", path = \"sandbox\" }}\n{sandbox_extra}\n"
        ),
    )
    .unwrap();
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("log")).unwrap_or_default()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("backplan-restore"))
        .collect()
}

#[test]
fn a_failing_before_restore_cancels_the_restore_and_leaves_the_target() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(
        dir,
        "",
        &format!(
            "before_restore = {}\nafter_restore = {}",
            sh("echo before >> log; echo cannot stop the app >&2; exit 7"),
            sh("echo after >> log"),
        ),
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::fs::write(dir.join("sandbox/own.txt"), "the sandbox's own data\n").unwrap();
    append_config(
        dir,
        "[restores.r1]\nfrom = \"prod/first\"\nto = \"sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains(
            "restore failed, sandbox was left as it was: before_restore failed: /bin/sh exited with exit status: 7"
        ),
        "{}",
        run.stdout
    );
    // The target untouched, the staging folder gone, and no after_restore: nothing was
    // stopped.
    let names: Vec<_> = std::fs::read_dir(dir.join("sandbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, ["own.txt"]);
    assert_eq!(leftovers(dir), Vec::<String>::new());
    assert_eq!(log(dir), "before\n");
    // Recorded as failed, with the hook's message.
    let run = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(
        run.stdout.contains("restore.r1 failed") && run.stdout.contains("before_restore failed"),
        "{}",
        run.transcript()
    );
}

#[test]
fn restore_and_backup_hooks_run_in_order_around_the_swap_and_the_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(
        dir,
        // The marker is written before the engine reads and removed after: it is in the
        // snapshot, not in production afterwards.
        &format!(
            "before_backup = {}\nafter_backup = {}",
            sh("echo before_backup {version} >> log; echo quiesced > prod/marker"),
            sh("echo after_backup >> log; rm prod/marker"),
        ),
        &format!(
            "before_restore = {}\nafter_restore = {}",
            sh("echo before_restore $(cat sandbox/a.txt 2>/dev/null || echo none) >> log"),
            sh("echo after_restore $(cat sandbox/a.txt) $(cat sandbox/marker) >> log"),
        ),
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(log(dir), "before_backup 1.0\nafter_backup\n");
    assert!(!dir.join("prod/marker").exists());
    append_config(
        dir,
        "[restores.r1]\nfrom = \"prod/first\"\nto = \"sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(
        log(dir),
        "before_backup 1.0\nafter_backup\nbefore_restore none\nafter_restore from production quiesced\n"
    );
}

#[test]
fn after_backup_runs_when_the_backup_fails_and_its_own_failure_is_noted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // before_backup takes the folder away, so the backup fails; after_backup puts it back.
    setup(
        dir,
        &format!(
            "before_backup = {}\nafter_backup = {}",
            sh("echo before >> log; mv prod prod.away"),
            sh("echo after >> log; mv prod.away prod"),
        ),
        "",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert_eq!(log(dir), "before\nafter\n");
    assert!(dir.join("prod/a.txt").exists());
    let list = backups_json(dir);
    let first: Vec<_> = list.iter().filter(|b| b["key"] == "first").collect();
    assert_eq!(first[0]["status"], "failed", "{first:?}");

    // An after_backup that fails after a backup that completed: the backup is kept, the
    // failure noted beside it, and the run fails.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, &format!("after_backup = {}", sh("exit 4")), "");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("but after_backup failed: /bin/sh exited with exit status: 4"),
        "{}",
        run.stdout
    );
    let list = backups_json(dir);
    let first: Vec<_> = list.iter().filter(|b| b["key"] == "first").collect();
    assert_eq!(first[0]["status"], "completed", "{first:?}");
    assert_eq!(restic_snapshots(dir).len(), 1);
}

#[test]
fn hook_timeout_kills_a_hanging_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(
        dir,
        &format!("hook_timeout = \"1s\"\nbefore_backup = {}", sh("sleep 60")),
        "",
    );
    let started = Instant::now();
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        run.stdout
            .contains("before_backup failed: /bin/sh timed out after 1s and was killed"),
        "{}",
        run.stdout
    );
}

#[test]
fn exclude_patterns_leave_files_out_of_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, "exclude = [\"cache/**\", \"*.tmp\", \"logs\"]", "");
    let prod = dir.join("prod");
    for (path, text) in [
        ("keep.txt", "k"),
        ("a.tmp", "t"),
        ("sub/b.tmp", "t"),
        ("sub/c.txt", "c"),
        ("cache/x", "x"),
        ("cache/deep/y", "y"),
        (
            "sub/cache/z",
            "kept: the pattern is anchored at the instance's folder",
        ),
        ("logs/l", "l"),
        ("sub/logs/m", "m"),
    ] {
        let p = prod.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let out = Command::new("restic")
        .arg("-r")
        .arg(dir.join("state/repository"))
        .arg("--password-file")
        .arg(dir.join("state/keys/local.key"))
        .args(["--no-cache", "ls", "latest"])
        .output()
        .expect("restic runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('/'))
        .map(String::from)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "/a.txt",
            "/cache",
            "/keep.txt",
            "/sub",
            "/sub/c.txt",
            "/sub/cache",
            "/sub/cache/z",
        ]
    );
}

#[test]
fn a_run_killed_after_the_swap_runs_after_restore_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The first after_restore kills backplan (its parent) before it can say it ran.
    setup(
        dir,
        "",
        &format!(
            "before_restore = {}\nafter_restore = {}",
            sh("echo before >> log"),
            sh(
                "if [ -e once ]; then echo after $(cat sandbox/a.txt) >> log; else touch once; kill -9 $PPID; sleep 5; fi"
            ),
        ),
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    append_config(
        dir,
        "[restores.r1]\nfrom = \"prod/first\"\nto = \"sandbox\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "killed by its hook");
    assert_eq!(log(dir), "before\n");
    // The next run recovers: the swap was done, so the restore is completed and the
    // application is started again; the restore is not run again.
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(log(dir), "before\nafter from production\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("sandbox/a.txt")).unwrap(),
        "from production\n"
    );
}

#[test]
fn a_failing_after_restore_leaves_the_restore_completed_and_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir, "", &format!("after_restore = {}", sh("exit 5")));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    append_config(
        dir,
        "[restores.r1]\nfrom = \"prod/first\"\nto = \"sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains(
            "sandbox now holds prod/first, but after_restore failed: /bin/sh exited with exit status: 5"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("sandbox/a.txt")).unwrap(),
        "from production\n"
    );
    // Completed: not run again.
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
}
