//! Verification: the integrity of every repository, and that every backup recorded as
//! completed has its snapshot. Used by `backplan verify` and by the daemon (`schedule.verify`).
//! A damaged pack is reported with the backups it affects (those whose snapshots reference a
//! blob in it), so an operator knows which backups to take again.

use std::io::Write;

use serde::Serialize;

use crate::config::Config;
use crate::engine::Engine;
use crate::records::{BackupStatus, Recorded};

/// What the verification found, per storage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verified {
    pub storages: Vec<StorageVerdict>,
    /// Problems in all (each damaged pack's finding counts once, as the check reported it).
    pub problems: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageVerdict {
    pub storage: String,
    /// `ok`, `problems`, `failed` (the check could not run), `not_verified` (the storage
    /// could not be resolved) or `no_repository`.
    pub outcome: &'static str,
    /// Why it failed or was not verified, or where no repository is yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub snapshots: usize,
    /// The check's findings, one line each.
    pub problems: Vec<String>,
    /// Backups recorded as completed whose snapshot is missing (addresses).
    pub missing_snapshots: Vec<String>,
    pub damaged_packs: Vec<PackVerdict>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PackVerdict {
    pub pack: String,
    /// The recorded backups whose snapshots reference the pack.
    pub backups: Vec<AffectedBackup>,
    /// Snapshots that reference it but belong to no recorded backup (full ids).
    pub other_snapshots: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AffectedBackup {
    pub address: String,
    pub id: uuid::Uuid,
    pub label: String,
    pub status: BackupStatus,
    pub snapshot_id: String,
}

/// Verifies every repository of `cfg` against what is recorded.
pub fn run(cfg: &Config, rec: &Recorded, engine: &dyn Engine, subset: f64) -> Verified {
    let mut all = Verified::default();
    for (name, s) in &cfg.storages {
        let mut v = StorageVerdict {
            storage: name.clone(),
            ..Default::default()
        };
        let fail = |mut v: StorageVerdict, outcome, message: String| {
            v.outcome = outcome;
            v.message = Some(message);
            v
        };
        let repo = match crate::storage::of(s).and_then(|k| k.resolve(cfg, name, s)) {
            Ok(r) => r.repo,
            Err(e) => {
                all.storages.push(fail(v, "not_verified", e.to_string()));
                continue;
            }
        };
        match engine.repository_id(&repo) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let at = repo.path.display().to_string();
                all.storages.push(fail(v, "no_repository", at));
                continue;
            }
            Err(e) => {
                all.problems += 1;
                all.storages.push(fail(v, "failed", e.to_string()));
                continue;
            }
        }
        let report = match engine.verify(&repo, subset) {
            Ok(r) => r,
            Err(e) => {
                all.problems += 1;
                all.storages.push(fail(v, "failed", e.to_string()));
                continue;
            }
        };
        let snapshots = match engine.list(&repo) {
            Ok(l) => l,
            Err(e) => {
                all.problems += 1;
                let why = format!("cannot list the snapshots: {e}");
                all.storages.push(fail(v, "failed", why));
                continue;
            }
        };
        for b in rec.backups.values() {
            if b.storage == *name && b.status == BackupStatus::Completed {
                let present = b
                    .snapshot_id
                    .as_ref()
                    .is_some_and(|id| snapshots.iter().any(|s| &s.id == id));
                if !present {
                    v.missing_snapshots.push(crate::plan::backup_address(b));
                }
            }
        }
        v.missing_snapshots.sort();
        for d in &report.damaged_packs {
            let mut p = PackVerdict {
                pack: d.pack.clone(),
                ..Default::default()
            };
            for snap in &d.snapshots {
                let mut found = rec
                    .backups
                    .values()
                    .filter(|b| b.storage == *name && b.snapshot_id.as_deref() == Some(snap))
                    .peekable();
                if found.peek().is_none() {
                    p.other_snapshots.push(snap.clone());
                }
                p.backups.extend(found.map(|b| AffectedBackup {
                    address: crate::plan::backup_address(b),
                    id: b.id,
                    label: b.label.clone(),
                    status: b.status,
                    snapshot_id: snap.clone(),
                }));
            }
            p.backups.sort_by(|a, b| a.address.cmp(&b.address));
            v.damaged_packs.push(p);
        }
        v.snapshots = report.snapshots;
        v.problems = report.problems;
        all.problems += v.problems.len() + v.missing_snapshots.len();
        v.outcome = if v.problems.is_empty() && v.missing_snapshots.is_empty() {
            "ok"
        } else {
            "problems"
        };
        all.storages.push(v);
    }
    all
}

impl Verified {
    /// One line per storage (and per problem), then the count of problems.
    pub fn write_text(&self, subset: f64, out: &mut dyn Write) {
        for v in &self.storages {
            let name = &v.storage;
            let message = v.message.as_deref().unwrap_or_default();
            match v.outcome {
                "not_verified" => {
                    let _ = writeln!(out, "storage {name}: not verified: {message}");
                }
                "no_repository" => {
                    let _ = writeln!(out, "storage {name}: no repository yet at {message}");
                }
                "failed" => {
                    let _ = writeln!(out, "storage {name}: FAILED: {message}");
                }
                "ok" => {
                    let _ = writeln!(
                        out,
                        "storage {name}: OK ({}, structure checked, {subset}% of the data read back)",
                        crate::views::count(v.snapshots, "snapshot", "snapshots")
                    );
                }
                _ => {
                    for p in &v.problems {
                        let _ = writeln!(out, "storage {name}: {p}");
                    }
                    for m in &v.missing_snapshots {
                        let _ = writeln!(
                            out,
                            "storage {name}: {m} is recorded as completed but its snapshot is missing"
                        );
                    }
                    for p in &v.damaged_packs {
                        write_pack(name, p, out);
                    }
                }
            }
        }
        if self.problems > 0 {
            let _ = writeln!(
                out,
                "{} found.",
                crate::views::count(self.problems, "problem", "problems")
            );
        }
    }
}

fn write_pack(storage: &str, p: &PackVerdict, out: &mut dyn Write) {
    let short = &p.pack[..p.pack.len().min(12)];
    if p.backups.is_empty() && p.other_snapshots.is_empty() {
        let _ = writeln!(
            out,
            "storage {storage}: pack {short} is damaged; no backup uses it"
        );
        return;
    }
    let _ = writeln!(
        out,
        "storage {storage}: pack {short} is damaged; it holds data of {}:",
        crate::views::count(
            p.backups.len() + p.other_snapshots.len(),
            "backup",
            "backups"
        )
    );
    for b in &p.backups {
        let _ = writeln!(
            out,
            "  {}  {}  \"{}\"  ({}, snapshot {})",
            b.address,
            b.id,
            crate::diagnostic::printable(&b.label, false),
            b.status,
            &b.snapshot_id[..b.snapshot_id.len().min(8)]
        );
    }
    for s in &p.other_snapshots {
        let _ = writeln!(out, "  snapshot {s} (not a backup recorded here)");
    }
}

impl Verified {
    /// The `--json` answer (the report when the state could not be read: `None`).
    pub fn json(verified: Option<&Verified>, text: &str) -> String {
        let mut v = serde_json::json!({
            "format_version": crate::plan::FORMAT_VERSION,
            "problems": verified.map_or(1, |v| v.problems),
            "storages": verified.map(|v| &v.storages),
        });
        if verified.is_none() {
            v["error"] = text.trim_end().into();
        }
        serde_json::to_string_pretty(&v).expect("the report serialises") + "\n"
    }
}
