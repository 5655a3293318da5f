//! The read-only status page (`/` on `metrics_listen`): the instances, the product's backup
//! list per instance, the current plan with its refusals, and the file's diagnostics when it
//! is rejected. Server-rendered HTML without JavaScript, readable on a phone (the tables turn
//! into one card per row on a narrow screen). **Everything from the file or the state is
//! HTML-escaped** (and control characters and bidirectional overrides shown as escapes, as in
//! the terminal): a label is hostile input.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::plan::{Plan, fmt_time};
use crate::records::{BackupRecord, BackupStatus, CreatedBy, DrillOutcome, Recorded};
use crate::views::{self, human_bytes};

/// Backups listed per instance (and restores listed); the rest are counted, with the command
/// that lists them all.
pub const BACKUPS_PER_INSTANCE: usize = 50;
/// Backup rows on the whole page: a host with thousands of instances gets a page of a few
/// megabytes, not hundreds.
pub const MAX_BACKUP_ROWS: usize = 2000;

pub struct Page<'a> {
    pub config: Option<&'a Config>,
    /// The rejected file's rendered diagnostics (or why it is not in force).
    pub config_error: Option<&'a str>,
    pub recorded: &'a Recorded,
    /// The plan of the file in force against the records, now.
    pub plan: Option<&'a Plan>,
    /// What the daemon is doing (`waiting; next run ...`).
    pub activity: &'a str,
    pub last_verify: Option<&'a str>,
    pub now: DateTime<Utc>,
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;color:#1a1a1a;background:#fff;line-height:1.4}\
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.2rem;margin:1.5rem 0 .5rem;border-bottom:1px solid #ddd}h3{font-size:1rem;margin:1rem 0 .25rem}\
.meta{color:#555;margin:0}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eee;vertical-align:top;overflow-wrap:break-word}\
th{background:#f4f4f4}.bad{color:#a40000;font-weight:600}.ok{color:#006400}\
.alert{border:2px solid #a40000;background:#fff4f4;padding:.5rem 1rem;margin:1rem 0}\
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:.5rem;font-size:.85rem}\
@media (max-width:40rem){table,thead,tbody,tr,th,td{display:block}thead{display:none}\
tr{border:1px solid #ddd;margin:0 0 .5rem;padding:.25rem}td{border:none;padding:.1rem .25rem}\
td::before{content:attr(data-label) \": \";font-weight:600;color:#555}}";

/// The page.
pub fn render(p: &Page) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    o.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    o.push_str("<title>backplan status</title><style>");
    o.push_str(STYLE);
    o.push_str("</style></head><body>\n<h1>backplan status</h1>\n");
    let _ = writeln!(
        o,
        "<p class=\"meta\">Daemon: {} &middot; as of {} &middot; backplan {}</p>",
        esc(p.activity),
        esc(&fmt_time(&p.now)),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(v) = p.last_verify {
        let _ = writeln!(o, "<p class=\"meta\">Last verify: {}</p>", esc(v));
    }
    if let Some(e) = p.config_error {
        let _ = writeln!(
            o,
            "<section class=\"alert\" id=\"config-error\"><h2>The configuration file was rejected</h2>\
             <p>The last valid file stays in force; nothing from the rejected one is applied.</p>\
             <pre>{}</pre></section>",
            esc_keep_lines(e)
        );
    }
    instances(&mut o, p);
    plan(&mut o, p);
    backups(&mut o, p);
    restores(&mut o, p);
    o.push_str("</body></html>\n");
    o
}

fn instances(o: &mut String, p: &Page) {
    o.push_str("<h2 id=\"instances\">Instances</h2>\n");
    let list = views::status(p.config, p.recorded, p.now);
    if list.is_empty() {
        o.push_str("<p>No instances.</p>\n");
        return;
    }
    let heads = [
        "Instance",
        "Type",
        "Version",
        "State",
        "Last good backup",
        "Last drill",
        "Next daily",
    ];
    table_head(o, &heads);
    for s in &list {
        let state = match &s.error {
            Some(e) => format!("<span class=\"bad\">{}</span>: {}", esc(&s.state), esc(e)),
            None if s.state == "ok" => "<span class=\"ok\">ok</span>".into(),
            None => esc(&s.state),
        };
        let last_good = s
            .last_good_backup
            .as_ref()
            .map(|g| {
                format!(
                    "{} ({})",
                    esc(&g.label),
                    g.completed_at
                        .as_ref()
                        .map(fmt_time)
                        .unwrap_or_else(|| "-".into())
                )
            })
            .unwrap_or_else(|| "<span class=\"bad\">none</span>".into());
        let last_drill = match &s.last_drill {
            Some(d) if d.outcome == DrillOutcome::Passed => {
                format!("<span class=\"ok\">{}</span>", esc(&d.text()))
            }
            Some(d) => format!("<span class=\"bad\">{}</span>", esc(&d.text())),
            None => "-".into(),
        };
        row(
            o,
            &heads,
            &[
                esc(&s.name),
                esc(&s.kind.to_string()),
                esc(&s.version),
                state,
                last_good,
                last_drill,
                s.next_daily
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "-".into()),
            ],
        );
    }
    o.push_str("</tbody></table>\n");
}

fn plan(o: &mut String, p: &Page) {
    o.push_str("<h2 id=\"plan\">Plan</h2>\n");
    let Some(plan) = p.plan else {
        o.push_str("<p>No valid configuration is in force: nothing is planned.</p>\n");
        return;
    };
    if !plan.refusals.is_empty() {
        let _ = writeln!(
            o,
            "<section class=\"alert\" id=\"refusals\"><h3>{} refusal(s): nothing from the file is applied</h3><ul>",
            plan.refusals.len()
        );
        for r in &plan.refusals {
            let _ = writeln!(
                o,
                "<li><strong>{}</strong> ({}, {}): {}. Fix: {}</li>",
                esc(&r.address),
                esc(r.rule),
                esc(&r.location),
                esc(&r.message),
                esc(&r.fix)
            );
        }
        o.push_str("</ul></section>\n");
    }
    // The plan as `backplan plan` shows it (already free of control characters).
    let _ = writeln!(
        o,
        "<pre id=\"plan-text\">{}</pre>",
        esc_keep_lines(&crate::plan::render::text(plan))
    );
}

fn backups(o: &mut String, p: &Page) {
    o.push_str("<h2 id=\"backups\">Backups</h2>\n");
    // Grouped once by instance, without copying the records (a large host holds hundreds of
    // thousands); expired and deleted ones are left out, as in `backplan backups`.
    let mut by_instance: BTreeMap<&str, Vec<&BackupRecord>> = BTreeMap::new();
    for b in p.recorded.backups.values() {
        if !matches!(b.status, BackupStatus::Expired | BackupStatus::Deleted) {
            by_instance.entry(&b.instance).or_default().push(b);
        }
    }
    if by_instance.is_empty() {
        o.push_str("<p>No backups recorded.</p>\n");
        return;
    }
    let heads = [
        "Label",
        "Created by",
        "Created on",
        "Expires on",
        "Status",
        "Size",
        "Storage",
        "Actions",
    ];
    let mut rows = 0;
    let instances = by_instance.len();
    for (i, (name, mut list)) in by_instance.into_iter().enumerate() {
        if rows >= MAX_BACKUP_ROWS {
            let _ = writeln!(
                o,
                "<p>The backups of {} more instance(s) are not shown: <code>backplan backups</code> lists them all.</p>",
                instances - i
            );
            break;
        }
        list.sort_by_key(|b| std::cmp::Reverse((b.created_at, b.id)));
        let _ = writeln!(o, "<h3>{}</h3>", esc(name));
        table_head(o, &heads);
        for b in list.iter().take(BACKUPS_PER_INSTANCE) {
            rows += 1;
            let status = views::status_text(b);
            let status = if b.status == BackupStatus::Failed {
                let why = b.error.as_deref().unwrap_or_default();
                format!("<span class=\"bad\">{}</span> {}", esc(&status), esc(why))
            } else {
                esc(&status)
            };
            let actions = views::allowed_actions(b);
            row(
                o,
                &heads,
                &[
                    esc(&b.label),
                    match b.created_by {
                        CreatedBy::System => "System".into(),
                        CreatedBy::User => "user".into(),
                    },
                    fmt_time(&b.created_at),
                    b.expires_at
                        .as_ref()
                        .map(fmt_time)
                        .unwrap_or_else(|| "never".into()),
                    status,
                    b.size_bytes
                        .map(|s| {
                            format!("{} ({} added)", human_bytes(s.read), human_bytes(s.added))
                        })
                        .unwrap_or_else(|| "-".into()),
                    esc(&b.storage),
                    if actions.is_empty() {
                        "-".into()
                    } else {
                        actions.join(", ")
                    },
                ],
            );
        }
        o.push_str("</tbody></table>\n");
        if list.len() > BACKUPS_PER_INSTANCE {
            let _ = writeln!(
                o,
                "<p>{} older backups are not shown: <code>backplan backups {}</code> lists them all.</p>",
                list.len() - BACKUPS_PER_INSTANCE,
                esc(name)
            );
        }
    }
}

fn restores(o: &mut String, p: &Page) {
    o.push_str("<h2 id=\"restores\">Restores</h2>\n");
    if p.recorded.restores.is_empty() {
        o.push_str("<p>No restores recorded.</p>\n");
        return;
    }
    let mut list: Vec<_> = p.recorded.restores.values().collect();
    list.sort_by(|a, b| (b.requested_at, &b.key).cmp(&(a.requested_at, &a.key)));
    let heads = [
        "Restore",
        "From",
        "Into",
        "Status",
        "Requested on",
        "Completed on",
    ];
    table_head(o, &heads);
    for r in list.iter().take(BACKUPS_PER_INSTANCE) {
        let status = format!("{:?}", r.status).to_lowercase();
        let status = match &r.error {
            Some(e) => format!("<span class=\"bad\">{}</span>: {}", esc(&status), esc(e)),
            None => esc(&status),
        };
        row(
            o,
            &heads,
            &[
                esc(&r.key),
                esc(&r.from),
                esc(&r.to),
                status,
                fmt_time(&r.requested_at),
                r.completed_at
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "-".into()),
            ],
        );
    }
    o.push_str("</tbody></table>\n");
}

fn table_head(o: &mut String, heads: &[&str]) {
    o.push_str("<table><thead><tr>");
    for h in heads {
        let _ = write!(o, "<th>{h}</th>");
    }
    o.push_str("</tr></thead><tbody>\n");
}

/// A row of cells already escaped (or built from escaped parts).
fn row(o: &mut String, heads: &[&str], cells: &[String]) {
    o.push_str("<tr>");
    for (h, c) in heads.iter().zip(cells) {
        let _ = write!(o, "<td data-label=\"{h}\">{c}</td>");
    }
    o.push_str("</tr>\n");
}

/// Text from the file or the state, for HTML: control characters and bidirectional overrides
/// as escapes, then `& < > " '` as entities.
pub fn esc(s: &str) -> String {
    html(&crate::diagnostic::printable(s, false))
}

fn esc_keep_lines(s: &str) -> String {
    html(&crate::diagnostic::printable(s, true))
}

fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_cut_with_the_command_that_lists_them_all() {
        let mut rec = Recorded::default();
        for i in 0..60u32 {
            let b: BackupRecord = serde_json::from_value(serde_json::json!({
                "id": uuid::Uuid::from_u128(i.into()),
                "instance": "contoso",
                "source_kind": "directory",
                "kind": "on-demand",
                "created_by": "user",
                "label": format!("backup number {i}"),
                "storage": "local",
                "status": "completed",
                "created_at": format!("2026-11-01T00:{:02}:00Z", i),
                "snapshot_id": "abc",
            }))
            .unwrap();
            rec.backups.insert(b.id, b);
        }
        let page = render(&Page {
            config: None,
            config_error: None,
            recorded: &rec,
            plan: None,
            activity: "waiting",
            last_verify: None,
            now: Utc::now(),
        });
        assert_eq!(page.matches("<td data-label=\"Label\">").count(), 50);
        // Newest first: the ten oldest are the ones left out.
        assert!(page.contains("backup number 59") && page.contains("backup number 10<"));
        assert!(!page.contains("backup number 9<"));
        assert!(
            page.contains("10 older backups are not shown: <code>backplan backups contoso</code>")
        );
        assert!(page.contains("No restores recorded."));
    }

    #[test]
    fn the_last_drill_of_each_instance_is_shown_escaped() {
        let text = "[daemon]\nstate_dir = \"state\"\n\n\
            [instances.a]\ntype = \"production\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"a\" }\n\n\
            [instances.b]\ntype = \"production\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"b\" }\n\n\
            [instances.c]\ntype = \"production\"\nversion = \"1\"\nsource = { kind = \"directory\", path = \"c\" }\n";
        let (cfg, _) =
            crate::config::parse(std::path::Path::new("/srv/backplan.toml"), text).unwrap();
        let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
        let run = |outcome, rto, detail: &str| crate::records::DrillRun {
            backup_id: uuid::Uuid::nil(),
            started_at: at("2026-11-27T02:05:00Z"),
            outcome,
            rto_seconds: rto,
            duration_seconds: 2.0,
            detail: detail.into(),
        };
        let mut rec = Recorded::default();
        let passed = run(DrillOutcome::Passed, Some(1.3), "12 entries match");
        rec.drills.insert(
            "a".into(),
            crate::records::DrillRecord::with_run(None, "a", passed),
        );
        let failed = run(DrillOutcome::Failed, None, "<b>bad</b> pack & more");
        rec.drills.insert(
            "b".into(),
            crate::records::DrillRecord::with_run(None, "b", failed),
        );
        let page = render(&Page {
            config: Some(&cfg),
            config_error: None,
            recorded: &rec,
            plan: None,
            activity: "waiting",
            last_verify: None,
            now: at("2026-11-27T03:00:00Z"),
        });
        assert!(page.contains("<th>Last drill</th>"), "{page}");
        let cell = |name: &str| {
            let row = page
                .split("<tr>")
                .find(|r| r.contains(&format!(">{name}<")))
                .unwrap();
            row.split("<td data-label=\"Last drill\">")
                .nth(1)
                .unwrap()
                .split("</td>")
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            cell("a"),
            "<span class=\"ok\">passed 2026-11-27 02:05Z, restore took 1.3 s</span>"
        );
        assert_eq!(
            cell("b"),
            "<span class=\"bad\">FAILED 2026-11-27 02:05Z: &lt;b&gt;bad&lt;/b&gt; pack &amp; more</span>"
        );
        assert_eq!(cell("c"), "-");
    }

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{202e}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{202e}"
        );
    }
}
