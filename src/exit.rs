//! The process's exit statuses, shared by the commands and by the answers the daemon gives
//! for them.

/// Exit statuses, as SPEC section 8 gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Valid, or no changes.
    Ok = 0,
    /// Invalid file, refused plan, or an error.
    Failure = 1,
    /// `plan --detailed-exitcode`: there are changes.
    Changes = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
