//! The crate's error type and the exit codes it maps to.

use std::path::PathBuf;

/// Exit code when every SLO passed (or none was given).
pub const EXIT_OK: u8 = 0;
/// Exit code when at least one SLO failed.
pub const EXIT_SLO_FAILED: u8 = 1;
/// Exit code for usage errors: bad flags, a bad SLO, a refused target, an empty queries file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for runtime failures, such as a target that could not be reached at all.
pub const EXIT_RUNTIME: u8 = 3;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message says what to change.
    #[error("{0}")]
    Usage(String),
    /// The target refused every connection before the run started.
    #[error("cannot reach the target {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::ReadFile { .. } => EXIT_USAGE,
            Error::Unreachable { .. } | Error::WriteFile { .. } | Error::Runtime(_) => EXIT_RUNTIME,
        }
    }
}

impl From<crate::slo::ParseSloError> for Error {
    fn from(e: crate::slo::ParseSloError) -> Self {
        Error::Usage(e.to_string())
    }
}
