//! Shared helpers: run the real binary, copy fixtures to a scratch folder, seed the state
//! store, and filter run-specific paths out of output before it is snapshotted.

use std::path::{Path, PathBuf};
use std::process::Command;

use backplan::records::Recorded;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What one run of the binary printed.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout, stderr and the exit status in one text, for snapshots.
    pub fn transcript(&self) -> String {
        let mut s = format!("exit: {}\n", self.code);
        if !self.stdout.is_empty() {
            s += &format!("--- stdout\n{}", self.stdout);
        }
        if !self.stderr.is_empty() {
            s += &format!("--- stderr\n{}", self.stderr);
        }
        s
    }
}

/// Runs `backplan ARGS` in `dir`, replacing `dir` in the output with `[DIR]`.
pub fn backplan(dir: &Path, args: &[&str]) -> Run {
    backplan_with_env(dir, args, &[])
}

/// `backplan` with `env` set (`BACKPLAN_CONFIG`, `COLUMNS` and `RUST_LOG` unset unless given).
pub fn backplan_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(args)
        .current_dir(dir)
        .env_remove("BACKPLAN_CONFIG")
        .env_remove("COLUMNS")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let real = dir.canonicalize().unwrap();
    let filter = |b: Vec<u8>| {
        String::from_utf8(b)
            .expect("output is UTF-8")
            .replace(&real.display().to_string(), "[DIR]")
            .replace(&dir.display().to_string(), "[DIR]")
    };
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: filter(out.stdout),
        stderr: filter(out.stderr),
    }
}

/// Copies a fixture folder (flat) into a new scratch folder.
pub fn scratch_copy(fixture: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            let to = tmp.path().join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            // Repository keys are private, as backplan expects (git keeps no such mode).
            if to.extension().is_some_and(|x| x == "key") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
    tmp
}

/// Writes recorded state into the store in `state_dir`, as `apply` would have left it.
pub fn seed_state(state_dir: &Path, rec: &Recorded) {
    let store = backplan::state::Store::open(state_dir).expect("state store opens");
    store.put_all(rec).expect("state is written");
}

/// The fixture folders under `tests/fixtures/<kind>`, sorted.
pub fn fixture_dirs(kind: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// A scratch copy of `examples/quickstart`.
pub fn quickstart_copy() -> tempfile::TempDir {
    scratch_copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart"))
}

/// Appends TOML to the configuration file in `dir`.
pub fn append_config(dir: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("backplan.toml"))
        .unwrap();
    writeln!(f, "\n{text}").unwrap();
}

/// `backplan backups --json` of the config in `dir`.
pub fn backups_json(dir: &Path) -> Vec<serde_json::Value> {
    let run = backplan(dir, &["backups", "-c", "backplan.toml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["backups"]
        .as_array()
        .unwrap()
        .clone()
}

/// The real restic on the quickstart's local repository in `dir` (no cache).
pub fn quickstart_restic(dir: &Path) -> Command {
    let mut c = Command::new("restic");
    c.arg("-r")
        .arg(dir.join("state/repository"))
        .arg("--password-file")
        .arg(dir.join("state/keys/local.key"))
        .arg("--no-cache");
    c
}

/// The snapshots of the quickstart's local repository in `dir`, as the real restic lists them.
pub fn restic_snapshots(dir: &Path) -> Vec<serde_json::Value> {
    let out = quickstart_restic(dir)
        .args(["snapshots", "--json"])
        .output()
        .expect("restic is installed (Debian package `restic`)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `backplan apply --auto-approve` of the config in `dir`.
pub fn apply(dir: &Path) -> Run {
    backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"])
}

/// Runs backplan as nobody: `backplan ARGS` in `dir` as a user who cannot read what is mode
/// 000. As root (who reads everything) that is `nobody` through setpriv, with `dir` handed
/// over to it and its parent made passable; otherwise the current user.
pub fn as_nobody(dir: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let ok = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if let Some(parent) = dir.parent()
            && let Ok(m) = std::fs::metadata(parent)
        {
            let mode = m.permissions().mode() | 0o001;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode)).ok();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_backplan"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_backplan"))
    };
    cmd.args(args).current_dir(dir).output().unwrap()
}

/// The recorded backup with the key `key` (`backplan backups --json`).
pub fn backup_by_key(dir: &Path, key: &str) -> serde_json::Value {
    backups_json(dir)
        .into_iter()
        .find(|b| b["key"] == key)
        .unwrap_or_else(|| panic!("no backup {key}"))
}

/// The id of the recorded backup with the key `key`.
pub fn backup_id(dir: &Path, key: &str) -> String {
    backup_by_key(dir, key)["id"].as_str().unwrap().to_string()
}

/// Moves a failed backup's last try back in time, as if its retry's back-off had passed.
pub fn retry_due(dir: &Path, id: &str) {
    let store = backplan::state::Store::open(&dir.join("state")).unwrap();
    let mut b = store
        .get_backup(id.parse().unwrap())
        .unwrap()
        .expect("recorded");
    b.failed_at = Some(chrono::Utc::now() - chrono::Duration::hours(2));
    store.put_backup(&b).unwrap();
}

/// The data packs of the local repository of the quickstart in `dir`, largest last.
pub fn packs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut packs = Vec::new();
    for sub in std::fs::read_dir(dir.join("state/repository/data")).unwrap() {
        for p in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            packs.push((std::fs::metadata(&p).unwrap().len(), p));
        }
    }
    packs.sort();
    packs
}

/// Flips 64 bytes in the middle of the largest pack of the local repository in `dir`;
/// returns its size and path.
pub fn damage_largest_pack(dir: &Path) -> (u64, PathBuf) {
    let (len, pack) = packs(dir).pop().expect("a data pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in &mut bytes[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    std::fs::write(&pack, bytes).unwrap();
    (len, pack)
}

/// The real `restic` on an engine's repository, run to the end (`stdin`: a file fed to it):
/// its standard output; a failure fails the test.
pub fn restic_on(repo: &backplan::engine::Repo, args: &[&str], stdin: Option<&Path>) -> String {
    let mut c = Command::new("restic");
    c.arg("-r")
        .arg(&repo.path)
        .arg("--password-file")
        .arg(&repo.password_file)
        .args(["--no-cache", "-q"])
        .args(args);
    if let Some(p) = stdin {
        c.stdin(std::fs::File::open(p).unwrap());
    }
    let out = c
        .output()
        .expect("restic is installed (Debian package `restic`)");
    assert!(
        out.status.success(),
        "restic {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
