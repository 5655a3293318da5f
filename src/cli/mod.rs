//! The command line: raw arguments are turned into validated settings once, then each
//! subcommand (one module each) runs with them and returns an [`Exit`].

mod apply;
mod completions;
mod man;
pub mod progress;
mod query;
mod run;
mod storage;
mod validate;
pub mod verify;

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::query::Query;

pub use crate::exit::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "backplan",
    version,
    about = "Declarative backup and restore daemon",
    after_help = "Examples:\n  backplan validate -c /etc/backplan/backplan.toml\n  backplan plan\n  backplan apply\n  backplan backups contoso\n\nThe file: -c FILE, else $BACKPLAN_CONFIG, else /etc/backplan/backplan.toml."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file [default: $BACKPLAN_CONFIG, then /etc/backplan/backplan.toml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration file; reports every problem at once. Exit 0 valid, 1 invalid.
    #[command(
        after_help = "Examples:\n  backplan validate -c /etc/backplan/backplan.toml\n  backplan validate -c backplan.toml && echo valid"
    )]
    Validate(ConfigArg),
    /// Show what `apply` would do. Exit 0 (or 0/2 with --detailed-exitcode), 1 on error or refusal.
    #[command(
        after_help = "Examples:\n  backplan plan\n  backplan plan --json | jq '.actions[]'\n  backplan plan --detailed-exitcode   # exit 0: no changes, 2: changes\n  backplan plan --at 2026-11-27T02:30:00Z"
    )]
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Plan for this time instead of now (RFC 3339, like 2026-11-27T02:30:00Z).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
        /// Exit 2 when there are changes, 0 when there are none.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Allow a plan that forgets more than half of the instances or deletes more than
        /// half of the on-demand backups.
        #[arg(long)]
        allow_mass_removal: bool,
    },
    /// Carry out the plan now (one shot, no daemon). Asks first on a terminal.
    #[command(
        after_help = "Examples:\n  backplan apply\n  backplan apply --auto-approve -c backplan.toml"
    )]
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Do not ask; required when not on a terminal.
        #[arg(long)]
        auto_approve: bool,
        /// Allow a plan that forgets more than half of the instances or deletes more than
        /// half of the on-demand backups.
        #[arg(long)]
        allow_mass_removal: bool,
    },
    /// The daemon: applies the file, watches it, takes the daily backups and expires old ones.
    #[command(
        after_help = "Examples:\n  systemctl start backplan   # runs: backplan run -c /etc/backplan/backplan.toml\n  backplan run --log-format json"
    )]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format: `human` (default; without timestamps when journald reads it) or `json`.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// Testing only: read the current time from this file (RFC 3339), watched for changes.
        #[arg(long, hide = true, value_name = "FILE")]
        clock_file: Option<PathBuf>,
    },
    /// Instances: type, version, state, last good backup, next daily backup.
    #[command(
        after_help = "Examples:\n  backplan status\n  backplan status -c /etc/backplan/backplan.toml --json"
    )]
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// The backup list (of one instance, or all).
    #[command(
        after_help = "Examples:\n  backplan backups\n  backplan backups contoso\n  backplan backups contoso --json"
    )]
    Backups {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this instance's backups.
        instance: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One backup with its history and errors.
    #[command(
        after_help = "Examples:\n  backplan show contoso@latest\n  backplan show contoso/before-import\n  backplan show 'contoso@daily:2026-11-27' --json"
    )]
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// `<instance>/<key>`, `<instance>@latest`, `<instance>@daily:DATE`,
        /// `<instance>@pre-update:VERSION` or a backup id.
        backup: String,
        #[arg(long)]
        json: bool,
    },
    /// Storages: `storage check NAME` tries one before use; `storage adopt NAME` rebuilds its
    /// catalogue on a new host.
    #[command(
        subcommand,
        after_help = "Examples:\n  backplan storage check archive\n  backplan storage check archive -c /etc/backplan/backplan.toml\n  backplan storage adopt archive"
    )]
    Storage(storage::Command),
    /// Check the repositories: structure, a read-back of a share of the data, and that every
    /// completed backup has its snapshot. Exit 1 on any problem.
    #[command(after_help = "Examples:\n  backplan verify\n  backplan verify --subset 100%")]
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Share of the data to read back, like `5%` (default) or `100%`.
        #[arg(long, default_value = "5%", value_parser = parse_share)]
        subset: f64,
        /// Print the report as JSON (damaged packs with the backups they affect).
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script generated from this command line.
    #[command(
        after_help = "Examples:\n  backplan completions bash > /etc/bash_completion.d/backplan\n  backplan completions zsh > \"${fpath[1]}/_backplan\"\n  backplan completions fish > ~/.config/fish/completions/backplan.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a folder.
    #[command(
        after_help = "Examples:\n  backplan man | man -l -\n  backplan man --out-dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write backplan.1 and backplan-COMMAND.1 into this folder instead of printing backplan.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

fn parse_share(s: &str) -> Result<f64, String> {
    crate::config::values::Percent::parse(s).map(|p| p.0)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("`{s}` is not an RFC 3339 time ({e}); write it like 2026-11-27T02:30:00Z")
        })
}

impl ConfigArg {
    fn resolve(self) -> PathBuf {
        self.config
            .or_else(|| std::env::var_os("BACKPLAN_CONFIG").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/backplan/backplan.toml"))
    }
}

/// Runs the command line and returns the process exit status.
pub fn main() -> Exit {
    // Usage errors exit 1, not clap's 2, which `plan --detailed-exitcode` uses for "changes".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Failure
            } else {
                Exit::Ok
            };
        }
    };
    match &cli.command {
        Command::Run { log_format, .. } => init_logging(*log_format, "info"),
        _ => init_logging(LogFormat::Human, "warn"),
    }
    // Not locked for the whole command: progress is written from the engine's threads.
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let exit = match cli.command {
        Command::Storage(c) => storage::run(c, &mut out, &mut err),
        Command::Validate(c) => validate::run(&c.resolve(), &mut out, &mut err),
        Command::Plan {
            config,
            json,
            at,
            detailed_exitcode,
            allow_mass_removal,
        } => query::plan(
            &config.resolve(),
            json,
            Some(at.unwrap_or_else(Utc::now)),
            detailed_exitcode,
            allow_mass_removal,
            &mut out,
            &mut err,
        ),
        Command::Apply {
            config,
            auto_approve,
            allow_mass_removal,
        } => apply::run(
            &apply::Settings {
                config: config.resolve(),
                auto_approve,
                options: crate::plan::PlanOptions { allow_mass_removal },
            },
            &mut out,
            &mut err,
        ),
        Command::Status { config, json } => query::run(
            &config.resolve(),
            Query::Status {
                json,
                width: table_width(),
            },
            &mut out,
            &mut err,
        ),
        Command::Backups {
            config,
            instance,
            json,
        } => query::run(
            &config.resolve(),
            Query::Backups {
                instance,
                json,
                width: table_width(),
            },
            &mut out,
            &mut err,
        ),
        Command::Show {
            config,
            backup,
            json,
        } => query::run(
            &config.resolve(),
            Query::Show { backup, json },
            &mut out,
            &mut err,
        ),
        Command::Run {
            config,
            log_format,
            clock_file,
        } => run::run(
            &run::Settings {
                config: config.resolve(),
                clock_file,
            },
            log_format,
        ),
        Command::Verify {
            config,
            subset,
            json,
        } => verify::run(&config.resolve(), subset, json, &mut out, &mut err),
        Command::Completions { shell } => completions::run(shell, &mut out),
        Command::Man { out_dir } => man::run(out_dir.as_deref(), &mut out, &mut err),
    };
    let _ = out.flush();
    exit
}

/// Logs go to stderr: `default` level and up unless `RUST_LOG` says otherwise. Human lines
/// (coloured only on a terminal), without timestamps when journald reads them (it adds its
/// own), or JSON.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colour only for a person at a terminal: never in files, pipes or the journal.
    let ansi = !journald && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match (format, journald || default == "warn") {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Human, true) => builder.without_time().with_ansi(ansi).try_init(),
        (LogFormat::Human, false) => builder.with_ansi(ansi).try_init(),
    };
    crate::engine::install_log_bridge();
}

/// The width tables fit: `$COLUMNS` when set, else the terminal's when stdout is one (80
/// when it does not say). `None` when stdout is a pipe or a file: no limit, whole cells for
/// `grep` and scripts (`--json` is the stable interface).
fn table_width() -> Option<usize> {
    use std::io::IsTerminal;
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills the `winsize` it is given, which lives across the call.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    Some(if ok && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    })
}

/// Loads the file, printing its diagnostics; `None` when it is invalid or unreadable.
fn load_config(path: &std::path::Path, err: &mut dyn Write) -> Option<crate::config::Loaded> {
    match crate::config::load(path) {
        Ok(loaded) => {
            if !loaded.warnings.is_empty() {
                let _ = write!(
                    err,
                    "{}",
                    crate::diagnostic::render(
                        &path.display().to_string(),
                        &loaded.text,
                        &loaded.warnings
                    )
                );
            }
            Some(loaded)
        }
        Err(e) => {
            let _ = writeln!(err, "{}", load_error(&e));
            None
        }
    }
}

/// A file that cannot be used, as printed: its diagnostics when it is invalid, else `error:`
/// and, when it is missing, how to point at another.
fn load_error(e: &crate::config::LoadError) -> String {
    use crate::config::LoadError;
    match e {
        LoadError::Invalid { rendered, .. } => rendered.trim_end().to_string(),
        LoadError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!(
                "error: {e}\nhint: name the file with `-c FILE` or `$BACKPLAN_CONFIG`; without either, backplan reads /etc/backplan/backplan.toml"
            )
        }
        _ => format!("error: {e}"),
    }
}
