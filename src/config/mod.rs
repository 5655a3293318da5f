//! The configuration file: read ([`raw`]), then validated into the model ([`model`]).
//!
//! **A `Config` exists only for a file without errors**: nothing downstream ever plans
//! against a file that failed validation.

pub mod doc;
pub mod model;
pub mod raw;
pub mod validate;
pub mod values;

use std::path::{Path, PathBuf};

pub use model::*;

use crate::diagnostic::{self, Diagnostic, Severity};

/// The largest configuration file read, in bytes (32 MiB: 10,000 instances with a few backups
/// each take ~15 MiB, the scale the daemon is measured at in BENCHMARKS.md).
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// A valid file, and the warnings it raised.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the configuration file {} is larger than {} MiB; backplan reads no more than that (split the data elsewhere or remove what is not configuration)",
        path.display(),
        MAX_FILE_BYTES / (1024 * 1024)
    )]
    TooLarge { path: PathBuf },
    #[error(
        "{}:{line}:{column}: the configuration file is not valid UTF-8 (byte 0x{byte:02x}); save it as UTF-8",
        path.display()
    )]
    NotUtf8 {
        path: PathBuf,
        line: usize,
        column: usize,
        byte: u8,
    },
    /// The file has errors; `rendered` is the full report (diagnostics with locations).
    #[error("{rendered}")]
    Invalid {
        diagnostics: Vec<Diagnostic>,
        rendered: String,
    },
}

/// The text of the configuration file: at most [`MAX_FILE_BYTES`], and UTF-8 (an invalid byte
/// is reported with its line and column).
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    use std::io::Read as _;
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // The prefix is valid UTF-8: count its lines, then the characters of the last one.
        let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        LoadError::NotUtf8 {
            path: path.to_path_buf(),
            line: valid.matches('\n').count() + 1,
            column: valid[line_start..].chars().count() + 1,
            byte: bytes[at],
        }
    })
}

pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let text = read_text(path)?;
    match parse(path, &text) {
        Ok((config, warnings)) => Ok(Loaded {
            config,
            warnings,
            text,
        }),
        Err(diagnostics) => Err(LoadError::Invalid {
            rendered: diagnostic::render(&path.display().to_string(), &text, &diagnostics),
            diagnostics,
        }),
    }
}

/// Reads and validates a configuration text. `path` locates relative paths and names the file.
/// Returns the model and its warnings, or every diagnostic (errors and warnings) in file order.
pub fn parse(path: &Path, text: &str) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let raw::Read {
        config: raw,
        skipped,
        diagnostics: mut diags,
    } = raw::read(text);
    let config = match raw {
        Some(raw) => {
            let (config, more) = validate::validate(raw, &skipped, path, text);
            diags.extend(more);
            config
        }
        None => None,
    };
    diags.sort_by(|a, b| (a.span.start, a.rule).cmp(&(b.span.start, b.rule)));
    match config {
        Some(c) if !diags.iter().any(|d| d.severity == Severity::Error) => Ok((c, diags)),
        _ => Err(diags),
    }
}

/// Where the state and the control socket are, read from a file even when it is invalid (for
/// commands that only show what is recorded): its `[daemon]` settings, or the defaults where
/// it has none. `Err` when the `[daemon]` section cannot be read (the file is not TOML, or the
/// section has a problem): the paths would be guesses, and the answer wrong.
pub fn paths_hint(path: &Path, text: &str) -> Result<(PathBuf, PathBuf), Diagnostic> {
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let daemon = raw::read_daemon(text)?;
    let state_dir = daemon
        .state_dir
        .map(|d| base.join(d.into_inner()))
        .unwrap_or_else(|| PathBuf::from(validate::DEFAULT_STATE_DIR));
    let socket = daemon
        .control_socket
        .map(|s| base.join(s.into_inner()))
        .unwrap_or_else(|| state_dir.join("backplan.sock"));
    Ok((state_dir, socket))
}

/// The JSON Schema of the file, for editors (taplo, Even Better TOML).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(raw::RawConfig);
    serde_json::to_string_pretty(&schema).expect("a schema serialises") + "\n"
}
