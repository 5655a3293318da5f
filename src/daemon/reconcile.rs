//! One reconcile: resolve interrupted work, plan, apply; and progress as log lines.

use super::*;

/// What one reconcile did.
pub(super) struct Outcome {
    pub(super) summary: String,
    /// Something was done: look again at once for what it made due.
    pub(super) worked: bool,
    /// Something failed that is tried again on its own (with back-off).
    pub(super) failed: bool,
    /// Interrupted work is resolved (this run or an earlier one).
    pub(super) recovered: bool,
}

/// One reconcile: resolve interrupted work (until that succeeds), plan, apply. Runs on a
/// blocking thread. Hooks and restores run only on a reconcile the operator caused (start,
/// a changed file, a reload): one that failed is never run again on its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn reconcile(
    cfg: &Arc<Config>,
    cache: &std::sync::Mutex<planner::PlanCache>,
    store: &Store,
    engine: &dyn Engine,
    clock: &dyn Clock,
    reason: Reason,
    recover: bool,
    stop: Arc<AtomicBool>,
    metrics: &Arc<crate::metrics::Metrics>,
    notify: &Arc<crate::notify::Notifier>,
) -> Outcome {
    let now_fn = || clock.now();
    let mut exec = Executor::new(cfg, store, engine, Arc::new(LogProgress), &now_fn);
    exec.stop = Some(stop);
    exec.metrics = Some(metrics.clone());
    exec.notify = Some(notify.clone());
    let outcome = |summary: String, worked, failed| Outcome {
        summary,
        worked,
        failed,
        recovered: true,
    };
    // At a start, and after the store failed (a full disk): work left `running` is resolved.
    if (recover || store.take_reopened())
        && let Err(e) = exec.recover()
    {
        return Outcome {
            summary: format!("recovery failed: {e}"),
            worked: false,
            failed: true,
            recovered: false,
        };
    }
    crate::failpoint!("daemon.recovered");
    let (rec, changed) = match store.load_changes() {
        Ok(r) => r,
        Err(e) => return outcome(format!("cannot read the state: {e}"), false, true),
    };
    // Only the instances the file's edit, the records written since and the time touched
    // are planned again (`plan::planner::incremental`).
    let (mut plan, _previous_file) = {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        let previous = cache.update(cfg, &rec, &changed);
        (
            cache.plan(cfg, &rec, clock.now(), PlanOptions::default()),
            previous,
        )
    };
    // `_previous_file`: the file before an edit, which the cache let go of, is freed when this
    // function returns, after the plan is applied (10,000 instances: hundreds of thousands of
    // frees, off the path from the save to the plan).
    // Let go of the records before writing: a write while they are held copies them.
    drop(rec);
    tracing::debug!(
        actions = plan.actions.len(),
        due = plan.due.len(),
        "planned"
    );
    if !reason.operator_caused() {
        plan.actions.retain(|a| {
            let rerun = match &a.details {
                crate::plan::Details::UpdateInstance { on_update, .. } => !on_update.is_empty(),
                crate::plan::Details::Restore { .. } => true,
                _ => false,
            };
            if rerun {
                tracing::info!(
                    address = %a.address,
                    "not run again on its own: it runs a hook or a restore; change the file or reload to run it"
                );
            }
            !rerun
        });
    }
    metrics.refusals(plan.refusals.len());
    for r in &plan.refusals {
        tracing::error!(address = %r.address, rule = r.rule, at = %r.location, "refused: {}; fix: {}", r.message, r.fix);
    }
    if !plan.refusals.is_empty() && plan.due.is_empty() {
        return outcome(
            format!(
                "{} refusal(s): nothing from the file applied",
                plan.refusals.len()
            ),
            false,
            false,
        );
    }
    // A label edit's snapshot tags left pending by a failed rewrite are tried again here
    // (this run may be the back-off's retry, with nothing else to do).
    let tags_pending = match exec.tags_pending() {
        Ok(p) => p,
        Err(e) => return outcome(format!("cannot read the state: {e}"), false, true),
    };
    if !plan.has_changes() && !tags_pending {
        return outcome("nothing to do".into(), false, false);
    }
    if let Err(e) = exec.run(&plan) {
        return outcome(format!("apply stopped: {e}"), false, true);
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    outcome(
        format!("applied: {done} done, {failed} failed"),
        done > 0,
        exec.report.retriable_failures() > 0,
    )
}

/// Forgets tombstones and journal entries past their retention
/// ([`planner::trimmable`]), so the state stops growing with time. Once a day; a failure is
/// logged and left for the next day.
pub(super) fn trim_state(cfg: &Config, store: &Store, now: DateTime<Utc>) {
    let trim = match store.load() {
        Ok(rec) => planner::trimmable(cfg, &rec, now),
        Err(e) => return tracing::warn!("trimming the state: {e}"),
    };
    // The records are let go of before the write (a write while they are held copies them).
    match store.trim(&trim.backups, trim.journal_before, &trim.keep_journal) {
        Ok(t) if t.backups + t.journal > 0 => tracing::info!(
            backups = t.backups,
            journal = t.journal,
            "state trimmed: tombstones and journal entries older than {} days forgotten",
            planner::TOMBSTONE_RETENTION_DAYS
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("trimming the state: {e}"),
    }
}

/// Progress of long operations as log lines.
pub(super) struct LogProgress;
impl ProgressSink for LogProgress {
    fn update(&self, phase: &str, done: u64, total: Option<u64>) {
        // The CLI's terminal sink throttles; here, a line per 5 % is enough.
        if let Some(t) = total.filter(|t| *t > 0) {
            let pct = done * 100 / t;
            let prev = (done.saturating_sub(1)) * 100 / t;
            if pct / 5 != prev / 5 || done >= t {
                tracing::info!("{phase}: {pct}% of {}", crate::views::human_bytes(t));
            }
        }
    }
}
