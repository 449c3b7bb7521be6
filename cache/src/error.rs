//! The cache crate's errors, and the one place that maps them to gRPC codes
//! and HTTP statuses.

use crate::metrics::Rejection;

/// What went wrong in the cache server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key is empty")]
    EmptyKey,
    #[error("key of {len} bytes exceeds the limit of {limit} bytes")]
    KeyTooLarge { len: usize, limit: usize },
    #[error("value of {len} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    /// The server stopped other than by a graceful stop.
    #[error(transparent)]
    Serve(#[from] svc::ServeError),
}

/// The cache crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::EmptyKey | Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } => {
                tonic::Code::InvalidArgument
            }
            Error::Config(_) | Error::Io(_) | Error::Serve(_) => tonic::Code::Internal,
        }
    }

    /// The HTTP status for the same error.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            tonic::Code::InvalidArgument => 400,
            _ => 500,
        }
    }

    /// The reason under which a rejected request is counted; none for
    /// errors that are not the caller's.
    pub(crate) fn rejection(&self) -> Option<Rejection> {
        match self {
            Error::EmptyKey => Some(Rejection::EmptyKey),
            Error::KeyTooLarge { .. } => Some(Rejection::KeyTooLarge),
            Error::ValueTooLarge { .. } => Some(Rejection::ValueTooLarge),
            _ => None,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error.code() {
            // Internal details stay in the log.
            tonic::Code::Internal => {
                tracing::error!(%error, "internal cache error");
                tonic::Status::internal("internal cache error")
            }
            code => tonic::Status::new(code, error.to_string()),
        }
    }
}
