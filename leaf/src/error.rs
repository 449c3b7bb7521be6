//! The leaf's typed errors and the one place that maps them to gRPC codes
//! and HTTP statuses.

use std::path::PathBuf;

use tonic::{Code, Status};

use crate::metrics::SearchOutcome;

/// Everything that can go wrong in the leaf, from a bad query to a broken
/// index directory.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    /// A request field is out of range (for example `k`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The query text is empty or cannot be parsed.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The caller's deadline passed before the search could start.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The caller went away; nobody reads the answer.
    #[error("cancelled")]
    Cancelled,
    /// Every search slot is busy and the wait queue is full (or the wait ran
    /// out): the caller should try another replica.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A fault knob asked this call to fail.
    #[error("injected fault")]
    InjectedFault,
    /// The server is stopping.
    #[error("shutting down")]
    ShuttingDown,
    /// A configuration value is wrong (flags, environment or library use).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The corpus file cannot be read.
    #[error("cannot read corpus {path}: {error}")]
    Corpus {
        path: PathBuf,
        error: std::io::Error,
    },
    /// `--index-dir` holds an index of another shard or format.
    #[error("index in {dir} cannot be reused: {reason}")]
    IndexMismatch { dir: PathBuf, reason: String },
    #[error("index error: {0}")]
    Index(tantivy::TantivyError),
    #[error("io error: {0}")]
    Io(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// The gRPC server stopped other than by a graceful stop.
    #[error(transparent)]
    Serve(#[from] svc::ServeError),
}

// The messages above already include their cause, so the causes are not
// also chained as `source` (which would print them twice with `{:#}`).
impl From<tantivy::TantivyError> for LeafError {
    fn from(error: tantivy::TantivyError) -> Self {
        LeafError::Index(error)
    }
}

impl From<std::io::Error> for LeafError {
    fn from(error: std::io::Error) -> Self {
        LeafError::Io(error)
    }
}

/// The leaf's result type.
pub type Result<T, E = LeafError> = std::result::Result<T, E>;

impl LeafError {
    /// The gRPC code a caller sees for this error.
    pub fn grpc_code(&self) -> Code {
        match self {
            LeafError::InvalidArgument(_) | LeafError::InvalidQuery(_) => Code::InvalidArgument,
            LeafError::DeadlineExceeded => Code::DeadlineExceeded,
            LeafError::Cancelled => Code::Cancelled,
            LeafError::Overloaded(_) => Code::ResourceExhausted,
            LeafError::InjectedFault | LeafError::ShuttingDown => Code::Unavailable,
            LeafError::Config(_) => Code::FailedPrecondition,
            LeafError::Corpus { .. }
            | LeafError::IndexMismatch { .. }
            | LeafError::Index(_)
            | LeafError::Io(_)
            | LeafError::Internal(_)
            | LeafError::Serve(_) => Code::Internal,
        }
    }

    /// The HTTP status that matches [`LeafError::grpc_code`], for any HTTP
    /// surface that reports leaf errors.
    pub fn http_status(&self) -> u16 {
        match self.grpc_code() {
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::Cancelled => 499,
            Code::ResourceExhausted | Code::Unavailable => 503,
            Code::FailedPrecondition => 412,
            _ => 500,
        }
    }

    /// The outcome of a call that failed with this error.
    pub fn search_outcome(&self) -> SearchOutcome {
        match self {
            LeafError::InvalidArgument(_) | LeafError::InvalidQuery(_) => SearchOutcome::Invalid,
            LeafError::DeadlineExceeded => SearchOutcome::DeadlineExceeded,
            LeafError::Cancelled => SearchOutcome::Cancelled,
            LeafError::Overloaded(_) => SearchOutcome::Rejected,
            _ => SearchOutcome::Error,
        }
    }

    /// The bounded label used for the `outcome` of request metrics.
    pub(crate) fn outcome(&self) -> &'static str {
        self.search_outcome().label()
    }
}

impl From<LeafError> for Status {
    fn from(error: LeafError) -> Status {
        // Internal details (paths, tantivy errors) stay in the logs; callers
        // get a stable, short message.
        let message = match &error {
            LeafError::Index(_)
            | LeafError::Io(_)
            | LeafError::Internal(_)
            | LeafError::Serve(_) => "internal error".to_string(),
            other => other.to_string(),
        };
        Status::new(error.grpc_code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let invalid = Status::from(LeafError::InvalidQuery("syntax error".into()));
        assert_eq!(invalid.code(), Code::InvalidArgument);
        assert!(invalid.message().contains("syntax error"));
        assert_eq!(
            Status::from(LeafError::Overloaded("queue full".into())).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(LeafError::DeadlineExceeded).code(),
            Code::DeadlineExceeded
        );
        let internal = Status::from(LeafError::Internal("secret path".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"));
        assert_eq!(LeafError::InjectedFault.http_status(), 503);
    }
}
