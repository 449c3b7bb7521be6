//! The cache crate's errors, and the one place that maps them to gRPC codes
//! and HTTP statuses.

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
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("grpc server stopped unexpectedly")]
    ServerStopped,
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
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
            Error::Config(_)
            | Error::Io(_)
            | Error::Transport(_)
            | Error::ServerStopped
            | Error::Task(_) => tonic::Code::Internal,
        }
    }

    /// The HTTP status for the same error.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            tonic::Code::InvalidArgument => 400,
            _ => 500,
        }
    }

    /// The bounded label under which a rejected request is counted.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::EmptyKey => "empty_key",
            Error::KeyTooLarge { .. } => "key_too_large",
            Error::ValueTooLarge { .. } => "value_too_large",
            _ => "internal",
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
