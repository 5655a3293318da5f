//! The daemon checks an external storage when the file adds or changes it, and `status` shows
//! the outcome (text and JSON), without waiting for it.

use std::time::{Duration, Instant};

use crate::daemon::Daemon;
use crate::helpers::*;
use crate::output::masked;
use crate::storage::*;

fn status(dir: &std::path::Path) -> Run {
    backplan(dir, &["status", "-c", "backplan.toml"])
}

/// Waits until `status` shows a storage line that satisfies `ok`; returns the line.
fn storage_line(d: &Daemon, dir: &std::path::Path, ok: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let run = status(dir);
        if let Some(l) = run
            .stdout
            .lines()
            .find(|l| l.starts_with("Storage archive") && ok(l))
        {
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "status never showed the check: {}\n{}",
            run.transcript(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_daemon_checks_an_added_or_changed_storage_and_status_shows_it() {
    let Some(endpoint) = emulator("azurite", "BACKPLAN_TEST_AZURITE") else {
        return;
    };
    let container = unique("check");
    create_container(&endpoint, &container);
    let tmp = quickstart_with(&format!(
        "[storage.archive]\nkind = \"azure\"\naccount = \"{AZ_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"{endpoint}\"\naccess_key_file = \"wrong.key\"\npassword_file = \"archive.key\""
    ));
    let dir = tmp.path();
    // A well-formed key that is not the account's.
    write_secret(
        &dir.join("wrong.key"),
        "AAAAdvM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    );
    write_secret(&dir.join("right.key"), AZ_KEY);
    let d = Daemon::start(dir, &[], &[]);
    let failed = storage_line(&d, dir, |l| l.contains("FAILED"));
    let json = backplan(dir, &["status", "-c", "backplan.toml", "--json"]);
    assert_eq!(json.code, 0, "{}", json.transcript());
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let storages = serde_json::to_string_pretty(&v["daemon"]["storages"]).unwrap();
    insta::assert_snapshot!(
        "daemon_storage_check_failed",
        masked(
            &format!("{failed}\n{storages}")
                .replace(&endpoint, "[ENDPOINT]")
                .replace(&container, "[CONTAINER]")
        )
    );
    assert!(d.log().contains("storage check: `archive`"), "{}", d.log());

    // The file changes the storage's key: checked again, usable now.
    let path = dir.join("backplan.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("wrong.key", "right.key")).unwrap();
    let usable = storage_line(&d, dir, |l| l.contains("usable"));
    assert!(usable.contains("Azure"), "{usable}");

    // A change elsewhere in the file does not check it again.
    let at = |l: &str| l.split("checked ").nth(1).map(String::from);
    std::thread::sleep(Duration::from_millis(1100));
    let reloads = || d.log().matches(": reloaded").count();
    let before = reloads();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("keep_last_good = 1", "keep_last_good = 2"),
    )
    .unwrap();
    d.wait_for("the reload", || reloads() > before);
    std::thread::sleep(Duration::from_millis(500));
    let again = storage_line(&d, dir, |_| true);
    assert_eq!(at(&again), at(&usable), "{again}");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
