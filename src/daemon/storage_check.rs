//! The daemon checks an external storage (Azure Blob, S3) when the file it puts in force adds
//! or changes it (at start every one is new; a reload asked for with SIGHUP checks them all
//! again, after a rotated key, say): the same check as `backplan storage check`, on a thread
//! of its own with a time limit, so that neither the reconcile loop nor the control socket
//! waits for it. The outcome is kept in memory and shown by `status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Shared;
use crate::config::Config;

/// How long a check may take before it counts as failed.
pub(super) const LIMIT: Duration = Duration::from_secs(60);

/// One storage's last check.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StorageCheck {
    /// How the storage is named to operators (kind and location).
    pub what: String,
    /// When the check started.
    pub at: DateTime<Utc>,
    /// `None` while it runs; `Some(Err(why))` when it failed.
    pub outcome: Option<Result<(), String>>,
    /// Which check this is: a later one for the same storage wins over an earlier one still
    /// running.
    generation: u64,
}

/// The external storages of `new` that `old` does not have, or has with another location,
/// credential source or key (all of them when `old` is `None` or `all` is set).
pub(super) fn to_check(old: Option<&Config>, new: &Config, all: bool) -> Vec<String> {
    new.storages
        .iter()
        .filter(|(_, s)| s.is_external())
        .filter(|(name, _)| {
            let repo = |c: &Config| crate::storage::resolve(c, name).ok().map(|r| r.repo);
            all || old.is_none_or(|o| repo(o) != repo(new))
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Starts the checks of `names` in the background (and forgets storages `cfg` no longer has).
pub(super) fn start(shared: &Arc<Shared>, cfg: &Arc<Config>, names: Vec<String>) {
    {
        let mut checks = shared
            .storage_checks
            .write()
            .unwrap_or_else(|p| p.into_inner());
        checks.retain(|name, _| cfg.storages.get(name).is_some_and(|s| s.is_external()));
    }
    for name in names {
        let Some(storage) = cfg.storages.get(&name) else {
            continue;
        };
        let what = crate::storage::describe(storage);
        let at = shared.clock.now();
        let generation = {
            let mut checks = shared
                .storage_checks
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let generation = checks.get(&name).map_or(0, |c| c.generation + 1);
            checks.insert(
                name.clone(),
                StorageCheck {
                    what: what.clone(),
                    at,
                    outcome: None,
                    generation,
                },
            );
            generation
        };
        let repo = crate::storage::resolve(cfg, &name).map(|r| r.repo);
        let (shared, engine) = (shared.clone(), shared.engine.clone());
        // The check runs on a thread of its own; this one waits for it at most LIMIT (a check
        // past it is left to end on its own: the HTTP client has its own timeouts).
        let spawned = std::thread::Builder::new()
            .name(format!("storage check {name}"))
            .spawn(move || {
                let (tx, rx) = std::sync::mpsc::channel();
                let checked = repo.and_then(|repo| {
                    std::thread::Builder::new()
                        .name("storage check".into())
                        .spawn(move || {
                            let _ = tx.send(engine.check_storage(&repo).map_err(|e| e.to_string()));
                        })
                        .map_err(|e| format!("cannot start the check: {e}"))?;
                    match rx.recv_timeout(LIMIT) {
                        Ok(r) => r,
                        Err(_) => Err(format!(
                            "no answer within {} s (endpoint unreachable or too slow)",
                            LIMIT.as_secs()
                        )),
                    }
                });
                match &checked {
                    Ok(()) => tracing::info!(storage = %name, "storage check: usable ({what})"),
                    Err(e) => tracing::error!(storage = %name, "storage check: `{name}` ({what}) cannot be used: {e}"),
                }
                let mut checks = shared
                    .storage_checks
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                if let Some(c) = checks.get_mut(&name)
                    && c.generation == generation
                {
                    c.outcome = Some(checked);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a storage check: {e}");
        }
    }
}

/// The checks as `status` shows them: one line each (text), or their JSON.
pub(super) fn text(checks: &BTreeMap<String, StorageCheck>) -> String {
    checks
        .iter()
        .map(|(name, c)| crate::views::storage_check_line(name, &c.what, &c.at, c.outcome.as_ref()))
        .collect()
}

pub(super) fn json(checks: &BTreeMap<String, StorageCheck>) -> serde_json::Value {
    checks
        .iter()
        .map(|(name, c)| {
            serde_json::json!({
                "name": name,
                "storage": c.what,
                "state": match &c.outcome {
                    None => "checking",
                    Some(Ok(())) => "ok",
                    Some(Err(_)) => "failed",
                },
                "error": c.outcome.as_ref().and_then(|o| o.as_ref().err()),
                "checked_at": crate::plan::fmt_time(&c.at),
            })
        })
        .collect()
}
