//! `backplan apply` with the real binary on directory instances and a real repository.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use crate::trees::*;

fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a");
}

#[test]
fn quickstart_backup_restore_and_refusal() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    let sandbox = dir.join("data/contoso-sandbox");
    std::fs::create_dir_all(&prod).unwrap();
    rich_tree(&prod);

    // 1. Instances created (production adopted), the declared backup taken.
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("instance.contoso: adopted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("instance.contoso-sandbox: created"),
        "{}",
        run.stdout
    );
    assert!(sandbox.is_dir());
    let list = backups_json(dir);
    let taken: Vec<_> = list
        .iter()
        .filter(|b| b["key"] == "before-import")
        .collect();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0]["status"], "completed");
    assert_eq!(taken[0]["created_by"], "user");
    assert_eq!(taken[0]["label"], "Before solution import");
    assert_eq!(
        taken[0]["allowed_actions"],
        serde_json::json!(["edit", "delete", "restore"])
    );
    let expected = dir.join("expected");
    copy_tree(&prod, &expected);

    // 2. Production changes; a restore of the backup into the sandbox.
    std::fs::write(prod.join("a.txt"), "changed after the backup\n").unwrap();
    std::fs::write(prod.join("new.txt"), "new").unwrap();
    std::fs::write(sandbox.join("sandbox-only.txt"), "to be replaced").unwrap();
    append_config(
        dir,
        "[restores.refresh-sandbox]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_same_tree(&expected, &sandbox);
    let list = backups_json(dir);
    let safety: Vec<_> = list
        .iter()
        .filter(|b| b["kind"] == "pre-restore" && b["instance"] == "contoso-sandbox")
        .collect();
    assert_eq!(
        safety.len(),
        1,
        "one pre-restore safety backup of the sandbox"
    );
    assert_eq!(safety[0]["status"], "completed");
    assert_eq!(safety[0]["created_by"], "System");
    assert_eq!(safety[0]["allowed_actions"], serde_json::json!(["restore"]));
    assert!(std::fs::read_dir(dir.join("data")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("backplan-restore")
    }));

    // 3. A restore into production is refused and nothing changes.
    let before = backups_json(dir);
    let prod_before = snapshot(&prod);
    append_config(
        dir,
        "[restores.oops]\nfrom = \"contoso-sandbox@latest\"\nto = \"contoso\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stderr.contains("error[restore-into-production]"),
        "{}",
        run.stderr
    );
    assert_eq!(backups_json(dir), before);
    assert_eq!(snapshot(&prod), prod_before);
}

#[test]
fn apply_off_a_terminal_asks_for_auto_approve_and_changes_nothing() {
    let tmp = quickstart_copy();
    let run = backplan(tmp.path(), &["apply", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(run.stderr.contains("--auto-approve"), "{}", run.stderr);
    assert!(
        run.stdout.contains("Plan: 5 to create"),
        "the plan is shown: {}",
        run.stdout
    );
    assert!(!tmp.path().join("state").exists(), "nothing was created");
    assert!(!tmp.path().join("data").exists(), "nothing was created");
}

#[test]
fn version_updates_take_a_backup_then_run_the_hook() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    assert_eq!(apply(dir).code, 0);
    let marker = dir.join("hook-ran");
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let updated = text.replacen(
        "version = \"9.0\"\nsource = { kind = \"directory\", path = \"data/contoso\" }",
        &format!(
            "version = \"9.1\"\nsource = {{ kind = \"directory\", path = \"data/contoso\" }}\non_update = [\"sh\", \"-c\", \"echo {{version}} > {}\"]",
            marker.display()
        ),
        1,
    );
    assert_ne!(text, updated);
    std::fs::write(dir.join("backplan.toml"), &updated).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "9.1");
    let pre: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["kind"] == "pre-update")
        .collect();
    assert_eq!(pre.len(), 1);
    assert_eq!(pre[0]["label"], "Before update to 9.1");
    assert_eq!(pre[0]["status"], "completed");

    // A failing hook leaves the old version recorded and the instance in error.
    let failing = updated
        .replace("version = \"9.1\"", "version = \"9.2\"")
        .replace(
            &format!(
                "on_update = [\"sh\", \"-c\", \"echo {{version}} > {}\"]",
                marker.display()
            ),
            "on_update = [\"false\"]",
        );
    std::fs::write(dir.join("backplan.toml"), failing).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let status = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let contoso = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "contoso")
        .unwrap();
    assert_eq!(contoso["version"], "9.1");
    assert_eq!(contoso["state"], "error");
    assert!(
        contoso["error"]
            .as_str()
            .unwrap()
            .contains("on_update failed"),
        "{contoso}"
    );
}

/// Where to stop a run: right after a journal step (`BACKPLAN_CRASH_AFTER`, a SIGKILL the
/// process sends itself), or after a delay (a SIGKILL from outside, wherever it lands).
enum Kill {
    After(&'static str),
    Delay(u64),
}

#[test]
fn killed_at_any_point_apply_converges() {
    // A backup and a restore of it into the sandbox, stopped at every step, then run again:
    // no backup recorded complete without its snapshot, no snapshot twice, no staging folder
    // left, and the sandbox ends up exactly the backup.
    let points = [
        Kill::After("backup:started"),
        Kill::After("backup:finished"),
        Kill::After("restore:started"),
        Kill::After("swap:started"),
        Kill::After("swap:finished"),
        Kill::After("restore:finished"),
        Kill::Delay(100),
        Kill::Delay(600),
        Kill::Delay(1200),
    ];
    for point in points {
        let tmp = quickstart_copy();
        let dir = tmp.path();
        let prod = dir.join("data/contoso");
        std::fs::create_dir_all(&prod).unwrap();
        rich_tree(&prod);
        std::fs::write(prod.join("large.bin"), random_bytes(24 << 20)).unwrap();
        let sandbox = dir.join("data/contoso-sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join("old.txt"), "the sandbox before the restore").unwrap();
        let old_sandbox = snapshot(&sandbox);
        append_config(
            dir,
            "[restores.refresh]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
        );
        let expected = dir.join("expected");
        copy_tree(&prod, &expected);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backplan"));
        cmd.args(["apply", "-c", "backplan.toml", "--auto-approve"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let label = match point {
            Kill::After(step) => {
                cmd.env("BACKPLAN_CRASH_AFTER", step);
                let status = cmd.status().unwrap();
                assert_eq!(
                    std::os::unix::process::ExitStatusExt::signal(&status),
                    Some(9),
                    "killed after {step}"
                );
                format!("after {step}")
            }
            Kill::Delay(ms) => {
                let mut child = cmd.spawn().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(ms));
                let _ = child.kill();
                let _ = child.wait();
                format!("at {ms} ms")
            }
        };
        // The target is never half-restored: old or new, whole.
        let now = snapshot(&sandbox);
        let expected_tree = snapshot(&expected);
        assert!(
            now == old_sandbox || now == expected_tree,
            "sandbox half-restored when killed {label}"
        );

        let run = apply(dir);
        assert_eq!(run.code, 0, "after a kill {label}: {}", run.transcript());
        let again = backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]);
        assert_eq!(
            again.code,
            0,
            "converged after a kill {label}: {}",
            again.transcript()
        );

        assert_same_tree(&expected, &sandbox);
        let staging: Vec<_> = std::fs::read_dir(dir.join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("backplan-restore"))
            .collect();
        assert!(
            staging.is_empty(),
            "staging left after a kill {label}: {staging:?}"
        );

        // The repository as restic sees it.
        let snaps = restic_snapshots(dir);
        let backup_tags: Vec<String> = snaps
            .iter()
            .flat_map(|s| s["tags"].as_array().unwrap().iter())
            .filter_map(|t| {
                t.as_str()
                    .filter(|t| t.starts_with("backup="))
                    .map(String::from)
            })
            .collect();
        let mut unique = backup_tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            backup_tags.len(),
            "a backup stored twice after a kill {label}"
        );
        let list = backups_json(dir);
        for b in &list {
            if b["status"] == "completed" {
                let id = b["snapshot_id"].as_str().unwrap();
                assert!(
                    snaps.iter().any(|s| s["id"] == id),
                    "{} is completed but not in the repository",
                    b["id"]
                );
            }
        }
        let safety = list.iter().filter(|b| b["kind"] == "pre-restore").count();
        assert_eq!(
            safety, 1,
            "exactly one pre-restore backup after a kill {label}"
        );
    }
}

#[test]
fn a_backup_missing_files_fails_rather_than_hiding_the_gap() {
    // A real read failure: a file the backup user may not read. As root the backup runs as
    // `nobody` (setpriv), since root reads everything.
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("readable"), "ok").unwrap();
    std::fs::write(prod.join("unreadable"), "secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        prod.join("unreadable"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let out = as_nobody(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("could not be read"), "{stdout}");
    let list = backups_json(dir);
    let b = list.iter().find(|b| b["key"] == "before-import").unwrap();
    assert_eq!(b["status"], "failed");
    assert_eq!(b["snapshot_id"], serde_json::Value::Null);
}

#[test]
fn verify_finds_a_damaged_repository() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/f.bin"), random_bytes(1 << 20)).unwrap();
    assert_eq!(apply(dir).code, 0);
    let run = backplan(dir, &["verify", "-c", "backplan.toml", "--subset", "100%"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stdout.contains("storage local: OK"), "{}", run.stdout);
    // Flip bytes in the middle of the largest pack.
    damage_largest_pack(dir);
    let run = backplan(dir, &["verify", "-c", "backplan.toml", "--subset", "100%"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains(" problem found.") || run.stdout.contains(" problems found."),
        "{}",
        run.stdout
    );
}

/// `apply` on a terminal (played by `script`, util-linux) in `dir`, its stdin piped.
fn apply_on_a_terminal(dir: &Path) -> std::process::Child {
    let cmd = format!("{} apply -c backplan.toml", env!("CARGO_BIN_EXE_backplan"));
    Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) is installed")
}

#[test]
fn an_interactive_apply_does_not_hold_the_state_while_it_asks() {
    use std::io::{Read, Write};
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "hello").unwrap();
    let mut child = apply_on_a_terminal(dir);
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            let _ = tx.send(String::from_utf8_lossy(&seen).into_owned());
        }
    });
    let mut text = String::new();
    while !text.contains("Only 'yes' will be accepted") {
        text = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no question ({e}): {text}"));
    }
    // While it asks, the state is free for others (a daemon starting, a query).
    let started = std::time::Instant::now();
    let status = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert_eq!(status.code, 0, "{}", status.transcript());
    // Not held up by the question (it would wait until the answer, or fail on the lock); the
    // bound only leaves room for a process start on a loaded machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    let code = child.wait().unwrap().code();
    while let Ok(t) = rx.recv_timeout(std::time::Duration::from_secs(1)) {
        text = t;
    }
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Apply complete: 5 done"), "{text}");
}

#[test]
fn an_interactive_apply_applies_nothing_when_the_state_changed_meanwhile() {
    use std::io::{Read, Write};
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    let mut child = apply_on_a_terminal(dir);
    let mut stdout = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("Only 'yes' will be accepted") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "no question: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Someone else applied meanwhile.
    assert_eq!(apply(dir).code, 0);
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    stdout.read_to_string(&mut text).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1), "{text}");
    assert!(text.contains("the recorded state changed"), "{text}");
    assert_eq!(restic_snapshots(dir).len(), 1, "one backup, not two");
}

#[test]
fn a_restore_whose_tree_cannot_be_synced_fails_and_leaves_the_sandbox() {
    // The restored tree is flushed while it is written and synced before the swap; a flush
    // that fails (a disk's write-back error, injected in debug builds) fails the restore and
    // the sandbox keeps what it held.
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let prod = dir.join("data/contoso");
    let sandbox = dir.join("data/contoso-sandbox");
    std::fs::create_dir_all(&prod).unwrap();
    rich_tree(&prod);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::fs::write(sandbox.join("sandbox-only.txt"), "the sandbox's own data\n").unwrap();
    let before = snapshot(&sandbox);
    append_config(
        dir,
        "[restores.r1]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"",
    );
    let run = backplan_with_env(
        dir,
        &["apply", "-c", "backplan.toml", "--auto-approve"],
        &[("BACKPLAN_FAIL_RESTORE_SYNC", "1")],
    );
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("restore failed, contoso-sandbox was left as it was")
            && run.stdout.contains("syncing the restored tree")
            && run.stdout.contains("Input/output error"),
        "{}",
        run.transcript()
    );
    assert_eq!(snapshot(&sandbox), before);
    assert!(std::fs::read_dir(dir.join("data")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("backplan-restore")
    }));
    // The pre-restore backup was taken and completed all the same.
    let safety: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["kind"] == "pre-restore" && b["instance"] == "contoso-sandbox")
        .collect();
    assert_eq!(safety.len(), 1);
    assert_eq!(safety[0]["status"], "completed");
}
