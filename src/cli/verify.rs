//! `backplan verify`: the integrity of every local repository, and that every backup
//! recorded as completed has its snapshot. With a daemon running, the daemon verifies (it
//! holds the state); otherwise the command does it itself.

use std::io::Write;
use std::path::Path;

use super::{Exit, load_config};
use crate::config::{Config, StorageLocation};
use crate::control::{AskError, ask};
use crate::engine::{Engine, Repo};
use crate::query::Query;
use crate::records::{BackupStatus, Recorded};
use crate::storage::generated_key_path;

pub fn run(config: &Path, subset: f64, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    match ask(&cfg.daemon.control_socket, &Query::Verify { subset }) {
        Ok(a) => {
            let _ = out.write_all(a.stdout.as_bytes());
            let _ = err.write_all(a.stderr.as_bytes());
            return if a.exit == 0 { Exit::Ok } else { Exit::Failure };
        }
        Err(AskError::NoDaemon(_)) => {}
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    }
    let rec = match crate::state::read(&cfg.daemon.state_dir) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let engine = crate::engine::RusticEngine::new();
    if check(cfg, &rec, &engine, subset, out) > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    }
}

/// Verifies every local repository of `cfg` against what is recorded, writing one line per
/// storage (and per problem). Returns the number of problems.
pub fn check(
    cfg: &Config,
    rec: &Recorded,
    engine: &dyn Engine,
    subset: f64,
    out: &mut dyn Write,
) -> usize {
    let mut problems = 0;
    for (name, s) in &cfg.storages {
        let StorageLocation::Local { path } = &s.location else {
            let _ = writeln!(
                out,
                "storage {name}: {} storage is not verified by this version",
                s.kind()
            );
            continue;
        };
        if !path.join("config").exists() {
            let _ = writeln!(
                out,
                "storage {name}: no repository yet at {}",
                path.display()
            );
            continue;
        }
        let repo = Repo {
            path: path.clone(),
            password_file: s
                .password_file
                .clone()
                .unwrap_or_else(|| generated_key_path(cfg, name)),
        };
        let report = match engine.verify(&repo, subset) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(out, "storage {name}: FAILED: {e}");
                problems += 1;
                continue;
            }
        };
        let snapshots = match engine.list(&repo) {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(out, "storage {name}: FAILED to list snapshots: {e}");
                problems += 1;
                continue;
            }
        };
        let mut missing = Vec::new();
        for b in rec.backups.values() {
            if b.storage == *name && b.status == BackupStatus::Completed {
                let present = b
                    .snapshot_id
                    .as_ref()
                    .is_some_and(|id| snapshots.iter().any(|s| &s.id == id));
                if !present {
                    missing.push(crate::plan::backup_address(b));
                }
            }
        }
        for p in &report.problems {
            let _ = writeln!(out, "storage {name}: {p}");
        }
        for m in &missing {
            let _ = writeln!(
                out,
                "storage {name}: {m} is recorded as completed but its snapshot is missing"
            );
        }
        problems += report.problems.len() + missing.len();
        if report.problems.is_empty() && missing.is_empty() {
            let _ = writeln!(
                out,
                "storage {name}: OK ({} snapshots, structure checked, {subset}% of the data read back)",
                report.snapshots
            );
        }
    }
    if problems > 0 {
        let _ = writeln!(out, "{problems} problem(s) found.");
    }
    problems
}
