//! Planner guards that validation already stops in a file, checked on the planner alone (a
//! model changed after validation), so that the planner is safe on its own.

use std::path::Path;

use backplan::config::InstanceType;
use backplan::config::values::Version;
use backplan::plan::{PlanOptions, plan};
use backplan::records::Recorded;
use chrono::{TimeZone, Utc};

const FILE: &str = r#"
[daemon]
state_dir = "state"
[instances.prod]
type = "production"
version = "9.0"
source = { kind = "directory", path = "/srv/prod" }
[instances.prod.backups.snap]
label = "Snap"
[instances.sb]
type = "sandbox"
version = "9.0"
source = { kind = "directory", path = "/srv/sb" }
[restores.r1]
from = "prod/snap"
to = "sb"
"#;

fn config() -> backplan::config::Config {
    backplan::config::parse(Path::new("/etc/backplan/backplan.toml"), FILE)
        .expect("the file is valid")
        .0
}

#[test]
fn the_file_as_written_plans_creates_and_a_restore() {
    let p = plan(
        &config(),
        &Recorded::default(),
        Utc::now(),
        PlanOptions::default(),
    );
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert_eq!(p.actions.last().unwrap().address, "restore.r1");
}

#[test]
fn planner_refuses_a_restore_into_production_on_its_own() {
    let mut cfg = config();
    cfg.instances.get_mut("sb").unwrap().kind = InstanceType::Production;
    let p = plan(
        &cfg,
        &Recorded::default(),
        Utc::now(),
        PlanOptions::default(),
    );
    assert!(p.actions.is_empty());
    assert_eq!(p.refusals.len(), 1);
    assert_eq!(p.refusals[0].rule, "restore-into-production");
    assert_eq!(p.refusals[0].address, "restore.r1");
    assert!(
        p.refusals[0]
            .location
            .starts_with("/etc/backplan/backplan.toml:"),
        "{}",
        p.refusals[0].location
    );
}

#[test]
fn planner_refuses_a_backup_below_min_backup_version_on_its_own() {
    let mut cfg = config();
    cfg.schedule.min_backup_version = Some(Version::parse("9.1").unwrap());
    let p = plan(
        &cfg,
        &Recorded::default(),
        Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap(),
        PlanOptions::default(),
    );
    assert!(p.actions.is_empty());
    let rules: Vec<_> = p.refusals.iter().map(|r| r.rule).collect();
    assert_eq!(rules, ["min-backup-version", "unknown-backup"]);
}
