//! restic's repository locks, with the real `restic` in both directions, on the local
//! repository and on an S3 bucket (moto): backplan does not touch a repository restic holds
//! exclusively (it waits within its bound, then fails naming the holder), restic reports the
//! lock of a backplan that prunes, a killed backplan's lock is removed as stale by the next
//! run, and restic's non-exclusive lock does not block a backup.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::storage::{create_bucket, emulator, unique, write_secret};

/// Where a test's repository is, as restic addresses it, and how backplan's file names it.
struct Target {
    /// The folder of the quickstart copy.
    tmp: tempfile::TempDir,
    /// `-r` for restic.
    repo: String,
    password_file: PathBuf,
    env: Vec<(&'static str, String)>,
    /// The storage the file's backups name (`""` for the local one).
    storage: &'static str,
}

impl Target {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn restic(&self, args: &[&str]) -> Command {
        let mut c = Command::new("restic");
        c.arg("-r")
            .arg(&self.repo)
            .arg("--password-file")
            .arg(&self.password_file)
            .arg("--no-cache")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs restic to the end: (success, stdout, stderr).
    fn run_restic(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .restic(args)
            .stdin(Stdio::null())
            .output()
            .expect("restic is installed (Debian package `restic`)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The ids of the lock files, as restic lists them (without a lock of its own).
    fn locks(&self) -> Vec<String> {
        let (ok, out, err) = self.run_restic(&["list", "locks", "--no-lock"]);
        assert!(ok, "{err}");
        out.lines().map(str::to_string).collect()
    }

    /// A lock as restic reads it.
    fn lock(&self, id: &str) -> serde_json::Value {
        let (ok, out, err) = self.run_restic(&["cat", "lock", id, "--no-lock"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// The same, for a lock that may go while it is read (restic then retries for a while
    /// and fails): `None` then. Polling with `restic list` first avoids most of those.
    fn lock_if_there(&self, id: &str) -> Option<serde_json::Value> {
        let (ok, out, _) = self.run_restic(&["cat", "lock", id, "--no-lock"]);
        ok.then(|| serde_json::from_str(&out).unwrap())
    }

    /// Everything in the repository but its locks: snapshots, index and pack files.
    fn contents(&self) -> Vec<String> {
        let mut all = Vec::new();
        for t in ["snapshots", "index", "packs", "keys"] {
            let (ok, out, err) = self.run_restic(&["list", t, "--no-lock"]);
            assert!(ok, "{err}");
            all.extend(out.lines().map(|l| format!("{t}/{l}")));
        }
        all.sort();
        all
    }

    /// Waits until restic lists a lock of `pid` (held: listed twice a second apart); returns
    /// its id. With `exclusive`, only a lock of that kind (a run's other locks may come first
    /// and last a while under load).
    fn wait_for_lock_of(&self, pid: u32, exclusive: Option<bool>) -> String {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let now = self.locks();
            for id in now.iter().filter(|id| seen.contains(*id)) {
                if self.lock_if_there(id).is_some_and(|l| {
                    l["pid"] == pid && exclusive.is_none_or(|e| l["exclusive"] == e)
                }) {
                    return id.clone();
                }
            }
            seen = now;
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no lock of pid {pid} appeared"
            );
            std::thread::sleep(Duration::from_millis(1000));
        }
    }

    fn apply(&self, env: &[(&str, &str)]) -> Run {
        backplan_with_env(
            self.dir(),
            &["apply", "-c", "backplan.toml", "--auto-approve"],
            env,
        )
    }

    /// Declares a new on-demand backup of contoso on this target's storage.
    fn declare(&self, key: &str, extra: &str) {
        let storage = match self.storage {
            "" => String::new(),
            s => format!("storage = \"{s}\"\n"),
        };
        append_config(
            self.dir(),
            &format!("[instances.contoso.backups.{key}]\nlabel = \"{key}\"\n{storage}{extra}"),
        );
    }

    fn status_of(&self, key: &str) -> Vec<String> {
        backups_json(self.dir())
            .iter()
            .filter(|b| b["key"] == key)
            .map(|b| b["status"].as_str().unwrap().to_string())
            .collect()
    }

    fn check_read_data(&self) {
        let (ok, out, err) = self.run_restic(&["check", "--read-data"]);
        assert!(ok, "restic check: {out}{err}");
    }
}

/// The quickstart with a filled contoso and its local repository, after a first apply.
fn local() -> Target {
    local_with_retention("3d")
}

/// The same with the schedule's `retention` (that of the quickstart's own backup).
fn local_with_retention(retention: &str) -> Target {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let file = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "retention = \"3d\"",
            &format!("retention = \"{retention}\""),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    crate::trees::rich_tree(&dir.join("data/contoso"));
    let t = Target {
        repo: dir.join("state/repository").display().to_string(),
        password_file: dir.join("state/keys/local.key"),
        tmp,
        env: Vec::new(),
        storage: "",
    };
    let run = t.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    t
}

/// The same with the storage `archive` in a new moto bucket, holding a first backup.
fn s3() -> Option<Target> {
    s3_with("")
}

/// The same with more settings of the storage (`retention = "1s"`).
fn s3_with(settings: &str) -> Option<Target> {
    let endpoint = emulator("s3", "BACKPLAN_TEST_S3")?;
    let bucket = unique("locks");
    create_bucket(&endpoint, &bucket);
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    crate::trees::rich_tree(&dir.join("data/contoso"));
    write_secret(&dir.join("archive.key"), "archive repository password\n");
    write_secret(&dir.join("s3.secret"), "testing-secret\n");
    append_config(
        dir,
        &format!(
            "[storage.archive]\nkind = \"s3\"\nbucket = \"{bucket}\"\npath = \"repo\"\nregion = \"us-east-1\"\nendpoint = \"{endpoint}\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"s3.secret\"\npassword_file = \"archive.key\"\n{settings}"
        ),
    );
    let t = Target {
        repo: format!("s3:{endpoint}/{bucket}/repo"),
        password_file: dir.join("archive.key"),
        tmp,
        env: vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ],
        storage: "archive",
    };
    t.declare("first", "");
    let run = t.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(t.status_of("first"), ["completed"]);
    Some(t)
}

/// A restic process holding a lock until its standard input closes.
struct Holder {
    child: Child,
}

impl Holder {
    /// `restic key passwd` takes restic's exclusive lock, then waits for the new password on
    /// its standard input.
    fn exclusive(t: &Target) -> Holder {
        Self::start(t, &["key", "passwd"])
    }

    /// `restic backup --stdin` takes restic's non-exclusive lock, then reads what it stores.
    fn shared(t: &Target) -> Holder {
        Self::start(
            t,
            &["backup", "--stdin", "--stdin-filename", "from-restic.txt"],
        )
    }

    fn start(t: &Target, args: &[&str]) -> Holder {
        let child = t
            .restic(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restic is installed");
        let pid = child.id();
        let holder = Holder { child };
        t.wait_for_lock_of(pid, None);
        holder
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its standard input (after writing `text`) and waits for it to end.
    fn release(mut self, text: &str) {
        let mut stdin = self.child.stdin.take().unwrap();
        let _ = stdin.write_all(text.as_bytes());
        drop(stdin);
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (a) While restic holds an exclusive lock, backplan writes nothing and fails after its wait,
/// naming the holder; when restic lets go within the wait, backplan goes on.
fn restic_exclusive_lock_stops_backplan(t: &Target) {
    let before = t.contents();
    let holder = Holder::exclusive(t);
    let pid = holder.pid();
    t.declare("second", "");
    let start = Instant::now();
    let run = t.apply(&[("BACKPLAN_LOCK_WAIT", "2")]);
    let took = start.elapsed();
    assert_ne!(run.code, 0, "{}", run.transcript());
    let text = run.transcript();
    assert!(
        text.contains("locked by an exclusive lock of") && text.contains(&format!("(pid {pid})")),
        "{text}"
    );
    assert!(text.contains("waited 2s"), "{text}");
    assert!(took >= Duration::from_secs(2), "it waited: {took:?}");
    assert_eq!(t.status_of("second"), ["failed"]);
    // Only restic's lock: backplan left nothing, not even a lock of its own.
    assert_eq!(
        t.contents(),
        before,
        "backplan wrote to a locked repository"
    );
    assert_eq!(t.locks().len(), 1);

    // restic lets go while backplan waits: the backup goes through.
    t.declare("third", "");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        holder.release("");
    });
    let start = Instant::now();
    let run = t.apply(&[("BACKPLAN_LOCK_WAIT", "60")]);
    releaser.join().unwrap();
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(t.status_of("third"), ["completed"]);
    assert_eq!(
        t.locks(),
        Vec::<String>::new(),
        "backplan released its lock"
    );
    t.check_read_data();
}

/// (b) and (c): while backplan expires a backup (forget and prune, held there by the test
/// hook), `restic backup` reports backplan's exclusive lock; backplan killed there leaves it,
/// restic lists and reads it, and the next run of backplan removes it as its own and stale.
fn backplan_prune_lock_is_seen_by_restic_and_a_killed_ones_removed(t: &Target, expiring: &str) {
    let dir = t.dir();
    let old: Vec<String> = backups_json(dir)
        .iter()
        .filter(|b| b["key"] == expiring)
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(old.len(), 1);
    assert!(
        t.run_restic(&["snapshots", "--json"])
            .1
            .contains(&format!("backup={}", old[0]))
    );
    t.declare("newer", "");
    std::thread::sleep(Duration::from_millis(1100));
    let log = std::fs::File::create(dir.join("held.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env_remove("BACKPLAN_CONFIG")
        .env("BACKPLAN_TEST_LOCK_HOLD", "exclusive:120")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let id = t.wait_for_lock_of(child.id(), Some(true));
    let lock = t.lock(&id);
    assert_eq!(lock["exclusive"], true, "{lock}");
    assert!(
        lock["time"].is_string() && lock["hostname"].is_string(),
        "{lock}"
    );
    assert!(lock["username"].is_string(), "{lock}");

    let probe = dir.join("probe.txt");
    std::fs::write(&probe, "from restic\n").unwrap();
    let (ok, _, err) = t.run_restic(&["backup", probe.to_str().unwrap()]);
    assert!(!ok, "restic backed up while backplan pruned");
    assert!(
        err.contains(&format!(
            "repository is already locked exclusively by PID {}",
            child.id()
        )),
        "{err}"
    );

    // Killed while holding it: the lock stays, and restic still honours it.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(t.locks(), vec![id.clone()]);
    let (ok, _, _) = t.run_restic(&["backup", probe.to_str().unwrap()]);
    assert!(!ok, "restic ignores the lock");

    // The next run sees its own host and a dead pid: stale, removed; the expiry goes through.
    let run = t.apply(&[("BACKPLAN_LOCK_WAIT", "0")]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stderr
            .contains(&format!("removing the stale lock locks/{id}")),
        "{}",
        run.transcript()
    );
    assert_eq!(t.status_of("newer"), ["completed"]);
    // Expired records are tombstones, which `backups` does not list.
    assert!(
        t.status_of(expiring).iter().all(|s| s == "expired"),
        "{:?}",
        t.status_of(expiring)
    );
    let (_, snapshots, _) = t.run_restic(&["snapshots", "--json"]);
    assert!(
        !snapshots.contains(&format!("backup={}", old[0])),
        "not expired: {snapshots}"
    );
    assert_eq!(t.locks(), Vec::<String>::new());
    let (ok, _, err) = t.run_restic(&["backup", probe.to_str().unwrap()]);
    assert!(ok, "{err}");
    t.check_read_data();
}

/// (d) restic's non-exclusive lock (a backup under way) does not stop a backplan backup.
fn restic_shared_lock_does_not_block_a_backup(t: &Target) {
    let holder = Holder::shared(t);
    t.declare("beside", "");
    let start = Instant::now();
    let run = t.apply(&[("BACKPLAN_LOCK_WAIT", "0")]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(t.status_of("beside"), ["completed"]);
    // Only restic's lock is left; then restic finishes its backup.
    assert_eq!(t.locks().len(), 1);
    holder.release("written by restic while backplan backed up\n");
    assert_eq!(t.locks(), Vec::<String>::new());
    let (ok, out, err) = t.run_restic(&["snapshots", "--json"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("from-restic.txt") || out.contains("\"paths\""),
        "{out}"
    );
    t.check_read_data();
}

#[test]
fn local_exclusive_restic_lock_stops_backplan() {
    restic_exclusive_lock_stops_backplan(&local());
}

#[test]
fn s3_exclusive_restic_lock_stops_backplan() {
    if let Some(t) = s3() {
        restic_exclusive_lock_stops_backplan(&t);
    }
}

#[test]
fn local_prune_lock_is_seen_by_restic_and_removed_after_a_kill() {
    // The quickstart's backup expires a second after it was taken.
    let t = local_with_retention("1s");
    backplan_prune_lock_is_seen_by_restic_and_a_killed_ones_removed(&t, "before-import");
    // restic's own `unlock` removes a killed backplan's lock too (this host, pid gone).
    t.declare("last", "");
    let mut child = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(t.dir())
        .env("BACKPLAN_TEST_LOCK_HOLD", "shared:120")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = t.wait_for_lock_of(child.id(), None);
    assert_eq!(t.lock(&id)["exclusive"], false);
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, out, err) = t.run_restic(&["unlock"]);
    assert!(ok, "{out}{err}");
    assert_eq!(t.locks(), Vec::<String>::new(), "{out}{err}");
}

#[test]
fn s3_prune_lock_is_seen_by_restic_and_removed_after_a_kill() {
    // `first` expires a second after it was taken.
    let Some(t) = s3_with("retention = \"1s\"") else {
        return;
    };
    backplan_prune_lock_is_seen_by_restic_and_a_killed_ones_removed(&t, "first");
}

#[test]
fn local_shared_restic_lock_does_not_block_a_backup() {
    restic_shared_lock_does_not_block_a_backup(&local());
}

#[test]
fn s3_shared_restic_lock_does_not_block_a_backup() {
    if let Some(t) = s3() {
        restic_shared_lock_does_not_block_a_backup(&t);
    }
}

/// A label edit while restic holds the repository exclusively: the edit is recorded (what
/// `show` reports) and `show` says the snapshot's tags are pending; the rewrite fails after
/// the wait, naming the holder, and writes nothing. Once restic lets go, the next run rewrites
/// the tags (one snapshot of the backup, the new label) and `show` no longer says pending.
#[test]
fn a_label_edit_under_a_restic_lock_is_recorded_and_its_tags_follow_once_free() {
    let t = local();
    let dir = t.dir();
    let file = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("Before solution import"));
    std::fs::write(
        &file,
        text.replace("Before solution import", "Edited while locked"),
    )
    .unwrap();
    let before = t.contents();
    let holder = Holder::exclusive(&t);
    let run = t.apply(&[("BACKPLAN_LOCK_WAIT", "1")]);
    assert_ne!(run.code, 0, "{}", run.transcript());
    let text = run.transcript();
    assert!(text.contains("label and notes updated"), "{text}");
    assert!(
        text.contains("the snapshot's tags could not be rewritten yet")
            && text.contains("locked by an exclusive lock of"),
        "{text}"
    );
    assert_eq!(
        t.contents(),
        before,
        "backplan wrote to a locked repository"
    );
    let recorded = backups_json(dir);
    let b = recorded
        .iter()
        .find(|b| b["key"] == "before-import")
        .unwrap();
    assert_eq!(b["label"], "Edited while locked");
    let show = backplan(
        dir,
        &["show", "-c", "backplan.toml", "contoso/before-import"],
    );
    let pending = |out: &str| {
        out.lines()
            .any(|l| l.trim_start().starts_with("snapshot tags") && l.contains("pending"))
    };
    assert!(pending(&show.stdout), "{}", show.transcript());

    holder.release("");
    let run = t.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let snaps = restic_snapshots(dir);
    let edited: Vec<_> = snaps
        .iter()
        .filter(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "key=before-import")
        })
        .collect();
    assert_eq!(edited.len(), 1, "{snaps:#?}");
    assert!(
        edited[0]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "label=Edited while locked"),
        "{snaps:#?}"
    );
    let recorded = backups_json(dir);
    let b = recorded
        .iter()
        .find(|b| b["key"] == "before-import")
        .unwrap();
    assert_eq!(b["snapshot_id"], edited[0]["id"]);
    let show = backplan(
        dir,
        &["show", "-c", "backplan.toml", "contoso/before-import"],
    );
    assert!(
        show.code == 0 && !pending(&show.stdout),
        "{}",
        show.transcript()
    );
    t.check_read_data();
}

/// The same edit through the daemon: the rewrite that failed under restic's lock is tried again
/// on its own with the back-off, although the retry has nothing else to do (it once planned
/// "nothing to do" and left the tags pending until the next change).
#[test]
fn the_daemon_retries_a_tag_rewrite_that_failed_under_a_lock_with_nothing_else_to_do() {
    let t = local();
    let dir = t.dir();
    let clock = dir.join("clock");
    let set = |at: chrono::DateTime<chrono::Utc>| {
        std::fs::write(dir.join("clock.new"), at.to_rfc3339()).unwrap();
        std::fs::rename(dir.join("clock.new"), &clock).unwrap();
    };
    let start = chrono::Utc::now();
    set(start);
    let d = crate::daemon::Daemon::start(
        dir,
        &["--clock-file", "clock"],
        &[("BACKPLAN_LOCK_WAIT", "1")],
    );
    d.wait_for("the first reconcile", || d.log().contains("nothing to do"));
    let holder = Holder::exclusive(&t);
    let file = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        dir.join("backplan.toml.new"),
        text.replace("Before solution import", "Edited while locked"),
    )
    .unwrap();
    std::fs::rename(dir.join("backplan.toml.new"), &file).unwrap();
    d.wait_for("the failed rewrite, and the try planned", || {
        d.log()
            .contains("the snapshot's tags could not be rewritten yet")
            && backplan(dir, &["status", "-c", "backplan.toml"])
                .stdout
                .contains("(to try again what failed)")
    });
    // restic's own listing (it fails while someone holds the lock: not labelled yet).
    let labelled = || {
        let out = t.restic(&["snapshots", "--json"]).output().unwrap();
        out.status.success()
            && serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
                .unwrap()
                .iter()
                .any(|s| {
                    s["tags"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|t| t == "label=Edited while locked"))
                })
    };
    let show = backplan(
        dir,
        &["show", "-c", "backplan.toml", "contoso/before-import"],
    );
    assert!(
        show.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("snapshot tags") && l.contains("pending")),
        "{}",
        show.transcript()
    );
    holder.release("");
    assert!(!labelled(), "rewritten before the back-off's retry");
    // Past the first back-off (one minute); nothing else changed.
    set(start + chrono::Duration::seconds(90));
    d.wait_for("the tags rewritten on the retry", labelled);
    assert!(d.log().contains("snapshot tags rewritten"), "{}", d.log());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

/// restic's exclusive lock lands inside backplan's 200 ms settle: after backplan's own lock
/// landed and its read-only work started, before its second look (the test hook holds
/// backplan there while the test puts back a lock that the real `restic` took earlier and the
/// test had moved aside). backplan writes no pack, index or snapshot: it fails naming restic
/// after its wait, or, when restic lets go within the wait, runs the backup again and
/// completes; `restic check --read-data` stays clean.
#[test]
fn local_restic_lock_in_the_settle_window_stops_every_write() {
    let t = local();
    let dir = t.dir().to_path_buf();
    let locks = dir.join("state/repository/locks");
    let aside = dir.join("restic-lock-aside");
    let landed = dir.join("landed");
    let before = t.contents();
    let holder = Holder::exclusive(&t);
    let pid = holder.pid();
    let id = t.wait_for_lock_of(pid, Some(true));

    // Runs `apply` while restic's lock is aside until backplan's own has landed, then puts
    // it back and lets backplan go on.
    let apply_with_late_lock = |wait: &str, release: Option<Holder>| {
        std::fs::rename(locks.join(&id), &aside).unwrap();
        let _ = std::fs::remove_file(&landed);
        let (d, w, l) = (dir.clone(), wait.to_string(), landed.clone());
        let run = std::thread::spawn(move || {
            backplan_with_env(
                &d,
                &["apply", "-c", "backplan.toml", "--auto-approve"],
                &[
                    ("BACKPLAN_LOCK_WAIT", w.as_str()),
                    ("BACKPLAN_TEST_LOCK_LANDED", l.to_str().unwrap()),
                    ("RUST_LOG", "info"),
                ],
            )
        });
        let start = Instant::now();
        while !landed.exists() {
            assert!(start.elapsed() < Duration::from_secs(60), "no lock landed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // backplan's lock is in place and its read-only work under way: restic's lands.
        assert_eq!(t.locks().len(), 1, "backplan's lock alone");
        std::fs::rename(&aside, locks.join(&id)).unwrap();
        std::fs::write(&landed, "go").unwrap();
        if let Some(holder) = release {
            std::thread::sleep(Duration::from_secs(2));
            holder.release("");
        }
        run.join().unwrap()
    };

    t.declare("second", "");
    let run = apply_with_late_lock("2", None);
    let text = run.transcript();
    assert_ne!(run.code, 0, "{text}");
    assert!(
        text.contains("locked by an exclusive lock of") && text.contains(&format!("(pid {pid})")),
        "{text}"
    );
    assert!(text.contains("nothing was written"), "{text}");
    assert_eq!(t.status_of("second"), ["failed"]);
    assert_eq!(
        t.contents(),
        before,
        "backplan wrote before its second look"
    );
    assert_eq!(t.locks(), std::slice::from_ref(&id), "restic's lock alone");

    // The same, and restic lets go within the wait: the backup is run again and completes.
    t.declare("third", "");
    let run = apply_with_late_lock("60", Some(holder));
    let text = run.transcript();
    assert_eq!(run.code, 0, "{text}");
    assert!(
        text.contains("it starts again once that lock is gone"),
        "{text}"
    );
    assert_eq!(t.status_of("third"), ["completed"]);
    assert_eq!(t.locks(), Vec::<String>::new(), "every lock released");
    t.check_read_data();
}
