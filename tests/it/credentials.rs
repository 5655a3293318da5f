//! `*_file` secrets under systemd: `$CREDENTIALS_DIRECTORY/<name>` (LoadCredential=) is
//! expanded when the file is read; without the variable the value is refused where it stands.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use crate::storage::write_secret;

/// `backplan ARGS` in `dir` with `CREDENTIALS_DIRECTORY` set to `creds`, or unset.
fn run(dir: &Path, args: &[&str], creds: Option<&Path>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backplan"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("BACKPLAN_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(c) = creds {
        cmd.env("CREDENTIALS_DIRECTORY", c);
    }
    let out = cmd.output().unwrap();
    let real = dir.canonicalize().unwrap().display().to_string();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap().replace(&real, "[DIR]");
    Run {
        code: out.status.code().unwrap(),
        stdout: text(out.stdout),
        stderr: text(out.stderr),
    }
}

#[test]
fn a_password_file_in_the_credentials_directory_is_used_and_refused_without_it() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "a\n").unwrap();
    let creds = dir.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    write_secret(&creds.join("disk.key"), "from the credentials folder\n");
    append_config(
        dir,
        "[storage.disk]\nkind = \"local\"\npath = \"disk\"\npassword_file = \"$CREDENTIALS_DIRECTORY/disk.key\"\n\n[instances.contoso.backups.k]\nlabel = \"Keyed by systemd\"\nstorage = \"disk\"",
    );

    // Unset: refused with its place in the file, the rule and the fix.
    let refused = run(dir, &["validate", "-c", "backplan.toml"], None);
    assert_eq!(refused.code, 1, "{}", refused.transcript());
    let line = std::fs::read_to_string(dir.join("backplan.toml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("$CREDENTIALS_DIRECTORY"))
        .unwrap()
        + 1;
    assert!(
        refused.stderr.contains(&format!("backplan.toml:{line}:17")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("credentials-directory"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("LoadCredential="),
        "{}",
        refused.stderr
    );
    let plan = run(dir, &["plan", "-c", "backplan.toml"], None);
    assert_eq!(plan.code, 1, "{}", plan.transcript());

    // Set: the key is read from there; the repository opens with it, as restic's would.
    let ok = run(dir, &["validate", "-c", "backplan.toml"], Some(&creds));
    assert_eq!(ok.code, 0, "{}", ok.transcript());
    let applied = run(
        dir,
        &["apply", "-c", "backplan.toml", "--auto-approve"],
        Some(&creds),
    );
    assert_eq!(applied.code, 0, "{}", applied.transcript());
    let restic = Command::new("restic")
        .arg("-r")
        .arg(dir.join("disk"))
        .arg("--password-file")
        .arg(creds.join("disk.key"))
        .args(["--no-cache", "snapshots", "--json"])
        .output()
        .unwrap();
    assert!(
        restic.status.success(),
        "{}",
        String::from_utf8_lossy(&restic.stderr)
    );
    let snaps: Vec<serde_json::Value> = serde_json::from_slice(&restic.stdout).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");

    // Another variable, or a path out of the folder, is refused even with it set.
    for bad in ["$HOME/disk.key", "$CREDENTIALS_DIRECTORY/../disk.key"] {
        let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
        let changed = text.replace("$CREDENTIALS_DIRECTORY/disk.key", bad);
        std::fs::write(dir.join("bad.toml"), changed).unwrap();
        let r = run(dir, &["validate", "-c", "bad.toml"], Some(&creds));
        assert_eq!(r.code, 1, "{bad}: {}", r.transcript());
        assert!(r.stderr.contains("credentials-directory"), "{}", r.stderr);
    }
}
