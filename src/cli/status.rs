//! `backplan status`, `backplan backups`, `backplan show`: what is recorded, read directly
//! from the state store.

use std::io::Write;
use std::path::Path;

use chrono::Utc;

use super::Exit;
use crate::apply::human_bytes;
use crate::config::values::BackupRef;
use crate::plan::fmt_time;
use crate::records::Recorded;
use crate::views;

/// The configuration (if valid) and what is recorded. An invalid file does not hide the
/// recorded state: its problems are printed and the state dir it names is read anyway.
fn recorded(
    config: &Path,
    err: &mut dyn Write,
) -> Option<(Option<crate::config::Config>, Recorded, std::path::PathBuf)> {
    let (cfg, state_dir) = match crate::config::load(config) {
        Ok(loaded) => {
            let dir = loaded.config.daemon.state_dir.clone();
            (Some(loaded.config), dir)
        }
        Err(crate::config::LoadError::Invalid { rendered, .. }) => {
            let _ = write!(err, "{rendered}");
            let _ = writeln!(
                err,
                "warning: the configuration is invalid; showing what is recorded only.\n"
            );
            let text = std::fs::read_to_string(config).unwrap_or_default();
            (None, crate::config::state_dir_hint(config, &text))
        }
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return None;
        }
    };
    match crate::state::read(&state_dir) {
        Ok(r) => Some((cfg, r, state_dir)),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            None
        }
    }
}

fn json(out: &mut dyn Write, v: &impl serde::Serialize) {
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).expect("views serialise")
    );
}

/// Left-aligned columns, two spaces apart.
fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s: String = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        s.truncate(s.trim_end().len());
        s
    };
    let _ = writeln!(
        out,
        "{}",
        line(header.iter().map(|h| h.to_string()).collect())
    );
    for r in rows {
        let _ = writeln!(out, "{}", line(r.clone()));
    }
}

pub fn status(config: &Path, as_json: bool, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some((cfg, rec, _)) = recorded(config, err) else {
        return Exit::Failure;
    };
    let list = views::status(cfg.as_ref(), &rec, Utc::now());
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
                match &s.error {
                    Some(e) => format!("{}: {e}", s.state),
                    None => s.state.clone(),
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

pub fn backups(
    config: &Path,
    instance: Option<&str>,
    as_json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let Some((_, rec, _)) = recorded(config, err) else {
        return Exit::Failure;
    };
    let list = views::backups(&rec, instance);
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
                b.status.to_string(),
                b.size_bytes
                    .map(|s| format!("{} ({} added)", human_bytes(s.read), human_bytes(s.added)))
                    .unwrap_or_else(|| "-".into()),
                b.storage.clone(),
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

pub fn show(
    config: &Path,
    reference: &str,
    as_json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let Some((_, rec, state_dir)) = recorded(config, err) else {
        return Exit::Failure;
    };
    let text = reference.strip_prefix("backup.").unwrap_or(reference);
    let r = match BackupRef::parse(text) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let Some(b) = views::find_backup(&rec, &r) else {
        let _ = writeln!(
            err,
            "error: no recorded backup matches `{text}`; `backplan backups` lists them"
        );
        return Exit::Failure;
    };
    // Its history: the journal lines about it.
    let address = crate::plan::backup_address(b);
    let history: Vec<crate::records::JournalEntry> = match crate::state::journal(&state_dir) {
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
        let _ = writeln!(out, "  {k:<13} {v}");
    };
    field(out, "id", b.id.to_string());
    field(out, "instance", b.instance.clone());
    field(out, "kind", b.kind.as_str().to_string());
    field(out, "label", b.label.clone());
    if !b.notes.is_empty() {
        field(out, "notes", b.notes.clone());
    }
    field(out, "status", b.status.to_string());
    field(out, "storage", b.storage.clone());
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
                e.detail
            );
        }
    }
    Exit::Ok
}
