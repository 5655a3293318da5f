//! The crash matrix: the real binary stopped by SIGKILL at every fail point
//! (`failpoint!("name")` in the source, `BACKPLAN_FAILPOINT=name`; debug builds only), then
//! run again without it. After the second run the state must have converged: the plan is
//! empty, no backup is stored twice and none is recorded without its snapshot (or stored
//! without its record), `restic check --read-data` is clean, every completed backup restores
//! with the stock restic, no staging or copy is left, the restore target holds the backup
//! (and at the kill it held the old data or the new, never half), and there is exactly one
//! pre-restore backup.
//!
//! One `#[test]` per point (the harness runs them in parallel); the scratch folders live on
//! `/dev/shm` when there is one (a SIGKILL, unlike a power cut, keeps what reached the kernel,
//! so a tmpfs loses nothing the test relies on, and the many fsyncs cost nothing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::daemon::Daemon;
use crate::helpers::*;
use crate::trees::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// One `apply`: the quickstart's instances created, an on-demand backup of a directory
    /// instance, and its restore into the directory sandbox.
    Directory,
    /// The same through the daemon (`backplan run`) instead of `apply`.
    Daemon,
    /// An on-demand backup of a SQLite database restored into the SQLite sandbox.
    Sqlite,
    /// A backup of a PostgreSQL database restored into the PostgreSQL sandbox (a real server).
    Postgres,
    /// After a first clean run: a newer backup, then the expiry it allows, then the prune.
    Expiry,
    /// After a first clean run: the sandbox switched to production.
    Switch,
    /// After a first clean run: a version update with its pre-update backup and `on_update`.
    Update,
    /// After a first clean run: an on-demand backup's label edited (its snapshot rewritten).
    Edit,
}

/// One case: the point, the scenario that reaches it, and a point to crash at first (a run
/// killed there leaves the interrupted work that the case's recovery point needs).
struct Case {
    point: &'static str,
    scenario: Scenario,
    first: Option<&'static str>,
}

macro_rules! cases {
    ($($test:ident: $scenario:ident $point:literal $(after $first:literal)?;)*) => {
        /// Every case of the matrix, for the check that each fail point has one.
        const CASES: &[Case] = &[$(Case {
            point: $point,
            scenario: Scenario::$scenario,
            first: first_of(&[$($first)?]),
        }),*];
        $(
            #[test]
            fn $test() {
                run_case(&Case {
                    point: $point,
                    scenario: Scenario::$scenario,
                    first: first_of(&[$($first)?]),
                });
            }
        )*
    };
}

const fn first_of(v: &[&'static str]) -> Option<&'static str> {
    match v {
        [f] => Some(*f),
        _ => None,
    }
}

cases! {
    // A directory backup (the first backup of the run: the on-demand one).
    backup_running: Directory "backup.running";
    backup_before_engine: Directory "backup.before-engine";
    backup_stored: Directory "backup.stored";
    backup_before_completed: Directory "backup.before-completed";
    backup_completed: Directory "backup.completed";
    // A directory restore, step by step.
    restore_recorded: Directory "restore.recorded";
    restore_checked: Directory "restore.checked";
    restore_safety_taken: Directory "restore.safety-taken";
    restore_staged: Directory "restore.staged";
    restore_before_exchange: Directory "restore.before-exchange";
    directory_exchanged_unsynced: Directory "directory.exchanged-unsynced";
    restore_exchanged: Directory "restore.exchanged";
    directory_synced_old_kept: Directory "directory.synced-old-kept";
    restore_finished: Directory "restore.finished";
    restore_completed: Directory "restore.completed";
    // SQLite: before, during and after its rename.
    sqlite_staged: Sqlite "restore.staged";
    sqlite_before_exchange: Sqlite "restore.before-exchange";
    sqlite_logs_folded: Sqlite "sqlite.logs-folded";
    sqlite_renamed_unsynced: Sqlite "sqlite.renamed-unsynced";
    sqlite_exchanged: Sqlite "restore.exchanged";
    // PostgreSQL: the staging database, before and after the swap transaction.
    postgres_staging_created: Postgres "postgres.staging-created";
    // PostgreSQL stages while the pre-restore backup is taken: a kill as either ends.
    postgres_staged: Postgres "restore.staged";
    postgres_safety_taken: Postgres "restore.safety-taken";
    postgres_before_exchange: Postgres "restore.before-exchange";
    postgres_swapped_old_kept: Postgres "postgres.swapped-old-kept";
    postgres_exchanged: Postgres "restore.exchanged";
    // Expiry and prune.
    expire_before_forget: Expiry "expire.before-forget";
    expire_forgotten: Expiry "expire.forgotten";
    expire_recorded: Expiry "expire.recorded";
    prune_done: Expiry "prune.done";
    // A type switch.
    switch_before: Switch "switch.before";
    switch_recorded: Switch "switch.recorded";
    // An update and its hook.
    update_backup_stored: Update "backup.stored";
    update_before_hook: Update "update.before-hook";
    update_hook_ran: Update "update.hook-ran";
    update_recorded: Update "update.recorded";
    // A label edit: the new snapshot recorded, the old one not forgotten yet.
    edit_retag_pending: Edit "retag.pending";
    edit_retag_recorded: Edit "retag.recorded";
    // Recovery itself, after a first crash left work to recover.
    recover_backup_resolved: Directory "recover.backup-resolved" after "backup.stored";
    recover_before_retake: Directory "recover.before-retake" after "backup.before-engine";
    recover_restore_forgotten: Directory "recover.restore-forgotten" after "restore.staged";
    recover_before_leftovers: Directory "recover.before-leftovers" after "restore.staged";
    // The state store: a write that reached sled but not its flush.
    state_written_unflushed: Directory "state.written-unflushed";
    // The daemon.
    daemon_recovered: Daemon "daemon.recovered" after "restore.staged";
    daemon_backup_stored: Daemon "backup.stored";
    daemon_exchanged: Daemon "restore.exchanged";
}

/// Every `failpoint!("...")` in `src/`.
fn points_in_source() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split("failpoint!(\"").skip(1) {
                    out.insert(part.split('"').next().unwrap().to_string());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

#[test]
fn every_fail_point_has_a_crash_case_and_a_row_in_the_readme() {
    let points = points_in_source();
    assert!(points.len() >= 20, "{points:?}");
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for p in &points {
        assert!(
            CASES.iter().any(|c| c.point == p),
            "fail point `{p}` has no case in tests/it/crash.rs"
        );
        assert!(
            readme.contains(&format!("| `{p}` |")),
            "fail point `{p}` is not in the README's table"
        );
    }
    for c in CASES {
        assert!(points.contains(c.point), "no fail point `{}`", c.point);
    }
}

// ---------------------------------------------------------------------------------------------

/// A scratch folder, on a tmpfs when there is one.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn quickstart() -> tempfile::TempDir {
    let tmp = scratch();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/backplan.toml");
    std::fs::copy(src, tmp.path().join("backplan.toml")).unwrap();
    tmp
}

fn set_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Runs `apply` (or the daemon) with the fail point and asserts it died of SIGKILL there.
fn killed_at(dir: &Path, point: &str, daemon: bool) {
    let log = std::fs::File::create(dir.join(format!("killed-at-{point}.log"))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backplan"));
    if daemon {
        cmd.args(["run", "-c", "backplan.toml"]);
    } else {
        cmd.args(["apply", "-c", "backplan.toml", "--auto-approve"]);
    }
    let mut child = cmd
        .current_dir(dir)
        .env_remove("BACKPLAN_CONFIG")
        .env("BACKPLAN_FAILPOINT", point)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("never reached fail point {point}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(dir.join(format!("killed-at-{point}.log"))).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the run did not die at fail point {point} ({status}):\n{log}"
    );
    assert!(log.contains(&format!("fail point {point}")), "{log}");
}

/// The run after the crash: `apply` (or the daemon until its plan is empty), which must
/// succeed and leave nothing to do.
fn converge(dir: &Path, daemon: bool) {
    if daemon {
        // The killed daemon's socket is gone, so that the start waits for the new one.
        let _ = std::fs::remove_file(dir.join("state/backplan.sock"));
        let mut d = Daemon::start(dir, &[], &[]);
        // Converged: the first reconcile done (before it, the state is not recovered yet and
        // a restore cut short still looks under way), and nothing left to do. Longer than
        // the daemon tests' wait: the whole matrix runs at once on a busy machine.
        let start = Instant::now();
        let idle = || {
            backplan(dir, &["status", "-c", "backplan.toml"])
                .stdout
                .starts_with("Daemon: waiting")
        };
        while !idle()
            || backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]).code != 0
        {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the daemon did not converge; its log:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(d.running());
        let (code, _) = d.stop();
        assert_eq!(code, Some(0));
    } else {
        let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
        assert_eq!(run.code, 0, "the run after the crash: {}", run.transcript());
    }
    let again = backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "converged: {}", again.transcript());
}

/// The repository and the records agree, the repository is sound, and every completed
/// backup restores. Returns the restored trees of the directory backups, by instance.
fn assert_repository_converged(dir: &Path, label: &str) -> Vec<(String, PathBuf)> {
    let snaps = restic_snapshots(dir);
    let mut tags: Vec<String> = snaps
        .iter()
        .flat_map(|s| s["tags"].as_array().unwrap().iter())
        .filter_map(|t| t.as_str()?.strip_prefix("backup=").map(String::from))
        .collect();
    let stored = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), stored, "{label}: a backup stored twice");
    let list = backups_json(dir);
    let with_data: BTreeSet<String> = list
        .iter()
        .filter(|b| b["status"] == "completed" || b["status"] == "deleting")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tags.iter().cloned().collect::<BTreeSet<_>>(),
        with_data,
        "{label}: the snapshots in the repository are not the completed backups: {list:#?}"
    );
    for b in &list {
        assert!(
            b["status"] != "running" && b["status"] != "failed",
            "{label}: {b}"
        );
        if b["status"] == "completed" {
            let id = b["snapshot_id"].as_str().unwrap();
            assert!(
                snaps.iter().any(|s| s["id"] == id),
                "{label}: {} is completed but its snapshot is not in the repository",
                b["id"]
            );
        }
    }
    let check = quickstart_restic(dir)
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{label}: restic check --read-data: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut restored = Vec::new();
    for (n, b) in list
        .iter()
        .filter(|b| b["status"] == "completed")
        .enumerate()
    {
        let target = dir.join(format!("restored-{n}"));
        let out = quickstart_restic(dir)
            .args(["restore", b["snapshot_id"].as_str().unwrap(), "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{label}: backup {} does not restore: {}",
            b["id"],
            String::from_utf8_lossy(&out.stderr)
        );
        restored.push((b["instance"].as_str().unwrap().to_string(), target));
    }
    restored
}

/// Names in `folder` that backplan made for a restore or a backup copy.
fn leftovers(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backplan-"))
        .collect()
}

fn pre_restore_backups(dir: &Path) -> usize {
    backups_json(dir)
        .iter()
        .filter(|b| b["kind"] == "pre-restore" && b["status"] == "completed")
        .count()
}

fn run_case(case: &Case) {
    let label = match case.first {
        Some(f) => format!("{:?} at {} after {f}", case.scenario, case.point),
        None => format!("{:?} at {}", case.scenario, case.point),
    };
    match case.scenario {
        Scenario::Directory | Scenario::Daemon => directory(case, &label),
        Scenario::Sqlite => sqlite(case, &label),
        Scenario::Postgres => postgres(case, &label),
        Scenario::Expiry | Scenario::Switch | Scenario::Update | Scenario::Edit => {
            changes(case, &label)
        }
    }
}

/// The kills of a case: the first point (if any), then the case's point.
fn kill(dir: &Path, case: &Case, daemon: bool) {
    if let Some(first) = case.first {
        killed_at(dir, first, daemon);
    }
    killed_at(dir, case.point, daemon);
}

fn directory(case: &Case, label: &str) {
    let daemon = case.scenario == Scenario::Daemon;
    let tmp = quickstart();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(prod.join("sub")).unwrap();
    std::fs::write(prod.join("a.txt"), "hello\n").unwrap();
    std::fs::write(prod.join("sub/random.bin"), random_bytes(300_000)).unwrap();
    let sandbox = dir.join("data/contoso-sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    std::fs::write(sandbox.join("old.txt"), "the sandbox before the restore").unwrap();
    let old = snapshot(&sandbox);
    let new = snapshot(&prod);
    append_config(
        dir,
        "[restores.refresh]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );

    kill(dir, case, daemon);
    let now = snapshot(&sandbox);
    assert!(
        now == old || now == new,
        "{label}: the sandbox is half-restored"
    );

    converge(dir, daemon);
    assert_same_tree(&prod, &sandbox);
    assert_eq!(
        leftovers(&dir.join("data")),
        Vec::<String>::new(),
        "{label}"
    );
    assert_eq!(pre_restore_backups(dir), 1, "{label}");
    for (instance, tree) in assert_repository_converged(dir, label) {
        if instance == "contoso" {
            assert_same_tree(&prod, &restored_root(&tree, &prod));
        }
    }
}

/// Where restic put a directory backup of `source`: the snapshot holds the instance folder's
/// contents under its absolute path.
fn restored_root(tree: &Path, source: &Path) -> PathBuf {
    let inside = tree.join(source.strip_prefix("/").unwrap());
    if inside.is_dir() {
        inside
    } else {
        tree.to_path_buf()
    }
}

fn table(db: &Path, rows: i64) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t(payload) SELECT randomblob(1000) FROM n;"
    ))
    .unwrap();
}

/// The rows of a whole database (the integrity check passes).
fn rows(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn sqlite(case: &Case, label: &str) {
    let tmp = quickstart();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    table(&dir.join("data/shop.db"), 300);
    table(&dir.join("data/shop-sandbox.db"), 3);
    append_config(
        dir,
        "[instances.shop.backups.first]\nlabel = \"First rows\"\n\n[restores.refresh-shop]\nfrom = \"shop/first\"\nto = \"shop-sandbox\"",
    );
    kill(dir, case, false);
    // A copy of the sandbox as the kill left it, opened apart (opening folds a WAL in).
    let seen = dir.join("seen");
    std::fs::create_dir(&seen).unwrap();
    for suffix in ["", "-wal", "-journal"] {
        let from = dir.join(format!("data/shop-sandbox.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, seen.join(format!("db{suffix}"))).unwrap();
        }
    }
    let n = rows(&seen.join("db"));
    assert!(
        n == 3 || n == 300,
        "{label}: the sandbox is half-restored ({n} rows)"
    );

    converge(dir, false);
    assert_eq!(rows(&dir.join("data/shop-sandbox.db")), 300, "{label}");
    assert_eq!(
        leftovers(&dir.join("data")),
        Vec::<String>::new(),
        "{label}"
    );
    assert_eq!(pre_restore_backups(dir), 1, "{label}");
    assert_repository_converged(dir, label);
}

fn postgres(case: &Case, label: &str) {
    let Some(pg) = crate::postgres::server() else {
        return;
    };
    let stem = format!(
        "crash_{}_{}",
        std::process::id(),
        case.point.replace(['.', '-'], "_")
    );
    let (prod, sandbox) = (format!("{stem}_prod"), format!("{stem}_sandbox"));
    struct Dbs<'a>(&'a crate::postgres::Pg, Vec<String>);
    impl Drop for Dbs<'_> {
        fn drop(&mut self) {
            for db in &self.1 {
                let _ = self.0.sql(
                    "postgres",
                    &format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        crate::postgres::ident(db)
                    ),
                );
            }
        }
    }
    let _guard = Dbs(&pg, vec![prod.clone(), sandbox.clone()]);
    let count = |db: &str| -> i64 { pg.must(db, "SELECT count(*) FROM t").parse().unwrap() };
    for (db, n) in [(&prod, 5), (&sandbox, 1)] {
        pg.must(
            "postgres",
            &format!("CREATE DATABASE {}", crate::postgres::ident(db)),
        );
        pg.must(
            db,
            &format!("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, {n}) g"),
        );
    }
    let tmp = scratch();
    let dir = tmp.path();
    std::fs::copy(&pg.password_file, dir.join("pg.password")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        format!(
            "[daemon]\nstate_dir = \"state\"\n\n[schedule]\ndaily_at = \"02:00\"\ntimezone = \"UTC\"\nretention = \"3d\"\n\n\
             [instances.shop]\ntype = \"production\"\nversion = \"1.0\"\nsource = {{ kind = \"postgres\", url = \"{}\", password_file = \"pg.password\" }}\n\n\
             [instances.shop.backups.b]\nlabel = \"b\"\n\n\
             [instances.shop-sandbox]\ntype = \"sandbox\"\nversion = \"1.0\"\nsource = {{ kind = \"postgres\", url = \"{}\", password_file = \"pg.password\" }}\n\n\
             [restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"\n",
            pg.url(&prod),
            pg.url(&sandbox)
        ),
    )
    .unwrap();
    kill(dir, case, false);
    let n = count(&sandbox);
    assert!(n == 1 || n == 5, "{label}: the sandbox is half-restored");

    converge(dir, false);
    assert_eq!(count(&sandbox), 5, "{label}");
    assert_eq!(count(&prod), 5, "{label}: production untouched");
    let side: Vec<String> = pg
        .databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{sandbox}__backplan_")))
        .collect();
    assert_eq!(
        side,
        Vec::<String>::new(),
        "{label}: staging databases left"
    );
    assert_eq!(pre_restore_backups(dir), 1, "{label}");
    assert_repository_converged(dir, label);
}

/// Expiry, switch and update: a first clean run, then the change, killed, then converged.
fn changes(case: &Case, label: &str) {
    let tmp = quickstart();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("a.txt"), "hello\n").unwrap();
    if case.scenario == Scenario::Expiry {
        set_config(dir, "retention = \"3d\"", "retention = \"1s\"");
    }
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let first = backups_json(dir);
    assert_eq!(first.len(), 1, "{first:?}");
    let marker = dir.join("hook-ran");
    match case.scenario {
        Scenario::Expiry => {
            append_config(
                dir,
                "[instances.contoso.backups.second]\nlabel = \"Second\"",
            );
            std::thread::sleep(Duration::from_millis(1100));
        }
        Scenario::Switch => set_config(
            dir,
            "[instances.contoso-sandbox]\ntype = \"sandbox\"",
            "[instances.contoso-sandbox]\ntype = \"production\"",
        ),
        Scenario::Edit => set_config(dir, "Before solution import", "Before import, edited"),
        _ => set_config(
            dir,
            "version = \"9.0\"\nsource = { kind = \"directory\", path = \"data/contoso\" }",
            &format!(
                "version = \"9.1\"\nsource = {{ kind = \"directory\", path = \"data/contoso\" }}\non_update = [\"sh\", \"-c\", \"echo {{version}} >> {}\"]",
                marker.display()
            ),
        ),
    }
    kill(dir, case, false);
    converge(dir, false);
    let list = backups_json(dir);
    let status = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let instance = |name: &str| {
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    };
    match case.scenario {
        Scenario::Expiry => {
            let of = |key: &str| -> Vec<String> {
                list.iter()
                    .filter(|b| b["key"] == key)
                    .map(|b| b["status"].as_str().unwrap().to_string())
                    .collect()
            };
            assert_eq!(of("second"), ["completed"], "{label}: {list:#?}");
            // Expired records are tombstones, which `backups` does not list.
            assert!(
                of("before-import").iter().all(|s| s == "expired"),
                "{label}: {list:#?}"
            );
            assert_eq!(restic_snapshots(dir).len(), 1, "{label}: pruned");
        }
        Scenario::Switch => {
            assert_eq!(instance("contoso-sandbox")["type"], "production", "{label}");
        }
        Scenario::Edit => {
            assert_eq!(list[0]["label"], "Before import, edited", "{label}");
            let snaps = restic_snapshots(dir);
            assert_eq!(
                snaps.len(),
                1,
                "{label}: the old snapshot forgotten: {snaps:#?}"
            );
            assert_eq!(snaps[0]["id"], list[0]["snapshot_id"], "{label}");
            assert!(
                snaps[0]["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t == "label=Before import, edited"),
                "{label}: {snaps:#?}"
            );
        }
        _ => {
            assert_eq!(instance("contoso")["version"], "9.1", "{label}");
            let pre: Vec<_> = list.iter().filter(|b| b["kind"] == "pre-update").collect();
            assert_eq!(pre.len(), 1, "{label}: {list:#?}");
            let ran = std::fs::read_to_string(&marker).unwrap();
            assert!(ran.lines().all(|l| l == "9.1") && !ran.is_empty(), "{ran}");
        }
    }
    assert_eq!(
        leftovers(&dir.join("data")),
        Vec::<String>::new(),
        "{label}"
    );
    for (instance, tree) in assert_repository_converged(dir, label) {
        if instance == "contoso" {
            assert_same_tree(&prod, &restored_root(&tree, &prod));
        }
    }
}
