//! The daily schedule as `status` shows it: the next slot of each instance.

use std::path::Path;

use backplan::plan::planner::daily_id;
use backplan::records::Recorded;
use chrono::{NaiveDate, TimeZone, Utc};

const FILE: &str = r#"
[daemon]
state_dir = "state"
[schedule]
daily_at = "14:00"
timezone = "UTC"
[instances.contoso]
type = "production"
version = "9.0"
source = { kind = "directory", path = "/srv/contoso" }
"#;

#[test]
fn next_daily_never_shows_a_slot_already_recorded() {
    let cfg = backplan::config::parse(Path::new("/etc/backplan/backplan.toml"), FILE)
        .expect("the file is valid")
        .0;
    // Today's daily was taken at 02:00, before `daily_at` moved to 14:00.
    let today = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let id = daily_id("contoso", today);
    let rec: Recorded = serde_json::from_value(serde_json::json!({
        "instances": {
            "contoso": {
                "name": "contoso", "type": "production", "version": "9.0",
                "source": { "kind": "directory", "path": "/srv/contoso" },
                "created_at": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T08:00:00Z"
            }
        },
        "backups": {
            id.to_string(): {
                "id": id, "instance": "contoso", "source_kind": "directory",
                "kind": "daily", "created_by": "System", "label": "Daily backup", "storage": "local",
                "status": "completed", "created_at": "2026-11-27T02:00:00Z",
                "completed_at": "2026-11-27T02:01:00Z", "expires_at": "2026-11-30T02:00:00Z",
                "date": "2026-11-27"
            }
        }
    }))
    .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let status = backplan::views::status(Some(&cfg), &rec, now);
    assert_eq!(
        status[0].next_daily,
        Some(Utc.with_ymd_and_hms(2026, 11, 28, 14, 0, 0).unwrap()),
        "today's slot is recorded already"
    );
}
