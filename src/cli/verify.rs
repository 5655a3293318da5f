//! `backplan verify`: the integrity of every local repository, and that every backup
//! recorded as completed has its snapshot. With a daemon running, the daemon verifies (it
//! holds the state); otherwise the command does it itself.

use std::io::Write;
use std::path::Path;

use super::{Exit, load_config};
use crate::control::{AskError, ask};
use crate::query::Query;
use crate::verify::{Verified, run as run_verify};

pub fn run(
    config: &Path,
    subset: f64,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let Some(loaded) = load_config(config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    match ask(&cfg.daemon.control_socket, &Query::Verify { subset, json }) {
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
    let verified = run_verify(cfg, &rec, &engine, subset);
    if json {
        let _ = out.write_all(Verified::json(Some(&verified), "").as_bytes());
    } else {
        verified.write_text(subset, out);
    }
    if verified.problems > 0 {
        Exit::Failure
    } else {
        Exit::Ok
    }
}
