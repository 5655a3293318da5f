//! `backplan verify`: the integrity of every local repository, and that every backup
//! recorded as completed has its snapshot. With a daemon running, the daemon verifies (it
//! holds the state); otherwise the command does it itself.

use std::io::Write;
use std::path::Path;

use super::{Exit, load_config};
use crate::control::{AskError, ask};
use crate::query::Query;
use crate::verify::check;

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
