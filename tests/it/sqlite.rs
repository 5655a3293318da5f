//! SQLite instances through the real binary and a real repository: an online backup while a
//! writer keeps committing, a restore into a sandbox, and a restore killed half-way.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::helpers::*;

const CONFIG: &str = r#"
[daemon]
state_dir = "state"

[schedule]
daily_at = "02:00"
timezone = "UTC"
retention = "3d"
keep_last_good = 1

[instances.shop]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "data/shop.db" }

[instances.shop.backups.during-writes]
label = "Taken while a writer inserts"

[instances.shop-sandbox]
type = "sandbox"
version = "1.0"
source = { kind = "sqlite", path = "data/shop-sandbox.db" }
"#;

const RESTORE: &str = "[restores.refresh]\nfrom = \"shop/during-writes\"\nto = \"shop-sandbox\"";

/// A ledger whose every row carries the running total of `amount` up to it: a copy that
/// mixes two moments of the database breaks it.
fn ledger(db: &Path, journal_mode: &str, rows: i64) {
    let mut c = Connection::open(db).unwrap();
    c.pragma_update(None, "journal_mode", journal_mode).unwrap();
    c.execute_batch(
        "CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, total INTEGER NOT NULL, payload BLOB)",
    )
    .unwrap();
    let tx = c.transaction().unwrap();
    for _ in 0..rows {
        insert(&tx);
    }
    tx.commit().unwrap();
}

fn insert(c: &Connection) {
    c.execute(
        "INSERT INTO ledger(amount, total, payload)
         SELECT a, coalesce((SELECT total FROM ledger ORDER BY id DESC LIMIT 1), 0) + a, randomblob(2000)
         FROM (SELECT abs(random() % 1000) + 1 AS a)",
        [],
    )
    .unwrap();
}

/// The rows of the ledger, read as any client would while the writer goes on: waiting for
/// the writer's lock (a rollback-journal commit holds it) rather than failing at once.
fn count(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    c.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0))
        .unwrap()
}

/// The restored copy: SQLite's integrity check passes, and the running total holds on every
/// row (with no gap in the ids). Returns the number of rows.
fn assert_consistent(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let broken: i64 = c
        .query_row(
            "SELECT count(*) FROM (SELECT total, sum(amount) OVER (ORDER BY id) AS s FROM ledger) WHERE total != s",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(broken, 0, "rows whose running total is wrong");
    let (n, max): (i64, i64) = c
        .query_row("SELECT count(*), max(id) FROM ledger", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(n, max, "ids with gaps");
    n
}

/// Names in `data/` that backplan made for a restore or a backup copy.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("backplan-"))
        .collect()
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("backplan.toml"), CONFIG).unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    tmp
}

#[test]
fn a_backup_during_writes_restores_consistent_into_the_sandbox() {
    for mode in ["wal", "delete"] {
        let tmp = setup();
        let dir = tmp.path();
        let prod = dir.join("data/shop.db");
        let sandbox = dir.join("data/shop-sandbox.db");
        ledger(&prod, mode, 2000);
        // The sandbox holds something else, to be replaced as a whole.
        Connection::open(&sandbox)
            .unwrap()
            .execute_batch("CREATE TABLE old(x); INSERT INTO old VALUES (1);")
            .unwrap();

        // A writer commits one row per transaction for as long as the backup runs.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, prod) = (stop.clone(), prod.clone());
            std::thread::spawn(move || {
                let mut c = Connection::open(&prod).unwrap();
                c.busy_timeout(Duration::from_secs(60)).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let tx = c
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .unwrap();
                    insert(&tx);
                    tx.commit().unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let before = count(&prod);
        let run = apply(dir);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let after = count(&prod);
        assert_eq!(run.code, 0, "{mode}: {}", run.transcript());
        assert!(after > before, "{mode}: the writer kept writing");
        assert_eq!(leftovers(dir), Vec::<String>::new(), "{mode}");

        append_config(dir, RESTORE);
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&sandbox).unwrap());
        let run = apply(dir);
        assert_eq!(run.code, 0, "{mode}: {}", run.transcript());
        assert!(
            run.stdout
                .contains("shop-sandbox now holds shop/during-writes"),
            "{}",
            run.stdout
        );
        let restored = assert_consistent(&sandbox);
        eprintln!("{mode}: {before} rows before the backup, {restored} restored, {after} after");
        assert!(
            (before..=after).contains(&restored),
            "{mode}: {restored} rows restored, not between {before} and {after}"
        );
        let c = Connection::open(&sandbox).unwrap();
        assert!(
            c.query_row("SELECT count(*) FROM old", [], |r| r.get::<_, i64>(0))
                .is_err(),
            "{mode}: the sandbox's old data is gone"
        );
        let renamed = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&sandbox).unwrap());
        assert_ne!(
            inode, renamed,
            "{mode}: a new file renamed in, not written over"
        );
        assert_eq!(leftovers(dir), Vec::<String>::new(), "{mode}");
        let list = backups_json(dir);
        assert!(
            list.iter().any(|b| b["kind"] == "pre-restore"
                && b["instance"] == "shop-sandbox"
                && b["status"] == "completed"),
            "{list:?}"
        );
    }
}

#[test]
fn a_restore_killed_half_way_converges_on_the_next_apply() {
    for step in ["swap:started", "swap:finished"] {
        let tmp = setup();
        let dir = tmp.path();
        let prod = dir.join("data/shop.db");
        let sandbox = dir.join("data/shop-sandbox.db");
        ledger(&prod, "wal", 500);
        ledger(&sandbox, "wal", 3);
        let run = apply(dir);
        assert_eq!(run.code, 0, "{}", run.transcript());

        append_config(dir, RESTORE);
        let status = Command::new(env!("CARGO_BIN_EXE_backplan"))
            .args(["apply", "-c", "backplan.toml", "--auto-approve"])
            .current_dir(dir)
            .env("BACKPLAN_CRASH_AFTER", step)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "killed after {step}"
        );
        // Killed: the sandbox is whole, the old database or the new one.
        let now = assert_consistent(&sandbox);
        if step == "swap:started" {
            assert_eq!(now, 3, "untouched before the swap");
            assert!(
                leftovers(dir)
                    .iter()
                    .any(|n| n.starts_with(".shop-sandbox.db.backplan-restore-")),
                "the kill left the staging file: {:?}",
                leftovers(dir)
            );
        }

        let run = apply(dir);
        assert_eq!(run.code, 0, "after a kill {step}: {}", run.transcript());
        let again = backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]);
        assert_eq!(
            again.code,
            0,
            "converged after {step}: {}",
            again.transcript()
        );
        assert_eq!(assert_consistent(&sandbox), 500, "after {step}");
        assert_eq!(leftovers(dir), Vec::<String>::new(), "after {step}");
        let safety = backups_json(dir)
            .iter()
            .filter(|b| b["kind"] == "pre-restore")
            .count();
        assert_eq!(safety, 1, "one pre-restore backup after a kill {step}");
    }
}

/// `restic restore` of the snapshot `id` of the quickstart repository in `dir`, into `into`.
fn restic_restore(dir: &Path, id: &str, into: &Path) {
    let out = quickstart_restic(dir)
        .args(["restore", id, "--target"])
        .arg(into)
        .output()
        .expect("restic is installed (Debian package `restic`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The backup reads the database's pages in one read transaction (streamed in WAL mode, with
/// commits still in the `-wal`; copied beside the database first in rollback mode): the stock
/// restic restores a file that is byte for byte the database as of that transaction (what the
/// file is once the log is checkpointed into it).
#[test]
fn the_stock_restic_restores_the_streamed_database_byte_identical() {
    for mode in ["wal", "delete"] {
        let tmp = setup();
        let dir = tmp.path();
        let prod = dir.join("data/shop.db");
        ledger(&prod, mode, 3000);
        // A client keeps the database open; in WAL mode its commits stay in the log.
        let c = Connection::open(&prod).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        for _ in 0..500 {
            insert(&c);
        }
        if mode == "wal" {
            let wal = std::fs::metadata(dir.join("data/shop.db-wal")).unwrap();
            assert!(wal.len() > 1 << 20, "{mode}: commits in the log");
        }
        let run = apply(dir);
        assert_eq!(run.code, 0, "{mode}: {}", run.transcript());
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let expected = std::fs::read(&prod).unwrap();

        let snapshots = restic_snapshots(dir);
        assert_eq!(snapshots.len(), 1, "{mode}");
        let id = snapshots[0]["id"].as_str().unwrap();
        let into = dir.join("restored");
        restic_restore(dir, id, &into);
        let names: Vec<_> = std::fs::read_dir(&into)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["database.sqlite"], "{mode}: one file at the root");
        let got = std::fs::read(into.join("database.sqlite")).unwrap();
        assert!(
            got == expected,
            "{mode}: {} bytes restored, the database has {}",
            got.len(),
            expected.len()
        );
        assert_eq!(assert_consistent(&into.join("database.sqlite")), 3500);
        assert_eq!(leftovers(dir), Vec::<String>::new(), "{mode}");
    }
}

/// A read that fails half-way (here the `-wal` is cut short under a live connection, so the
/// last page, whose latest version is in the log, cannot be read) fails the backup with
/// SQLite's reason, and no snapshot is kept.
#[test]
fn a_read_failing_half_way_keeps_no_snapshot_and_says_why() {
    let tmp = setup();
    let dir = tmp.path();
    let prod = dir.join("data/shop.db");
    ledger(&prod, "delete", 3000);
    Connection::open(&prod)
        .unwrap()
        .execute_batch("CREATE TABLE tail(x); INSERT INTO tail VALUES (1);")
        .unwrap();
    let pages: i64 = Connection::open(&prod)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    // Another process changes the last page in WAL mode and stays connected (its commit stays
    // in the log, never checkpointed).
    let mut shell = Command::new("sqlite3")
        .arg(&prod)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell is installed");
    let mut stdin = shell.stdin.take().unwrap();
    std::io::Write::write_all(
        &mut stdin,
        b"PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; UPDATE tail SET x = 2; SELECT 'done';\n",
    )
    .unwrap();
    let mut out = std::io::BufReader::new(shell.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("done") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0);
    }
    let wal = dir.join("data/shop.db-wal");
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(0)
        .unwrap();

    let run = apply(dir);
    shell.kill().unwrap();
    shell.wait().unwrap();
    assert_eq!(run.code, 1, "{}", run.transcript());
    let list = backups_json(dir);
    let failed: Vec<_> = list
        .iter()
        .filter(|b| b["instance"] == "shop" && b["status"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{list:?}");
    let e = failed[0]["error"].as_str().unwrap();
    assert!(
        e.contains(&format!("reading page {pages} of {pages}")) && e.contains("disk I/O error"),
        "{e}"
    );
    assert!(e.contains("no backup was kept"), "{e}");
    assert!(restic_snapshots(dir).is_empty(), "no snapshot kept");
    assert_eq!(leftovers(dir), Vec::<String>::new());
}

/// A snapshot made by an older version (its folder copy backed up as a tree holding
/// `database.sqlite`) restores into a SQLite target as a streamed one does.
#[test]
fn a_snapshot_of_an_older_version_s_copy_folder_still_restores() {
    use backplan::engine::{Engine, NoProgress, SnapshotTags};
    use backplan::kinds::{Kind, RestoreInto};
    let f = crate::engine::fixture();
    let copy = f.root.join(".shop.db.backplan-backup");
    std::fs::create_dir(&copy).unwrap();
    ledger(&copy.join("database.sqlite"), "delete", 300);
    let tags = SnapshotTags {
        instance: "shop".into(),
        backup: uuid::Uuid::from_u128(7),
        kind: "on-demand".into(),
        ..Default::default()
    };
    let info = f
        .engine
        .backup_dir(&f.repo, &copy, &[], &tags, Arc::new(NoProgress))
        .unwrap();

    let sandbox = f.root.join("sandbox.db");
    ledger(&sandbox, "delete", 2);
    let source = backplan::config::Source::Sqlite {
        path: sandbox.clone(),
    };
    let target = backplan::kinds::sqlite::Sqlite
        .open_target(&source)
        .unwrap();
    let RestoreInto::Stream { name, mut sink } = target.stage("r1").unwrap() else {
        panic!("a SQLite target receives a stream")
    };
    f.engine
        .restore_stream(&f.repo, &info.id, &name, &mut sink)
        .unwrap();
    drop(sink);
    target.prepare("r1").unwrap();
    target.commit("r1").unwrap();
    target.finish("r1").unwrap();
    assert_eq!(assert_consistent(&sandbox), 300);
}
