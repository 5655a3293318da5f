//! The read-only commands (`status`, `backups`, `show`) as queries answered from a
//! configuration and the recorded state. The CLI answers them itself when no daemon runs, and
//! the daemon answers them over its control socket when one does (sled admits one process), so
//! the output is the same either way. `plan` is always computed by the CLI (it validates the
//! file as the calling user), from the recorded state it reads or asks the daemon for
//! (`recorded`). No I/O here but the `journal` callback.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::values::BackupRef;
use crate::diagnostic::printable;
use crate::exit::Exit;
use crate::plan::{FORMAT_VERSION, PlanOptions, fmt_time, render};
use crate::records::{JournalEntry, Recorded};
use crate::views;
use crate::views::human_bytes;

/// A request, as sent over the control socket (one JSON line): a read-only command, the
/// recorded state, or (daemon only) an approved plan to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Query {
    Status {
        json: bool,
        /// The width the table must fit (`None`: no limit, whole cells).
        #[serde(default)]
        width: Option<usize>,
    },
    Backups {
        instance: Option<String>,
        json: bool,
        #[serde(default)]
        width: Option<usize>,
    },
    Show {
        backup: String,
        json: bool,
    },
    /// The recorded state (daemon only), answered as records, not as an [`Answer`]
    /// (`control::ask_recorded`): the CLI plans the file itself (validating it as the calling
    /// user), so the daemon never reads a file on a client's behalf.
    Recorded,
    /// Carry out the plan of the file in force now (daemon only), if its actions are the ones
    /// the operator approved ([`crate::control::approved_actions`]); `allow_mass_removal`
    /// applies to this one plan only.
    Apply {
        allow_mass_removal: bool,
        approved: String,
    },
    /// Verifies the repositories (`subset`: the percentage of the data read back). Only the
    /// daemon answers it: without one, the CLI verifies itself.
    Verify {
        subset: f64,
        /// The report as JSON (`verify --json`).
        #[serde(default)]
        json: bool,
    },
}

/// What the command prints and its exit status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub exit: u8,
    pub stdout: String,
    pub stderr: String,
}

/// What a query is answered from.
pub struct Context<'a> {
    /// The configuration in force (`None`: the file is invalid and none was ever valid).
    pub config: Option<&'a Config>,
    /// The problems of the file on disk, when it is invalid (rendered diagnostics).
    pub config_error: Option<&'a str>,
    pub recorded: &'a Recorded,
    pub journal: &'a dyn Fn() -> Result<Vec<JournalEntry>, String>,
    pub now: DateTime<Utc>,
}

pub fn answer(q: &Query, ctx: &Context<'_>) -> Answer {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let not_a_report = matches!(q, Query::Recorded | Query::Apply { .. });
    if let (Some(e), false) = (ctx.config_error, not_a_report) {
        let _ = write!(err, "{e}");
        let _ = writeln!(
            err,
            "warning: the configuration file is not in force (see above); {}\n",
            if ctx.config.is_some() {
                "the last valid one stays in force"
            } else {
                "showing what is recorded only"
            }
        );
    }
    let exit = match q {
        Query::Status { json, width } => status(ctx, *json, *width, &mut out),
        Query::Backups {
            instance,
            json,
            width,
        } => backups(ctx, instance.as_deref(), *json, *width, &mut out, &mut err),
        Query::Show { backup, json } => show(ctx, backup, *json, &mut out, &mut err),
        Query::Verify { .. } => {
            let _ = writeln!(
                err,
                "verify needs the repositories: only the daemon answers it"
            );
            Exit::Failure
        }
        Query::Recorded => {
            // Answered by the daemon's socket itself, as records (`control::ask_recorded`).
            let _ = writeln!(err, "only the daemon answers for the recorded state");
            Exit::Failure
        }
        Query::Apply { .. } => {
            let _ = writeln!(
                err,
                "error: only a running daemon carries out an approved plan"
            );
            Exit::Failure
        }
    };
    // Text for a terminal never carries control characters from the file or the state (a
    // label could rewrite the screen); JSON is exact (its strings escape them).
    let json = match q {
        Query::Status { json, .. } | Query::Backups { json, .. } | Query::Show { json, .. } => {
            *json
        }
        // An apply's report is text.
        Query::Recorded | Query::Apply { .. } | Query::Verify { .. } => false,
    };
    let stdout = String::from_utf8_lossy(&out);
    Answer {
        exit: exit as u8,
        stdout: if json {
            stdout.into_owned()
        } else {
            printable(&stdout, true).into_owned()
        },
        stderr: printable(&String::from_utf8_lossy(&err), true).into_owned(),
    }
}

/// `plan`: a valid configuration planned against the recorded state.
pub fn plan(
    cfg: &Config,
    recorded: &Recorded,
    now: DateTime<Utc>,
    json: bool,
    detailed_exitcode: bool,
    options: PlanOptions,
) -> Answer {
    let plan = crate::plan::plan(cfg, recorded, now, options);
    let stdout = if json {
        render::json(&plan)
    } else {
        render::text(&plan)
    };
    let exit = if !plan.refusals.is_empty() {
        Exit::Failure
    } else if detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    };
    Answer {
        exit: exit as u8,
        stdout,
        stderr: String::new(),
    }
}

fn json(out: &mut dyn Write, v: &impl serde::Serialize) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).expect("views serialise")
    );
}

/// A column of a text table.
struct Col {
    header: &'static str,
    /// May be shortened (with an ellipsis) down to this many characters to fit the width.
    shrink_to: Option<usize>,
    /// May be left out when the table cannot fit otherwise; the lowest goes first.
    drop: Option<u8>,
}

const fn col(header: &'static str) -> Col {
    Col {
        header,
        shrink_to: None,
        drop: None,
    }
}

const fn shrinkable(header: &'static str, to: usize) -> Col {
    Col {
        header,
        shrink_to: Some(to),
        drop: None,
    }
}

const fn droppable(header: &'static str, priority: u8) -> Col {
    Col {
        header,
        shrink_to: None,
        drop: Some(priority),
    }
}

/// Left-aligned columns, two spaces apart; control characters in a cell (a newline too) are
/// escaped. With a `width`, the table fits it: the widest shrinkable cells are shortened
/// with `…`, and when that is not enough the least useful columns are left out (the JSON
/// output and `show` have everything). Padded by hand: `format!`'s width is limited to
/// 65,535 and panics beyond.
fn table(out: &mut dyn Write, cols: &[Col], rows: &[Vec<String>], width: Option<usize>) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c, false).into_owned()).collect())
        .collect();
    // Columns are left out while the table does not fit with its shrinkable cells at their
    // comfortable width; only then are those cut further (to 6 characters at least).
    let mut shown: Vec<usize> = (0..cols.len()).collect();
    let widths = loop {
        let widths = fit(cols, &shown, &rows, width, false);
        let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        let next_drop = shown
            .iter()
            .enumerate()
            .filter_map(|(i, &c)| cols[c].drop.map(|p| (p, i)))
            .min();
        match (width, next_drop) {
            (Some(w), Some((_, i))) if total > w => {
                shown.remove(i);
            }
            (Some(w), None) if total > w => break fit(cols, &shown, &rows, width, true),
            _ => break widths,
        }
    };
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (c, w) in cells.into_iter().zip(&widths) {
            let n = c.chars().count();
            if n > *w {
                s.extend(c.chars().take(w.saturating_sub(1)));
                s.push('…');
            } else {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', w - n));
            }
            s.push_str("  ");
        }
        s.truncate(s.trim_end().len());
        s
    };
    let _ = writeln!(
        out,
        "{}",
        line(shown.iter().map(|&c| cols[c].header).collect())
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{}",
            line(shown.iter().map(|&c| r[c].as_str()).collect())
        );
    }
}

/// The widths of the `shown` columns: as wide as their widest cell, then the widest
/// shrinkable ones narrowed one character at a time until the table fits `width` (or none
/// can shrink further: not below their comfortable width, or below 6 characters when
/// `hard`).
fn fit(
    cols: &[Col],
    shown: &[usize],
    rows: &[Vec<String>],
    width: Option<usize>,
    hard: bool,
) -> Vec<usize> {
    let mut widths: Vec<usize> = shown
        .iter()
        .map(|&c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([cols[c].header.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let Some(limit) = width else {
        return widths;
    };
    let mut total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    while total > limit {
        let widest = shown
            .iter()
            .zip(&widths)
            .enumerate()
            .filter(|(_, (c, w))| {
                cols[**c].shrink_to.is_some_and(|m| {
                    let floor = if hard { 6 } else { m };
                    **w > floor.max(cols[**c].header.chars().count())
                })
            })
            .max_by_key(|(i, (_, w))| (**w, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let Some(i) = widest else { break };
        widths[i] -= 1;
        total -= 1;
    }
    widths
}

fn status(ctx: &Context<'_>, as_json: bool, width: Option<usize>, out: &mut dyn Write) -> Exit {
    let list = views::status(ctx.config, ctx.recorded, ctx.now);
    if as_json {
        // `daemon` is filled in by the daemon when it answers.
        json(
            out,
            &serde_json::json!({
                "format_version": FORMAT_VERSION,
                "daemon": null,
                "instances": list,
            }),
        );
        return Exit::Ok;
    }
    if list.is_empty() {
        let _ = writeln!(
            out,
            "No instances: the file declares none and none is recorded."
        );
        return Exit::Ok;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.to_string(),
                s.version.clone(),
                s.state.clone(),
                s.last_good_backup
                    .as_ref()
                    .and_then(|b| b.completed_at.as_ref().map(views::short_time))
                    .unwrap_or_else(|| "-".into()),
                s.next_daily
                    .as_ref()
                    .map(views::short_time)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        out,
        &[
            shrinkable("INSTANCE", 16),
            droppable("TYPE", 1),
            shrinkable("VERSION", 8),
            shrinkable("STATE", 13),
            col("LAST GOOD BACKUP"),
            droppable("NEXT DAILY", 0),
        ],
        &rows,
        width,
    );
    // Why an instance is not ok, and what is being deleted: lines of their own, whole.
    let mut details = Vec::new();
    for s in &list {
        if let Some(e) = &s.error {
            details.push(match &s.since {
                Some(t) => format!("{}: {e} (since {})", s.name, views::short_time(t)),
                None => format!("{}: {e}", s.name),
            });
        }
        if let Some(d) = &s.last_drill {
            details.push(format!("{}: last restore drill {}", s.name, d.text()));
        }
        if let Some(d) = &s.deleting {
            details.push(format!(
                "{}: {} deleting{}",
                s.name,
                views::count(d.count, "backup", "backups"),
                d.next_at
                    .as_ref()
                    .map(|t| format!(", the first on {}", views::short_time(t)))
                    .unwrap_or_default()
            ));
        }
    }
    if !details.is_empty() {
        let _ = writeln!(out);
        for d in details {
            let _ = writeln!(out, "{}", wrap(&printable(&d, false), width));
        }
    }
    Exit::Ok
}

/// A sentence broken between words to fit `width`, the lines after the first indented by 2.
fn wrap(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return text.to_string();
    };
    let mut out = String::new();
    let mut len = 0;
    for word in text.split(' ') {
        let n = word.chars().count();
        if len > 0 && len + 1 + n > width {
            out.push_str("\n  ");
            len = 2;
        } else if len > 0 {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += n;
    }
    out
}

/// The error for an instance nobody knows: not in the file, nothing recorded.
fn unknown_instance(ctx: &Context<'_>, name: &str) -> String {
    let mut known: Vec<&str> = ctx
        .config
        .into_iter()
        .flat_map(|c| c.instances.keys())
        .chain(ctx.recorded.instances.keys())
        .map(String::as_str)
        .collect();
    known.sort_unstable();
    known.dedup();
    if known.is_empty() {
        format!("error: no instance `{name}`: the file declares none and none is recorded")
    } else {
        format!(
            "error: no instance `{name}`; the known instances are {}",
            known.join(", ")
        )
    }
}

fn backups(
    ctx: &Context<'_>,
    instance: Option<&str>,
    as_json: bool,
    width: Option<usize>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    if let Some(name) = instance {
        let known = ctx.recorded.instances.contains_key(name)
            || ctx.recorded.backups.values().any(|b| b.instance == name)
            || ctx.config.is_some_and(|c| c.instances.contains_key(name));
        if !known {
            let _ = writeln!(err, "{}", unknown_instance(ctx, name));
            return Exit::Failure;
        }
    }
    let list = views::backups(ctx.recorded, instance);
    if as_json {
        json(
            out,
            &serde_json::json!({
                "format_version": FORMAT_VERSION,
                "backups": list,
            }),
        );
        return Exit::Ok;
    }
    if list.is_empty() {
        let _ = writeln!(
            out,
            "No backups recorded{}.",
            instance.map(|i| format!(" for {i}")).unwrap_or_default()
        );
        return Exit::Ok;
    }
    let id_width = views::id_width(ctx.recorded);
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let b = &v.record;
            vec![
                views::short_id(&b.id, id_width),
                b.instance.clone(),
                b.label.clone(),
                views::created_by(b.created_by).into(),
                views::short_time(&b.created_at),
                b.expires_at
                    .as_ref()
                    .map(views::short_time)
                    .unwrap_or_else(|| "never".into()),
                views::status_text(b),
                b.size_bytes
                    .map(|s| human_bytes(s.read))
                    .unwrap_or_else(|| "-".into()),
                storage_text(ctx, &b.storage, false),
                v.allowed_actions.join(", "),
            ]
        })
        .collect();
    let mut cols = vec![
        col("ID"),
        shrinkable("INSTANCE", 16),
        shrinkable("LABEL", 24),
        droppable("BY", 2),
        col("CREATED"),
        droppable("EXPIRES", 3),
        shrinkable("STATUS", 12),
        col("SIZE"),
        droppable("STORAGE", 1),
        droppable("ACTIONS", 0),
    ];
    let mut rows = rows;
    if instance.is_some() {
        // One instance's list: its name on every line says nothing.
        cols.remove(1);
        for r in &mut rows {
            r.remove(1);
        }
    }
    table(out, &cols, &rows, width);
    Exit::Ok
}

/// A backup's storage: its name and kind (`archive (Azure Storage)`), with the location
/// inside it when `location` is set; the name alone when the file no longer declares it.
fn storage_text(ctx: &Context<'_>, name: &str, location: bool) -> String {
    match ctx.config.and_then(|c| c.storages.get(name)) {
        Some(s) if location => format!("{name} ({})", crate::storage::describe(s)),
        Some(s) if crate::storage::kind_name(s) != name => {
            format!("{name} ({})", crate::storage::kind_name(s))
        }
        _ => name.to_string(),
    }
}

fn show(
    ctx: &Context<'_>,
    reference: &str,
    as_json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let rec = ctx.recorded;
    let text = reference.strip_prefix("backup.").unwrap_or(reference);
    let found = if views::is_id_prefix(text) {
        // The short id `backups` shows (or any unique start of an id).
        match views::find_by_prefix(rec, text).as_slice() {
            [b] => Some(*b),
            [] => None,
            many => {
                let _ = writeln!(
                    err,
                    "error: `{text}` is the start of {} ids; give more of it:",
                    many.len()
                );
                for b in many {
                    let _ = writeln!(
                        err,
                        "  {}  {}  {}  {}",
                        b.id,
                        b.instance,
                        views::short_time(&b.created_at),
                        printable(&b.label, false)
                    );
                }
                return Exit::Failure;
            }
        }
    } else {
        let r = match BackupRef::parse(text) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Failure;
            }
        };
        if let Some(name) = r.instance() {
            let known = rec.instances.contains_key(name)
                || rec.backups.values().any(|b| b.instance == name)
                || ctx.config.is_some_and(|c| c.instances.contains_key(name));
            if !known {
                let _ = writeln!(err, "{}", unknown_instance(ctx, name));
                return Exit::Failure;
            }
        }
        let found = views::find_backup(rec, &r);
        if found.is_none()
            && let BackupRef::OnDemand { instance, .. } = &r
        {
            let mut keys: Vec<&str> = rec
                .backups
                .values()
                .filter(|b| &b.instance == instance)
                .filter_map(|b| b.key.as_deref())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            let _ = writeln!(
                err,
                "error: no recorded backup `{text}`; {}",
                if keys.is_empty() {
                    format!("{instance} has no on-demand backup recorded")
                } else {
                    format!(
                        "the on-demand backups of {instance} are {}",
                        keys.join(", ")
                    )
                }
            );
            return Exit::Failure;
        }
        found
    };
    let Some(b) = found else {
        let _ = writeln!(
            err,
            "error: no recorded backup matches `{text}`; `backplan backups` lists them"
        );
        return Exit::Failure;
    };
    // Its history: the journal lines about it.
    let address = crate::plan::backup_address(b);
    let history: Vec<crate::records::JournalEntry> = match (ctx.journal)() {
        Ok(j) => j
            .into_iter()
            .filter(|e| {
                // `backup.<id>`: how journals before named addresses wrote a pre-restore backup.
                e.address == address
                    || e.address == format!("backup.{}", b.id)
                    || e.detail.contains(&b.id.to_string())
            })
            .collect(),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    if as_json {
        json(
            out,
            &serde_json::json!({
                "format_version": FORMAT_VERSION,
                "backup": views::BackupView { record: b.clone(), allowed_actions: views::allowed_actions(b) },
                "drills": views::drills_of(rec, b),
                "history": history,
            }),
        );
        return Exit::Ok;
    }
    let _ = writeln!(out, "{address}");
    let field = |out: &mut dyn Write, k: &str, v: String| {
        let _ = writeln!(out, "  {k:<13} {}", printable(&v, false));
    };
    field(out, "id", b.id.to_string());
    field(out, "instance", b.instance.clone());
    field(out, "kind", b.kind.as_str().to_string());
    field(out, "created by", views::created_by(b.created_by).into());
    field(out, "label", b.label.clone());
    if !b.notes.is_empty() {
        field(out, "notes", b.notes.clone());
    }
    field(out, "status", views::status_text(b));
    field(out, "storage", storage_text(ctx, &b.storage, true));
    field(out, "created at", fmt_time(&b.created_at));
    field(
        out,
        "completed at",
        b.completed_at
            .as_ref()
            .map(fmt_time)
            .unwrap_or_else(|| "-".into()),
    );
    field(
        out,
        "expires at",
        b.expires_at
            .as_ref()
            .map(fmt_time)
            .unwrap_or_else(|| "never".into()),
    );
    if let Some(s) = b.size_bytes {
        field(
            out,
            "size",
            format!(
                "{} read, {} added",
                human_bytes(s.read),
                human_bytes(s.added)
            ),
        );
    }
    if let Some(s) = &b.snapshot_id {
        field(out, "snapshot", s.clone());
        // A label or notes edit is recorded before the snapshot's tags are rewritten.
        if history
            .iter()
            .rev()
            .find(|e| e.op == "retag")
            .is_some_and(|e| {
                e.phase != crate::records::Phase::Finished
                    && e.detail.contains("snapshot tags pending")
            })
        {
            field(
                out,
                "snapshot tags",
                "pending: the snapshot does not carry this label and notes yet".into(),
            );
        }
    }
    field(out, "tries", b.attempts.to_string());
    if let Some(e) = &b.error {
        field(out, "error", e.clone());
    }
    if let Some(u) = &b.unreadable {
        let listed = if u.total > u.paths.len() {
            format!("{} items, the first {}:", u.total, u.paths.len())
        } else {
            crate::views::count(u.total, "item:", "items:")
        };
        field(out, "unreadable", listed);
        for p in &u.paths {
            let _ = writeln!(out, "    {}", printable(p, false));
        }
    }
    field(out, "actions", views::allowed_actions(b).join(", "));
    if let Some(d) = views::drills_of(rec, b).first() {
        field(out, "drilled at", fmt_time(&d.at));
        field(out, "drill", d.outcome.to_string());
        field(
            out,
            "drill RTO",
            d.rto_seconds
                .map(views::seconds)
                .unwrap_or_else(|| "-".into()),
        );
        if d.outcome == crate::records::DrillOutcome::Failed {
            field(out, "drill error", d.detail.clone());
        }
    }
    if !history.is_empty() {
        let _ = writeln!(out, "\nHistory:");
        for e in &history {
            let line = format!(
                "  {}  {:<8} {:<9} {}",
                fmt_time(&e.at),
                e.op,
                format!("{:?}", e.phase).to_lowercase(),
                printable(&e.detail, false)
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    Exit::Ok
}
