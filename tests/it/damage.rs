//! Damage that must be named precisely: the files a backup could not read (every one, up to a
//! bound, in the record and `show`), and a damaged pack with the backups it affects (`verify`).

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use crate::trees::*;

/// Runs `backplan ARGS` in `dir` as a user who cannot read what is mode 000 (as root: `nobody`,
/// through setpriv, with the folder handed over, since root reads everything).
fn as_a_user(dir: &Path, args: &[&str]) -> std::process::Output {
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
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_backplan"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_backplan"))
    };
    cmd.args(args).current_dir(dir).output().unwrap()
}

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

    let out = as_a_user(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
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

    let b = backups_json(dir)
        .into_iter()
        .find(|b| b["key"] == "before-import")
        .unwrap();
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
    let store = backplan::state::Store::open(&dir.join("state")).unwrap();
    let mut r = store
        .get_backup(b["id"].as_str().unwrap().parse().unwrap())
        .unwrap()
        .unwrap();
    r.failed_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    store.put_backup(&r).unwrap();
    drop(store);
    let out = as_a_user(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = backups_json(dir)
        .into_iter()
        .find(|b| b["key"] == "before-import")
        .unwrap();
    assert_eq!(b["status"], "completed", "{b}");
    assert!(b["unreadable"].is_null(), "{b}");
}

/// The data packs of the local repository in `dir`, largest last.
fn packs(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
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
    let (len, pack) = packs(dir).pop().unwrap();
    assert!(len > 2 << 20, "{len}");
    let mut bytes = std::fs::read(&pack).unwrap();
    for b in &mut bytes[(len as usize / 2)..(len as usize / 2 + 64)] {
        *b ^= 0xff;
    }
    std::fs::write(&pack, bytes).unwrap();
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
