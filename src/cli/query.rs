//! `status`, `backups`, `show` and `plan` on the command line: asked of the running daemon
//! when there is one, answered from the state directly otherwise.

use std::io::Write;
use std::path::Path;

use chrono::Utc;

use super::Exit;
use crate::control::{AskError, ask};
use crate::query::{Answer, Context, Query, answer};

/// `plan`: the named file, planned against the recorded state (through the daemon if one runs).
pub fn plan(
    config: &Path,
    json: bool,
    at: Option<chrono::DateTime<Utc>>,
    detailed_exitcode: bool,
    allow_mass_removal: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let Some(text) = read(config, err) else {
        return Exit::Failure;
    };
    // An invalid file is never planned: its diagnostics, and exit 1.
    if let Err(diags) = crate::config::parse(config, &text) {
        let _ = write!(
            err,
            "{}",
            crate::diagnostic::render(&config.display().to_string(), &text, &diags)
        );
        return Exit::Failure;
    }
    let q = Query::Plan {
        // Relative paths in the file resolve against its folder, wherever the daemon runs.
        file: std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf()),
        name: config.display().to_string(),
        text: text.clone(),
        json,
        at,
        detailed_exitcode,
        allow_mass_removal,
    };
    ask_or_answer(config, &text, q, out, err)
}

fn read(config: &Path, err: &mut dyn Write) -> Option<String> {
    match crate::config::read_text(config) {
        Ok(t) => Some(t),
        Err(e) => {
            let _ = writeln!(err, "{e}");
            None
        }
    }
}

pub fn run(config: &Path, q: Query, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(text) = read(config, err) else {
        return Exit::Failure;
    };
    ask_or_answer(config, &text, q, out, err)
}

fn ask_or_answer(
    config: &Path,
    text: &str,
    q: Query,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let text = text.to_string();
    let (cfg, config_error) = match crate::config::parse(config, &text) {
        Ok((c, warnings)) => {
            if !warnings.is_empty() {
                let _ = write!(
                    err,
                    "{}",
                    crate::diagnostic::render(&config.display().to_string(), &text, &warnings)
                );
            }
            (Some(c), None)
        }
        Err(diags) => (
            None,
            Some(crate::diagnostic::render(
                &config.display().to_string(),
                &text,
                &diags,
            )),
        ),
    };
    let (state_dir, socket) = match &cfg {
        Some(c) => (c.daemon.state_dir.clone(), c.daemon.control_socket.clone()),
        None => crate::config::paths_hint(config, &text),
    };
    // A daemon that is starting holds the state before it listens: ask again for a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let reply = loop {
        match ask(&socket, &q) {
            Ok(a) => break a,
            Err(AskError::NoDaemon(_)) => {}
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Failure;
            }
        }
        let recorded = match crate::state::read(&state_dir) {
            Ok(r) => r,
            Err(crate::state::StateError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return Exit::Failure;
            }
        };
        let journal = || crate::state::journal(&state_dir).map_err(|e| e.to_string());
        break answer(
            &q,
            &Context {
                config: cfg.as_ref(),
                config_error: config_error.as_deref(),
                recorded: &recorded,
                journal: &journal,
                now: Utc::now(),
            },
        );
    };
    print(&reply, out, err)
}

fn print(a: &Answer, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let _ = out.write_all(a.stdout.as_bytes());
    let _ = err.write_all(a.stderr.as_bytes());
    match a.exit {
        0 => Exit::Ok,
        2 => Exit::Changes,
        _ => Exit::Failure,
    }
}
