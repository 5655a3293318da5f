//! Repository keys: read as stock restic reads a password file, an empty one refused, a
//! repository made with the earlier reading still opened, and private folders and files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use backplan::engine::{Engine, Repo, RusticEngine};

use crate::helpers::*;

fn restic(
    repo: &Path,
    password_file: Option<&Path>,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("restic");
    cmd.arg("-r").arg(repo).args(["--no-cache", "-q"]);
    if let Some(f) = password_file {
        cmd.arg("--password-file").arg(f);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .output()
        .expect("restic is installed (Debian package `restic`)")
}

fn key_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("repo.key");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn stock_restic_and_backplan_read_a_password_file_the_same_way() {
    let tmp = tempfile::tempdir().unwrap();
    // Surrounding spaces and a line end, as an editor or `echo` leaves them.
    let key = key_file(tmp.path(), "  correct horse battery staple \n");
    let engine = RusticEngine::new();

    // backplan makes the repository: restic opens it.
    let ours = Repo {
        path: tmp.path().join("made-by-backplan"),
        password_file: key.clone(),
        remote: None,
    };
    engine.ensure(&ours, false).unwrap();
    let out = restic(&ours.path, Some(&key), &[], &["snapshots"]);
    assert!(
        out.status.success(),
        "restic cannot open what backplan made: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // restic makes one: backplan opens it.
    let theirs = Repo {
        path: tmp.path().join("made-by-restic"),
        password_file: key.clone(),
        remote: None,
    };
    let out = restic(&theirs.path, Some(&key), &[], &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(engine.list(&theirs).unwrap().is_empty());
}

#[test]
fn a_repository_made_with_the_untrimmed_key_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    // backplan read " old key \n" as " old key " before: made the same way here (restic takes
    // an environment password as it is).
    let repo_path = tmp.path().join("repository");
    let out = restic(
        &repo_path,
        None,
        &[("RESTIC_PASSWORD", " old key ")],
        &["init"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = key_file(tmp.path(), " old key \n");
    let repo = Repo {
        path: repo_path,
        password_file: key,
        remote: None,
    };
    let engine = RusticEngine::new();
    engine.ensure(&repo, false).unwrap();
    assert!(
        engine.list(&repo).unwrap().is_empty(),
        "opened with the earlier reading"
    );

    // A wrong key still fails, with the error of the key as read now.
    std::fs::write(&repo.password_file, " other key \n").unwrap();
    let e = RusticEngine::new().list(&repo).unwrap_err();
    assert!(e.to_string().contains("repository"), "{e}");
}

#[test]
fn an_empty_password_file_is_refused() {
    for text in ["", "\n", "  \t\r\n"] {
        let tmp = tempfile::tempdir().unwrap();
        let key = key_file(tmp.path(), text);
        let repo = Repo {
            path: tmp.path().join("repository"),
            password_file: key.clone(),
            remote: None,
        };
        let e = RusticEngine::new().ensure(&repo, true).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(
            msg.contains("empty or holds only whitespace; write the repository password in it"),
            "{text:?}: {msg}"
        );
        assert!(!repo.path.exists(), "{text:?}: no repository was made");
    }
}

#[test]
fn state_and_keys_are_private_and_a_loose_key_is_reported_at_each_start() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::create_dir_all(dir.join("data/contoso-sandbox")).unwrap();
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("state"), 0o700);
    assert_eq!(mode("state/keys"), 0o700);
    assert_eq!(mode("state/keys/local.key"), 0o600);
    assert!(!run.stderr.contains("can be read by"), "{}", run.stderr);

    std::fs::set_permissions(
        dir.join("state/keys/local.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    for _ in 0..2 {
        let run = backplan(dir, &["verify", "-c", "backplan.toml"]);
        assert_eq!(run.code, 0, "{}", run.transcript());
        assert_eq!(
            run.stderr
                .matches("can be read by group or others (mode 644)")
                .count(),
            1,
            "once per run: {}",
            run.stderr
        );
        assert!(run.stderr.contains("run `chmod 600 "), "{}", run.stderr);
    }
    // And at every start of the daemon, with nothing to do.
    let d = crate::daemon::Daemon::start(dir, &[], &[]);
    d.wait_for("the warning at start", || {
        d.log()
            .contains("can be read by group or others (mode 644)")
    });
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn validate_refuses_an_empty_password_file_where_it_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    key_file(dir, " \n");
    std::fs::write(
        dir.join("b.toml"),
        "[storage.local]\npassword_file = \"repo.key\"\n\n[instances.a]\ntype = \"sandbox\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"/srv/a\" }\n",
    )
    .unwrap();
    let run = backplan(dir, &["validate", "-c", "b.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stderr.contains("error[secret-file-empty]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("b.toml:2:17"), "{}", run.stderr);
    key_file(dir, "secret\n");
    let run = backplan(dir, &["validate", "-c", "b.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

/// The master key of a generated key is kept beside it (0600) and used by a later process
/// (proved by moving the repository's password-encrypted key files away: only the master key
/// opens it then), but only while the key file holds the same password; a `password_file`
/// elsewhere is never copied to disk.
#[test]
fn a_generated_keys_master_key_is_kept_beside_it_and_bound_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let key = keys.join("local.key");
    std::fs::write(&key, "9f1c0d2e4b6a8c0e1f3a5b7c9d0e2f4a\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let repo = Repo {
        path: tmp.path().join("repo"),
        password_file: key.clone(),
        remote: None,
    };
    RusticEngine::new()
        .keep_master_keys_of(&keys)
        .ensure(&repo, false)
        .unwrap();
    let kept = keys.join("local.key.master");
    let mode = std::fs::metadata(&kept)
        .expect("kept master key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A later process opens the repository with the kept key alone.
    let hidden = tmp.path().join("hidden-keys");
    std::fs::rename(repo.path.join("keys"), &hidden).unwrap();
    let later = RusticEngine::new().keep_master_keys_of(&keys);
    assert!(later.list(&repo).unwrap().is_empty());
    // Without keeping, the password is needed, and it has no key file to open.
    assert!(RusticEngine::new().list(&repo).is_err());

    // Another password in the key file: the kept key is not used (so a wrong key file is
    // never masked by it).
    std::fs::write(&key, "another password\n").unwrap();
    assert!(
        RusticEngine::new()
            .keep_master_keys_of(&keys)
            .list(&repo)
            .is_err()
    );
    std::fs::rename(&hidden, repo.path.join("keys")).unwrap();
    std::fs::write(&key, "9f1c0d2e4b6a8c0e1f3a5b7c9d0e2f4a\n").unwrap();

    // A key file outside the kept folder gets no master key file beside it.
    let elsewhere = tmp.path().join("given.key");
    std::fs::copy(&key, &elsewhere).unwrap();
    let given = Repo {
        password_file: elsewhere.clone(),
        ..repo.clone()
    };
    assert!(
        RusticEngine::new()
            .keep_master_keys_of(&keys)
            .list(&given)
            .unwrap()
            .is_empty()
    );
    assert!(!tmp.path().join("given.key.master").exists());
}
