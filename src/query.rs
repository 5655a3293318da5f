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
use crate::plan::{PlanOptions, fmt_time, render};
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
    },
    Backups {
        instance: Option<String>,
        json: bool,
    },
    Show {
        backup: String,
        json: bool,
    },
    /// The recorded state, as JSON on stdout: the CLI plans the file itself (validating it
    /// as the calling user), so the daemon never reads a file on a client's behalf.
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
        Query::Status { json } => status(ctx, *json, &mut out),
        Query::Backups { instance, json } => backups(ctx, instance.as_deref(), *json, &mut out),
        Query::Show { backup, json } => show(ctx, backup, *json, &mut out, &mut err),
        Query::Verify { .. } => {
            let _ = writeln!(
                err,
                "verify needs the repositories: only the daemon answers it"
            );
            Exit::Failure
        }
        Query::Recorded => {
            json(&mut out, ctx.recorded);
            Exit::Ok
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
        Query::Status { json } | Query::Backups { json, .. } | Query::Show { json, .. } => *json,
        // The recorded state is JSON; an apply's report is text.
        Query::Recorded => true,
        Query::Apply { .. } | Query::Verify { .. } => false,
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

/// Left-aligned columns, two spaces apart; control characters in a cell (a newline too) are
/// escaped. Padded by hand: `format!`'s width is limited to 65,535 and panics beyond.
fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c, false).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(c);
            s.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
        }
        s.truncate(s.trim_end().len());
        s
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

fn status(ctx: &Context<'_>, as_json: bool, out: &mut dyn Write) -> Exit {
    let list = views::status(ctx.config, ctx.recorded, ctx.now);
    if as_json {
        json(out, &list);
        return Exit::Ok;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.to_string(),
                s.version.clone(),
                {
                    let mut state = match (&s.error, &s.since) {
                        (Some(e), Some(t)) => format!("{}: {e} (since {})", s.state, fmt_time(t)),
                        (Some(e), None) => format!("{}: {e}", s.state),
                        (None, _) => s.state.clone(),
                    };
                    if let Some(d) = &s.deleting {
                        state += &format!(
                            "; {} backup(s) deleting{}",
                            d.count,
                            d.next_at
                                .as_ref()
                                .map(|t| format!(", the first on {}", fmt_time(t)))
                                .unwrap_or_default()
                        );
                    }
                    state
                },
                s.last_good_backup
                    .as_ref()
                    .and_then(|b| b.completed_at.as_ref().map(fmt_time))
                    .unwrap_or_else(|| "-".into()),
                s.next_daily
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        out,
        &[
            "INSTANCE",
            "TYPE",
            "VERSION",
            "STATE",
            "LAST GOOD BACKUP",
            "NEXT DAILY",
        ],
        &rows,
    );
    Exit::Ok
}

fn backups(ctx: &Context<'_>, instance: Option<&str>, as_json: bool, out: &mut dyn Write) -> Exit {
    let list = views::backups(ctx.recorded, instance);
    if as_json {
        json(out, &list);
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
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            let b = &v.record;
            vec![
                b.instance.clone(),
                b.label.clone(),
                match b.created_by {
                    crate::records::CreatedBy::System => "System".into(),
                    crate::records::CreatedBy::User => "user".into(),
                },
                fmt_time(&b.created_at),
                b.expires_at
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "never".into()),
                views::status_text(b),
                b.size_bytes
                    .map(|s| format!("{} ({} added)", human_bytes(s.read), human_bytes(s.added)))
                    .unwrap_or_else(|| "-".into()),
                storage_text(ctx, &b.storage, false),
                v.allowed_actions.join(", "),
                b.id.to_string(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "INSTANCE",
            "LABEL",
            "CREATED BY",
            "CREATED ON",
            "EXPIRES ON",
            "STATUS",
            "SIZE",
            "STORAGE",
            "ACTIONS",
            "ID",
        ],
        &rows,
    );
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
    let r = match BackupRef::parse(text) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let Some(b) = views::find_backup(rec, &r) else {
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
            .filter(|e| e.address == address || e.detail.contains(&b.id.to_string()))
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
                "backup": views::BackupView { record: b.clone(), allowed_actions: views::allowed_actions(b) },
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
    }
    field(out, "tries", b.attempts.to_string());
    if let Some(e) = &b.error {
        field(out, "error", e.clone());
    }
    field(out, "actions", views::allowed_actions(b).join(", "));
    if !history.is_empty() {
        let _ = writeln!(out, "\nHistory:");
        for e in &history {
            let _ = writeln!(
                out,
                "  {}  {:<8} {:<9} {}",
                fmt_time(&e.at),
                e.op,
                format!("{:?}", e.phase).to_lowercase(),
                printable(&e.detail, false)
            );
        }
    }
    Exit::Ok
}
