//! The editor schema in `config/backplan.schema.json` is generated from the config types and
//! must stay current; the reader's key lists must match the schema's properties; and the
//! serde derive of the same types reads valid files exactly like the diagnostic reader.
//!
//! To regenerate the schema after changing the config types:
//! `BACKPLAN_WRITE_SCHEMA=1 cargo test --test it schema`

use std::collections::BTreeSet;

use backplan::config::raw::*;
use serde_json::Value;

fn committed_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/backplan.schema.json")
}

#[test]
fn schema_file_is_current() {
    let generated = backplan::config::json_schema();
    if std::env::var_os("BACKPLAN_WRITE_SCHEMA").is_some() {
        std::fs::write(committed_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
    assert!(
        committed == generated,
        "config/backplan.schema.json is stale; run `BACKPLAN_WRITE_SCHEMA=1 cargo test --test it schema`"
    );
}

fn properties(schema: &Value, def: Option<&str>) -> BTreeSet<String> {
    let node = match def {
        None => schema,
        Some(d) => &schema["$defs"][d],
    };
    node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{def:?} has properties"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn reader_keys_match_the_schema() {
    let schema: Value = serde_json::from_str(&backplan::config::json_schema()).unwrap();
    let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(properties(&schema, None), keys(RawConfig::KEYS));
    for (def, known) in [
        ("RawDaemon", RawDaemon::KEYS),
        ("RawSchedule", RawSchedule::KEYS),
        ("RawStorage", RawStorage::KEYS),
        ("RawInstance", RawInstance::KEYS),
        ("RawSource", RawSource::KEYS),
        ("RawBackup", RawBackup::KEYS),
        ("RawRestore", RawRestore::KEYS),
        ("RawNotify", RawNotify::KEYS),
    ] {
        assert_eq!(properties(&schema, Some(def)), keys(known), "{def}");
        assert_eq!(
            schema["$defs"][def]["additionalProperties"],
            Value::Bool(false),
            "{def} denies unknown keys"
        );
    }
}

#[test]
fn serde_and_the_reader_agree_on_valid_files() {
    let dirs = [
        "examples/quickstart/backplan.toml",
        "examples/postgres/backplan.toml",
    ]
    .iter()
    .map(|p| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
    .chain(
        crate::helpers::fixture_dirs("plans")
            .into_iter()
            .map(|d| d.join("backplan.toml")),
    );
    let mut checked = 0;
    for file in dirs {
        let text = std::fs::read_to_string(&file).unwrap();
        let read = backplan::config::raw::read(&text);
        if !read.diagnostics.is_empty() {
            continue; // the invalid-file scenarios
        }
        let by_serde: RawConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(read.config.as_ref(), Some(&by_serde), "{}", file.display());
        checked += 1;
    }
    assert!(checked >= 2);
}
