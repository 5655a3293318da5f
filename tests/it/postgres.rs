//! PostgreSQL instances against a real server (`scripts/install-test-deps.sh` installs and
//! starts one, and writes where it is to `target/test-postgres/`; `BACKPLAN_TEST_PG` and
//! `BACKPLAN_TEST_PG_PASSWORD_FILE` point elsewhere). With `CI=true` a missing server fails
//! the tests; otherwise they are skipped with a loud message.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::helpers::*;

/// The test server: a base URL (`postgres://user@host:port/`) and a password file.
pub(crate) struct Pg {
    base: String,
    pub(crate) password_file: PathBuf,
    password: String,
}

pub(crate) fn server() -> Option<Pg> {
    let known = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-postgres");
    let base = std::env::var("BACKPLAN_TEST_PG")
        .ok()
        .or_else(|| std::fs::read_to_string(known.join("url")).ok());
    let password_file = std::env::var_os("BACKPLAN_TEST_PG_PASSWORD_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| known.join("password"));
    let found = base.and_then(|base| {
        let password = std::fs::read_to_string(&password_file).ok()?;
        let pg = Pg {
            base: format!("{}/", base.trim().trim_end_matches('/')),
            password_file: password_file.clone(),
            password: password.trim().to_string(),
        };
        pg.sql("postgres", "SELECT 1").ok().map(|_| pg)
    });
    if found.is_none() {
        let why = "no PostgreSQL server for the tests: run scripts/install-test-deps.sh (or set BACKPLAN_TEST_PG and BACKPLAN_TEST_PG_PASSWORD_FILE)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {why} !!!!!!!!\n");
    }
    found
}

impl Pg {
    pub(crate) fn url(&self, db: &str) -> String {
        let enc: String = db
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{}{enc}", self.base)
    }

    fn psql(&self, db: &str) -> Command {
        let mut c = Command::new("psql");
        c.args([
            "--no-psqlrc",
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg(self.url(db))
        .env("PGPASSWORD", &self.password);
        c
    }

    /// Runs SQL on `db`; the unaligned output.
    pub(crate) fn sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self.psql(db).arg("-c").arg(sql).output().unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    pub(crate) fn must(&self, db: &str, sql: &str) -> String {
        self.sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql} on {db}: {e}"))
    }

    fn count(&self, db: &str, sql: &str) -> i64 {
        self.must(db, sql).parse().unwrap()
    }

    pub(crate) fn drop_db(&self, db: &str) {
        self.must(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        );
    }

    pub(crate) fn databases(&self) -> Vec<String> {
        self.must("postgres", "SELECT datname FROM pg_database")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Drops the test's databases and roles at the end, failed or not.
pub(crate) struct Cleanup<'a> {
    pg: &'a Pg,
    dbs: Vec<String>,
    roles: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for db in &self.dbs {
            let _ = self.pg.sql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
            );
        }
        for role in &self.roles {
            let _ = self
                .pg
                .sql("postgres", &format!("DROP ROLE IF EXISTS {}", ident(role)));
        }
    }
}

pub(crate) fn cleanup<'a>(pg: &'a Pg, dbs: &[&String]) -> Cleanup<'a> {
    Cleanup {
        pg,
        dbs: dbs.iter().map(|d| d.to_string()).collect(),
        roles: Vec::new(),
    }
}

pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A database name unique to this test run, with `stem` in it.
pub(crate) fn unique(stem: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{stem}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A folder with `backplan.toml`: production `shop` on `prod`, sandbox `shop-sandbox` on
/// `sandbox`, both through the test server's password file (copied).
fn setup(pg: &Pg, prod: &str, sandbox: &str) -> tempfile::TempDir {
    with_password(
        pg,
        &format!(
            r#"[daemon]
state_dir = "state"

[schedule]
daily_at = "02:00"
timezone = "UTC"
retention = "3d"
keep_last_good = 1

[instances.shop]
type = "production"
version = "1.0"
source = {{ kind = "postgres", url = "{}", password_file = "pg.password" }}

[instances.shop-sandbox]
type = "sandbox"
version = "1.0"
source = {{ kind = "postgres", url = "{}", password_file = "pg.password" }}
"#,
            pg.url(prod),
            pg.url(sandbox)
        ),
    )
}

/// A folder with `backplan.toml` holding `config`, and the test server's password file
/// copied to `pg.password` for its instances' `password_file`.
pub(crate) fn with_password(pg: &Pg, config: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(&pg.password_file, tmp.path().join("pg.password")).unwrap();
    std::fs::write(tmp.path().join("backplan.toml"), config).unwrap();
    tmp
}

/// The shop's schema: each order has exactly three lines, written in one transaction.
const SCHEMA: &str = "CREATE TABLE orders (id bigserial PRIMARY KEY, total int NOT NULL CHECK (total >= 0));
CREATE TABLE lines (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders(id), n int NOT NULL);";

const ONE_ORDER: &str = "BEGIN; WITH o AS (INSERT INTO orders(total) VALUES (3) RETURNING id) INSERT INTO lines(order_id, n) SELECT o.id, g FROM o, generate_series(1,3) g; COMMIT;";

pub(crate) fn shop(pg: &Pg, db: &str, orders: usize) {
    pg.must("postgres", &format!("CREATE DATABASE {}", ident(db)));
    pg.must(db, SCHEMA);
    pg.must(db, &ONE_ORDER.repeat(orders));
}

/// The restored shop is consistent: every order has its three lines, no line without its
/// order. Returns the number of orders.
fn consistent_orders(pg: &Pg, db: &str) -> i64 {
    let bad = pg.count(
        db,
        "SELECT count(*) FROM orders o WHERE (SELECT count(*) FROM lines l WHERE l.order_id = o.id) <> 3",
    );
    assert_eq!(bad, 0, "orders without their three lines in {db}");
    let orphans = pg.count(
        db,
        "SELECT count(*) FROM lines l WHERE NOT EXISTS (SELECT FROM orders o WHERE o.id = l.order_id)",
    );
    assert_eq!(orphans, 0);
    // The constraints came back with the data.
    assert!(
        pg.sql(db, "INSERT INTO lines(order_id, n) VALUES (-1, 1)")
            .is_err()
    );
    pg.count(db, "SELECT count(*) FROM orders")
}

fn side_databases(pg: &Pg, db: &str) -> Vec<String> {
    pg.databases()
        .into_iter()
        .filter(|d| d.starts_with(&format!("{db}__backplan_")))
        .collect()
}

#[test]
fn postgres_backup_during_writes_restores_into_a_connected_sandbox() {
    let Some(pg) = server() else { return };
    // Names that need quoting: a space, upper case, a double quote.
    let prod = unique("Shop \"Prod\"");
    let sandbox = unique("Shop Sandbox");
    let reader = unique("Reader");
    let mut guard = cleanup(&pg, &[&prod, &sandbox]);
    guard.roles.push(reader.clone());
    shop(&pg, &prod, 200);
    // The sandbox belongs to a role of its own, which owns what the restore creates.
    let owner = unique("Sandbox Owner");
    guard.roles.push(owner.clone());
    pg.must("postgres", &format!("CREATE ROLE {}", ident(&owner)));
    pg.must(
        "postgres",
        &format!(
            "CREATE DATABASE {} OWNER {}",
            ident(&sandbox),
            ident(&owner)
        ),
    );
    pg.must(
        &sandbox,
        "CREATE TABLE stale (x int); INSERT INTO stale VALUES (1)",
    );
    // The sandbox's database-level settings, grants and comment, to be carried over.
    pg.must("postgres", &format!("CREATE ROLE {}", ident(&reader)));
    pg.must(
        "postgres",
        &format!(
            "ALTER DATABASE {s} SET work_mem = '7MB'; ALTER DATABASE {s} SET search_path = \"$user\", public, {r};
             ALTER ROLE {r} IN DATABASE {s} SET statement_timeout = '5s';
             REVOKE ALL ON DATABASE {s} FROM PUBLIC; GRANT CONNECT ON DATABASE {s} TO {r};
             COMMENT ON DATABASE {s} IS 'the sandbox'",
            s = ident(&sandbox),
            r = ident(&reader)
        ),
    );
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());

    // A writer keeps inserting orders while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let (url, password) = (pg.url(&prod), pg.password.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let ok = Command::new("psql")
                    .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", ONE_ORDER])
                    .env("PGPASSWORD", &password)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                n += 1;
            }
            n
        })
    };
    // A client connected to the sandbox all along.
    let mut client = pg
        .psql(&sandbox)
        .arg("-c")
        .arg("SELECT pg_sleep(120)")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while pg.count(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
            sandbox.replace('\'', "''")
        ),
    ) == 0
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = pg.count(&prod, "SELECT count(*) FROM orders");
    append_config(
        dir,
        "[instances.shop.backups.busy]\nlabel = \"during writes\"\n\n[restores.refresh]\nfrom = \"shop/busy\"\nto = \"shop-sandbox\"",
    );
    let run = apply(dir);
    let after = pg.count(&prod, "SELECT count(*) FROM orders");
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        written > 0 && after > before,
        "the writer wrote during the backup"
    );

    // The client was disconnected.
    let status = client.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(client.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("terminating connection"), "{err}");

    // The data replaced, consistent, as of a moment of the backup.
    assert!(pg.sql(&sandbox, "SELECT * FROM stale").is_err());
    let restored = consistent_orders(&pg, &sandbox);
    assert!(
        (before..=after).contains(&restored),
        "{restored} orders restored, {before} before the backup and {after} after"
    );
    assert_eq!(
        pg.must(
            &sandbox,
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
        ),
        owner
    );
    assert_eq!(
        pg.must(
            &sandbox,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
        ),
        owner
    );
    // Settings, grants and comment carried over.
    let settings = pg.must(
        "postgres",
        &format!(
            "SELECT coalesce(pg_get_userbyid(NULLIF(setrole, 0)), '-') || ' ' || array_to_string(setconfig, ';') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{}' ORDER BY 1",
            sandbox.replace('\'', "''")
        ),
    );
    assert!(settings.contains("work_mem=7MB"), "{settings}");
    // The staging database's own write-back setting does not stay with the restored one.
    assert!(!settings.contains("backend_flush_after"), "{settings}");
    assert!(
        settings.contains(&format!("search_path=\"$user\", public, \"{reader}\"")),
        "{settings}"
    );
    assert!(
        settings.contains(&format!("{reader} statement_timeout=5s")),
        "{settings}"
    );
    let acl = pg.must(
        "postgres",
        &format!(
            "SELECT datacl::text || ' ' || shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{}'",
            sandbox.replace('\'', "''")
        ),
    );
    assert!(acl.contains(&format!("{reader}=c/")), "{acl}");
    assert!(
        !acl.contains("{=") && !acl.contains(",="),
        "PUBLIC regained access: {acl}"
    );
    assert!(acl.ends_with(" the sandbox"), "{acl}");
    // Nothing left beside it; the repository holds the busy backup and the safety backup.
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
    assert_eq!(restic_snapshots(dir).len(), 2);
}

/// The error recorded for backup `key` of `shop`.
fn backup_error(dir: &Path, key: &str) -> String {
    let b = backup_by_key(dir, key);
    assert_eq!(b["status"], "failed", "{b}");
    b["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn postgres_failing_dumps_leave_no_snapshot() {
    let Some(pg) = server() else { return };
    let prod = unique("failing");
    let sandbox = unique("failing_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 10);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(dir, "[instances.shop.backups.good]\nlabel = \"good\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(restic_snapshots(dir).len(), 1);

    // Killed: pg_dump waits for a lock a client holds, and is killed there.
    let mut locker = pg
        .psql(&prod)
        .arg("-c")
        .arg("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    append_config(dir, "[instances.shop.backups.killed]\nlabel = \"killed\"");
    let run = std::thread::scope(|s| {
        let run = s.spawn(|| apply(dir));
        let pid = loop {
            if let Some(pid) = pg_dump_of(&prod) {
                break pid;
            }
            assert!(!run.is_finished(), "apply ended before pg_dump was seen");
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // SAFETY: kill(2) on the pg_dump this test's backplan started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        run.join().unwrap()
    });
    let _ = locker.kill();
    let _ = locker.wait();
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "killed");
    assert!(e.contains("pg_dump") && e.contains("signal: 9"), "{e}");
    assert_eq!(
        restic_snapshots(dir).len(),
        1,
        "no snapshot of the killed dump"
    );

    // A missing database.
    pg.drop_db(&prod);
    append_config(dir, "[instances.shop.backups.missing]\nlabel = \"missing\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "missing");
    assert!(
        e.contains(&format!("database \"{prod}\" does not exist")),
        "{e}"
    );
    assert_eq!(
        restic_snapshots(dir).len(),
        1,
        "no snapshot without a database"
    );

    // A wrong password.
    shop(&pg, &prod, 1);
    std::fs::write(dir.join("pg.password"), "not-the-password\n").unwrap();
    append_config(
        dir,
        "[instances.shop.backups.password]\nlabel = \"password\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "password");
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("not-the-password") && !run.stdout.contains("not-the-password"));
    assert_eq!(
        restic_snapshots(dir).len(),
        1,
        "no snapshot without a password"
    );
}

/// The pid of a `pg_dump` of database `db` running on this host.
fn pg_dump_of(db: &str) -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_dump = args.iter().any(|a| a.ends_with("pg_dump"));
        if is_dump && args.iter().any(|a| a.ends_with(&format!("/{db}"))) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn postgres_restore_killed_at_the_swap_converges() {
    let Some(pg) = server() else { return };
    let prod = unique("Crash Prod");
    let sandbox = unique("Crash Sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 5);
    shop(&pg, &sandbox, 1);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(
        dir,
        "[instances.shop.backups.b]\nlabel = \"b\"\n\n[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    apply_killed(dir, "BACKPLAN_CRASH_AFTER", "swap:started");
    // Killed right before the swap: the target as it was, the staged copy beside it.
    assert_eq!(pg.count(&sandbox, "SELECT count(*) FROM orders"), 1);
    assert_eq!(side_databases(&pg, &sandbox).len(), 1);

    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(consistent_orders(&pg, &sandbox), 5);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
    assert_eq!(consistent_orders(&pg, &prod), 5, "production untouched");
}

/// A run killed while its psql was creating the staging database leaves that CREATE DATABASE
/// running on the server. The next run waits for it (every psql of backplan's that creates or
/// drops a database holds a session lock on the name: `'backplan database ' || name`), then
/// drops what it made, instead of failing on the name the orphan commits.
#[test]
fn postgres_a_restore_waits_for_a_killed_run_s_staging_database() {
    let Some(pg) = server() else { return };
    let prod = unique("orphan_prod");
    let sandbox = unique("orphan_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 5);
    shop(&pg, &sandbox, 1);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(
        dir,
        "[instances.shop.backups.b]\nlabel = \"b\"\n\n[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    // Killed right after the staging database was made: its name is known from here on.
    apply_killed(dir, "BACKPLAN_FAILPOINT", "postgres.staging-created");
    let staging = side_databases(&pg, &sandbox);
    assert_eq!(staging.len(), 1, "{staging:?}");
    let staging = &staging[0];
    // The killed run's psql, still creating the staging database: it holds the name's lock.
    let mut orphan = pg
        .psql("postgres")
        .arg("--file=-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut orphan_in = orphan.stdin.take().unwrap();
    writeln!(
        orphan_in,
        "SELECT pg_advisory_lock(hashtext('backplan database ' || {}));",
        literal(staging)
    )
    .unwrap();
    // That lock in pg_locks (other tests' restores take locks of their own names).
    let held = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
         AND ((classid::bigint << 32) | objid::bigint) = hashtext('backplan database ' || {})::bigint",
        literal(staging)
    );
    wait_for(|| pg.count("postgres", &format!("{held} AND granted")) > 0);
    let run = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The new run waits on the name before it drops or creates anything.
    wait_for(|| pg.count("postgres", &format!("{held} AND NOT granted")) > 0);
    // The orphan's CREATE DATABASE commits now, and its session ends.
    writeln!(
        orphan_in,
        "DROP DATABASE {s} WITH (FORCE); CREATE DATABASE {s};",
        s = ident(staging)
    )
    .unwrap();
    drop(orphan_in);
    assert!(orphan.wait().unwrap().success());
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(consistent_orders(&pg, &sandbox), 5);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
}

/// `apply` in `dir` with `var` set to `point`: the run kills itself there (SIGKILL).
fn apply_killed(dir: &Path, var: &str, point: &str) {
    let status = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env(var, point)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

/// Waits up to 60 s for `done`.
fn wait_for(done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < until, "waited 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn postgres_tools_older_than_the_server_are_refused_before_any_work() {
    let Some(pg) = server() else { return };
    let prod = unique("old_tools");
    let sandbox = unique("old_tools_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 1);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    // A pg_dump of version 9.6 first on the PATH.
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("pg_dump"),
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'pg_dump (PostgreSQL) 9.6.24' && exit 0\ntouch \"$(dirname \"$0\")/ran\"\nexit 1\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(bin.join("pg_dump"))
        .status()
        .unwrap();
    append_config(dir, "[instances.shop.backups.b]\nlabel = \"b\"");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = backup_error(dir, "b");
    assert!(
        e.contains("pg_dump is version 9, older than the server"),
        "{e}"
    );
    assert!(
        !bin.join("ran").exists(),
        "the old pg_dump was not run to dump"
    );
}

/// The restore's version checks (the server's version, the owner and both tools' versions,
/// asked together): a `pg_restore` older than the server is refused before any work — no
/// pre-restore backup, no staging database, the sandbox as it was.
#[test]
fn postgres_restore_tools_older_than_the_server_are_refused_before_any_work() {
    let Some(pg) = server() else { return };
    let prod = unique("old_restore");
    let sandbox = unique("old_restore_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 1);
    pg.must("postgres", &format!("CREATE DATABASE {}", ident(&sandbox)));
    pg.must(
        &sandbox,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(dir, "[instances.shop.backups.b]\nlabel = \"b\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("pg_restore"),
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'pg_restore (PostgreSQL) 9.6.24' && exit 0\ntouch \"$(dirname \"$0\")/ran\"\nexit 1\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(bin.join("pg_restore"))
        .status()
        .unwrap();
    append_config(
        dir,
        "[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pg_restore is version 9, older than the server"),
        "{stdout}"
    );
    assert!(!bin.join("ran").exists(), "the old pg_restore was not run");
    assert_eq!(pg.count(&sandbox, "SELECT x FROM kept"), 42);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
    // No pre-restore backup: the only snapshot is the backup to restore.
    assert_eq!(restic_snapshots(dir).len(), 1);
}

#[test]
fn the_postgres_example_validates() {
    // The README's example file, with its credential folder pointed at a scratch one.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/postgres/backplan.toml");
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("shop-db.password"), "secret\n").unwrap();
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace(
            "/run/credentials/backplan.service/",
            &format!("{}/", creds.display()),
        )
        .replace("/var/lib/backplan", "state")
        .replace("/run/backplan/backplan.sock", "backplan.sock");
    std::fs::write(tmp.path().join("backplan.toml"), text).unwrap();
    let run = backplan(tmp.path(), &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

#[test]
fn postgres_failing_restore_leaves_the_sandbox_as_it_was() {
    let Some(pg) = server() else { return };
    let prod = unique("ext_prod");
    let sandbox = unique("Ext Sandbox");
    let owner = unique("ext_owner");
    let mut guard = cleanup(&pg, &[&prod, &sandbox]);
    guard.roles.push(owner.clone());
    // The dump creates an extension only a superuser may create; the sandbox's owner is not one.
    shop(&pg, &prod, 3);
    pg.must(&prod, "CREATE EXTENSION pageinspect");
    pg.must("postgres", &format!("CREATE ROLE {}", ident(&owner)));
    pg.must(
        "postgres",
        &format!(
            "CREATE DATABASE {} OWNER {}",
            ident(&sandbox),
            ident(&owner)
        ),
    );
    pg.must(
        &sandbox,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(
        dir,
        "[instances.shop.backups.b]\nlabel = \"b\"\n\n[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("pg_restore") && run.stdout.contains("pageinspect"),
        "pg_restore's own message: {}",
        run.transcript()
    );
    assert_eq!(pg.count(&sandbox, "SELECT x FROM kept"), 42);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
}

#[test]
fn postgres_backups_record_versions_and_a_restore_into_an_older_server_is_refused() {
    let Some(pg) = server() else { return };
    let prod = unique("ver_prod");
    let sandbox = unique("ver_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 2);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(dir, "[instances.shop.backups.b]\nlabel = \"b\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    pg.must(
        &sandbox,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );

    // The backup records the server's and pg_dump's versions.
    let store = backplan::state::Store::open(&dir.join("state")).unwrap();
    let all = store.read_all().unwrap();
    let mut b = all
        .backups
        .values()
        .find(|b| b.key.as_deref() == Some("b"))
        .unwrap()
        .clone();
    let server_num = pg.must("postgres", "SHOW server_version_num");
    assert_eq!(
        b.versions.get("server_version_num"),
        Some(&server_num),
        "{:?}",
        b.versions
    );
    assert!(
        b.versions
            .get("pg_dump")
            .is_some_and(|v| v.starts_with("pg_dump (PostgreSQL) ")),
        "{:?}",
        b.versions
    );
    // As if it had been dumped from a server one major version newer than the sandbox's.
    let newer: u32 = server_num.parse::<u32>().unwrap() / 10000 + 1;
    b.versions
        .insert("server_version_num".into(), format!("{}0000", newer));
    store.put_backup(&b).unwrap();
    let backups_before = all.backups.len();
    drop(store);

    append_config(
        dir,
        "[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains(&format!("dumped from a PostgreSQL {newer} server")),
        "{}",
        run.transcript()
    );
    // Refused before any change: no pre-restore backup, the sandbox as it was.
    let store = backplan::state::Store::open(&dir.join("state")).unwrap();
    assert_eq!(store.read_all().unwrap().backups.len(), backups_before);
    assert_eq!(pg.count(&sandbox, "SELECT x FROM kept"), 42);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
}

#[test]
fn postgres_a_moved_password_file_is_recorded_not_refused() {
    let Some(pg) = server() else { return };
    let prod = unique("moved_prod");
    let sandbox = unique("moved_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 1);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    assert_eq!(apply(dir).code, 0);
    std::fs::rename(dir.join("pg.password"), dir.join("moved.password")).unwrap();
    let cfg = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        cfg.replace("\"pg.password\"", "\"moved.password\""),
    )
    .unwrap();
    append_config(dir, "[instances.shop.backups.b]\nlabel = \"b\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("recorded the new connection settings"),
        "{}",
        run.transcript()
    );
    assert!(!run.transcript().contains(&pg.password), "a password shown");
    let store = backplan::state::Store::open(&dir.join("state")).unwrap();
    let rec = store.read_all().unwrap();
    let backplan::config::Source::Postgres { password_file, .. } = &rec.instances["shop"].source
    else {
        panic!("not a postgres source");
    };
    assert_eq!(
        password_file.as_deref(),
        Some(dir.join("moved.password").as_path())
    );
    // The backup taken in the same run used the new file.
    assert!(
        rec.backups
            .values()
            .any(|b| b.key.as_deref() == Some("b") && b.snapshot_id.is_some())
    );
}

/// The newest installed server's client tools folder (Debian: `/usr/lib/postgresql/N/bin`).
fn newest_bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed from Debian's packages")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin",
        versions.last().expect("a PostgreSQL version")
    ))
}

#[test]
fn postgres_tools_are_taken_from_bin_dir_when_set() {
    let Some(pg) = server() else { return };
    let prod = unique("bin_dir");
    let sandbox = unique("bin_dir_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 2);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    let set_bin_dir = |bin_dir: &Path| {
        let cfg = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
        let mut out = String::new();
        for line in cfg.lines() {
            let line = match line.split_once(", bin_dir = ") {
                Some((head, _)) => format!("{head} }}"),
                None => line.to_string(),
            };
            if line.contains("kind = \"postgres\"") {
                out += &line.replace(" }", &format!(", bin_dir = \"{}\" }}", bin_dir.display()));
            } else {
                out += &line;
            }
            out.push('\n');
        }
        std::fs::write(dir.join("backplan.toml"), out).unwrap();
    };

    // A folder of old tools: refused before any work, the folder named.
    let old = dir.join("old-tools");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(
        old.join("pg_dump"),
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 'pg_dump (PostgreSQL) 9.6.24' && exit 0\ntouch \"$(dirname \"$0\")/ran\"\nexit 1\n",
    )
    .unwrap();
    std::fs::write(
        old.join("psql"),
        format!(
            "#!/bin/sh\nexec {}/psql \"$@\"\n",
            newest_bin_dir().display()
        ),
    )
    .unwrap();
    for tool in ["pg_dump", "psql"] {
        let mut perms = std::fs::metadata(old.join(tool)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(old.join(tool), perms).unwrap();
    }
    set_bin_dir(&old);
    append_config(dir, "[instances.shop.backups.old]\nlabel = \"old\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "old");
    assert!(e.contains("/old-tools/pg_dump is version 9"), "{e}");
    assert!(e.contains("bin_dir"), "the fix is named: {e}");
    assert!(!old.join("ran").exists(), "the old pg_dump did not dump");

    // A folder without the tools: a clear error naming it.
    let missing = dir.join("no-such-folder");
    set_bin_dir(&missing);
    append_config(dir, "[instances.shop.backups.missing]\nlabel = \"missing\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "missing");
    assert!(e.contains("/no-such-folder/psql does not exist"), "{e}");

    // The real tools' folder: the backup is taken with them and records their version.
    let real = newest_bin_dir();
    set_bin_dir(&real);
    append_config(dir, "[instances.shop.backups.real]\nlabel = \"real\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let b = backup_by_key(dir, "real");
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(restic_snapshots(dir).len(), 1, "one snapshot, of `real`");
}

#[test]
fn postgres_dump_into_a_full_repository_disk_leaves_no_snapshot() {
    let Some(pg) = server() else { return };
    let prod = unique("full_disk");
    let sandbox = unique("full_disk_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 10);
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    let Some(_mounted) = crate::full_disk::Tmpfs::mount(&dir.join("repo"), "8m") else {
        return;
    };
    append_config(
        dir,
        "[storage.local]\npath = \"repo\"\n\n[instances.shop.backups.first]\nlabel = \"first\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());

    // About 12 MiB of hex text (some 6 MiB once compressed) does not fit.
    pg.must(
        &prod,
        "CREATE TABLE bulk AS SELECT g, (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 32) s) AS t FROM generate_series(1, 12000) g;",
    );
    crate::full_disk::fill(&dir.join("repo/filler"));
    append_config(dir, "[instances.shop.backups.full]\nlabel = \"full\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let e = backup_error(dir, "full");
    assert!(e.contains("No space left on device"), "{e}");
    assert!(pg_dump_of(&prod).is_none(), "no pg_dump left running");

    // Space back: the repository is consistent and holds the first backup only.
    std::fs::remove_file(dir.join("repo/filler")).unwrap();
    let restic = |args: &[&str]| {
        let out = Command::new("restic")
            .arg("-r")
            .arg(dir.join("repo"))
            .arg("--password-file")
            .arg(dir.join("state/keys/local.key"))
            .arg("--no-cache")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restic {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let snapshots: Vec<serde_json::Value> =
        serde_json::from_str(&restic(&["snapshots", "--json"])).unwrap();
    assert_eq!(snapshots.len(), 1, "no snapshot of the failed dump");
    restic(&["check", "--read-data"]);
}

/// A restore into a PostgreSQL sandbox fills the staging database while the pre-restore
/// backup of the sandbox is taken; when that backup fails (here its `before_backup`, which
/// waits until it sees the staging database), the restore under way is cancelled: the
/// sandbox is as it was, the staging database dropped, and a later run restores.
#[test]
fn postgres_a_failing_pre_restore_backup_cancels_the_restore_under_way() {
    let Some(pg) = server() else { return };
    let prod = unique("alongside_prod");
    let sandbox = unique("alongside_sandbox");
    let _guard = cleanup(&pg, &[&prod, &sandbox]);
    shop(&pg, &prod, 200);
    pg.must("postgres", &format!("CREATE DATABASE {}", ident(&sandbox)));
    pg.must(
        &sandbox,
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)",
    );
    let tmp = setup(&pg, &prod, &sandbox);
    let dir = tmp.path();
    append_config(dir, "[instances.shop.backups.b]\nlabel = \"b\"");
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    // The sandbox's backups wait (up to 60 s) for a staging database of the sandbox, note
    // whether one appeared, and fail.
    let hook = format!(
        "for i in $(seq 1 600); do \
           n=$(PGPASSWORD=$(cat pg.password) psql -X -At -d '{}' -c \"SELECT count(*) FROM pg_database WHERE starts_with(datname, '{sandbox}__backplan_')\"); \
           if [ \"$n\" -gt 0 ]; then echo staging >> seen; exit 1; fi; sleep 0.1; \
         done; echo none >> seen; exit 1",
        pg.url("postgres")
    );
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text.replace(
        "[instances.shop-sandbox]\ntype = \"sandbox\"\n",
        &format!(
            "[instances.shop-sandbox]\ntype = \"sandbox\"\nbefore_backup = [\"/bin/sh\", \"-c\", {}]\n",
            serde_json::to_string(&hook).unwrap()
        ),
    );
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    append_config(
        dir,
        "[restores.r]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("the pre-restore backup of shop-sandbox failed, so nothing was restored"),
        "{}",
        run.transcript()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("seen")).unwrap(),
        "staging\n",
        "the staging database was being filled while the pre-restore backup ran"
    );
    assert_eq!(pg.count(&sandbox, "SELECT x FROM kept"), 42);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
    // Without the failing hook, a new restore goes through.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let text = text
        .lines()
        .filter(|l| !l.starts_with("before_backup"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    append_config(
        dir,
        "[restores.r2]\nfrom = \"shop/b\"\nto = \"shop-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(consistent_orders(&pg, &sandbox), 200);
    assert_eq!(side_databases(&pg, &sandbox), Vec::<String>::new());
}
