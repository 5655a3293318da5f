//! The corpus of invalid files: each `tests/fixtures/invalid/*.toml` must be refused by
//! `backplan validate` with exit status 1, and its diagnostics are snapshotted in
//! `tests/it/snapshots/invalid/`. The first comment line of each file says what is wrong.

use crate::helpers::*;

#[test]
fn invalid_corpus() {
    let files: Vec<_> = fixture_dirs("invalid")
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    let count = files.len();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        let dir = file.parent().unwrap();
        let run = backplan(dir, &["validate", "-c", &format!("{name}.toml")]);
        assert_eq!(
            run.code,
            1,
            "{name}.toml should be invalid:\n{}",
            run.transcript()
        );
        assert!(
            run.stdout.is_empty(),
            "{name}: nothing on stdout when invalid"
        );
        assert!(
            run.stderr.contains(&format!("{name}.toml:")),
            "{name}: each diagnostic names FILE:LINE:COLUMN"
        );
        // Lossy: one file of the corpus is not UTF-8.
        let about = String::from_utf8_lossy(&std::fs::read(&file).unwrap())
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        insta::with_settings!({
            snapshot_path => "snapshots/invalid",
            prepend_module_to_snapshot => false,
            description => about,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, run.transcript());
        });
    }
    // Checked last, so that the snapshots of a growing corpus are all written first.
    assert!(
        count >= 40,
        "expected at least 40 invalid files, found {count}"
    );
}
