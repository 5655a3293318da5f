//! The command line as a newcomer meets it: the quickstart, exit statuses, files on disk.

use std::os::unix::fs::PermissionsExt;

use crate::helpers::*;

#[test]
fn quickstart_is_valid() {
    let tmp = quickstart_copy();
    let run = backplan(tmp.path(), &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("backplan.toml: valid (4 instances, 1 on-demand backup"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn quickstart_plan_json_has_the_spec_shape_and_creates_nothing() {
    let tmp = quickstart_copy();
    let run = backplan(
        tmp.path(),
        &[
            "plan",
            "-c",
            "backplan.toml",
            "--json",
            "--detailed-exitcode",
        ],
    );
    assert_eq!(
        run.code,
        2,
        "changes on an empty state: {}",
        run.transcript()
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    for key in ["actions", "due", "refusals", "notes"] {
        assert!(v[key].is_array(), "{key} is an array");
    }
    let addresses: Vec<(&str, &str)> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["op"].as_str().unwrap(), a["address"].as_str().unwrap()))
        .collect();
    assert_eq!(
        addresses,
        [
            ("create", "instance.contoso"),
            ("create", "instance.contoso-sandbox"),
            ("create", "instance.shop"),
            ("create", "instance.shop-sandbox"),
            ("create", "backup.contoso/before-import")
        ]
    );
    assert!(v["actions"][0]["details"].is_object());
    assert!(
        !tmp.path().join("state").exists(),
        "plan must not create the state dir"
    );
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "plan wrote files next to the config");
}

#[test]
fn plan_exit_statuses() {
    let tmp = quickstart_copy();
    let plain = backplan(tmp.path(), &["plan", "-c", "backplan.toml"]);
    assert_eq!(
        plain.code, 0,
        "without --detailed-exitcode, changes still exit 0"
    );
    assert!(
        plain
            .stdout
            .contains("Plan: 5 to create, 0 to change, 0 to delete, 0 to restore.")
    );
    let bad_time = backplan(
        tmp.path(),
        &["plan", "-c", "backplan.toml", "--at", "yesterday"],
    );
    assert_eq!(
        bad_time.code,
        1,
        "usage errors exit 1, never 2: {}",
        bad_time.transcript()
    );
    assert!(bad_time.stderr.contains("RFC 3339"));
    let missing = backplan(tmp.path(), &["plan", "-c", "nope.toml"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("cannot read the configuration file nope.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn config_path_defaults_to_the_environment() {
    let tmp = quickstart_copy();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backplan"))
        .arg("validate")
        .env("BACKPLAN_CONFIG", tmp.path().join("backplan.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secret_files_readable_by_others_warn_and_missing_ones_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("repo.key");
    std::fs::write(&key, "secret\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = |file: &str| {
        format!(
            "[daemon]\nstate_dir = \"state\"\n[storage.local]\npassword_file = \"{file}\"\n[instances.a]\ntype = \"sandbox\"\nversion = \"1\"\nsource = {{ kind = \"directory\", path = \"/srv/a\" }}\n"
        )
    };
    std::fs::write(tmp.path().join("b.toml"), cfg("repo.key")).unwrap();
    let run = backplan(tmp.path(), &["validate", "-c", "b.toml"]);
    assert_eq!(
        run.code,
        0,
        "a warning is not an error: {}",
        run.transcript()
    );
    assert!(
        run.stderr.contains("warning[secret-file-mode]"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("b.toml:4:17"), "{}", run.stderr);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = backplan(tmp.path(), &["validate", "-c", "b.toml"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));

    std::fs::write(tmp.path().join("c.toml"), cfg("missing.key")).unwrap();
    let run = backplan(tmp.path(), &["validate", "-c", "c.toml"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("error[secret-file]"), "{}", run.stderr);
}

#[test]
fn plan_reads_recorded_state_from_the_state_dir() {
    let tmp = quickstart_copy();
    let text = std::fs::read_to_string(tmp.path().join("backplan.toml")).unwrap();
    let (cfg, _) = backplan::config::parse(&tmp.path().join("backplan.toml"), &text).unwrap();
    // Record both instances as `apply` would, then plan again: only the backup is left.
    let mut rec = backplan::records::Recorded::default();
    let at = chrono::Utc::now();
    for i in cfg.instances.values() {
        rec.instances.insert(
            i.name.clone(),
            backplan::records::InstanceRecord {
                name: i.name.clone(),
                kind: i.kind,
                version: i.version.clone(),
                source: i.source.clone(),
                created_at: at,
                updated_at: at,
                error: None,
                creation_failed: false,
            },
        );
    }
    seed_state(&cfg.daemon.state_dir, &rec);
    let run = backplan(tmp.path(), &["plan", "-c", "backplan.toml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let ops: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["backup.contoso/before-import"]);
}

#[test]
fn status_shows_a_failing_or_skipped_daily_as_not_ok() {
    let dir = fixtures().join("status/daily-failing");
    let file = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let (cfg, _) = backplan::config::parse(&file, &text).unwrap();
    let rec: backplan::records::Recorded =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let journal = || Ok(Vec::new());
    let ask = |json| {
        backplan::query::answer(
            &backplan::query::Query::Status { json, width: None },
            &backplan::query::Context {
                config: Some(&cfg),
                config_error: None,
                recorded: &rec,
                journal: &journal,
                now: "2026-11-28T12:00:00Z".parse().unwrap(),
            },
        )
    };
    let text = ask(false);
    assert_eq!(text.exit, 0);
    insta::assert_snapshot!(text.stdout);
    let json: serde_json::Value = serde_json::from_str(&ask(true).stdout).unwrap();
    assert_eq!(json["format_version"], 1);
    let states: Vec<(&str, &str, &str)> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
                s["since"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("contoso", "daily failing", "2026-11-26T02:00:00Z"),
            ("contoso-sandbox", "ok", "-"),
            ("fabrikam", "daily failing", "2026-11-27T02:00:00Z"),
        ]
    );
}

#[test]
fn queries_with_an_unreadable_daemon_section_fail_instead_of_showing_another_state() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let text = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let (cfg, _) = backplan::config::parse(&dir.join("backplan.toml"), &text).unwrap();
    let rec: backplan::records::Recorded = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("status/daily-failing/state.json")).unwrap(),
    )
    .unwrap();
    seed_state(&cfg.daemon.state_dir, &rec);

    // Invalid elsewhere: the `[daemon]` section still says where the state is.
    std::fs::write(
        dir.join("backplan.toml"),
        format!("{text}\n[instances.contoso.backups.b2]\nlable = \"typo\"\n"),
    )
    .unwrap();
    let run = backplan(dir, &["backups", "-c", "backplan.toml", "--json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stderr.contains("unknown key `lable`"), "{}", run.stderr);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()["backups"]
            .as_array()
            .unwrap()
            .len(),
        7
    );

    // Not TOML, or a misspelled `state_dir`: where the state is cannot be known, and the
    // answer would be about another state (or none): exit 1, and say so.
    for broken in [
        format!("{text}\n[instances.contoso\n"),
        text.replace("state_dir = \"state\"", "stat_dir = \"state\""),
    ] {
        std::fs::write(dir.join("backplan.toml"), &broken).unwrap();
        for cmd in ["backups", "status"] {
            let run = backplan(dir, &[cmd, "-c", "backplan.toml"]);
            assert_eq!(run.code, 1, "{}", run.transcript());
            assert!(
                !run.stdout.contains("No backups recorded"),
                "{}",
                run.stdout
            );
            assert!(
                run.stderr.contains("cannot be found")
                    && run.stderr.contains("backplan validate -c backplan.toml"),
                "{}",
                run.stderr
            );
        }
    }
}
