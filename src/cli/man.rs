//! `backplan man`: manual pages generated from the clap definition: backplan(1) on stdout, or
//! backplan(1) and one backplan-COMMAND(1) per command written into a folder (the package's).
//! Each page has clap_mangen's sections and an EXAMPLES section made of the `--help` examples.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::{Cli, Exit};

pub fn run(out_dir: Option<&Path>, out: &mut dyn Write, err: &mut dyn Write) -> Exit {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let result = match out_dir {
        None => page(&cmd).and_then(|b| out.write_all(&b)),
        Some(dir) => std::iter::once(&cmd)
            .chain(cmd.get_subcommands().filter(|s| !s.is_hide_set()))
            .try_for_each(|c| {
                let name = c.get_display_name().unwrap_or(c.get_name());
                std::fs::write(dir.join(format!("{name}.1")), page(c)?)
            }),
    };
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            let to = out_dir.map_or("stdout".to_string(), |d| d.display().to_string());
            let _ = writeln!(err, "error: cannot write the manual pages to {to}: {e}");
            Exit::Failure
        }
    }
}

/// One page: NAME, SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS (the top page), EXAMPLES.
fn page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("backplan {}", env!("CARGO_PKG_VERSION")))
        .manual("backplan");
    let mut b = Vec::new();
    man.render_title(&mut b)?;
    man.render_name_section(&mut b)?;
    man.render_synopsis_section(&mut b)?;
    man.render_description_section(&mut b)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut b)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut b)?;
    }
    if let Some(text) = cmd.get_after_help() {
        b.extend_from_slice(examples(&text.to_string()).as_bytes());
    }
    Ok(b)
}

/// The `--help` examples as a roff no-fill block, each line escaped so that roff prints it
/// as written (`-` stays an ASCII hyphen-minus, for copy and paste).
fn examples(text: &str) -> String {
    let mut s = String::from(".SH EXAMPLES\n.nf\n");
    for line in text.lines().filter(|l| l.trim() != "Examples:") {
        let line = line.replace('\\', "\\e").replace('-', "\\-");
        s += &format!("\\&{line}\n");
    }
    s + ".fi\n"
}
