//! `backplan apply`: plan, show, confirm, carry out. One shot, no daemon.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::{Exit, load_config};
use crate::apply::Executor;
use crate::plan::{self, PlanOptions, render};

pub struct Settings {
    pub config: PathBuf,
    pub auto_approve: bool,
    pub options: PlanOptions,
}

pub fn run(s: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(&s.config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if !s.auto_approve && !interactive {
        // Nobody to ask: show the plan without touching anything, and refuse.
        let recorded = match crate::state::read(&cfg.daemon.state_dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Failure;
            }
        };
        if let Err(exit) = show_plan(cfg, &recorded, s.options, out, err) {
            return exit;
        }
        let _ = writeln!(
            err,
            "\nNothing was applied: not on a terminal, so there is nobody to confirm. Review the plan and run again with --auto-approve."
        );
        return Exit::Failure;
    }
    let store = match crate::state::Store::open(&cfg.daemon.state_dir) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let engine = crate::engine::RusticEngine::new();
    let clock = || Utc::now();
    let mut exec = Executor::new(
        cfg,
        &store,
        &engine,
        Arc::new(super::progress::TermProgress::new()),
        &clock,
    );
    exec.report.echo = true;
    // Converge whatever an interrupted run left behind before planning.
    if let Err(e) = exec.recover() {
        let _ = writeln!(err, "error: {e}");
        return Exit::Failure;
    }
    let recorded = match store.load() {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let plan = match show_plan(cfg, &recorded, s.options, out, err) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    if !s.auto_approve {
        let _ = write!(
            out,
            "\nDo you want to perform these actions? Only 'yes' will be accepted: "
        );
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "yes" {
            let _ = writeln!(out, "Apply cancelled; nothing was changed.");
            return Exit::Failure;
        }
    }
    let _ = writeln!(out);
    let _ = out.flush();
    if let Err(e) = exec.run(&plan) {
        let _ = writeln!(err, "error: {e}");
        return Exit::Failure;
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    let _ = writeln!(out, "\nApply complete: {done} done, {failed} failed.");
    if failed > 0 { Exit::Failure } else { Exit::Ok }
}

/// Plans and prints the plan; `Err` with the exit status when there is nothing to apply
/// (refused, or no changes).
fn show_plan(
    cfg: &crate::config::Config,
    recorded: &crate::records::Recorded,
    options: PlanOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<crate::plan::Plan, Exit> {
    let plan = plan::plan(cfg, recorded, Utc::now(), options);
    let _ = out.write_all(render::text(&plan).as_bytes());
    if !plan.refusals.is_empty() {
        let _ = writeln!(err, "\nNothing was applied: the plan has refusals.");
        return Err(Exit::Failure);
    }
    if !plan.has_changes() {
        return Err(Exit::Ok);
    }
    Ok(plan)
}
