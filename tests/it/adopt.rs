//! A lost host loses no backups: each snapshot carries its backup's record (label, notes,
//! kind, expiry, ...), an edit rewrites it as `restic tag` does, and `backplan storage adopt`
//! on a new host with an empty state rebuilds the catalogue of a storage from its snapshots.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;
use crate::output::masked;
use crate::storage::*;
use crate::trees::*;

/// `backplan storage adopt STORAGE`, with `--auto-approve` when `approve`.
fn adopt(dir: &Path, storage: &str, approve: bool) -> Run {
    let mut args = vec!["storage", "adopt", storage, "-c", "backplan.toml"];
    if approve {
        args.push("--auto-approve");
    }
    backplan(dir, &args)
}

fn set_config(dir: &Path, from: &str, to: &str) {
    let path = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// [`masked`], and also dates (`[DATE]`) and short snapshot ids (`[SNAPSHOT]`).
fn mask(s: &str) -> String {
    let s = masked(s);
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let date = |c: &[char]| {
        c.len() >= 10
            && c[..10].iter().enumerate().all(|(k, ch)| match k {
                4 | 7 => *ch == '-',
                _ => ch.is_ascii_digit(),
            })
    };
    let short = |c: &[char]| {
        c.len() >= 8
            && c[..8].iter().all(|ch| ch.is_ascii_hexdigit())
            && c.get(8).is_none_or(|ch| !ch.is_ascii_alphanumeric())
    };
    while i < chars.len() {
        if date(&chars[i..]) {
            out.push_str("[DATE]");
            i += 10;
            continue;
        }
        let prefix: String = out
            .chars()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if (prefix.ends_with("snapshot ") || prefix.ends_with("snapshot  = ")) && short(&chars[i..])
        {
            out.push_str("[SNAPSHOT]");
            i += 8;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The fields of a backup that its record must keep through a lost host.
fn essentials(b: &serde_json::Value) -> serde_json::Value {
    let keep = [
        "id",
        "instance",
        "kind",
        "key",
        "created_by",
        "label",
        "notes",
        "storage",
        "status",
        "created_at",
        "expires_at",
        "date",
        "snapshot_id",
    ];
    serde_json::Value::Object(
        keep.iter()
            .map(|k| (k.to_string(), b[*k].clone()))
            .collect(),
    )
}

fn in_storage(dir: &Path, storage: &str) -> Vec<serde_json::Value> {
    let mut v: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["storage"] == storage)
        .map(|b| essentials(&b))
        .collect();
    v.sort_by_key(|b| b["id"].as_str().unwrap().to_string());
    v
}

#[test]
fn a_new_host_adopts_the_azure_storage_and_restores_from_it() {
    let Some(endpoint) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("adopt");
    create_container(&endpoint, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{endpoint}\"\naccess_key_file = \"azure.key\"\npassword_file = \"archive.key\"\n\n[instances.contoso.backups.offsite]\nlabel = \"Off the host, v1\"\nnotes = \"Kept, until deleted\"\nstorage = \"archive\"\n\n[instances.contoso.backups.gone]\nlabel = \"Removed later\"\nstorage = \"archive\""
    ));
    let dir = tmp.path();
    write_secret(&dir.join("azure.key"), AZ_KEY);
    // System backups go to the archive too, so that they survive the host.
    set_config(
        dir,
        "keep_last_good = 1",
        "keep_last_good = 1\nstorage = \"archive\"\ndeletion_grace = \"1s\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let expected = dir.join("expected");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(dir.join("data/contoso"))
            .arg(&expected)
            .status()
            .unwrap()
            .success()
    );

    // Edits: the label of a backup in the archive and of one in the local repository; the
    // backup `gone` leaves the file (its data stays in the archive).
    set_config(dir, "Off the host, v1", "Off the host, edited");
    set_config(dir, "Before solution import", "Before import, edited");
    set_config(dir, "[instances.contoso.backups.gone]", "[unused.gone]");
    set_config(dir, "label = \"Removed later\"\nstorage = \"archive\"", "");
    set_config(dir, "[unused.gone]", "");
    // An update: its pre-update system backup goes to the archive.
    set_config(
        dir,
        "version = \"9.0\"\nsource = { kind = \"directory\", path = \"data/contoso\" }",
        "version = \"9.1\"\nsource = { kind = \"directory\", path = \"data/contoso\" }",
    );
    let local_before: Vec<serde_json::Value> = restic_snapshots(dir);
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(
        run.stdout.contains("its data stays in external storage"),
        "{}",
        run.transcript()
    );

    // The stock restic sees the edit in the local repository: one snapshot of the backup, the
    // same tree, the new label, and the first snapshot as its `original`.
    let local = restic_snapshots(dir);
    assert_eq!(local.len(), local_before.len(), "{local:#?}");
    let tags = |s: &serde_json::Value| -> Vec<String> {
        s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let edited: Vec<_> = local
        .iter()
        .filter(|s| tags(s).contains(&"key=before-import".to_string()))
        .collect();
    assert_eq!(edited.len(), 1, "{local:#?}");
    assert!(tags(edited[0]).contains(&"label=Before import, edited".to_string()));
    assert!(
        !tags(edited[0])
            .iter()
            .any(|t| t == "label=Before solution import")
    );
    let first = local_before
        .iter()
        .find(|s| tags(s).contains(&"key=before-import".to_string()))
        .unwrap();
    assert_eq!(edited[0]["tree"], first["tree"]);
    assert_ne!(edited[0]["id"], first["id"]);
    assert_eq!(edited[0]["original"], first["id"]);
    let recorded = backups_json(dir);
    let before_import = recorded
        .iter()
        .find(|b| b["key"] == "before-import")
        .unwrap();
    assert_eq!(before_import["snapshot_id"], edited[0]["id"]);

    let before = in_storage(dir, "archive");
    let kinds: std::collections::BTreeSet<&str> =
        before.iter().map(|b| b["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["on-demand", "pre-update"].into(), "{before:#?}");
    assert!(before.iter().any(|b| b["label"] == "Off the host, edited"));

    // The host is lost: its state (and the local repository in it) is gone.
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "changed after the backup\n").unwrap();

    // The plan first; off a terminal without --auto-approve nothing is written.
    let shown = adopt(dir, "archive", false);
    assert_eq!(shown.code, 1, "{}", shown.transcript());
    assert!(backups_json(dir).is_empty());
    insta::assert_snapshot!(
        "adopt_plan",
        mask(&shown.transcript().replace(&container, "[CONTAINER]"))
    );

    let run = adopt(dir, "archive", true);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_eq!(
        in_storage(dir, "archive"),
        before,
        "labels, kinds and expiry intact"
    );

    // Again: everything is in the catalogue already.
    let again = adopt(dir, "archive", true);
    assert_eq!(again.code, 0, "{}", again.transcript());
    assert!(
        again.stdout.starts_with("Nothing to adopt"),
        "{}",
        again.stdout
    );

    // Restorable by id into a sandbox.
    let offsite = before.iter().find(|b| b["key"] == "offsite").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    append_config(
        dir,
        &format!("[restores.after-the-loss]\nfrom = \"{offsite}\"\nto = \"contoso-sandbox\""),
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_same_tree(&expected, &dir.join("data/contoso-sandbox"));
    // The file's on-demand backup was adopted, not taken again.
    let offsites: Vec<_> = backups_json(dir)
        .into_iter()
        .filter(|b| b["key"] == "offsite")
        .collect();
    assert_eq!(offsites.len(), 1, "{offsites:#?}");
}

#[test]
fn adopt_on_a_local_storage_refuses_a_key_this_host_took_again_and_needs_no_daemon() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "a\n").unwrap();
    write_secret(&dir.join("disk.key"), "disk repository password\n");
    append_config(
        dir,
        "[storage.disk]\nkind = \"local\"\npath = \"disk\"\npassword_file = \"disk.key\"\n\n[instances.contoso.backups.k]\nlabel = \"On the other disk\"\nnotes = \"a, b\"\nstorage = \"disk\"",
    );
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let first = in_storage(dir, "disk");
    assert_eq!(first.len(), 1, "{first:#?}");
    std::fs::remove_dir_all(dir.join("state")).unwrap();

    // The new host applied the file before adopting: `contoso/k` is another backup now.
    let run = apply(dir);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let second = in_storage(dir, "disk");
    assert_eq!(second.len(), 1);
    assert_ne!(second[0]["id"], first[0]["id"]);
    let run = adopt(dir, "disk", true);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(
        run.stdout.contains("x backup.contoso/k [adopt-collision]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("already in the catalogue"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Adopt: 0 to import, 1 left alone, 1 refused."),
        "{}",
        run.stdout
    );
    assert_eq!(in_storage(dir, "disk"), second, "nothing overwritten");

    // With the key free (the state lost again before any apply), the first one comes back
    // with its label and notes.
    std::fs::remove_dir_all(dir.join("state")).unwrap();
    let run = adopt(dir, "disk", true);
    assert_eq!(
        run.code,
        1,
        "two backups carry `contoso/k`: {}",
        run.transcript()
    );
    let adopted = in_storage(dir, "disk");
    assert_eq!(adopted.len(), 1, "{adopted:#?}");
    assert_eq!(adopted, first, "the older of the two");
    assert_eq!(adopted[0]["notes"], "a, b");

    // A running daemon holds the state: adopt refuses and says how to go on.
    let d = crate::daemon::Daemon::start(dir, &[], &[]);
    let run = adopt(dir, "disk", false);
    assert_eq!(run.code, 1, "{}", run.transcript());
    assert!(run.stderr.contains("a daemon is running"), "{}", run.stderr);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
