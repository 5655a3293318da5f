//! Plans as text for people and JSON for programs (SPEC section 8).

use std::fmt::Write as _;

use super::*;

/// What the text says for an id that is only known once `apply` takes the backup.
const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// The plan for programs. An id the plan cannot promise is `null` ([`unknown_ids`]),
/// wherever it appears (a restore from a backup the plan takes names it too).
pub fn json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).expect("plans serialise");
    for id in unknown_ids(plan) {
        text = text.replace(&format!("\"{id}\""), "null");
    }
    text + "\n"
}

/// The ids of a plan that are not yet the ones `apply` will record: on-demand backups' ids
/// include the time they are taken (the same key may be taken again after a deletion), so a
/// later `apply`, or the daemon carrying out the approved plan, gives them others. Daily ids
/// (instance and date), pre-restore ids (the restore's key) and pre-update ids (the instance,
/// both versions and the record's last change) are the same whenever they are planned, and
/// are shown.
pub fn unknown_ids(plan: &Plan) -> std::collections::BTreeSet<uuid::Uuid> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.details {
            Details::CreateBackup { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn symbol(op: Op) -> char {
    match op {
        Op::Create => '+',
        Op::Update | Op::Switch => '~',
        Op::Forget | Op::Delete => '-',
        Op::Restore => '>',
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

fn time(t: &DateTime<Utc>) -> String {
    fmt_time(t)
}

fn expires(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "never".into())
}

/// The plan for people. Control characters from the file or the state (a path, a hook's
/// arguments, an error) are escaped; labels and notes are quoted.
pub fn text(plan: &Plan) -> String {
    crate::diagnostic::printable(&text_unescaped(plan), true).into_owned()
}

fn text_unescaped(plan: &Plan) -> String {
    let mut out = String::new();
    let w = &mut out;
    if !plan.actions.is_empty() {
        let _ = writeln!(w, "backplan will perform the following actions:\n");
        for a in &plan.actions {
            action(w, a);
        }
        let count = |ops: &[Op]| plan.actions.iter().filter(|a| ops.contains(&a.op)).count();
        let _ = writeln!(
            w,
            "Plan: {} to create, {} to change, {} to delete, {} to restore.",
            count(&[Op::Create]),
            count(&[Op::Update, Op::Switch]),
            count(&[Op::Delete, Op::Forget]),
            count(&[Op::Restore]),
        );
    } else if plan.refusals.is_empty() && plan.due.is_empty() {
        let _ = writeln!(
            w,
            "No changes. The recorded state matches the configuration."
        );
    } else if plan.refusals.is_empty() {
        let _ = writeln!(
            w,
            "No changes from the file. The recorded state matches the configuration."
        );
    }

    if !plan.refusals.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let w = &mut out;
        let _ = writeln!(w, "Refused ({}):\n", plan.refusals.len());
        for r in &plan.refusals {
            let _ = writeln!(w, "  x {} [{}]", r.address, r.rule);
            let _ = writeln!(w, "      at:  {}", r.location);
            let _ = writeln!(w, "      why: {}", r.message);
            let _ = writeln!(w, "      fix: {}\n", r.fix);
        }
        let _ = writeln!(
            w,
            "Nothing from the file will be applied until every refusal is resolved."
        );
    }

    let w = &mut out;
    let _ = writeln!(w);
    if plan.due.is_empty() {
        let _ = writeln!(w, "Nothing time-driven is due at {}.", time(&plan.at));
    } else {
        let _ = writeln!(
            w,
            "Due at {} (time-driven, not from the file):\n",
            time(&plan.at)
        );
        let width = plan.due.iter().map(|d| d.address.len()).max().unwrap_or(0);
        for d in &plan.due {
            let (sym, what) = match &d.details {
                DueDetails::DailyBackup {
                    slot_at,
                    expires_at,
                    ..
                } => (
                    '+',
                    format!(
                        "daily system backup (slot {}, expires {})",
                        time(slot_at),
                        expires(expires_at)
                    ),
                ),
                DueDetails::SkipDaily {
                    slot_at, reason, ..
                } => (
                    '.',
                    match reason {
                        Some(r) => format!("slot {}: recorded as skipped, {r}", time(slot_at)),
                        None => format!(
                            "slot {} was missed: recorded as skipped, not taken",
                            time(slot_at)
                        ),
                    },
                ),
                DueDetails::Retry {
                    attempt,
                    max_attempts,
                    last_error,
                    ..
                } => (
                    '~',
                    format!(
                        "retry, try {attempt} of {max_attempts}{}",
                        last_error
                            .as_ref()
                            .map(|e| format!(" (last error: {e})"))
                            .unwrap_or_default()
                    ),
                ),
                DueDetails::Expire {
                    kind,
                    expires_at,
                    after,
                    ..
                } => (
                    '-',
                    format!(
                        "{} backup expired {}: will be deleted{}",
                        kind.as_str(),
                        time(expires_at),
                        if after.is_some() {
                            " once a newer backup of this run completes (keep_last_good)"
                        } else {
                            ""
                        }
                    ),
                ),
                DueDetails::Purge {
                    delete_at, data, ..
                } => (
                    '-',
                    format!(
                        "removed from the file, deletion grace over{}: {}",
                        delete_at
                            .as_ref()
                            .map(|t| format!(" at {}", time(t)))
                            .unwrap_or_default(),
                        match data {
                            DataFate::KeptInStorage => {
                                "leaves the catalogue, its data stays in external storage"
                            }
                            _ => "its data will be deleted",
                        }
                    ),
                ),
                DueDetails::Drill {
                    backup_address,
                    every,
                    last_drill_at,
                    ..
                } => (
                    '?',
                    format!(
                        "restore drill of {backup_address} into scratch, checked and timed (every {every}; {})",
                        last_drill_at
                            .as_ref()
                            .map(|t| format!("last {}", time(t)))
                            .unwrap_or_else(|| "never drilled".into())
                    ),
                ),
            };
            let _ = writeln!(w, "  {sym} {:width$}  {what}", d.address);
        }
        let n = |work: Work| plan.due.iter().filter(|d| d.work == work).count();
        let count = crate::views::count;
        let purge = n(Work::Purge);
        let drills = n(Work::Drill);
        let _ = writeln!(
            w,
            "\nDue: {}, {}, {}, {}{}{}.",
            count(n(Work::DailyBackup), "daily backup", "daily backups"),
            count(n(Work::Retry), "retry", "retries"),
            count(n(Work::Expire), "expiry", "expiries"),
            count(n(Work::SkipDaily), "missed slot", "missed slots"),
            if purge > 0 {
                format!(
                    ", {}",
                    count(purge, "deletion after grace", "deletions after grace")
                )
            } else {
                String::new()
            },
            if drills > 0 {
                format!(", {}", count(drills, "restore drill", "restore drills"))
            } else {
                String::new()
            }
        );
    }

    if !plan.notes.is_empty() {
        let _ = writeln!(w, "\nNotes:");
        for n in &plan.notes {
            let _ = writeln!(w, "  - {n}");
        }
    }
    out
}

fn action(w: &mut String, a: &Action) {
    let header = match &a.details {
        Details::CreateInstance { .. } => {
            "will be created (or adopted if its store already exists)".to_string()
        }
        Details::SwitchInstance { kind, .. } => {
            format!("will be switched from {} to {}", kind.from, kind.to)
        }
        Details::UpdateSource { .. } => {
            "will be reached with new connection settings (the same store; metadata only)"
                .to_string()
        }
        Details::UpdateInstance { version, .. } => format!(
            "will be updated to {} (a system backup \"Before update to {}\" is taken first)",
            version.to, version.to
        ),
        Details::CreateBackup { .. } => "will be created".to_string(),
        Details::UpdateBackup { .. } => "will be updated in place (metadata only)".to_string(),
        Details::Restore { to, .. } => format!("will restore into {to}, replacing its contents"),
        Details::DeleteBackup {
            data, delete_at, ..
        } => {
            let when = delete_at.as_ref().map(time).unwrap_or_default();
            match data {
                DataFate::Deleted => format!(
                    "will be deleted (because it is not in the configuration): its data is deleted on {when}; until then it can still be restored, and putting the key back keeps it"
                ),
                DataFate::KeptInStorage => format!(
                    "will be deleted (because it is not in the configuration): removed from the catalogue on {when}, its data is kept in external storage; putting the key back before then keeps it"
                ),
                DataFate::AlreadyExpired => "will be removed (because it is not in the configuration); its data had already expired".to_string(),
            }
        }
        Details::ReviveBackup { .. } => {
            "will be kept: it is back in the configuration, so its deletion is cancelled"
                .to_string()
        }
        Details::ForgetInstance { .. } => {
            "will be forgotten (because it is not in the configuration); its data is not touched"
                .to_string()
        }
    };
    let _ = writeln!(w, "  # {} {header}", a.address);
    let _ = writeln!(w, "  {} {}", symbol(a.op), a.address);
    let mut field = |k: &str, v: String| {
        let _ = writeln!(w, "      {k:<9} = {v}");
    };
    match &a.details {
        Details::CreateInstance {
            kind,
            version,
            source,
            ..
        } => {
            field("type", kind.to_string());
            field("version", version.to_string());
            field("source", source.describe());
        }
        Details::SwitchInstance { kind, .. } => {
            field("type", format!("{} -> {}", kind.from, kind.to))
        }
        Details::UpdateSource { source, .. } => {
            // A URL holds no password (validation refuses one); a password file is a path.
            let shown = |s: &Source| match s {
                Source::Postgres {
                    url,
                    password_file,
                    bin_dir,
                } if password_file.is_some() || bin_dir.is_some() => {
                    let mut shown = url.clone();
                    if let Some(p) = password_file {
                        shown += &format!(" (password file {})", p.display());
                    }
                    if let Some(b) = bin_dir {
                        shown += &format!(" (tools in {})", b.display());
                    }
                    shown
                }
                other => other.describe(),
            };
            field(
                "source",
                format!("{} -> {}", shown(&source.from), shown(&source.to)),
            );
        }
        Details::UpdateInstance {
            version,
            pre_update_backup,
            on_update,
            ..
        } => {
            field("version", format!("{} -> {}", version.from, version.to));
            field(
                "backup",
                format!("{pre_update_backup} (pre-update, created by System)"),
            );
            if !on_update.is_empty() {
                field("on_update", on_update.join(" "));
            }
        }
        Details::CreateBackup {
            label,
            notes,
            storage,
            expires_at,
            ..
        } => {
            field("id", KNOWN_AFTER_APPLY.to_string());
            field("label", quoted(label));
            if !notes.is_empty() {
                field("notes", quoted(notes));
            }
            field("storage", storage.clone());
            field("expires", expires(expires_at));
        }
        Details::UpdateBackup { label, notes, .. } => {
            if let Some(c) = label {
                field("label", format!("{} -> {}", quoted(&c.from), quoted(&c.to)));
            }
            if let Some(c) = notes {
                field("notes", format!("{} -> {}", quoted(&c.from), quoted(&c.to)));
            }
        }
        Details::Restore {
            from,
            backup,
            backup_created_by_plan,
            to,
            pre_restore_backup,
            ..
        } => {
            if *backup_created_by_plan {
                field(
                    "from",
                    format!("{from} (taken by this plan, id {KNOWN_AFTER_APPLY})"),
                );
            } else {
                field("from", format!("{from} (backup {backup})"));
            }
            field("to", to.clone());
            field(
                "safety",
                format!("pre-restore backup of {to}, taken first (id {pre_restore_backup})"),
            );
        }
        Details::DeleteBackup {
            id,
            storage,
            delete_at,
            ..
        } => {
            field("id", id.to_string());
            field("storage", storage.clone());
            if let Some(t) = delete_at {
                field("deleted", format!("{} (after the deletion grace)", time(t)));
            }
        }
        Details::ReviveBackup {
            id,
            delete_at,
            label,
            notes,
            ..
        } => {
            field("id", id.to_string());
            if let Some(t) = delete_at {
                field("was due", format!("{} (deletion cancelled)", time(t)));
            }
            if let Some(c) = label {
                field("label", format!("{} -> {}", quoted(&c.from), quoted(&c.to)));
            }
            if let Some(c) = notes {
                field("notes", format!("{} -> {}", quoted(&c.from), quoted(&c.to)));
            }
        }
        Details::ForgetInstance { backups_kept, .. } => {
            field(
                "backups",
                format!("{backups_kept} kept; they expire on schedule"),
            );
        }
    }
    w.push('\n');
}
