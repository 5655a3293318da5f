//! `backplan validate`: every problem of the file at once, no state needed.

use std::io::Write;
use std::path::Path;

use super::{Exit, load_config};

pub fn run(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let Some(loaded) = load_config(path, err) else {
        return Exit::Failure;
    };
    let c = &loaded.config;
    let backups: usize = c.instances.values().map(|i| i.backups.len()).sum();
    let n = crate::views::count;
    let _ = writeln!(
        out,
        "{}: valid ({}, {}, {}, {}).",
        path.display(),
        n(c.instances.len(), "instance", "instances"),
        n(backups, "on-demand backup", "on-demand backups"),
        n(c.restores.len(), "restore", "restores"),
        n(c.storages.len(), "storage", "storages"),
    );
    Exit::Ok
}
