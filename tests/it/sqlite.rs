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
