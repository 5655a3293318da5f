//! `backplan storage check NAME`: tries a storage before it is used (like the product's
//! "Validate" button): the credentials, the container or bucket, and a write / read / delete
//! round trip of a test object beside the repository. The repository itself is not touched.

use std::io::Write;
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
}

pub(super) fn run(command: Command, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    match command {
        Command::Check { config, name } => check(&config.resolve(), &name, out, err),
    }
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
