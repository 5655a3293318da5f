//! `backplan plan`: what `apply` would do now (or `--at` another time).

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{Exit, load_config};
use crate::plan::{self, PlanOptions, render};

pub struct Settings {
    pub config: PathBuf,
    pub json: bool,
    pub at: DateTime<Utc>,
    pub detailed_exitcode: bool,
    pub options: PlanOptions,
}

pub fn run(s: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(&s.config, err) else {
        return Exit::Failure;
    };
    let cfg = &loaded.config;
    let recorded = match crate::state::read(&cfg.daemon.state_dir) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return Exit::Failure;
        }
    };
    let plan = plan::plan(cfg, &recorded, s.at, s.options);
    let text = if s.json {
        render::json(&plan)
    } else {
        render::text(&plan)
    };
    let _ = out.write_all(text.as_bytes());
    if !plan.refusals.is_empty() {
        Exit::Failure
    } else if s.detailed_exitcode && plan.has_changes() {
        Exit::Changes
    } else {
        Exit::Ok
    }
}
