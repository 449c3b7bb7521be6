//! The lease crate's errors, and the one place that maps them to gRPC codes.

/// Why the registry refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The request is malformed: bad role, empty address, and so on.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The lease is unknown or has expired; the holder should grant anew.
    #[error("lease {0} not found")]
    NotFound(u64),
    /// The cluster token is missing or wrong.
    #[error("missing or wrong cluster token")]
    Unauthenticated,
    /// The registry holds as many leases as it allows.
    #[error("too many leases (limit {0})")]
    TooManyLeases(usize),
    /// etcd refused a request or could not be reached.
    #[error("etcd: {0}")]
    Etcd(String),
}

/// The lease crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC code a client sees for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::Unauthenticated => tonic::Code::Unauthenticated,
            Error::TooManyLeases(_) => tonic::Code::ResourceExhausted,
            Error::Etcd(_) => tonic::Code::Unavailable,
        }
    }

    /// The HTTP status for the same error, for HTTP front ends.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidArgument(_) => 400,
            Error::NotFound(_) => 404,
            Error::Unauthenticated => 401,
            Error::TooManyLeases(_) => 503,
            Error::Etcd(_) => 503,
        }
    }
}

impl From<etcd_client::Error> for Error {
    fn from(error: etcd_client::Error) -> Self {
        Error::Etcd(error.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}
