//! `status`, `backups`, `show` and `plan` on the command line: asked of the running daemon
//! when there is one, answered from the state directly otherwise.

use std::io::Write;
use std::path::Path;

use chrono::Utc;

use super::Exit;
use crate::control::{AskError, ask, ask_recorded};
use crate::query::{Answer, Context, Query, answer};
use crate::records::Recorded;

/// `plan`: the named file, validated here (as the calling user), planned against the
/// recorded state (asked of the daemon if one runs).
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
    let name = config.display().to_string();
    // An invalid file is never planned: its diagnostics, and exit 1.
    let cfg = match crate::config::parse(config, &text) {
        Err(diags) => {
            let _ = write!(err, "{}", crate::diagnostic::render(&name, &text, &diags));
            let _ = writeln!(err, "Nothing was planned: the file is invalid.");
            return Exit::Failure;
        }
        Ok((cfg, warnings)) => {
            if !warnings.is_empty() {
                let _ = write!(
                    err,
                    "{}",
                    crate::diagnostic::render(&name, &text, &warnings)
                );
            }
            cfg
        }
    };
    let recorded = match recorded(&cfg.daemon.state_dir, &cfg.daemon.control_socket) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let a = crate::query::plan(
        &cfg,
        &recorded,
        at.unwrap_or_else(Utc::now),
        json,
        detailed_exitcode,
        crate::plan::PlanOptions { allow_mass_removal },
    );
    print(&a, out, err)
}

/// The recorded state: asked of the running daemon (it holds the store), else read directly.
/// A daemon that is starting holds the state before it listens: ask again for a while.
pub(super) fn recorded(state_dir: &Path, socket: &Path) -> Result<Recorded, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match ask_recorded(socket) {
            Ok(r) => return r,
            Err(AskError::NoDaemon(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        match crate::state::read(state_dir) {
            Ok(r) => return Ok(r),
            Err(crate::state::StateError::Locked { .. })
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn read(config: &Path, err: &mut dyn Write) -> Option<String> {
    match crate::config::read_text(config) {
        Ok(t) => Some(t),
        Err(e) => {
            let _ = writeln!(err, "{}", super::load_error(&e));
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
        None => match crate::config::paths_hint(config, &text) {
            Ok(paths) => paths,
            Err(d) => {
                // Guessed paths would show another state (or none) as if it were this one.
                let _ = write!(err, "{}", config_error.unwrap_or_default());
                let _ = writeln!(
                    err,
                    "error: {} is invalid where it says where the state is ({}), so the recorded state and the running daemon cannot be found; fix the file (`backplan validate -c {}` lists every problem)",
                    config.display(),
                    d.message,
                    config.display()
                );
                return Exit::Failure;
            }
        },
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
