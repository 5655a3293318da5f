//! `backplan storage check NAME`: tries a storage before it is used (like the product's
//! "Validate" button): the credentials, the container or bucket, and a write / read / delete
//! round trip of a test object beside the repository. The repository itself is not touched.
//!
//! `backplan storage adopt NAME`: rebuilds the catalogue of a storage from its snapshots (a
//! new host after a lost one): the records the snapshots carry (`catalogue`), shown as a plan,
//! written once approved. It refuses while a daemon runs (the daemon holds the state).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use super::{Exit, load_config};
use crate::engine::Engine as _;

#[derive(Debug, clap::Subcommand)]
pub(super) enum Command {
    /// Try a storage: credentials, container or bucket, and a write / read / delete round
    /// trip. Exit 0 when it can be used, 1 otherwise (the message says what failed).
    #[command(
        after_help = "Examples:\n  backplan storage check archive\n  backplan storage check archive && echo usable"
    )]
    Check {
        #[command(flatten)]
        config: super::ConfigArg,
        /// The storage's name (`[storage.NAME]`).
        name: String,
    },
    /// Rebuild the catalogue of a storage from its snapshots (a new host after a lost one):
    /// shows the backups it would import as a plan, then writes them once approved. Never
    /// overwrites a record. Run it with the daemon stopped.
    #[command(after_help = "Examples:
  backplan storage adopt archive
  backplan storage adopt archive --auto-approve -c /etc/backplan/backplan.toml")]
    Adopt {
        #[command(flatten)]
        config: super::ConfigArg,
        /// Import without asking (needed off a terminal).
        #[arg(long)]
        auto_approve: bool,
        /// The storage's name (`[storage.NAME]`).
        name: String,
    },
}

pub(super) fn run(command: Command, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    match command {
        Command::Check { config, name } => check(&config.resolve(), &name, out, err),
        Command::Adopt {
            config,
            auto_approve,
            name,
        } => adopt(&config.resolve(), &name, auto_approve, out, err),
    }
}

fn adopt(
    config: &Path,
    name: &str,
    auto_approve: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let Some(loaded) = load_config(config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    let fail = |err: &mut dyn Write, e: &dyn std::fmt::Display| {
        let _ = writeln!(err, "error: {e}");
        Exit::Failure
    };
    let Some(storage) = cfg.storages.get(name) else {
        let names: Vec<&str> = cfg.storages.keys().map(String::as_str).collect();
        return fail(
            err,
            &format!(
                "storage `{name}` is not declared in the file; declared: {}",
                names.join(", ")
            ),
        );
    };
    // The daemon holds the state: adopt writes it, so it runs without one.
    let socket = &cfg.daemon.control_socket;
    let status = crate::query::Query::Status {
        json: true,
        width: None,
    };
    match crate::control::ask(socket, &status) {
        Err(crate::control::AskError::NoDaemon(_)) => {}
        Err(e) => return fail(err, &e),
        Ok(_) => {
            return fail(
                err,
                &format!(
                    "a daemon is running (socket {}) and holds the state; nothing was adopted. Stop it (`systemctl stop backplan`), run `backplan storage adopt {name}`, then start it again",
                    socket.display()
                ),
            );
        }
    }
    let repo = match crate::storage::resolve(cfg, name) {
        Ok(r) => r.repo,
        Err(e) => return fail(err, &e),
    };
    let what = crate::storage::describe(storage);
    let engine = crate::engine::RusticEngine::new();
    let repository_id = match engine.repository_id(&repo) {
        Ok(Some(id)) => id,
        Ok(None) => {
            return fail(
                err,
                &format!(
                    "storage `{name}` ({what}) holds no repository; nothing to adopt. Check the location in the file"
                ),
            );
        }
        Err(e) => return fail(err, &format!("storage `{name}` ({what}): {e}")),
    };
    let snapshots = match engine.list(&repo) {
        Ok(s) => s,
        Err(e) => return fail(err, &format!("storage `{name}` ({what}): {e}")),
    };
    let plan_now = |recorded: &crate::records::Recorded| {
        crate::catalogue::adopt_plan(cfg, recorded, name, &snapshots)
    };
    let recorded = match crate::state::read(&cfg.daemon.state_dir) {
        Ok(r) => r,
        Err(e) => return fail(err, &e),
    };
    let plan = plan_now(&recorded);
    let _ = out.write_all(plan.text(&what).as_bytes());
    let refused = if plan.refused.is_empty() {
        Exit::Ok
    } else {
        Exit::Failure
    };
    if plan.import.is_empty() {
        return refused;
    }
    if !auto_approve {
        if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
            let _ = writeln!(
                err,
                "\nNothing was adopted: not on a terminal, so there is nobody to confirm. Review the plan and run again with --auto-approve."
            );
            return Exit::Failure;
        }
        let _ = write!(
            out,
            "\nDo you want to import these backups? Only 'yes' will be accepted: "
        );
        let _ = out.flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "yes" {
            let _ = writeln!(out, "Adopt cancelled; nothing was changed.");
            return Exit::Failure;
        }
    }
    let store = match crate::state::Store::open(&cfg.daemon.state_dir) {
        Ok(s) => s,
        Err(e) => return fail(err, &e),
    };
    // Planned again on the store now held: nothing is written if the state changed.
    match store.load() {
        Ok(r) if plan_now(&r) == plan => {}
        Ok(_) => {
            return fail(
                err,
                &"the recorded state changed while you were deciding; nothing was adopted. Run again to see the new plan",
            );
        }
        Err(e) => return fail(err, &e),
    }
    match store.get_storage(name) {
        Ok(Some(r)) if r.repository_id != repository_id => {
            return fail(
                err,
                &format!(
                    "storage `{name}` is recorded with repository {} (at {}), but it now holds repository {repository_id}; nothing was adopted",
                    r.repository_id,
                    r.path.display()
                ),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            let r = crate::records::StorageRecord {
                name: name.to_string(),
                repository_id,
                path: repo.path.clone(),
                recorded_at: chrono::Utc::now(),
            };
            if let Err(e) = store.put_storage(&r) {
                return fail(err, &e);
            }
        }
        Err(e) => return fail(err, &e),
    }
    for b in &plan.import {
        if let Err(e) = store.put_backup(b) {
            return fail(err, &e);
        }
    }
    let _ = writeln!(
        out,
        "\nAdopt complete: {} imported into the catalogue{}.",
        crate::views::count(plan.import.len(), "backup", "backups"),
        if plan.refused.is_empty() {
            String::new()
        } else {
            format!(", {} refused (see above)", plan.refused.len())
        }
    );
    refused
}

fn check(config: &Path, name: &str, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    let Some(storage) = cfg.storages.get(name) else {
        let names: Vec<&str> = cfg.storages.keys().map(String::as_str).collect();
        let _ = writeln!(
            err,
            "error: storage `{name}` is not declared in the file; declared: {}",
            names.join(", ")
        );
        return Exit::Failure;
    };
    let resolved = match crate::storage::resolve(cfg, name) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let what = crate::storage::describe(storage);
    let engine = crate::engine::RusticEngine::new();
    match engine.check_storage(&resolved.repo) {
        Ok(()) => {
            let _ = writeln!(
                out,
                "storage `{name}` ({what}): usable: credentials accepted, write, read and delete of a test object succeeded"
            );
            Exit::Ok
        }
        Err(e) => {
            let _ = writeln!(err, "error: storage `{name}` ({what}) cannot be used: {e}");
            Exit::Failure
        }
    }
}
