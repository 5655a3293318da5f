//! `backplan completions SHELL`: a completion script generated from the clap definition, so
//! it never falls behind the commands.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, Exit};

pub fn run(shell: clap_complete::Shell, out: &mut dyn Write) -> Exit {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "backplan", &mut buf);
    match out.write_all(&buf) {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Failure,
    }
}
