//! The read-only status page (`/` on `metrics_listen`): the instances, the product's backup
//! list per instance, the current plan with its refusals, and the file's diagnostics when it
//! is rejected. Server-rendered HTML without JavaScript, readable on a phone (the tables turn
//! into one card per row on a narrow screen). **Everything from the file or the state is
//! HTML-escaped** (and control characters and bidirectional overrides shown as escapes, as in
//! the terminal): a label is hostile input.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::plan::{Plan, fmt_time};
use crate::records::{CreatedBy, Recorded};
use crate::views::{self, human_bytes};

/// Backups listed per instance; the rest are counted, with the command that lists them all.
pub const BACKUPS_PER_INSTANCE: usize = 50;

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
        row(
            o,
            &heads,
            &[
                esc(&s.name),
                esc(&s.kind.to_string()),
                esc(&s.version),
                state,
                last_good,
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
    let all = views::backups(p.recorded, None);
    if all.is_empty() {
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
    let mut names: Vec<&str> = all.iter().map(|b| b.record.instance.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let list: Vec<&views::BackupView> =
            all.iter().filter(|b| b.record.instance == name).collect();
        let _ = writeln!(o, "<h3>{}</h3>", esc(name));
        table_head(o, &heads);
        for v in list.iter().take(BACKUPS_PER_INSTANCE) {
            let b = &v.record;
            let status = views::status_text(b);
            let status = if b.status == crate::records::BackupStatus::Failed {
                let why = b.error.as_deref().unwrap_or_default();
                format!("<span class=\"bad\">{}</span> {}", esc(&status), esc(why))
            } else {
                esc(&status)
            };
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
                    if v.allowed_actions.is_empty() {
                        "-".into()
                    } else {
                        v.allowed_actions.join(", ")
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
    fn hostile_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{202e}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\\u{202e}"
        );
    }
}
