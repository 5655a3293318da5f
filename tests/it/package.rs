//! What ships beside the binary, generated from its command line: `--help` examples, shell
//! completions and manual pages (the Debian package installs them; `packaging/check-deb.sh`
//! checks the package itself).

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

/// The commands `backplan --help` lists (clap's own `help` aside).
fn commands() -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let run = backplan(tmp.path(), &["--help"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let list: Vec<String> = run
        .stdout
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section")
        .lines()
        .take_while(|l| l.starts_with("  "))
        // Continuation lines of a long description are indented further.
        .filter(|l| !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|c| c != "help")
        .collect();
    for known in [
        "validate", "plan", "apply", "run", "status", "backups", "show", "verify",
    ] {
        assert!(list.iter().any(|c| c == known), "{known} not in {list:?}");
    }
    list
}

#[test]
fn every_command_help_ends_with_examples_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    for cmd in commands() {
        let run = backplan(tmp.path(), &[&cmd, "--help"]);
        assert_eq!(run.code, 0, "{}", run.transcript());
        let examples =
            run.stdout.split("\nExamples:\n").nth(1).unwrap_or_else(|| {
                panic!("`backplan {cmd} --help` has no examples:\n{}", run.stdout)
            });
        assert!(
            examples.contains(&format!("  backplan {cmd}")),
            "the examples of `{cmd} --help` do not show it:\n{examples}"
        );
    }
}

fn completions(shell: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let run = backplan(tmp.path(), &["completions", shell]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    for cmd in commands() {
        assert!(run.stdout.contains(&cmd), "{shell} completion lacks {cmd}");
    }
    run.stdout
}

#[test]
fn the_bash_completion_parses_and_completes_commands_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("backplan.bash");
    std::fs::write(&script, completions("bash")).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // What a user gets on TAB, through the completion function bash would call.
    let complete = |words: &str| {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                r#"source "$1"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE="{words}"; COMP_POINT=${{#COMP_LINE}}; _backplan backplan "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; printf '%s\n' "${{COMPREPLY[@]}}""#
            ))
            .arg("complete")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("backplan ba").trim(), "backups");
    let plan = complete("backplan plan --");
    for option in ["--json", "--detailed-exitcode", "--config", "--at"] {
        assert!(plan.lines().any(|l| l == option), "{option} not in {plan}");
    }
    assert!(!plan.contains("--clock-file"), "a hidden option is offered");
    let shells = complete(r#"backplan completions """#);
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            shells.lines().any(|l| l == shell),
            "{shell} not in {shells}"
        );
    }
}

#[test]
fn the_zsh_and_fish_completions_name_every_command() {
    assert!(completions("zsh").starts_with("#compdef backplan"));
    assert!(completions("fish").contains("complete -c backplan"));
}

/// `groff` renders the page (`-ww`: every warning), as ASCII so that names stay searchable.
fn render(page: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("groff")
        .args(["-man", "-Tascii", "-ww", "-rLL=200n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff is installed (Debian package `groff-base`; scripts/install-test-deps.sh)");
    child.stdin.take().unwrap().write_all(page).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    // Bold and underline are overstrikes in ASCII output.
    let text = String::from_utf8(out.stdout).unwrap();
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

#[test]
fn the_manual_page_renders_and_names_every_command_with_its_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let run = backplan(tmp.path(), &["man"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let text = render(run.stdout.as_bytes());
    assert!(
        text.contains("backplan - Declarative backup and restore daemon"),
        "{text}"
    );
    for cmd in commands() {
        assert!(
            text.contains(&format!("backplan-{cmd}(1)")),
            "{cmd} missing:\n{text}"
        );
    }
    let examples = text.split("EXAMPLES").nth(1).expect("an EXAMPLES section");
    assert!(
        examples.contains("backplan validate -c /etc/backplan/backplan.toml"),
        "{text}"
    );
}

#[test]
fn man_out_dir_writes_one_rendering_page_per_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    std::fs::create_dir(&dir).unwrap();
    let run = backplan(tmp.path(), &["man", "--out-dir", "man1"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<String> = commands()
        .iter()
        .map(|c| format!("backplan-{c}.1"))
        .chain(["backplan.1".to_string()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    let plan = render(&std::fs::read(dir.join("backplan-plan.1")).unwrap());
    assert!(
        plan.contains("backplan plan [-c|--config] [--json]"),
        "{plan}"
    );
    // Options keep ASCII hyphens in the examples, so they can be copied.
    assert!(
        plan.contains("  backplan plan --detailed-exitcode"),
        "{plan}"
    );
    // A folder that cannot be written is an error naming it.
    let run = backplan(tmp.path(), &["man", "--out-dir", "missing"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    assert!(!Path::new(&tmp.path().join("missing")).exists());
}

#[test]
fn the_packaged_example_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = backplan(root, &["validate", "-c", "packaging/backplan.toml.example"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
}
