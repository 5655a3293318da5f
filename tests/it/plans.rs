//! Plan snapshots: each folder in `tests/fixtures/plans/` is one scenario:
//!
//! - `backplan.toml`: the configuration (with `state_dir = "state"`);
//! - `state.json` (optional): the recorded state, a `backplan::records::Recorded` as JSON,
//!   written into a real state store before planning;
//! - `case.toml`: `at = "<RFC 3339 time>"`, optional `args = [...]` for `backplan plan`,
//!   and `about = "..."`, the rule of SPEC section 3 the case covers.
//!
//! The plan is snapshotted as text and as JSON (with the exit status of
//! `--detailed-exitcode`), in `tests/it/snapshots/plans/`.

use crate::helpers::*;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    about: String,
    at: String,
    #[serde(default)]
    args: Vec<String>,
}

#[test]
fn plan_fixtures() {
    let dirs = fixture_dirs("plans");
    let count = dirs.len();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let case: Case = toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap())
            .unwrap_or_else(|e| panic!("{name}/case.toml: {e}"));
        let cfg = std::fs::read_to_string(dir.join("backplan.toml")).unwrap();
        assert!(
            cfg.contains("state_dir = \"state\""),
            "{name}: the config must set state_dir = \"state\""
        );
        let tmp = scratch_copy(&dir);
        if let Ok(json) = std::fs::read_to_string(dir.join("state.json")) {
            let rec =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}/state.json: {e}"));
            seed_state(&tmp.path().join("state"), &rec);
        }
        let mut args = vec![
            "plan",
            "-c",
            "backplan.toml",
            "--at",
            &case.at,
            "--detailed-exitcode",
        ];
        args.extend(case.args.iter().map(String::as_str));
        let text = backplan(tmp.path(), &args);
        args.push("--json");
        let json = backplan(tmp.path(), &args);
        assert_eq!(
            text.code, json.code,
            "{name}: text and JSON runs disagree on the exit status"
        );
        insta::with_settings!({
            snapshot_path => "snapshots/plans",
            prepend_module_to_snapshot => false,
            description => case.about.clone(),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{name}.text"), text.transcript());
            insta::assert_snapshot!(format!("{name}.json"), json.transcript());
        });
    }
    // Checked last, so that the snapshots of a growing corpus are all written first.
    assert!(
        count >= 30,
        "expected at least 30 plan scenarios, found {count}"
    );
}
