//! The README's recovery runbook, run for real: the stock `restic` alone lists, restores and
//! dumps what backplan wrote (a directory, a SQLite database, a PostgreSQL database), and a
//! second key added for escrow opens the repository while backplan goes on with its own.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

/// Runs a shell command line as the README writes it, with the runbook's environment; its
/// stdout. Panics when it fails.
fn sh(dir: &Path, line: &str) -> String {
    let out = Command::new("sh")
        .args(["-ec", line])
        .current_dir(dir)
        .env("RESTIC_REPOSITORY", dir.join("state/repository"))
        .env("RESTIC_PASSWORD_FILE", dir.join("state/keys/local.key"))
        .env("RESTIC_CACHE_DIR", dir.join("restic-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tags(snapshot: &serde_json::Value) -> Vec<String> {
    snapshot["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_runbook_recovers_every_kind_with_restic_alone_and_escrow_keys_work() {
    let pg = crate::postgres::server();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/www/sub")).unwrap();
    std::fs::write(dir.join("data/www/index.html"), "hello\n").unwrap();
    std::fs::write(dir.join("data/www/sub/a.txt"), "in sub\n").unwrap();
    sh(
        dir,
        "sqlite3 data/app.db 'CREATE TABLE t (x); INSERT INTO t VALUES (42), (43);'",
    );
    let mut text = String::from(
        r#"[daemon]
state_dir = "state"

[schedule]
daily_at = "02:00"
timezone = "UTC"
retention = "3d"

[instances.www]
type = "production"
version = "1.0"
source = { kind = "directory", path = "data/www" }
[instances.www.backups.before-upgrade]
label = "Before the upgrade"

[instances.app]
type = "production"
version = "1.0"
source = { kind = "sqlite", path = "data/app.db" }
[instances.app.backups.before-upgrade]
label = "Before the upgrade"
"#,
    );
    let db = format!("runbook_{}", std::process::id());
    let restored_db = format!("{db}_restored");
    let _drop = pg
        .as_ref()
        .map(|pg| DropDbs(pg, vec![db.clone(), restored_db.clone()]));
    if let Some(pg) = &pg {
        std::fs::copy(&pg.password_file, dir.join("pg.password")).unwrap();
        pg.must("postgres", &format!("CREATE DATABASE {db}"));
        pg.must(
            &db,
            "CREATE TABLE orders (id int, total int); INSERT INTO orders VALUES (1, 10), (2, 20);",
        );
        text += &format!(
            r#"
[instances.shop]
type = "production"
version = "1.0"
source = {{ kind = "postgres", url = "{}", password_file = "pg.password" }}
[instances.shop.backups.before-upgrade]
label = "Before the upgrade"
"#,
            pg.url(&db)
        );
    }
    std::fs::write(dir.join("backplan.toml"), &text).unwrap();
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.transcript());

    // restic snapshots: every backup, tagged with its instance and backup id.
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&sh(dir, "restic snapshots --json")).unwrap();
    assert_eq!(all.len(), if pg.is_some() { 3 } else { 2 });
    let recorded = backplan::state::read(&dir.join("state")).unwrap();
    for b in recorded.backups.values() {
        let snap = b
            .snapshot_id
            .as_deref()
            .expect("a completed backup has its snapshot");
        let found: Vec<serde_json::Value> = serde_json::from_str(&sh(
            dir,
            &format!("restic snapshots --tag backup={} --json", b.id),
        ))
        .unwrap();
        assert_eq!(found.len(), 1, "backup {}", b.id);
        assert_eq!(found[0]["id"].as_str(), Some(snap));
        let t = tags(&found[0]);
        assert!(t.contains(&"backplan".to_string()), "{t:?}");
        assert!(t.contains(&format!("instance={}", b.instance)), "{t:?}");
    }
    let www: Vec<serde_json::Value> =
        serde_json::from_str(&sh(dir, "restic snapshots --tag instance=www --json")).unwrap();
    assert_eq!(www.len(), 1);
    let listed = sh(dir, "restic ls latest --tag instance=www");
    let paths: Vec<&str> = listed.lines().filter(|l| l.starts_with('/')).collect();
    assert_eq!(paths, ["/index.html", "/sub", "/sub/a.txt"]);

    // A directory, whole and one folder of it.
    sh(
        dir,
        "restic restore latest --tag instance=www --target www.restored",
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("www.restored/index.html")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("www.restored/sub/a.txt")).unwrap(),
        "in sub\n"
    );
    sh(
        dir,
        "restic restore latest --tag instance=www --target www.sub --include /sub",
    );
    assert!(dir.join("www.sub/sub/a.txt").is_file());
    assert!(!dir.join("www.sub/index.html").exists());

    // SQLite: the database file, whole and consistent.
    sh(
        dir,
        "restic dump latest --tag instance=app /database.sqlite > app.db.restored",
    );
    assert_eq!(
        sh(
            dir,
            "sqlite3 app.db.restored 'PRAGMA integrity_check; SELECT sum(x) FROM t;'"
        ),
        "ok\n85\n"
    );

    // PostgreSQL: the dump piped into pg_restore, into a new database.
    if let Some(pg) = &pg {
        pg.must("postgres", &format!("CREATE DATABASE {restored_db}"));
        sh(
            dir,
            &format!(
                "PGPASSWORD=\"$(cat pg.password)\" && export PGPASSWORD && restic dump latest --tag instance=shop /database.pgdump | pg_restore --no-owner --dbname='{}'",
                pg.url(&restored_db)
            ),
        );
        assert_eq!(pg.must(&restored_db, "SELECT sum(total) FROM orders"), "30");
    }

    // A second key for escrow: restic opens the repository with it, and backplan still opens
    // it with its own (a new backup, a full verify).
    sh(
        dir,
        "head -c 32 /dev/urandom | base64 > escrow.key && chmod 600 escrow.key",
    );
    sh(
        dir,
        "restic key add --new-password-file escrow.key --user escrow --host vault",
    );
    let keys = sh(dir, "restic key list --json");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&keys)
            .unwrap()
            .len(),
        2,
        "{keys}"
    );
    let by_escrow: Vec<serde_json::Value> = serde_json::from_str(&sh(
        dir,
        "restic --password-file escrow.key snapshots --json",
    ))
    .unwrap();
    assert_eq!(by_escrow.len(), all.len());
    append_config(
        dir,
        "[instances.www.backups.after-escrow]\nlabel = \"After the escrow key\"",
    );
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let run = backplan(dir, &["verify", "-c", "backplan.toml", "--subset", "100%"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let by_escrow: Vec<serde_json::Value> = serde_json::from_str(&sh(
        dir,
        "restic --password-file escrow.key snapshots --json",
    ))
    .unwrap();
    assert_eq!(by_escrow.len(), all.len() + 1);
}

/// Drops the test's databases at the end, failed or not.
struct DropDbs<'a>(&'a crate::postgres::Pg, Vec<String>);

impl Drop for DropDbs<'_> {
    fn drop(&mut self) {
        for db in &self.1 {
            let drop = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                crate::postgres::ident(db)
            );
            let _ = self.0.sql("postgres", &drop);
        }
    }
}
