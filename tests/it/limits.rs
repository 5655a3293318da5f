//! Input limits and what reaches a terminal: label and notes lengths, control characters in
//! text output (JSON stays exact), the size and encoding of the configuration file.

use backplan::records::Recorded;

use crate::helpers::*;

const CONFIG: &str = "[daemon]\nstate_dir = \"state\"\n\n[instances.contoso]\ntype = \"sandbox\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"/srv/contoso\" }\n";

/// A folder with `backplan.toml` and a state holding one on-demand backup of `contoso`
/// with this label and these notes, and the instance with this error.
fn recorded(label: &str, notes: &str, error: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("backplan.toml"), CONFIG).unwrap();
    let state = serde_json::json!({
        "instances": {
            "contoso": {
                "name": "contoso", "type": "sandbox", "version": "1",
                "source": { "kind": "directory", "path": "/srv/contoso" },
                "created_at": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T08:00:00Z",
                "error": error,
            }
        },
        "backups": {
            "00000000-0000-4000-8000-000000000001": {
                "id": "00000000-0000-4000-8000-000000000001", "instance": "contoso",
                "source_kind": "directory", "kind": "on-demand", "key": "k",
                "created_by": "user", "label": label, "notes": notes, "storage": "local",
                "status": "completed", "created_at": "2026-11-26T02:00:00Z",
                "completed_at": "2026-11-26T02:01:00Z", "error": error,
            }
        }
    });
    let rec: Recorded = serde_json::from_value(state).unwrap();
    seed_state(&tmp.path().join("state"), &rec);
    tmp
}

#[test]
fn a_long_recorded_label_is_listed_and_a_long_one_in_the_file_is_refused() {
    // Recorded before the limit existed (or written by hand): shown, never a panic.
    let label = "L".repeat(70_000);
    let tmp = recorded(&label, "", "");
    let run = backplan(tmp.path(), &["backups", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", &run.stderr[..run.stderr.len().min(2000)]);
    assert!(run.stdout.contains(&label));

    // In the file, it is refused where it is written.
    let dir = tmp.path();
    append_config(
        dir,
        &format!("[instances.contoso.backups.big]\nlabel = \"{label}\"\n"),
    );
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("error[too-long]"),
        "{}",
        &run.stderr[..300]
    );
    assert!(
        run.stderr
            .contains("has 70000 characters; at most 200 are allowed")
    );
    assert!(
        run.stderr.contains("backplan.toml:10:9"),
        "{}",
        &run.stderr[..300]
    );

    // At the limit it is fine.
    std::fs::write(
        dir.join("backplan.toml"),
        format!(
            "{CONFIG}[instances.contoso.backups.big]\nlabel = \"{}\"\nnotes = \"\"\"\n{}\"\"\"\n",
            "L".repeat(200),
            "N".repeat(2000)
        ),
    )
    .unwrap();
    let run = backplan(dir, &["validate", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}

const EVIL: &str = "x\u{1b}[2J\u{1b}]0;owned\u{7}\rreset\u{9b}31m\u{202e}";

fn assert_no_controls(what: &str, text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{what} printed a control character: {text:?}"
    );
}

#[test]
fn control_characters_are_escaped_in_text_and_exact_in_json() {
    let tmp = recorded(EVIL, &format!("first\nSTATUS completed{EVIL}"), EVIL);
    let dir = tmp.path();
    for args in [
        &["backups", "-c", "backplan.toml"][..],
        &["show", "-c", "backplan.toml", "contoso/k"],
        &["status", "-c", "backplan.toml"],
    ] {
        let run = backplan(dir, args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.transcript());
        assert_no_controls(args[0], &run.stdout);
        assert_no_controls(args[0], &run.stderr);
        assert!(
            run.stdout
                .contains(r"x\u{1b}[2J\u{1b}]0;owned\u{7}\rreset\u{9b}31m\u{202e}"),
            "{args:?}: {}",
            run.stdout
        );
    }
    // A newline in the notes cannot fake a line of `show`.
    let run = backplan(dir, &["show", "-c", "backplan.toml", "contoso/k"]);
    assert!(
        run.stdout.contains(r"first\nSTATUS completed"),
        "{}",
        run.stdout
    );

    // JSON is exact.
    let b = &backups_json(dir)[0];
    assert_eq!(b["label"].as_str().unwrap(), EVIL);
    let run = backplan(dir, &["show", "-c", "backplan.toml", "contoso/k", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["backup"]["label"].as_str().unwrap(), EVIL);
}

#[test]
fn control_characters_from_the_file_are_escaped_in_plan_and_diagnostics() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // TOML escapes put control characters in values: a path, a label.
    let text = "[daemon]\nstate_dir = \"state\"\n\n[instances.contoso]\ntype = \"sandbox\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"/srv/con\\u001b[2Jtoso\" }\n\n[instances.contoso.backups.k]\nlabel = \"\\u001b]0;owned\\u0007\"\n";
    std::fs::write(dir.join("backplan.toml"), text).unwrap();
    let run = backplan(dir, &["plan", "-c", "backplan.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert_no_controls("plan", &run.stdout);
    assert!(
        run.stdout
            .contains(r"source    = directory /srv/con\u{1b}[2Jtoso"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(r#"label     = "\u{1b}]0;owned\u{7}""#),
        "{}",
        run.stdout
    );

    // A raw control character in the file: its diagnostic quotes the line, escaped, with
    // the caret under the character.
    std::fs::write(dir.join("raw.toml"), "# a comment\u{1b}[2J here\n").unwrap();
    let run = backplan(dir, &["validate", "-c", "raw.toml"]);
    assert_eq!(run.code, 1);
    assert_no_controls("validate", &run.stderr);
    assert!(
        run.stderr
            .contains("1 | # a comment\\u{1b}[2J here\n  |            ^\n"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_file_larger_than_the_limit_is_refused_before_it_is_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limit = backplan::config::MAX_FILE_BYTES as usize;
    let pad = |size: usize| {
        let mut text = CONFIG.to_string();
        let comment = "# padding\n";
        while text.len() + comment.len() <= size {
            text += comment;
        }
        text += &"#".repeat(size - text.len() - 1);
        text.push('\n');
        assert_eq!(text.len(), size);
        text
    };
    std::fs::write(dir.join("at.toml"), pad(limit)).unwrap();
    let run = backplan(dir, &["validate", "-c", "at.toml"]);
    assert_eq!(run.code, 0, "{}", run.transcript());

    std::fs::write(dir.join("over.toml"), pad(limit + 1)).unwrap();
    for cmd in ["validate", "plan", "status"] {
        let run = backplan(dir, &[cmd, "-c", "over.toml"]);
        assert_eq!(run.code, 1, "{cmd}: {}", run.transcript());
        assert!(
            run.stderr.contains("over.toml is larger than 32 MiB"),
            "{cmd}: {}",
            run.stderr
        );
    }
}

#[test]
fn invalid_utf8_is_reported_with_its_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut bytes = CONFIG.as_bytes().to_vec();
    // Line 8 (after the 7 lines of CONFIG), column 9: `é` counts as one column.
    bytes.extend_from_slice("# café, ".as_bytes());
    bytes.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(dir.join("b.toml"), &bytes).unwrap();
    for cmd in ["validate", "plan", "status"] {
        let run = backplan(dir, &[cmd, "-c", "b.toml"]);
        assert_eq!(run.code, 1, "{cmd}: {}", run.transcript());
        assert!(
            run.stderr
                .contains("b.toml:8:9: the configuration file is not valid UTF-8 (byte 0xff)"),
            "{cmd}: {}",
            run.stderr
        );
    }
}
