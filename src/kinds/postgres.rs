//! PostgreSQL instances (`source = { kind = "postgres", url = ..., password_file = ... }`),
//! through the client tools as processes: `pg_dump`, `pg_restore` and `psql` (Debian's
//! `postgresql-client`). libpq's environment and `~/.pgpass` are honoured; the password of
//! `password_file` reaches the tools as `PGPASSWORD` in their own environment only.
//!
//! - **Backup**: `pg_dump --format=custom --compress=0` streamed into the repository as one
//!   file ([`DUMP_NAME`]; the same name for every instance, so that a sandbox restores a
//!   production dump). A failing `pg_dump` keeps no snapshot (the engine's guard).
//! - **Restore**: a new database beside the target (owned by the target's owner, same
//!   encoding and locale) receives `pg_restore --no-owner --no-acl --role=<owner>` from the
//!   stream (so the target's owner owns what it creates); the swap
//!   is one transaction on the maintenance database: end the target's connections, rename the
//!   target away, rename the new database in, carry over the old target's database-level
//!   settings, grants, comment and connection limit. PostgreSQL renames databases
//!   transactionally, so a failure anywhere leaves the target as it was. The old database is
//!   dropped afterwards.
//! - Staging databases have backplan's own names (see [`side_name`]); only those are dropped.
//! - The tools must be at least the server's major version; this is checked before any work.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::{BackupSource, Kind, RestoreInto, Target};
use crate::config::Source;
use crate::config::model::percent_decode;
use crate::engine::StreamSource;

/// The PostgreSQL kind.
pub struct Postgres;

/// The file a dump is stored as inside a snapshot.
pub const DUMP_NAME: &str = "database.pgdump";

/// The database psql connects to for administration (create, rename, drop).
const MAINTENANCE_DB: &str = "postgres";

/// The key of a backup's `versions` that holds its server's `server_version_num`.
pub const SERVER_VERSION: &str = "server_version_num";

/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

/// How a database is reached: its URL (without a password: validation refuses one), the
/// database it names, and the password read from `password_file`, if any.
#[derive(Clone)]
struct Conn {
    /// The URL up to (not including) the `/` before the database name.
    base: String,
    /// The `?...` part, if any.
    query: String,
    db: String,
    password: Option<String>,
    /// Where the client tools are (`bin_dir`); `None`: found on the `PATH`.
    bin_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "{}", self.url_for(&self.db))
    }
}

impl Conn {
    fn of(source: &Source) -> Result<Conn, String> {
        let Source::Postgres {
            url,
            password_file,
            bin_dir,
        } = source
        else {
            return Err(format!(
                "{} is not a postgres instance's source",
                source.describe()
            ));
        };
        let (base, db, query) = split_url(url)?;
        let password = match password_file {
            None => None,
            Some(p) => Some(read_password(p)?),
        };
        Ok(Conn {
            base,
            query,
            db,
            password,
            bin_dir: bin_dir.clone(),
        })
    }

    /// The client tool `name` (`pg_dump`, `pg_restore`, `psql`): in `bin_dir` when set.
    fn tool(&self, name: &str) -> String {
        match &self.bin_dir {
            Some(dir) => dir.join(name).to_string_lossy().into_owned(),
            None => name.to_string(),
        }
    }

    /// The same URL, naming database `db`.
    fn url_for(&self, db: &str) -> String {
        format!("{}/{}{}", self.base, percent_encode(db), self.query)
    }

    /// What the tools get in their environment: the password (never on a command line), no
    /// prompt, a connection timeout unless one is set, and a name in `pg_stat_activity`.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![("PGAPPNAME".to_string(), "backplan".to_string())];
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            env.push(("PGCONNECT_TIMEOUT".into(), "30".into()));
        }
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".into(), p.clone()));
        }
        env
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL database \"{}\" ({})",
            self.db,
            self.url_for(&self.db)
        )
    }

    /// Runs a psql script on database `db` (in autocommit mode, stopping at the first
    /// error), with psql variables `vars` (use `:'name'` for a literal, `:"name"` for an
    /// identifier: psql quotes them). Returns what it printed (unaligned, tuples only).
    fn psql(&self, db: &str, vars: &[(&str, &str)], script: &str) -> Result<String, String> {
        let psql = self.tool("psql");
        let mut cmd = Command::new(&psql);
        cmd.args([
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            "--file=-",
        ])
        .arg(format!("--dbname={}", self.url_for(db)));
        for (k, v) in vars {
            cmd.arg(format!("--set={k}={v}"));
        }
        let mut child = cmd
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tool_missing(&psql, &e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A psql that failed at once (no connection) has closed its end: its message
            // tells why, not this write's broken pipe.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The server's `server_version_num` (`160004` for 16.4).
    fn server_version_num(&self) -> Result<u32, String> {
        let out = self.psql(MAINTENANCE_DB, &[], "SHOW server_version_num;")?;
        out.trim()
            .parse::<u32>()
            .map_err(|_| format!("the server gave an unexpected version number `{out}`"))
    }

    /// The server's `server_version_num` and the owner of the database (empty when it does
    /// not exist), in one psql.
    fn version_and_owner(&self) -> Result<(u32, String), String> {
        let out = self
            .psql(
                MAINTENANCE_DB,
                &[("db", &self.db)],
                "SELECT current_setting('server_version_num') || '|' || coalesce((SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'), '');",
            )
            .map_err(|e| format!("cannot reach {}: {e}", self.describe()))?;
        // The version has no `|`; the owner's name may.
        match out.split_once('|') {
            Some((num, owner)) => num
                .trim()
                .parse::<u32>()
                .map(|n| (n, owner.to_string()))
                .map_err(|_| format!("the server gave an unexpected version number `{num}`")),
            None => Err(format!("the server gave an unexpected answer `{out}`")),
        }
    }

    fn refuse_older(&self, tool: &str, major: u32, server: u32) -> Result<(), String> {
        if major < server {
            return Err(format!(
                "{tool} is version {major}, older than the server of {} (version {server}); nothing was done. Install the client tools of version {server} or later (Debian: postgresql-client-{server}), or point the source's `bin_dir` at them",
                self.describe()
            ));
        }
        Ok(())
    }

    /// The server's `server_version_num` and whether the database exists, in one psql.
    fn version_and_existence(&self) -> Result<(u32, bool), String> {
        let out = self
            .psql(
                MAINTENANCE_DB,
                &[("db", &self.db)],
                "SELECT current_setting('server_version_num'), EXISTS (SELECT FROM pg_database WHERE datname = :'db');",
            )
            .map_err(|e| format!("cannot reach {}: {e}", self.describe()))?;
        match out.split_once('|') {
            Some((num, exists)) => num
                .trim()
                .parse::<u32>()
                .map(|n| (n, exists.trim() == "t"))
                .map_err(|_| format!("the server gave an unexpected version number `{num}`")),
            None => Err(format!("the server gave an unexpected answer `{out}`")),
        }
    }

    /// What identifies the versions asked about: the database's URL and the tools' folder.
    fn versions_key(&self) -> String {
        format!("{}\n{:?}", self.url_for(&self.db), self.bin_dir)
    }

    fn drop_db(&self, db: &str) -> Result<(), String> {
        self.psql_holding(
            db,
            &[("db", db)],
            "DROP DATABASE IF EXISTS :\"db\" WITH (FORCE);",
        )
        .map(|_| ())
    }

    /// `script` run by one psql on the maintenance database that first takes `name`'s lock
    /// (`LOCK_NAME`), for as long as its session lasts.
    fn psql_holding(
        &self,
        name: &str,
        vars: &[(&str, &str)],
        script: &str,
    ) -> Result<String, String> {
        let mut vars = vars.to_vec();
        vars.push(("locked", name));
        self.psql(MAINTENANCE_DB, &vars, &format!("{LOCK_NAME}{script}"))
    }
}

fn tool_missing(tool: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound && tool.contains('/') {
        format!(
            "{tool} does not exist (check the source's `bin_dir`, or remove it to use the PATH)"
        )
    } else if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "{tool} is not installed (Debian: apt-get install postgresql-client), or not on the PATH (set the source's `bin_dir`)"
        )
    } else {
        format!("cannot start {tool}: {e}")
    }
}

/// What `<tool> --version` says (`pg_dump (PostgreSQL) 15.4`).
fn tool_version(tool: &str) -> Result<String, String> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| tool_missing(tool, &e))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `a` and `b` at the same time (each waits on a process: a psql, a `--version`).
fn alongside<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    std::thread::scope(|s| {
        let other = s.spawn(b);
        let first = a();
        let second = other
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (first, second)
    })
}

/// The major version of a client tool.
fn tool_major(tool: &str) -> Result<u32, String> {
    let text = tool_version(tool)?;
    parse_tool_major(&text)
        .ok_or_else(|| format!("cannot read the version of {tool} from `{text}`"))
}

fn parse_tool_major(text: &str) -> Option<u32> {
    let after = text.split(')').nth(1)?.trim_start();
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The versions `backup_source` just read, for the `versions` call apply makes right after
/// it: (whose, when, what). Taken once, and only within [`VERSIONS_FRESH`].
static LAST_VERSIONS: Mutex<Option<KnownVersions>> = Mutex::new(None);

type KnownVersions = (String, std::time::Instant, BTreeMap<String, String>);

/// How long the versions read for a backup stand for it.
const VERSIONS_FRESH: std::time::Duration = std::time::Duration::from_secs(10);

fn remember_versions(conn: &Conn, server: u32, dump: String) {
    let versions = BTreeMap::from([
        (SERVER_VERSION.to_string(), server.to_string()),
        ("pg_dump".to_string(), dump),
    ]);
    *LAST_VERSIONS.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((conn.versions_key(), std::time::Instant::now(), versions));
}

fn recent_versions(conn: &Conn) -> Option<BTreeMap<String, String>> {
    let mut last = LAST_VERSIONS.lock().unwrap_or_else(|p| p.into_inner());
    match last.take() {
        Some((key, at, versions))
            if key == conn.versions_key() && at.elapsed() < VERSIONS_FRESH =>
        {
            Some(versions)
        }
        _ => None,
    }
}

/// As restic reads a password file (and the repository keys are read): without a
/// byte-order mark and surrounding whitespace.
fn read_password(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    let p = text.strip_prefix('\u{feff}').unwrap_or(&text).trim();
    if p.is_empty() {
        return Err(format!("the password file {} is empty", path.display()));
    }
    Ok(p.to_string())
}

/// Splits `postgres://auth/db?query` into `postgres://auth`, the database (decoded) and
/// `?query`.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("`{url}` is not a PostgreSQL URL"))?;
    let scheme_len = url.len() - rest.len();
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let base = url[..scheme_len + auth_end].to_string();
    let after = &rest[auth_end..];
    let (path, query) = match after.find('?') {
        Some(q) => (&after[..q], &after[q..]),
        None => (after, ""),
    };
    let db = percent_decode(path.strip_prefix('/').unwrap_or(path)).ok_or_else(|| {
        format!("the database name in `{url}` is not valid percent-encoded UTF-8")
    })?;
    if db.is_empty() {
        return Err(format!(
            "`{url}` names no database; write `postgres://user@host[:port]/database`"
        ));
    }
    Ok((base, db, query.to_string()))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Eight hex digits that stand for `s`.
fn short_hash(s: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, s.as_bytes())
        .simple()
        .to_string()[..8]
        .to_string()
}

/// The longest prefix of `s` of at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// What the names of a target's staging databases start with: the target's name, or (when
/// that is too long to leave room for the rest) its start and a hash of the whole.
fn side_prefix(target: &str) -> String {
    // `__backplan_restore_` and 8 hex digits must fit in 63 bytes.
    if target.len() <= MAX_NAME - 27 {
        format!("{target}__backplan_")
    } else {
        format!("{}_{}__backplan_", truncate(target, 27), short_hash(target))
    }
}

/// The name of a database backplan makes beside `target` for a restore: `role` is
/// `restore` (the staged copy) or `old` (the replaced target, until it is dropped).
fn side_name(target: &str, role: &str, restore_key: &str) -> String {
    format!("{}{role}_{}", side_prefix(target), short_hash(restore_key))
}

/// Whether `name` is one of backplan's databases beside `target`.
fn is_side_name(target: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(&side_prefix(target)) else {
        return false;
    };
    ["restore_", "old_"].iter().any(|role| {
        rest.strip_prefix(role)
            .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

impl Kind for Postgres {
    fn drill_check(&self, source: &Source, restored: &std::path::Path) -> Result<String, String> {
        drill_list(source, &restored.join(DUMP_NAME))
    }

    fn provision(&self, source: &Source) -> Result<&'static str, String> {
        let conn = Conn::of(source)?;
        let out = conn.psql(
            MAINTENANCE_DB,
            &[("db", &conn.db)],
            r#"SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') AS missing \gset
\if :missing
CREATE DATABASE :"db";
\endif
SELECT :'missing';"#,
        )?;
        Ok(if out == "t" { "created" } else { "adopted" })
    }

    fn backup_source(&self, source: &Source, instance: &str) -> Result<BackupSource, String> {
        let conn = Conn::of(source)?;
        // One psql and one `pg_dump --version` (each a process start, through Debian's
        // wrapper script), run together: their answers are also the backup's versions,
        // asked next.
        let dump_tool = conn.tool("pg_dump");
        let (answer, dump) =
            alongside(|| conn.version_and_existence(), || tool_version(&dump_tool));
        let (server, exists) = answer.map_err(|e| format!("instance `{instance}`: {e}"))?;
        let dump = dump?;
        let major = parse_tool_major(&dump)
            .ok_or_else(|| format!("cannot read the version of {dump_tool} from `{dump}`"))?;
        conn.refuse_older(&dump_tool, major, server / 10000)
            .map_err(|e| format!("instance `{instance}`: {e}"))?;
        remember_versions(&conn, server, dump);
        if !exists {
            // Worded as the server words it (pg_dump would fail with the same message).
            return Err(format!(
                "database \"{}\" does not exist ({}, instance `{instance}`); nothing was backed up",
                conn.db,
                conn.url_for(&conn.db)
            ));
        }
        Ok(BackupSource::Stream(StreamSource {
            argv: vec![
                conn.tool("pg_dump"),
                "--format=custom".into(),
                // Uncompressed: the repository compresses, and deduplicates from day to day.
                "--compress=0".into(),
                "--no-password".into(),
                format!("--dbname={}", conn.url_for(&conn.db)),
            ],
            env: conn.env(),
            name: DUMP_NAME.to_string(),
        }))
    }

    fn versions(&self, source: &Source) -> Result<BTreeMap<String, String>, String> {
        let conn = Conn::of(source)?;
        if let Some(known) = recent_versions(&conn) {
            return Ok(known);
        }
        let server = conn
            .server_version_num()
            .map_err(|e| format!("cannot reach {}: {e}", conn.describe()))?;
        let dump = tool_version(&conn.tool("pg_dump"))?;
        Ok(BTreeMap::from([
            (SERVER_VERSION.to_string(), server.to_string()),
            ("pg_dump".to_string(), dump),
        ]))
    }

    fn open_target(&self, source: &Source) -> Result<Box<dyn Target>, String> {
        let conn = Conn::of(source)?;
        // The server's version and the owner in one psql; beside it, the versions of
        // pg_dump (the pre-restore backup comes first) and pg_restore: three process starts
        // at once rather than one after the other. Tools older than the server are refused
        // (a dump made with them could miss what they do not know), before any work.
        let (dump_tool, restore_tool) = (conn.tool("pg_dump"), conn.tool("pg_restore"));
        let (answer, (dump, restore)) = alongside(
            || conn.version_and_owner(),
            || alongside(|| tool_major(&dump_tool), || tool_major(&restore_tool)),
        );
        let (server, owner) = answer?;
        conn.refuse_older(&dump_tool, dump?, server / 10000)?;
        conn.refuse_older(&restore_tool, restore?, server / 10000)?;
        if owner.is_empty() {
            return Err(format!(
                "{} does not exist; nothing was restored",
                conn.describe()
            ));
        }
        Ok(Box::new(PgTarget {
            conn,
            owner,
            server,
            restorer: Arc::new(Mutex::new(None)),
        }))
    }

    fn discard_leftovers(&self, source: &Source) -> Vec<String> {
        let Ok(conn) = Conn::of(source) else {
            return Vec::new();
        };
        let names = match conn.psql(MAINTENANCE_DB, &[], "SELECT datname FROM pg_database;") {
            Ok(out) => out,
            Err(e) => {
                return vec![format!(
                    "cannot look for leftover restore databases of {}: {e}",
                    conn.describe()
                )];
            }
        };
        names
            .lines()
            .filter(|n| is_side_name(&conn.db, n))
            .map(|n| match conn.drop_db(n) {
                Ok(()) => format!("dropped the leftover restore database \"{n}\""),
                Err(e) => format!("cannot drop the leftover restore database \"{n}\": {e}"),
            })
            .collect()
    }

    fn store_path(&self, _: &Source) -> Option<std::path::PathBuf> {
        // A database is not on this host's filesystem; two instances on the same URL are
        // refused by validation (`shared-source`).
        None
    }
}

/// A running `pg_restore`, its standard error collected on a thread of its own.
struct Restorer {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Restorer {
    /// Waits for it; `Err` with its message unless it exited 0.
    fn finish(mut self) -> Result<(), String> {
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("pg_restore {s}: {}", stderr.trim())),
            Err(e) => Err(format!("waiting for pg_restore: {e}")),
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.finish();
    }
}

type Shared = Arc<Mutex<Option<Restorer>>>;

fn take(r: &Shared) -> Option<Restorer> {
    r.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// The stdin of `pg_restore`. When pg_restore stops reading (it failed), the write error
/// carries its own message.
struct RestoreSink {
    stdin: ChildStdin,
    restorer: Shared,
}

impl Write for RestoreSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stdin.write(buf).map_err(|e| self.explain(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.flush().map_err(|e| self.explain(e))
    }
}

impl RestoreSink {
    fn explain(&self, e: std::io::Error) -> std::io::Error {
        match take(&self.restorer) {
            Some(r) => match r.finish() {
                Err(why) => std::io::Error::other(why),
                Ok(()) => std::io::Error::other(format!("pg_restore stopped reading: {e}")),
            },
            None => e,
        }
    }
}

/// A PostgreSQL database opened as a restore target.
struct PgTarget {
    conn: Conn,
    /// The target's owner: it owns the staging database and what pg_restore creates in it.
    owner: String,
    /// The server's `server_version_num`, read when the target was opened.
    server: u32,
    restorer: Shared,
}

impl PgTarget {
    fn staging(&self, restore_key: &str) -> String {
        side_name(&self.conn.db, "restore", restore_key)
    }
    fn old(&self, restore_key: &str) -> String {
        side_name(&self.conn.db, "old", restore_key)
    }
}

/// The swap, in one transaction: PostgreSQL renames databases transactionally, so either
/// all of it happens or none.
const SWAP: &str = r#"
BEGIN;
SELECT oid AS old_oid FROM pg_database WHERE datname = :'db' \gset
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
  WHERE datname = :'db' AND pid <> pg_backend_pid();
ALTER DATABASE :"db" RENAME TO :"old";
ALTER DATABASE :"staging" RENAME TO :"db";
-- The staging database's own setting (CREATE_STAGING) goes; the old target's, if any, follows.
ALTER DATABASE :"db" RESET backend_flush_after;
-- Database-level settings, for all roles and per role.
SELECT format('ALTER %s SET %I TO %s',
         CASE WHEN s.setrole = 0 THEN format('DATABASE %I', :'db')
              ELSE format('ROLE %I IN DATABASE %I', pg_get_userbyid(s.setrole), :'db') END,
         split_part(c, '=', 1),
         CASE WHEN split_part(c, '=', 1) IN ('search_path', 'temp_tablespaces',
                'session_preload_libraries', 'local_preload_libraries')
              THEN substr(c, strpos(c, '=') + 1)
              ELSE quote_literal(substr(c, strpos(c, '=') + 1)) END)
  FROM pg_db_role_setting s, unnest(s.setconfig) AS c
  WHERE s.setdatabase = :old_oid \gexec
-- Grants: an explicit ACL replaces the defaults.
SELECT datacl IS NOT NULL AS has_acl FROM pg_database WHERE oid = :old_oid \gset
\if :has_acl
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SELECT format('REVOKE ALL ON DATABASE %I FROM %I', :'db', pg_get_userbyid(datdba))
  FROM pg_database WHERE oid = :old_oid \gexec
SELECT format('GRANT %s ON DATABASE %I TO %s%s', a.privilege_type, :'db',
         CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
         CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = :old_oid \gexec
\endif
SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', :'db', datconnlimit)
  FROM pg_database WHERE oid = :old_oid AND datconnlimit <> -1 \gexec
SELECT format('COMMENT ON DATABASE %I IS %L', :'db', shobj_description(:old_oid, 'pg_database'))
  WHERE shobj_description(:old_oid, 'pg_database') IS NOT NULL \gexec
COMMIT;
"#;

/// The staging database: like the target (owner, encoding, locale), empty; a leftover of
/// the same name dropped first.
/// Run first by every psql that creates or drops a database of backplan's own: a lock on the
/// name `:locked`, held until psql's session ends. A run killed while its psql was creating
/// the staging database leaves that `CREATE DATABASE` running on the server; the next run's
/// `DROP DATABASE IF EXISTS` would find nothing yet, and its own `CREATE` then fail on the
/// name the orphan commits (seen in `crash::postgres_safety_taken`). With the lock, the next
/// run waits for the orphan's session to end, then drops what it made.
const LOCK_NAME: &str = r#"
SET lock_timeout = '10min';
SELECT pg_advisory_lock(hashtext('backplan database ' || :'locked')) IS NULL AS unused \gset
RESET lock_timeout;
"#;

const CREATE_STAGING: &str = r#"
DROP DATABASE IF EXISTS :"staging" WITH (FORCE);
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L',
         :'staging', pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype)
  FROM pg_database WHERE datname = :'db' \gexec
-- pg_restore's writes start going to disk as they are made (a hint to the kernel, nothing
-- less durable): the checkpoint DROP DATABASE forces after the swap has little left to
-- flush. The swap resets it. A server that refuses it restores without it.
\set ON_ERROR_STOP off
ALTER DATABASE :"staging" SET backend_flush_after = '2MB';
\set ON_ERROR_STOP on
"#;

impl Target for PgTarget {
    fn describe(&self) -> String {
        self.conn.describe()
    }

    fn check_apart_from(&self, _protected: &[(String, std::path::PathBuf)]) -> Result<(), String> {
        // What is protected are paths on this host; a database is none of them. Two
        // instances on the same URL are refused by validation (`shared-source`).
        Ok(())
    }

    fn check_backup(&self, versions: &BTreeMap<String, String>) -> Result<(), String> {
        // A backup of an older version (or with no versions recorded) has none to refuse by.
        let Some(recorded) = versions.get(SERVER_VERSION) else {
            return Ok(());
        };
        let source = recorded.parse::<u32>().map_err(|_| {
            format!(
                "the backup records an unreadable server version `{recorded}`; nothing was restored"
            )
        })? / 10000;
        // The server's version as `open_target` read it, a moment ago.
        let here = self.server / 10000;
        if source > here {
            return Err(format!(
                "the backup was dumped from a PostgreSQL {source} server and {} runs PostgreSQL {here}; pg_restore cannot restore into an older server, so nothing was done. Restore into a sandbox on PostgreSQL {source} or later",
                self.describe()
            ));
        }
        Ok(())
    }

    fn stage(&self, restore_key: &str) -> Result<RestoreInto, String> {
        let staging = self.staging(restore_key);
        let vars = [("db", self.conn.db.as_str()), ("staging", staging.as_str())];
        // A leftover of an earlier try has this restore's own name: dropped first, in the
        // same psql.
        self.conn
            .psql_holding(&staging, &vars, CREATE_STAGING)
            .map_err(|e| format!("creating the staging database \"{staging}\": {e}"))?;
        crate::failpoint!("postgres.staging-created");
        let mut child = Command::new(self.conn.tool("pg_restore"))
            .args(["--no-owner", "--no-acl", "--exit-on-error", "--no-password"])
            .arg(format!("--role={}", self.owner))
            .arg(format!("--dbname={}", self.conn.url_for(&staging)))
            .envs(self.conn.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tool_missing("pg_restore", &e))?;
        let stdin = child.stdin.take().expect("piped");
        crate::pipe::widen(&stdin);
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                s
            })
        });
        *self.restorer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Restorer { child, stderr });
        Ok(RestoreInto::Stream {
            name: DUMP_NAME.to_string(),
            sink: Box::new(RestoreSink {
                stdin,
                restorer: self.restorer.clone(),
            }),
        })
    }

    fn prepare(&self, _restore_key: &str) -> Result<(), String> {
        match take(&self.restorer) {
            Some(r) => r.finish(),
            None => Err("pg_restore had already stopped".to_string()),
        }
    }

    fn commit(&self, restore_key: &str) -> Result<(), String> {
        let staging = self.staging(restore_key);
        let old = self.old(restore_key);
        let vars = [
            ("db", self.conn.db.as_str()),
            ("staging", staging.as_str()),
            ("old", old.as_str()),
        ];
        // A client that reconnects between the end of its session and the rename makes the
        // rename fail (and the transaction undo everything): try again.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.conn.psql(MAINTENANCE_DB, &vars, SWAP) {
                Ok(_) => {
                    crate::failpoint!("postgres.swapped-old-kept");
                    return Ok(());
                }
                Err(e) if tries < 3 && e.contains("is being accessed by other users") => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(format!(
                        "swapping the restored database into place ({}): {e}",
                        self.conn.describe()
                    ));
                }
            }
        }
    }

    fn finish(&self, restore_key: &str) -> Result<(), String> {
        let old = self.old(restore_key);
        self.conn.drop_db(&old).map_err(|e| {
            format!("the old database was kept as \"{old}\" (dropping it failed: {e})")
        })
    }

    /// The staging database is another database: `pg_restore` into it runs while `pg_dump`
    /// takes the pre-restore backup of the target (two server sessions, two processes).
    fn alongside_safety_backup(&self) -> Option<&(dyn Target + Sync)> {
        Some(self)
    }

    fn discard(&self, restore_key: &str) {
        if let Some(r) = take(&self.restorer) {
            r.kill();
        }
        let staging = self.staging(restore_key);
        if let Err(e) = self.conn.drop_db(&staging) {
            tracing::warn!("the staging database \"{staging}\" could not be dropped: {e}");
        }
    }
}

/// A restore drill's check: `pg_restore --list` reads the restored dump's table of contents
/// (no server is involved: nothing is restored into a database).
fn drill_list(source: &Source, dump: &std::path::Path) -> Result<String, String> {
    let Source::Postgres { bin_dir, .. } = source else {
        return Err(format!(
            "{} is not a postgres instance's source",
            source.describe()
        ));
    };
    let tool = match bin_dir {
        Some(dir) => dir.join("pg_restore").to_string_lossy().into_owned(),
        None => "pg_restore".to_string(),
    };
    let out = Command::new(&tool)
        .arg("--list")
        .arg(dump)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| tool_missing(&tool, &e))?;
    if !out.status.success() {
        return Err(format!(
            "pg_restore --list refused the restored dump ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let entries = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .count();
    Ok(format!("pg_restore --list read {entries} entries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn_to(url: &str) -> Conn {
        Conn::of(&Source::Postgres {
            url: url.into(),
            password_file: None,
            bin_dir: None,
        })
        .unwrap()
    }

    #[test]
    fn versions_read_for_a_backup_are_used_once_and_only_for_their_database() {
        let a = conn_to("postgres://u@h:5432/versions_a");
        let b = conn_to("postgres://u@h:5432/versions_b");
        remember_versions(&a, 150018, "pg_dump (PostgreSQL) 15.18".into());
        assert_eq!(recent_versions(&b), None, "another database's versions");
        remember_versions(&a, 150018, "pg_dump (PostgreSQL) 15.18".into());
        let got = recent_versions(&a).unwrap();
        assert_eq!(got[SERVER_VERSION], "150018");
        assert_eq!(got["pg_dump"], "pg_dump (PostgreSQL) 15.18");
        assert_eq!(recent_versions(&a), None, "taken once");
        remember_versions(&a, 150018, "pg_dump (PostgreSQL) 15.18".into());
        if let Some((_, at, _)) = LAST_VERSIONS.lock().unwrap().as_mut() {
            *at = at.checked_sub(VERSIONS_FRESH).unwrap();
        }
        assert_eq!(recent_versions(&a), None, "too old");
    }

    #[test]
    fn urls_name_their_database_and_keep_the_rest() {
        let (base, db, query) =
            split_url("postgres://app@db.example:5433/My%20Db?sslmode=require").unwrap();
        assert_eq!(base, "postgres://app@db.example:5433");
        assert_eq!(db, "My Db");
        assert_eq!(query, "?sslmode=require");
        let c = Conn {
            base,
            query,
            db,
            password: Some("secret".into()),
            bin_dir: None,
        };
        assert_eq!(
            c.url_for("x y\"z"),
            "postgres://app@db.example:5433/x%20y%22z?sslmode=require"
        );
        assert!(!format!("{c:?}").contains("secret"));
        assert!(split_url("postgresql://h/").is_err());
        assert!(split_url("postgresql://h").is_err());
        assert_eq!(split_url("postgresql://h/d").unwrap().1, "d");
    }

    #[test]
    fn the_password_is_in_the_dump_s_environment_only() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("pw");
        std::fs::write(&file, "\u{feff} s3cret \n").unwrap();
        let source = Source::Postgres {
            url: "postgres://app@localhost/shop".into(),
            password_file: Some(file),
            bin_dir: None,
        };
        let conn = Conn::of(&source).unwrap();
        assert!(conn.env().contains(&("PGPASSWORD".into(), "s3cret".into())));
        let dump = StreamSource {
            argv: vec![
                "pg_dump".into(),
                format!("--dbname={}", conn.url_for(&conn.db)),
            ],
            env: conn.env(),
            name: DUMP_NAME.into(),
        };
        assert!(!dump.argv.concat().contains("s3cret"));
        let shown = format!("{dump:?} {conn:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("PGPASSWORD=***"), "{shown}");
    }

    #[test]
    fn tool_versions_are_read() {
        assert_eq!(
            parse_tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_tool_major("pg_restore (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_tool_major("nonsense"), None);
    }

    #[test]
    fn side_names_fit_and_are_recognised() {
        let s = side_name("app", "restore", "refresh");
        assert!(s.starts_with("app__backplan_restore_"), "{s}");
        assert!(is_side_name("app", &s));
        assert!(is_side_name("app", &side_name("app", "old", "k")));
        assert!(!is_side_name("app", "app"));
        assert!(!is_side_name("app", "app__backplan_restore_"));
        assert!(!is_side_name("ap", &s));
        let long = "é".repeat(31); // 62 bytes
        let s = side_name(&long, "restore", "k");
        assert!(s.len() <= MAX_NAME, "{}", s.len());
        assert!(is_side_name(&long, &s));
        assert!(!is_side_name(&"é".repeat(30), &s));
    }
}
