//! Bad input at scale: property-based fuzzing (proptest, stable toolchain) of the file reader
//! and its validation, of backup references and of the control-socket protocol, seeded with
//! the invalid-file corpus (`tests/fixtures/invalid/*.toml`) and the quickstart, mutated. No
//! input may panic, and every refusal must be located (a span inside the file, rendered as
//! `FILE:LINE:COLUMN`). And a churn test: a file rewritten 200 times in 10 s under a running
//! daemon.
//!
//! `BACKPLAN_FUZZ_CASES` sets the number of cases of each property (default 1000, the CI run: a few seconds);
//! a long run: `BACKPLAN_FUZZ_CASES=100000 cargo test --test it -- fuzz::`.

use std::path::Path;
use std::time::{Duration, Instant};

use backplan::config::values::BackupRef;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use crate::daemon::{Daemon, prepared};
use crate::helpers::*;

fn cases() -> u32 {
    std::env::var("BACKPLAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The seeds: every file of the invalid corpus (read lossily: one is not UTF-8) and the
/// quickstart example.
fn seeds() -> &'static [String] {
    static SEEDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut v: Vec<String> = fixture_dirs("invalid")
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
            .collect();
        v.push(
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart/backplan.toml"),
            )
            .unwrap(),
        );
        assert!(v.len() > 40);
        v
    })
}

/// Pieces a mutation inserts: TOML syntax, the file's keys and values, and hostile text.
const TOKENS: &[&str] = &[
    "=",
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\"\"\"",
    "[instances.x]",
    "[instances.x.backups.y]",
    "[restores.r]",
    "[storage.s]",
    "[daemon]",
    "[schedule]",
    "type",
    "\"production\"",
    "\"sandbox\"",
    "version",
    "\"9.0\"",
    "source",
    "{ kind = \"directory\", path = \"d\" }",
    "kind",
    "path",
    "from",
    "to",
    "\"x/y\"",
    "\"x@latest\"",
    "\"x@daily:2026-02-30\"",
    "\"x@pre-update:1..2\"",
    "label",
    "notes",
    "retention",
    "\"0s\"",
    "\"99999999999d\"",
    "daily_at",
    "\"24:60\"",
    "timezone",
    "\"Mars/Base\"",
    "keep_last_good",
    "-1",
    "18446744073709551616",
    "1e309",
    "nan",
    "inf",
    "true",
    "password",
    "password_file",
    "\"/dev/null\"",
    "access_key",
    "secret",
    "exclude",
    "[\"!x\"]",
    "on_update",
    "[]",
    "\u{0}",
    "\u{7}",
    "\u{1b}[2J",
    "\u{202e}",
    "é",
    "✓",
    "\u{feff}",
    "\r\n",
    "\t",
    "..",
    "/",
    "~",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    Delete(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        2 => (any::<usize>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

/// The nearest character boundary at or before `at % (len + 1)`.
fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(seed: &str, mutations: &[Mutation]) -> String {
    let mut s = seed.to_string();
    for m in mutations {
        match *m {
            Mutation::Insert(at, t) => {
                let i = boundary(&s, at);
                s.insert_str(i, TOKENS[t]);
            }
            Mutation::Delete(at, n) => {
                let i = boundary(&s, at);
                let j = boundary(&s, i + n.min(s.len() - i));
                let j = if j < i { i } else { j };
                s.replace_range(i..j, "");
            }
            Mutation::Truncate(at) => {
                let i = boundary(&s, at);
                s.truncate(i);
            }
            Mutation::DuplicateLine(at) | Mutation::SwapLines(at, _) => {
                let mut lines: Vec<&str> = s.split('\n').collect();
                let a = at % lines.len();
                if let Mutation::SwapLines(_, b) = *m {
                    let b = b % lines.len();
                    lines.swap(a, b);
                } else {
                    lines.insert(a, lines[a]);
                }
                s = lines.join("\n");
            }
        }
    }
    s
}

/// Reads and validates `text` as a file in a folder that does not exist: never a panic, and
/// every refusal located inside the text and rendered with its line and column.
fn assert_read_located(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("/nonexistent/fuzz/backplan.toml");
    let parsed = std::panic::catch_unwind(|| backplan::config::parse(path, text));
    let Ok(parsed) = parsed else {
        return Err(TestCaseError::fail(format!("panicked on:\n{text}")));
    };
    // A file that is not TOML is never half-read: it is refused.
    if toml::from_str::<toml::Table>(text).is_err() {
        prop_assert!(parsed.is_err(), "not TOML, yet accepted:\n{text}");
    }
    let diags = match parsed {
        Ok(_) => return Ok(()),
        Err(d) => d,
    };
    prop_assert!(!diags.is_empty(), "refused without a diagnostic:\n{text}");
    let rendered =
        std::panic::catch_unwind(|| backplan::diagnostic::render("backplan.toml", text, &diags));
    let Ok(rendered) = rendered else {
        return Err(TestCaseError::fail(format!(
            "rendering panicked on:\n{text}"
        )));
    };
    for d in &diags {
        prop_assert!(
            d.span.start <= d.span.end && d.span.end <= text.len(),
            "[{}] {}: span {:?} outside the file of {} bytes:\n{text}",
            d.rule,
            d.message,
            d.span,
            text.len()
        );
        prop_assert!(!d.message.is_empty() && !d.rule.is_empty());
    }
    prop_assert!(
        rendered.matches("--> backplan.toml").count() >= diags.len(),
        "a diagnostic without its location:\n{rendered}\n--- in:\n{text}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_reader_never_panics_and_locates_every_refusal(
        seed in 0usize..1000,
        mutations in prop::collection::vec(mutation(), 0..8),
    ) {
        let seeds = seeds();
        let text = mutate(&seeds[seed % seeds.len()], &mutations);
        assert_read_located(&text)?;
    }

    #[test]
    fn random_text_is_refused_with_a_location(text in "\\PC{0,200}") {
        assert_read_located(&text)?;
    }

    #[test]
    fn backup_references_parse_or_say_why(
        base in prop::sample::select(vec![
            "contoso/before-import", "contoso@latest", "contoso@daily:2026-11-26",
            "contoso@pre-update:9.1", "0b9d6bb0-8c4e-4b1e-9a59-7d3d1f3c2a10",
        ]),
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let text = mutate(base, &mutations);
        let parsed = std::panic::catch_unwind(|| BackupRef::parse(&text));
        prop_assert!(parsed.is_ok(), "panicked on {text:?}");
        if let Ok(Err(why)) = parsed {
            prop_assert!(!why.is_empty(), "{text:?}");
        }
        // The same reference in a restore of a file: refused with a location, or accepted.
        let file = format!(
            "{}\n[restores.r]\nfrom = {}\nto = \"contoso-sandbox\"\n",
            seeds().last().unwrap(),
            toml_string(&text)
        );
        assert_read_located(&file)?;
    }

    #[test]
    fn control_requests_are_answered_or_refused_never_a_panic(
        base in prop::sample::select(vec![
            r#"{"command":"status","json":true}"#,
            r#"{"command":"backups","instance":"contoso","json":false}"#,
            r#"{"command":"show","backup":"contoso/before-import","json":true}"#,
            r#"{"command":"recorded"}"#,
            r#"{"command":"verify","subset":5.0}"#,
            r#"{"command":"apply","allow_mass_removal":false,"approved":"create instance.x"}"#,
        ]),
        mutations in prop::collection::vec(mutation(), 0..6),
    ) {
        let line = mutate(base, &mutations);
        let parsed = std::panic::catch_unwind(|| backplan::control::parse_request(&line));
        prop_assert!(parsed.is_ok(), "panicked on {line:?}");
        if let Ok(Err(why)) = parsed {
            prop_assert!(why.starts_with("bad request:"), "{why}");
        }
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn the_daemon_answers_every_malformed_request_and_stays_up() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = prepared();
    let dir = tmp.path();
    let mut d = Daemon::start(dir, &[], &[]);
    let socket = dir.join("state/backplan.sock");
    // Mutations of the status request (fixed seed: the same lines every run), minus those
    // that are still a valid request.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = prop::collection::vec(mutation(), 1..6);
    let mut sent = 0;
    while sent < 100 {
        let m = strategy.new_tree(&mut runner).unwrap().current();
        let line = mutate(r#"{"command":"status","json":true}"#, &m).replace('\n', " ");
        if backplan::control::parse_request(&line).is_ok() {
            continue;
        }
        sent += 1;
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        let v: serde_json::Value = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("reply to {line:?} is not JSON ({e}): {reply:?}"));
        assert!(
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("bad request")),
            "{line:?}: {reply}"
        );
    }
    assert!(d.running(), "{}", d.log());
    let run = backplan(dir, &["status", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// The file rewritten 200 times in 10 s under the daemon, in place (a reader may see it
/// half-written: empty, cut mid-line, or cut between tables, which drops backups): the
/// daemon converges on the last version, and each backup is created once.
#[test]
fn a_file_rewritten_200_times_in_10_s_converges_on_the_last_version() {
    let tmp = prepared();
    let dir = tmp.path();
    let base = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let mut d = Daemon::start(dir, &[], &[]);
    let version = |i: usize| {
        let mut s = base.clone();
        for k in 0..=(i / 20) {
            s += &format!("\n[instances.contoso.backups.churn-{k}]\nlabel = \"v{i} k{k}\"\n");
        }
        s
    };
    let start = Instant::now();
    for i in 0..200 {
        let text = version(i);
        std::fs::write(dir.join("backplan.toml"), &text).unwrap();
        // Every 7th save is seen half-written for a moment.
        if i % 7 == 3 {
            let cut = text.len() * (i % 5 + 1) / 6;
            std::fs::write(dir.join("backplan.toml"), &text.as_bytes()[..cut]).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            std::fs::write(dir.join("backplan.toml"), &text).unwrap();
        }
        let due = Duration::from_millis(50 * (i as u64 + 1));
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    // The saves came in a burst (paced at 50 ms; a loaded machine may stretch the last ones).
    assert!(start.elapsed() < Duration::from_secs(30));
    let last = version(199);
    assert_eq!(
        std::fs::read_to_string(dir.join("backplan.toml")).unwrap(),
        last
    );
    let want: Vec<(String, String)> = (0..10)
        .map(|k| (format!("churn-{k}"), format!("v199 k{k}")))
        .collect();
    let seen = || {
        let mut got: Vec<(String, String)> = backups_json(dir)
            .iter()
            .filter(|b| b["key"].as_str().is_some_and(|k| k.starts_with("churn-")))
            .filter(|b| b["status"] == "completed")
            .map(|b| {
                (
                    b["key"].as_str().unwrap().to_string(),
                    b["label"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort();
        got
    };
    d.wait_for("the last version in force", || {
        seen() == want
            && backplan(dir, &["plan", "-c", "backplan.toml", "--detailed-exitcode"]).code == 0
    });
    assert!(d.running(), "{}", d.log());
    // Each backup once: one record per key, one snapshot per record.
    let list = backups_json(dir);
    for k in 0..10 {
        let key = format!("churn-{k}");
        let records: Vec<_> = list.iter().filter(|b| b["key"] == key.as_str()).collect();
        assert_eq!(records.len(), 1, "{key}: {records:#?}");
    }
    let snaps = restic_snapshots(dir);
    let mut tags: Vec<String> = snaps
        .iter()
        .flat_map(|s| s["tags"].as_array().unwrap().iter())
        .filter_map(|t| t.as_str()?.strip_prefix("backup=").map(String::from))
        .collect();
    let n = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), n, "a backup stored twice");
    let completed = list.iter().filter(|b| b["status"] == "completed").count();
    assert_eq!(n, completed, "{list:#?}");
}

/// A save that drops a backup (half-written, a bad merge) deletes nothing, however many runs
/// follow within `deletion_grace`; the complete save brings the same backup back.
#[test]
fn a_file_that_drops_a_backup_deletes_nothing_within_the_grace() {
    let tmp = prepared();
    let dir = tmp.path();
    let full = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
    let apply = || backplan(dir, &["apply", "-c", "backplan.toml", "--auto-approve"]);
    let run = apply();
    assert_eq!(run.code, 0, "{}", run.transcript());
    let id = backups_json(dir)[0]["id"].as_str().unwrap().to_string();
    // Cut before the backup's table, as a save read half-way would be.
    let cut = full
        .find("[instances.contoso.backups.before-import]")
        .unwrap();
    let half = format!(
        "{}\n{}",
        &full[..cut],
        &full[full.find("[instances.contoso-sandbox]").unwrap()..]
    );
    std::fs::write(dir.join("backplan.toml"), &half).unwrap();
    for _ in 0..3 {
        let run = apply();
        assert_eq!(run.code, 0, "{}", run.transcript());
        assert_eq!(
            restic_snapshots(dir).len(),
            1,
            "data deleted within the grace"
        );
    }
    std::fs::write(dir.join("backplan.toml"), &full).unwrap();
    let run = apply();
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list = backups_json(dir);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["id"], id.as_str(), "the same backup, revived");
    assert_eq!(list[0]["status"], "completed");
}
