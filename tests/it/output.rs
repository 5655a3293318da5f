//! What a person sees: each command's text and JSON output as snapshots (run-specific paths,
//! times and ids filtered), so that a change of wording is a reviewed diff; tables that fit
//! the terminal; short backup ids.

use std::path::Path;

use crate::helpers::*;

/// Runs `backplan ARGS` in `dir` with `env` set (`COLUMNS` unset unless given), `dir` in the
/// output replaced with `[DIR]`.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    backplan_with_env(dir, args, env)
}

/// Text with what changes from run to run masked: times (`[TIME]`), UUIDs (`[UUID]`),
/// snapshot hashes (`[HASH]`), and 8-character ids at the start of a table row (`[ID]`).
/// Templates: `d` a digit, `h` a hexadecimal digit, anything else itself.
pub(crate) fn masked(s: &str) -> String {
    const TEMPLATES: [(&str, &str); 5] = [
        (
            "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh",
            "[HASH]",
        ),
        ("hhhhhhhh-hhhh-hhhh-hhhh-hhhhhhhhhhhh", "[UUID]"),
        ("dddd-dd-ddTdd:dd:ddZ", "[TIME]"),
        ("dddd-dd-ddTdd:dd:dd.", "[TIME]"),
        ("dddd-dd-dd dd:ddZ", "[TIME]"),
    ];
    let fits = |text: &[char], t: &str| {
        text.len() >= t.len()
            && t.chars().zip(text).all(|(p, c)| match p {
                'd' => c.is_ascii_digit(),
                'h' => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
                _ => p == *c,
            })
    };
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        // A table row starting with a short id.
        if chars.len() > 10
            && fits(&chars, "hhhhhhhh  ")
            && chars[..8].iter().any(|c| c.is_ascii_digit())
        {
            out.push_str("[ID]    ");
            i = 8;
        }
        'scan: while i < chars.len() {
            for (t, with) in TEMPLATES {
                if fits(&chars[i..], t) {
                    out.push_str(with);
                    i += t.chars().count();
                    if t.ends_with('.') {
                        // Fractions of a second, then the zone.
                        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == 'Z') {
                            i += 1;
                        }
                    }
                    continue 'scan;
                }
            }
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A scratch copy of a listing fixture with its state seeded.
fn listing(name: &str) -> tempfile::TempDir {
    let dir = fixtures().join("status").join(name);
    let tmp = scratch_copy(&dir);
    let rec: backplan::records::Recorded =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    seed_state(&tmp.path().join("state"), &rec);
    tmp
}

fn assert_fits(run: &Run, width: usize) {
    for line in run.stdout.lines() {
        assert!(
            line.chars().count() <= width,
            "wider than {width}: {line:?}\n{}",
            run.stdout
        );
    }
}

#[test]
fn backups_fit_the_terminal_with_short_ids() {
    let tmp = listing("listing");
    let dir = tmp.path();
    let c = ["-c", "backplan.toml"];
    for width in [80, 120, 200] {
        let columns = width.to_string();
        let env = [("COLUMNS", columns.as_str())];
        let all = run(dir, &["backups", c[0], c[1]], &env);
        assert_eq!(all.code, 0, "{}", all.transcript());
        assert_fits(&all, width);
        let one = run(dir, &["backups", c[0], c[1], "contoso-sandbox"], &env);
        assert_fits(&one, width);
        insta::assert_snapshot!(
            format!("backups_{width}"),
            format!("{}\n{}", all.transcript(), one.transcript())
        );
    }
    // Every id is shown by its first 8 characters (unique here), the full id is in the file.
    let narrow = run(dir, &["backups", c[0], c[1]], &[("COLUMNS", "80")]);
    assert!(narrow.stdout.contains("\nb737f986  "), "{}", narrow.stdout);
    assert!(!narrow.stdout.contains("b737f986-"), "{}", narrow.stdout);
    // Off a terminal without COLUMNS, cells are whole (for grep and scripts).
    let piped = run(dir, &["backups", c[0], c[1]], &[]);
    assert!(
        piped
            .stdout
            .contains("An older on-demand backup with a label much longer than any table column"),
        "{}",
        piped.stdout
    );
    assert!(piped.stdout.contains("edit, delete, restore"));
    let status = run(dir, &["status", c[0], c[1]], &[("COLUMNS", "80")]);
    assert_eq!(status.code, 0, "{}", status.transcript());
    assert_fits(&status, 80);
    insta::assert_snapshot!("status_80", masked(&status.transcript()));
}

#[test]
fn show_takes_a_unique_id_prefix_and_lists_an_ambiguous_ones_candidates() {
    let tmp = listing("listing");
    let dir = tmp.path();
    let show = |r: &str| run(dir, &["show", "-c", "backplan.toml", r], &[]);
    let short = show("b737f986");
    assert_eq!(short.code, 0, "{}", short.transcript());
    assert!(short.stdout.starts_with("backup.contoso/before-import\n"));
    assert!(
        short
            .stdout
            .contains("id            b737f986-7cb0-5726-b4e7-9c86df523c44")
    );
    assert_eq!(
        show("B737F9").code,
        0,
        "a prefix in capitals is the same id"
    );
    assert_eq!(show("3f2a9").code, 0, "unique from its 5th character");
    let ambiguous = show("3f2a");
    let unknown = show("ffff");
    let no_key = show("contoso/no-such-key");
    let no_instance = show("fabrikam@latest");
    let no_instance_list = run(dir, &["backups", "-c", "backplan.toml", "fabrikam"], &[]);
    for r in [
        &ambiguous,
        &unknown,
        &no_key,
        &no_instance,
        &no_instance_list,
    ] {
        assert_eq!(r.code, 1, "{}", r.transcript());
        assert!(r.stdout.is_empty(), "{}", r.transcript());
        assert!(r.stderr.starts_with("error: "), "{}", r.transcript());
    }
    assert!(
        ambiguous
            .stderr
            .contains("3f2a7b55-0c19-5e2a-8d3f-9e1b4c6a7d02")
            && ambiguous
                .stderr
                .contains("3f2a9c1e-7d41-5b8e-9a0c-2b6d8e4f1a01"),
        "{}",
        ambiguous.stderr
    );
    assert!(no_key.stderr.contains("before-import, old-import"));
    assert!(no_instance.stderr.contains("contoso, contoso-sandbox"));
    insta::assert_snapshot!(
        "show_errors",
        [ambiguous, unknown, no_key, no_instance, no_instance_list]
            .iter()
            .map(Run::transcript)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn every_json_output_is_an_object_with_format_version_and_nulls_for_absent_values() {
    let tmp = listing("listing");
    let dir = tmp.path();
    let c = ["-c", "backplan.toml"];
    let at = ["--at", "2026-11-27T12:00:00Z"];
    let outputs = [
        ("status", run(dir, &["status", c[0], c[1], "--json"], &[])),
        ("backups", run(dir, &["backups", c[0], c[1], "--json"], &[])),
        (
            "show",
            run(
                dir,
                &["show", c[0], c[1], "contoso/before-import", "--json"],
                &[],
            ),
        ),
        (
            "plan",
            run(dir, &["plan", c[0], c[1], at[0], at[1], "--json"], &[]),
        ),
    ];
    for (name, r) in &outputs {
        assert_eq!(r.code, 0, "{name}: {}", r.transcript());
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["format_version"], 1, "{name}: {}", r.stdout);
    }
    let v = |i: usize| serde_json::from_str::<serde_json::Value>(&outputs[i].1.stdout).unwrap();
    let status = v(0);
    assert!(status["daemon"].is_null(), "no daemon runs");
    assert_eq!(status["instances"].as_array().unwrap().len(), 2);
    assert!(status["instances"][0]["deleting"].is_object());
    assert!(status["instances"][1]["deleting"].is_null());
    let backups = v(1);
    let list = backups["backups"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    let keys = |b: &serde_json::Value| {
        let mut k: Vec<String> = b.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    // Every backup has the same fields, `null` where it has no value.
    for b in list {
        assert_eq!(keys(b), keys(&list[0]), "{b}");
    }
    let daily = list.iter().find(|b| b["kind"] == "daily").unwrap();
    assert!(
        daily["key"].is_null() && daily["delete_at"].is_null(),
        "{daily}"
    );
    let show = v(2);
    assert_eq!(keys(&show["backup"]), keys(&list[0]));
    assert!(show["history"].is_array());
    insta::assert_snapshot!(
        "json",
        outputs
            .iter()
            .map(|(name, r)| format!("### {name}\n{}", masked(&r.transcript())))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn json_of(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.transcript()))
}

fn action<'v>(plan: &'v serde_json::Value, address: &str) -> &'v serde_json::Value {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["address"] == address)
        .unwrap_or_else(|| panic!("no {address} in {plan}"))
}

#[test]
fn plan_then_apply_show_the_ids_apply_records_or_known_after_apply() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "hello\n").unwrap();
    let c = ["-c", "backplan.toml"];
    // An on-demand backup's id includes the time it is taken: the plan does not promise one.
    let plan = run(dir, &["plan", c[0], c[1], "--json"], &[]);
    let create = action(&json_of(&plan), "backup.contoso/before-import").clone();
    assert!(create["details"]["id"].is_null(), "{create}");
    let text = run(dir, &["plan", c[0], c[1]], &[]);
    assert!(
        text.stdout.contains("id        = (known after apply)"),
        "{}",
        text.stdout
    );
    let applied = run(dir, &["apply", c[0], c[1], "--auto-approve"], &[]);
    assert_eq!(applied.code, 0, "{}", applied.transcript());
    assert!(applied.stdout.contains("id        = (known after apply)"));
    let taken = backup_id(dir, "before-import");

    // A restore: the backup it restores and its safety backup are known before, and are the
    // ones apply uses and records; so are the daily backups due.
    append_config(
        dir,
        "[restores.refresh-sandbox]\nfrom = \"contoso/before-import\"\nto = \"contoso-sandbox\"\n",
    );
    let plans: Vec<serde_json::Value> = (0..2)
        .map(|_| json_of(&run(dir, &["plan", c[0], c[1], "--json"], &[])))
        .collect();
    let restore = action(&plans[0], "restore.refresh-sandbox")["details"].clone();
    assert_eq!(
        restore,
        action(&plans[1], "restore.refresh-sandbox")["details"],
        "planned twice, the same ids"
    );
    assert_eq!(restore["backup"], taken.as_str());
    let safety = restore["pre_restore_backup"].as_str().unwrap().to_string();
    let text = run(dir, &["plan", c[0], c[1]], &[]);
    assert!(
        text.stdout.contains(&format!(
            "safety    = pre-restore backup of contoso-sandbox, taken first (id {safety})"
        )),
        "{}",
        text.stdout
    );
    let dailies: Vec<String> = plans[0]["due"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["work"] == "daily-backup")
        .map(|d| d["details"]["id"].as_str().unwrap().to_string())
        .collect();
    let applied = run(dir, &["apply", c[0], c[1], "--auto-approve"], &[]);
    assert_eq!(applied.code, 0, "{}", applied.transcript());
    // The safety backup is reported by what it is, not by a bare id.
    assert!(
        applied.stdout.contains(&format!(
            "ok   backup.contoso-sandbox@pre-restore:{}: backed up",
            &safety[..8]
        )),
        "{}",
        applied.stdout
    );
    let recorded: Vec<serde_json::Value> = backups_json(dir);
    let pre_restore = recorded
        .iter()
        .find(|b| b["kind"] == "pre-restore")
        .expect("a safety backup was taken");
    assert_eq!(pre_restore["id"], safety.as_str(), "{pre_restore}");
    for id in dailies {
        assert!(
            recorded.iter().any(|b| b["id"] == id.as_str()),
            "daily {id} planned, not recorded"
        );
    }
}

/// Every command on the quickstart, as a newcomer runs them, text and JSON: one snapshot.
#[test]
fn every_command_text_and_json() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data/contoso")).unwrap();
    std::fs::write(dir.join("data/contoso/a.txt"), "hello\n").unwrap();
    let env = [("COLUMNS", "80")];
    let c = ["-c", "backplan.toml"];
    let mut transcript = String::new();
    let mut show = |args: &[&str]| {
        let r = run(dir, args, &env);
        transcript += &format!(
            "$ backplan {}\n{}\n",
            args.join(" "),
            masked(&r.transcript())
        );
        r
    };
    for args in [
        &["validate", c[0], c[1]][..],
        &["validate", c[0], "missing.toml"],
        &["status", c[0], "missing.toml"],
        &["plan", c[0], c[1], "--at", "2026-11-27T12:00:00Z"],
        &["plan", c[0], c[1], "--at", "2026-11-27T12:00:00Z", "--json"],
        &["apply", c[0], c[1]],
        &["apply", c[0], c[1], "--auto-approve"],
        &["status", c[0], c[1]],
        &["status", c[0], c[1], "--json"],
        &["backups", c[0], c[1]],
        &["backups", c[0], c[1], "contoso", "--json"],
        &["show", c[0], c[1], "contoso/before-import"],
        &["show", c[0], c[1], "contoso/before-import", "--json"],
        &["verify", c[0], c[1], "--subset", "100%"],
        &["plan", c[0], c[1]],
    ] {
        show(args);
    }
    // A missing file: `error:`, and how to point at one.
    let missing = run(dir, &["validate", c[0], "missing.toml"], &[]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.starts_with("error: ") && missing.stderr.contains("$BACKPLAN_CONFIG"),
        "{}",
        missing.stderr
    );
    // An invalid file: validate's closing line says what is wrong, not what was not done.
    append_config(dir, "[instances.contoso.backups.typo]\nlable = \"x\"\n");
    for args in [
        &["validate", c[0], c[1]][..],
        &["plan", c[0], c[1]],
        &["status", c[0], c[1]],
    ] {
        let r = show(args);
        assert!(
            !r.stderr.contains("nothing was planned or changed"),
            "{}",
            r.stderr
        );
    }
    // What the repository adds depends on metadata (times) of the run.
    let transcript = transcript
        .lines()
        .map(|l| match (l.find("\"added\": "), l.find(" B added")) {
            (Some(i), _) => format!("{}\"added\": [N],", &l[..i]),
            (None, Some(j)) => {
                let start = l[..j]
                    .rfind(|c: char| !c.is_ascii_digit())
                    .map_or(0, |k| k + 1);
                format!("{}[N]{}", &l[..start], &l[j..])
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("every_command", transcript);
}

/// The daemon's log as a file or the journal gets it: no colour codes, one start line that
/// says what it runs with, and why each reconcile runs, in words.
#[test]
fn daemon_logs_are_plain_with_a_start_line_and_reasons_in_words() {
    let tmp = quickstart_copy();
    let dir = tmp.path();
    let set = |t: &str| {
        std::fs::write(dir.join("clock.new"), t).unwrap();
        std::fs::rename(dir.join("clock.new"), dir.join("clock")).unwrap();
    };
    set("2026-11-27T01:00:00Z");
    let d = crate::daemon::Daemon::start(dir, &["--clock-file", "clock"], &[]);
    // Idle after the first reconcile and its follow-ups: the next run is the slot's.
    let idle = || {
        let r = run(dir, &["status", "-c", "backplan.toml", "--json"], &[]);
        serde_json::from_str::<serde_json::Value>(&r.stdout).is_ok_and(|v| {
            v["daemon"]["activity"]
                .as_str()
                .is_some_and(|a| a.starts_with("waiting"))
        })
    };
    d.wait_for("the first reconcile", || {
        d.log().contains("reconciling: start") && idle()
    });
    set("2026-11-27T02:00:30Z");
    d.wait_for("the daily slot", || {
        d.log().contains("reconciling: daily slot due")
    });
    append_config(dir, "# a comment changes the file\n");
    d.wait_for("the edit", || d.log().contains("reconciling: file changed"));
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let log = d_log(dir);
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log}");
    let start: Vec<&str> = log.lines().filter(|l| l.contains(" started: ")).collect();
    assert_eq!(start.len(), 1, "{log}");
    let expected = format!(
        "backplan {} started: file backplan.toml, state {}, socket {}; watching backplan.toml for changes and the test clock clock",
        env!("CARGO_PKG_VERSION"),
        dir.join("state").display(),
        dir.join("state/backplan.sock").display()
    );
    assert!(start[0].ends_with(&expected), "{}\n{expected}", start[0]);
    assert!(!log.contains("reason="), "{log}");
}

fn d_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("daemon.log")).unwrap()
}
