//! `backplan apply`: plan, show, confirm, carry out. One shot, no daemon.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use super::{Exit, load_config};
use crate::apply::Executor;
use crate::control::AskError;
use crate::plan::{self, PlanOptions, render};
use crate::query::Query;

pub struct Settings {
    pub config: PathBuf,
    pub auto_approve: bool,
    pub options: PlanOptions,
}

pub fn run(s: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(&s.config, err) else {
        let _ = writeln!(err, "Nothing was applied.");
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // A running daemon holds the store: the plan is made against its state and, once
    // approved, carried out by it.
    match crate::control::ask_recorded(&cfg.daemon.control_socket) {
        Err(AskError::NoDaemon(_)) => {}
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
        Ok(Err(e)) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
        Ok(Ok(recorded)) => return through_daemon(s, cfg, &recorded, interactive, out, err),
    }
    if !s.auto_approve && !interactive {
        // Nobody to ask: show the plan without touching anything, and refuse.
        let recorded = match crate::state::read(&cfg.daemon.state_dir) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Failure;
            }
        };
        if let Err(exit) = show_plan(&plan::plan(cfg, &recorded, Utc::now(), s.options), out, err) {
            return exit;
        }
        let _ = writeln!(
            err,
            "\nNothing was applied: not on a terminal, so there is nobody to confirm. Review the plan and run again with --auto-approve."
        );
        return Exit::Failure;
    }
    // The keys backplan generated (`storage::generated_key_path`) get their master keys kept
    // beside them: a one-shot apply skips the scrypt derivation.
    let engine =
        crate::engine::RusticEngine::new().keep_master_keys_of(&cfg.daemon.state_dir.join("keys"));
    let progress = Arc::new(super::progress::TermProgress::new());
    // The plan is made for one instant, so that it can be made again after the question.
    let now = Utc::now();
    let (mut store, plan) = match prepare(cfg, &engine, progress.clone(), s.options, now, err) {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    if let Err(exit) = show_plan(&plan, out, err) {
        return exit;
    }
    if !s.auto_approve {
        // Nobody waits for the store while a person decides: it is closed meanwhile, and the
        // plan is made again after "yes"; if the state changed, nothing is applied.
        drop(store);
        if !confirmed(out, "Do you want to perform these actions?") {
            return Exit::Failure;
        }
        let again;
        (store, again) = match prepare(cfg, &engine, progress.clone(), s.options, now, err) {
            Ok(p) => p,
            Err(exit) => return exit,
        };
        if again != plan {
            let _ = writeln!(
                err,
                "\nNothing was applied: the recorded state changed while you were deciding. Run again to see the new plan."
            );
            return Exit::Failure;
        }
    }
    let clock = || Utc::now();
    let mut exec = Executor::new(cfg, &store, &engine, progress.clone(), &clock);
    exec.report.echo = true;
    let _ = writeln!(out);
    let _ = out.flush();
    let ran = exec.run(&plan);
    progress.clear();
    if let Err(e) = ran {
        let _ = writeln!(err, "error: {e}");
        return Exit::Failure;
    }
    let failed = exec.report.failures();
    let done = exec.report.lines.len() - failed;
    let _ = writeln!(out, "\nApply complete: {done} done, {failed} failed.");
    if failed > 0 { Exit::Failure } else { Exit::Ok }
}

/// `apply` next to a running daemon: the plan against the daemon's state is shown, approved
/// here (`yes`, or `--auto-approve`), and carried out once by the daemon, which checks that
/// its own plan has the same actions. `--allow-mass-removal` approves one refused mass removal
/// without stopping the service.
fn through_daemon(
    s: &Settings,
    cfg: &crate::config::Config,
    recorded: &crate::records::Recorded,
    interactive: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let socket = &cfg.daemon.control_socket;
    let _ = writeln!(
        out,
        "The daemon on {} carries out this plan once it is approved.\n",
        socket.display()
    );
    let plan = plan::plan(cfg, recorded, Utc::now(), s.options);
    if let Err(exit) = show_plan(&plan, out, err) {
        return exit;
    }
    if !s.auto_approve {
        if !interactive {
            let _ = writeln!(
                err,
                "\nNothing was applied: not on a terminal, so there is nobody to confirm. Review the plan and run again with --auto-approve."
            );
            return Exit::Failure;
        }
        if !confirmed(out, "Do you want the daemon to perform these actions?") {
            return Exit::Failure;
        }
    }
    let _ = writeln!(out);
    let _ = out.flush();
    let q = Query::Apply {
        allow_mass_removal: s.options.allow_mass_removal,
        approved: crate::control::approved_actions(&plan),
    };
    match crate::control::ask_within(socket, &q, None) {
        Ok(a) => {
            let _ = out.write_all(a.stdout.as_bytes());
            let _ = err.write_all(a.stderr.as_bytes());
            if a.exit == 0 { Exit::Ok } else { Exit::Failure }
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            Exit::Failure
        }
    }
}

/// Opens the store, converges whatever an interrupted run left behind, and plans at `now`.
fn prepare(
    cfg: &crate::config::Config,
    engine: &dyn crate::engine::Engine,
    progress: Arc<dyn crate::engine::ProgressSink>,
    options: PlanOptions,
    now: chrono::DateTime<Utc>,
    err: &mut dyn Write,
) -> Result<(crate::state::Store, crate::plan::Plan), Exit> {
    let fail = |e: &dyn std::fmt::Display, err: &mut dyn Write| {
        let _ = writeln!(err, "error: {e}");
        Exit::Failure
    };
    let store = crate::state::Store::open(&cfg.daemon.state_dir).map_err(|e| fail(&e, err))?;
    let clock = || Utc::now();
    let mut exec = Executor::new(cfg, &store, engine, progress, &clock);
    exec.report.echo = true;
    exec.recover().map_err(|e| fail(&e, err))?;
    let recorded = store.load().map_err(|e| fail(&e, err))?;
    Ok((store, plan::plan(cfg, &recorded, now, options)))
}

/// Prints the plan; `Err` with the exit status when there is nothing to apply (refused, or
/// no changes).
fn show_plan(
    plan: &crate::plan::Plan,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Exit> {
    let _ = out.write_all(render::text(plan).as_bytes());
    if !plan.refusals.is_empty() {
        let _ = writeln!(err, "\nNothing was applied: the plan has refusals.");
        return Err(Exit::Failure);
    }
    if !plan.has_changes() {
        return Err(Exit::Ok);
    }
    Ok(())
}

/// Asks `question` on the terminal; only `yes` approves (anything else says so).
fn confirmed(out: &mut dyn Write, question: &str) -> bool {
    let _ = write!(out, "\n{question} Only 'yes' will be accepted: ");
    let _ = out.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    let yes = answer.trim() == "yes";
    if !yes {
        let _ = writeln!(out, "Apply cancelled; nothing was changed.");
    }
    yes
}
