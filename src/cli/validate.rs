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
    let _ = writeln!(
        out,
        "{}: valid ({} instance(s), {backups} on-demand backup(s), {} restore(s), {} storage(s)).",
        path.display(),
        c.instances.len(),
        c.restores.len(),
        c.storages.len()
    );
    Exit::Ok
}
