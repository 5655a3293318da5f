//! Where data is: no spelling of a sandbox path reaches production or backplan's own files,
//! what was recorded wins over the file, and a repository that was there is never silently
//! made again.

use std::path::Path;
use std::sync::Arc;

use backplan::apply::Executor;
use backplan::config::Source;
use backplan::engine::{NoProgress, RusticEngine};
use backplan::plan::{PlanOptions, plan};
use backplan::records::*;
use backplan::state::Store;
use chrono::{DateTime, TimeZone, Utc};

use crate::helpers::*;

const HEAD: &str = "[daemon]\nstate_dir = \"state\"\n\n[schedule]\ndaily_at = \"02:00\"\ntimezone = \"UTC\"\nretention = \"3d\"\n\n[instances.prod]\ntype = \"production\"\nversion = \"1.0\"\nsource = { kind = \"directory\", path = \"srv/app\" }\n\n[instances.prod.backups.b1]\nlabel = \"one\"\n";

fn sandbox_at(path: &str) -> String {
    format!(
        "{HEAD}\n[instances.box]\ntype = \"sandbox\"\nversion = \"1.0\"\nsource = {{ kind = \"directory\", path = \"{path}\" }}\n"
    )
}

/// `srv/app` is production's folder; `alias` is a link to `srv`; `other` a plain folder.
fn production_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("srv/app")).unwrap();
    std::fs::write(dir.join("srv/app/precious"), "production data").unwrap();
    std::fs::create_dir_all(dir.join("other")).unwrap();
    std::os::unix::fs::symlink(dir.join("srv"), dir.join("alias")).unwrap();
}

#[test]
fn validate_sees_production_through_every_spelling_of_a_sandbox_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    production_tree(dir);
    for spelling in [
        "alias/app",
        "other/../srv/app",
        "alias/../srv/app",
        "./srv/./app",
        "alias",
    ] {
        std::fs::write(dir.join("backplan.toml"), sandbox_at(spelling)).unwrap();
        let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
        assert_eq!(run.code, 1, "{spelling}: {}", run.transcript());
        assert!(
            run.stderr.contains("error[shared-source]"),
            "{spelling}: {}",
            run.stderr
        );
    }
    std::fs::write(dir.join("backplan.toml"), sandbox_at("other/app")).unwrap();
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

#[test]
fn validate_keeps_instances_off_backplans_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    production_tree(dir);
    // The folder holding the state dir (and so the repository and the keys), the repository
    // itself, and a folder inside the state dir.
    for spelling in [".", "state/repository", "state/keys", "other/.."] {
        std::fs::write(dir.join("backplan.toml"), sandbox_at(spelling)).unwrap();
        let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
        assert_eq!(run.code, 1, "{spelling}: {}", run.transcript());
        assert!(
            run.stderr.contains("backplan's state folder"),
            "{spelling}: {}",
            run.stderr
        );
    }
}

/// The sandbox is a real folder when the file is checked and planned; a link to production's
/// folder takes its place before the restore runs (a daemon plans against a file checked
/// earlier). The restore must not touch production, and not even take its safety backup.
#[test]
fn a_sandbox_turned_into_a_link_to_production_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    production_tree(dir);
    std::fs::create_dir_all(dir.join("box/app")).unwrap();
    std::fs::write(dir.join("backplan.toml"), sandbox_at("box/app")).unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    append_config(dir, "[restores.r1]\nfrom = \"prod/b1\"\nto = \"box\"");

    let cfg = backplan::config::load(&dir.join("backplan.toml"))
        .unwrap()
        .config;
    let store = Store::open(&dir.join("state")).unwrap();
    let now = Utc::now();
    let p = plan(&cfg, &store.load().unwrap(), now, PlanOptions::default());
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert!(p.actions.iter().any(|a| a.address == "restore.r1"));

    // Between the plan and the restore: `box` becomes a link to production's parent.
    std::fs::rename(dir.join("box"), dir.join("box.old")).unwrap();
    std::os::unix::fs::symlink(dir.join("srv"), dir.join("box")).unwrap();
    std::fs::write(dir.join("srv/app/after-plan"), "written after the plan").unwrap();

    let engine = RusticEngine::new();
    let clock = move || now;
    let mut exec = Executor::new(&cfg, &store, &engine, Arc::new(NoProgress), &clock);
    exec.run(&p).unwrap();
    let failure = exec
        .report
        .lines
        .iter()
        .find(|l| l.1 == "restore.r1")
        .expect("the restore is reported");
    assert_eq!(failure.0, backplan::apply::Outcome::Failed, "{failure:?}");
    assert!(
        failure.2.contains("the data of instance `prod`"),
        "{failure:?}"
    );
    // Production untouched, no staging folder beside it, no safety backup taken of it.
    let mut names: Vec<_> = std::fs::read_dir(dir.join("srv/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["after-plan", "precious"]);
    assert!(
        std::fs::read_dir(dir.join("srv")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("restore"))
    );
    let rec = store.load().unwrap();
    assert!(
        rec.backups
            .values()
            .all(|b| b.kind != BackupKind::PreRestore || b.status != BackupStatus::Completed),
        "a safety backup was taken"
    );
    assert_eq!(rec.restores["r1"].status, RestoreStatus::Failed);
}

#[test]
fn a_moved_away_repository_makes_apply_fail_and_creates_nothing() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let repo = dir.join("state/repository");
    std::fs::rename(&repo, dir.join("moved-away")).unwrap();

    append_config(dir, "[instances.contoso.backups.later]\nlabel = \"later\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("there is no repository at [DIR]/state/repository"),
        "{}",
        run.transcript()
    );
    assert!(!repo.exists(), "a new repository was created");
    let later: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["key"] == "later")
        .collect();
    assert_eq!(later[0]["status"], "failed");
}

#[test]
fn backups_recorded_without_a_repository_id_still_forbid_a_new_repository() {
    // A state from before repository ids were recorded: a completed backup, no repository.
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::create_dir_all(dir.join("data/contoso-sandbox")).unwrap();
    let at = Utc::now();
    let mut rec = Recorded::default();
    for (name, kind) in [
        ("contoso", backplan::config::InstanceType::Production),
        ("contoso-sandbox", backplan::config::InstanceType::Sandbox),
    ] {
        rec.instances.insert(
            name.into(),
            InstanceRecord {
                name: name.into(),
                kind,
                version: backplan::config::values::Version::parse("9.0").unwrap(),
                source: Source::Directory {
                    path: dir.join("data").join(name),
                },
                created_at: at,
                updated_at: at,
                error: None,
                creation_failed: false,
            },
        );
    }
    let old: BackupRecord = serde_json::from_value(serde_json::json!({
        "id": "6b9c6f5e-0000-4000-8000-000000000001",
        "instance": "contoso",
        "source_kind": "directory",
        "kind": "on-demand",
        "key": "older",
        "created_by": "user",
        "label": "older",
        "storage": "local",
        "status": "completed",
        "created_at": at,
        "completed_at": at,
        "snapshot_id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    }))
    .unwrap();
    rec.backups.insert(old.id, old);
    seed_state(&dir.join("state"), &rec);
    append_config(dir, "[instances.contoso.backups.older]\nlabel = \"older\"");

    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("there is no repository at"),
        "{}",
        run.transcript()
    );
    assert!(!dir.join("state/repository").exists());
}

#[test]
fn another_repository_at_the_storage_path_is_refused() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    assert_eq!(apply(dir).code, 0);
    // A different repository, same key, where the recorded one was.
    let repo = dir.join("state/repository");
    std::fs::rename(&repo, dir.join("moved-away")).unwrap();
    let out = std::process::Command::new("restic")
        .arg("-r")
        .arg(&repo)
        .arg("--password-file")
        .arg(dir.join("state/keys/local.key"))
        .args(["--no-cache", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = restic_snapshots(dir).len();

    append_config(dir, "[instances.contoso.backups.later]\nlabel = \"later\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("is not the one storage `local` has used"),
        "{}",
        run.transcript()
    );
    assert_eq!(restic_snapshots(dir).len(), before, "nothing was written");

    // The recorded repository put back at another path, named in the file: accepted.
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text + "\n[storage.local]\nkind = \"local\"\npath = \"moved-away\"\n",
    )
    .unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A refused change of `source` must not make the daily backup read the new folder under the
/// old instance's name: the recorded folder is backed up.
#[test]
fn daily_backups_read_the_recorded_folder_after_a_refused_source_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("srv/app")).unwrap();
    std::fs::write(dir.join("srv/app/data"), vec![7u8; 1234]).unwrap();
    std::fs::create_dir_all(dir.join("srv/elsewhere")).unwrap();
    std::fs::write(dir.join("srv/elsewhere/other"), vec![1u8; 99]).unwrap();
    let created = Utc.with_ymd_and_hms(2026, 6, 9, 0, 0, 0).unwrap();
    let mut rec = Recorded::default();
    rec.instances.insert(
        "prod".into(),
        InstanceRecord {
            name: "prod".into(),
            kind: backplan::config::InstanceType::Production,
            version: backplan::config::values::Version::parse("1.0").unwrap(),
            source: Source::Directory {
                path: dir.join("srv/app"),
            },
            created_at: created,
            updated_at: created,
            error: None,
            creation_failed: false,
        },
    );
    seed_state(&dir.join("state"), &rec);
    std::fs::write(
        dir.join("backplan.toml"),
        HEAD.replace("srv/app", "srv/elsewhere")
            .replace("\n[instances.prod.backups.b1]\nlabel = \"one\"\n", ""),
    )
    .unwrap();

    let cfg = backplan::config::load(&dir.join("backplan.toml"))
        .unwrap()
        .config;
    let store = Store::open(&dir.join("state")).unwrap();
    let now = at("2026-06-10T12:00:00Z");
    let p = plan(&cfg, &store.load().unwrap(), now, PlanOptions::default());
    assert!(
        p.refusals.iter().any(|r| r.rule == "source-changed"),
        "{:?}",
        p.refusals
    );
    assert!(!p.due.is_empty(), "a daily backup is due");
    let engine = RusticEngine::new();
    let clock = move || now;
    let mut exec = Executor::new(&cfg, &store, &engine, Arc::new(NoProgress), &clock);
    exec.run(&p).unwrap();
    let daily: Vec<_> = store
        .read_all()
        .unwrap()
        .backups
        .into_values()
        .filter(|b| b.kind == BackupKind::Daily && b.status == BackupStatus::Completed)
        .collect();
    assert_eq!(daily.len(), 1, "{:?}", exec.report.lines);
    assert_eq!(
        daily[0].size_bytes.unwrap().read,
        1234,
        "the recorded folder"
    );
}

#[test]
fn a_file_where_the_folder_should_be_is_named_before_the_engine_runs() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    assert_eq!(apply(dir).code, 0);
    let prod = dir.join("data/contoso");
    std::fs::remove_dir_all(&prod).unwrap();
    std::fs::write(&prod, "a file, not a folder").unwrap();
    append_config(dir, "[instances.contoso.backups.later]\nlabel = \"later\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("should be a folder, but [DIR]/data/contoso is a file"),
        "{}",
        run.transcript()
    );
    assert!(!run.transcript().contains("panic"), "{}", run.transcript());

    std::fs::remove_file(&prod).unwrap();
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    std::fs::write(
        dir.join("backplan.toml"),
        text.replace("backups.later]", "backups.later2]"),
    )
    .unwrap();
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("the folder [DIR]/data/contoso of instance `contoso` does not exist"),
        "{}",
        run.transcript()
    );
}

/// A backup recorded as completed without a snapshot id is refused before the safety backup,
/// never restored from an empty id (which the storage library would read as a prefix).
#[test]
fn a_backup_without_a_snapshot_id_is_refused_before_anything_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    production_tree(dir);
    std::fs::create_dir_all(dir.join("box/app")).unwrap();
    std::fs::write(dir.join("box/app/sandbox-data"), "kept").unwrap();
    std::fs::write(dir.join("backplan.toml"), sandbox_at("box/app")).unwrap();
    assert_eq!(apply(dir).code, 0);
    let store = Store::open(&dir.join("state")).unwrap();
    let mut b = store
        .read_all()
        .unwrap()
        .backups
        .into_values()
        .find(|b| b.key.as_deref() == Some("b1"))
        .unwrap();
    b.snapshot_id = None;
    store.put_backup(&b).unwrap();
    drop(store);
    append_config(dir, "[restores.r1]\nfrom = \"prod/b1\"\nto = \"box\"");
    let run = apply(dir);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("without a snapshot id"),
        "{}",
        run.transcript()
    );
    let list = backups_json(dir);
    assert!(
        list.iter().all(|b| b["kind"] != "pre-restore"),
        "a safety backup was taken: {list:?}"
    );
    assert!(dir.join("box/app/sandbox-data").exists());
}
