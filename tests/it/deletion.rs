//! Deletion is never immediate (a backup removed from the file waits out its grace), one
//! failure stays one failure, and expiries that follow from a run's own backups are planned
//! and checked again when they run. The real binary, a real repository, the real restic.

use std::path::Path;

use crate::helpers::*;

fn config(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("backplan.toml")).unwrap()
}

fn set_config(dir: &Path, text: &str) {
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
}

/// The quickstart's one on-demand backup, as a TOML table.
const BEFORE_IMPORT: &str = "[instances.contoso.backups.before-import]\nlabel = \"Before solution import\"\nnotes = \"Taken before importing solution X 2.1\"\n";

fn backup<'a>(list: &'a [serde_json::Value], key: &str) -> Vec<&'a serde_json::Value> {
    list.iter().filter(|b| b["key"] == key).collect()
}

fn quickstart_with_data() -> tempfile::TempDir {
    let tmp = quickstart_copy();
    let prod = tmp.path().join("data/contoso");
    std::fs::create_dir_all(&prod).unwrap();
    std::fs::write(prod.join("a.txt"), "hello\n").unwrap();
    assert!(config(tmp.path()).contains(BEFORE_IMPORT));
    tmp
}

#[test]
fn a_removed_backup_waits_out_its_grace_is_revived_by_its_key_then_purged() {
    let tmp = quickstart_with_data();
    let dir = tmp.path();
    let full = config(dir);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    // The generated key is announced once, where it is and what to do with it.
    assert_eq!(
        run.stderr
            .matches("a new repository key was generated")
            .count(),
        1,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("copy it somewhere safe"),
        "{}",
        run.stderr
    );
    let list = backups_json(dir);
    let taken = backup(&list, "before-import");
    assert_eq!(taken.len(), 1);
    let id = taken[0]["id"].as_str().unwrap().to_string();
    assert_eq!(restic_snapshots(dir).len(), 1);

    // 1. Removed from the file (a half-written save looks the same): nothing is deleted.
    set_config(dir, &full.replace(BEFORE_IMPORT, ""));
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(
        plan.stdout.contains("its data is deleted on")
            && plan.stdout.contains("putting the key back keeps it"),
        "{}",
        plan.transcript()
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let b = backup(&list, "before-import");
    assert_eq!(b.len(), 1, "{list:?}");
    assert_eq!(b[0]["status"], "deleting");
    assert!(b[0]["delete_at"].is_string(), "{:?}", b[0]);
    assert_eq!(b[0]["allowed_actions"], serde_json::json!(["restore"]));
    let text = backplan(dir, &["backups", "-c", "backplan.toml"]);
    assert!(text.stdout.contains("deleting on "), "{}", text.stdout);
    let status = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert!(
        status.stdout.contains("1 backup deleting, the first on "),
        "{}",
        status.stdout
    );
    assert_eq!(restic_snapshots(dir).len(), 1, "the data is still there");

    // 2. Put back (the save completed), with a new label: the same backup, edited.
    set_config(
        dir,
        &full.replace("\"Before solution import\"", "\"Before the import\""),
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("deletion is cancelled"),
        "{}",
        run.stdout
    );
    let list = backups_json(dir);
    let b = backup(&list, "before-import");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["id"], id.as_str());
    assert_eq!(b[0]["status"], "completed");
    assert_eq!(b[0]["label"], "Before the import");
    assert_eq!(restic_snapshots(dir).len(), 1, "nothing was taken again");

    // 3. Removed with a 1 s grace: still there at once, its data gone after the grace.
    let short = full.replace(
        "keep_last_good = 1",
        "keep_last_good = 1\ndeletion_grace = \"1s\"",
    );
    set_config(dir, &short.replace(BEFORE_IMPORT, ""));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        !run.stderr.contains("new repository key"),
        "once: {}",
        run.stderr
    );
    assert_eq!(restic_snapshots(dir).len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("deleted after its grace"),
        "{}",
        run.stdout
    );
    assert_eq!(restic_snapshots(dir).len(), 0, "pruned after the grace");
    assert!(backup(&backups_json(dir), "before-import").is_empty());
    // The tombstone stays: `show` by id says what happened.
    let show = backplan(dir, &["show", "-c", "backplan.toml", &id, "--json"]);
    assert_eq!(show.code, 0, "{}", show.transcript());
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["backup"]["status"], "deleted");

    // 4. The key back after the purge: a new backup is taken.
    set_config(dir, &short);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let b = backup(&list, "before-import");
    assert_eq!(b.len(), 1);
    assert_ne!(b[0]["id"], id.as_str());
    assert_eq!(b[0]["status"], "completed");
    assert_eq!(restic_snapshots(dir).len(), 1);
}

#[test]
fn an_unreachable_storage_fails_its_backup_alone() {
    let tmp = quickstart_with_data();
    let dir = tmp.path();
    std::fs::write(dir.join("archive.key"), "archive repository password\n").unwrap();
    // Nothing listens on port 9 (discard) of this host.
    append_config(
        dir,
        "[storage.archive]\nkind = \"azure\"\naccount = \"contosobackups\"\ncontainer = \"backplan\"\nendpoint = \"http://127.0.0.1:9/contosobackups\"\naccess_key_env = \"AZ_KEY\"\npassword_file = \"archive.key\"\n\n[instances.contoso.backups.year-end]\nlabel = \"Year end\"\nstorage = \"archive\"",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backplan"))
        .args(["apply", "-c", "backplan.toml", "--auto-approve"])
        .current_dir(dir)
        .env("AZ_KEY", "c2VjcmV0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL backup.contoso/year-end") && stdout.contains("cannot be reached"),
        "{stdout}"
    );
    let list = backups_json(dir);
    assert_eq!(backup(&list, "before-import")[0]["status"], "completed");
    let archive = backup(&list, "year-end");
    assert_eq!(archive.len(), 1, "{list:?}");
    assert_ne!(archive[0]["status"], "completed");
    assert_eq!(restic_snapshots(dir).len(), 1);
}

#[test]
fn an_instance_that_cannot_be_created_fails_alone_and_is_created_once_it_can() {
    let tmp = quickstart_with_data();
    let dir = tmp.path();
    // A file where the sandbox's folder should be.
    std::fs::write(dir.join("data/contoso-sandbox"), "in the way").unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("FAIL instance.contoso-sandbox"),
        "{}",
        run.stdout
    );
    assert_eq!(
        backup(&backups_json(dir), "before-import")[0]["status"],
        "completed"
    );
    let status = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let sandbox = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "contoso-sandbox")
        .unwrap();
    assert_eq!(sandbox["state"], "error");
    assert!(
        sandbox["error"]
            .as_str()
            .unwrap()
            .starts_with("creation failed"),
        "{sandbox}"
    );
    // Once the file is gone, the next run creates it.
    std::fs::remove_file(dir.join("data/contoso-sandbox")).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(dir.join("data/contoso-sandbox").is_dir());
    let status = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    assert!(
        !status.stdout.contains("creation failed"),
        "{}",
        status.stdout
    );
}

#[test]
fn a_follow_up_expiry_is_planned_and_waits_for_the_newer_backup() {
    let tmp = quickstart_with_data();
    let dir = tmp.path();
    let full = config(dir).replace("retention = \"3d\"", "retention = \"1s\"");
    set_config(dir, &full);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // `before-import` has expired, but it is the only good backup (keep_last_good = 1).
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(
        !plan.stdout.contains("backup.contoso/before-import"),
        "{}",
        plan.stdout
    );

    // A newer backup that fails: the follow-up expiry is planned, and skipped when it runs.
    let second = "[instances.contoso.backups.second]\nlabel = \"Second\"\n";
    set_config(dir, &format!("{full}\n{second}"));
    let plan = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert!(
        plan.stdout
            .contains("once a newer backup of this run completes"),
        "{}",
        plan.stdout
    );
    std::fs::rename(dir.join("data/contoso"), dir.join("data/moved")).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let list = backups_json(dir);
    assert_eq!(backup(&list, "second")[0]["status"], "failed");
    assert_eq!(
        backup(&list, "before-import")[0]["status"],
        "completed",
        "the last good backup is kept when the newer one fails"
    );
    assert_eq!(restic_snapshots(dir).len(), 1);

    // A newer backup that completes: the old one expires in the same run.
    std::fs::rename(dir.join("data/moved"), dir.join("data/contoso")).unwrap();
    let third = "[instances.contoso.backups.third]\nlabel = \"Third\"\n";
    set_config(dir, &format!("{full}\n{second}\n{third}"));
    let run = apply(dir);
    assert!(
        run.stdout.contains("backup.contoso/before-import: expired"),
        "{}",
        run.transcript()
    );
    let list = backups_json(dir);
    assert_eq!(backup(&list, "third")[0]["status"], "completed");
    assert!(backup(&list, "before-import").is_empty(), "{list:?}");
    assert_eq!(restic_snapshots(dir).len(), 1);
}
