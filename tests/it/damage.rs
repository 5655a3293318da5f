//! Damage that must be named precisely: the files a backup could not read (every one, up to a
//! bound, in the record and `show`), and a damaged pack with the backups it affects (`verify`).

use std::process::Command;

use crate::helpers::*;
use crate::trees::*;

#[test]
fn a_backup_fails_with_the_list_of_what_it_could_not_read() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = quickstart_copy();
    let dir = tmp.path();
    // The scratch folder's parent must let `nobody` through.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prod = dir.join("data/contoso");
    std::fs::create_dir_all(prod.join("locked-folder")).unwrap();
    std::fs::write(prod.join("readable"), "ok").unwrap();
    std::fs::write(prod.join("locked-folder/inside"), "hidden").unwrap();
    let none = std::fs::Permissions::from_mode(0o000);
    let mut expected = Vec::new();
    for i in 0..130 {
        let p = prod.join(format!("secret-{i:03}"));
        std::fs::write(&p, "secret").unwrap();
        std::fs::set_permissions(&p, none.clone()).unwrap();
        expected.push(p);
    }
    std::fs::set_permissions(prod.join("locked-folder"), none.clone()).unwrap();
    expected.push(prod.join("locked-folder"));

    let out = as_nobody(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("131 item(s) of") && stdout.contains("could not be read"),
        "{stdout}"
    );
    assert!(
        stdout.contains("and 128 more (`backplan show` lists them)"),
        "{stdout}"
    );

    let b = backup_by_key(dir, "before-import");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["snapshot_id"], serde_json::Value::Null);
    assert_eq!(b["unreadable"]["total"], 131, "{b}");
    let listed: Vec<String> = b["unreadable"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed.len(), 100, "bounded: {listed:?}");
    // (`backplan` output names the scratch folder `[DIR]`.)
    let expected: Vec<String> = expected
        .iter()
        .map(|p| {
            p.display()
                .to_string()
                .replace(&dir.display().to_string(), "[DIR]")
        })
        .collect();
    for p in &listed {
        assert!(expected.contains(p), "{p} is one of them: {expected:?}");
    }
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), listed.len(), "each once: {listed:?}");
    assert!(
        !listed
            .iter()
            .any(|p| p.ends_with("readable") || p.ends_with("inside")),
        "{listed:?}"
    );

    let run = backplan(
        dir,
        &["show", "-c", "backplan.toml", "contoso/before-import"],
    );
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout
            .contains("unreadable    131 items, the first 100:"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout.lines().filter(|l| l.starts_with("    ")).count(),
        100,
        "{}",
        run.stdout
    );

    // Readable again: the retry (a new try of the same backup) completes and forgets the list.
    let ok = Command::new("chmod")
        .args(["-R", "u+rwX"])
        .arg(&prod)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    retry_due(dir, b["id"].as_str().unwrap());
    let out = as_nobody(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = backup_by_key(dir, "before-import");
    assert_eq!(b["status"], "completed", "{b}");
    assert!(b["unreadable"].is_null(), "{b}");
}

#[test]
fn verify_names_the_backups_a_damaged_pack_affects_and_only_those() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    // contoso's data is one large incompressible file: a data pack of its own.
    std::fs::write(dir.join("data/contoso/f.bin"), random_bytes(3 << 20)).unwrap();
    append_config(
        dir,
        "[instances.contoso.backups.second]\nlabel = \"Second of contoso\"\n\n[instances.shop.backups.copy]\nlabel = \"The shop's copy\"",
    );
    let run = backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    let id_of = |key: &str| {
        list.iter().find(|b| b["key"] == key).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let run = backplan(dir, &["verify", "-c", "backplan.toml", "--subset", "100%"]);
    assert_eq!(run.code, 0, "{}", run.transcript());

    // Damage the middle of the largest pack: contoso's file.
    let (len, pack) = damage_largest_pack(dir);
    assert!(len > 2 << 20, "{len}");
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();

    let run = backplan(dir, &["verify", "-c", "backplan.toml", "--subset", "100%"]);
    assert_eq!(run.code, 1, "{}", run.transcript());
    let text = &run.stdout;
    assert!(
        text.contains(&format!(
            "storage local: pack {} is damaged; it holds data of 2 backups:",
            &pack_id[..12]
        )),
        "{text}"
    );
    for key in ["before-import", "second"] {
        assert!(
            text.contains(&format!("backup.contoso/{key}  {}", id_of(key))),
            "{key}: {text}"
        );
    }
    assert!(text.contains("\"Second of contoso\""), "{text}");
    assert!(
        !text.contains("shop"),
        "the shop's backup is intact: {text}"
    );

    let run = backplan(
        dir,
        &[
            "verify",
            "-c",
            "backplan.toml",
            "--subset",
            "100%",
            "--json",
        ],
    );
    assert_eq!(run.code, 1, "{}", run.transcript());
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(v["format_version"].is_number(), "{v}");
    let local = v["storages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["storage"] == "local")
        .unwrap();
    assert_eq!(local["outcome"], "problems", "{local}");
    let damaged = local["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{local}");
    assert_eq!(damaged[0]["pack"], pack_id.as_str());
    let mut named: Vec<&str> = damaged[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    named.sort();
    assert_eq!(
        named,
        ["backup.contoso/before-import", "backup.contoso/second"]
    );
    assert_eq!(
        damaged[0]["backups"][0]["id"],
        id_of("before-import").as_str()
    );
}

#[test]
fn verify_json_through_the_daemon_is_the_json_of_the_command() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    // contoso's data is one large incompressible file: a data pack of its own.
    std::fs::write(dir.join("data/contoso/f.bin"), random_bytes(3 << 20)).unwrap();
    append_config(
        dir,
        "[instances.contoso.backups.second]\nlabel = \"Second of contoso\"",
    );
    // The daemon takes the backups (and whatever else is due today), then waits.
    let d = crate::daemon::Daemon::start(dir, &[], &[]);
    let idle = || {
        let run = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout).is_ok_and(|v| {
            v["daemon"]["activity"]
                .as_str()
                .is_some_and(|a| a.starts_with("waiting"))
        })
    };
    d.wait_for("the backups, then waiting", || {
        crate::daemon::has(dir, "second", "completed") && idle()
    });
    let verify = || {
        backplan(
            dir,
            &[
                "verify",
                "-c",
                "backplan.toml",
                "--subset",
                "100%",
                "--json",
            ],
        )
    };
    // (The daemon may have run its own daily verify already.)
    let verifies = || d.log().matches("verify started").count();
    let before = verifies();
    let run = verify();
    assert_eq!(run.code, 0, "{}", run.transcript());
    let sound: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(sound["problems"], 0, "{sound}");

    let (len, pack) = damage_largest_pack(dir);
    assert!(len > 2 << 20, "{len}");
    let pack_id = pack.file_name().unwrap().to_str().unwrap().to_string();
    let run = verify();
    assert_eq!(run.code, 1, "{}", run.transcript());
    let by_daemon: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    // The daemon answered (it logs its verify runs), and nothing changed meanwhile.
    assert_eq!(verifies(), before + 2, "{}", d.log());
    assert!(idle());
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    // Without a daemon the command verifies itself: the same JSON, value for value.
    let run = verify();
    assert_eq!(run.code, 1, "{}", run.transcript());
    let by_command: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(by_daemon, by_command);

    // The damaged pack with the backups it affects: both of contoso's, and only those.
    assert!(by_daemon["format_version"].is_number(), "{by_daemon}");
    let local = by_daemon["storages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["storage"] == "local")
        .unwrap();
    assert_eq!(local["outcome"], "problems", "{local}");
    let damaged = local["damaged_packs"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{local}");
    assert_eq!(damaged[0]["pack"], pack_id.as_str());
    let named: Vec<&str> = damaged[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert!(named.contains(&"backup.contoso/before-import"), "{named:?}");
    assert!(named.contains(&"backup.contoso/second"), "{named:?}");
    assert!(
        named.iter().all(|a| a.starts_with("backup.contoso/")),
        "only contoso's data is in the pack: {named:?}"
    );
    for b in damaged[0]["backups"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap();
        let recorded = backups_json(dir)
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap();
        assert_eq!(b["snapshot_id"], recorded["snapshot_id"], "{b}");
        assert_eq!(b["label"], recorded["label"], "{b}");
    }
}
