//! The query layer's errors: what can stop a search from producing an
//! answer the client asked for. `http::error` alone decides which status
//! and code each one becomes.

use crate::query::answer::Answer;

/// Why a search has no acceptable answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueryError {
    /// The leaves could not parse the query.
    #[error("query cannot be parsed: {0}")]
    InvalidQuery(String),
    /// Admission control shed the request; retry after `retry_after_secs`.
    #[error("{}", .reason.message())]
    Overloaded {
        reason: Rejection,
        retry_after_secs: u32,
    },
    /// No shard answered before the deadline. `answer` holds the empty
    /// answer with its coverage, when the fan-out finished.
    #[error("no shard answered in time")]
    NoShardAnswered { answer: Option<Box<Answer>> },
    /// The answer is partial and the request did not allow that.
    #[error("the answer is partial and allow_partial is false")]
    PartialNotAllowed { answer: Box<Answer> },
    /// The query's canary killed the replica it went to (a query of
    /// death); it is refused for `retry_after`. `fingerprint` names it in
    /// logs without its text.
    #[error(
        "this query crashed a search server and is refused for a while (fingerprint {fingerprint})"
    )]
    QueryRejected {
        fingerprint: String,
        retry_after: std::time::Duration,
    },
    /// A bug or a panic in the query path.
    #[error("{0}")]
    Internal(String),
}

/// The query layer's result type.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// Why a request was shed; the label of `admission_rejections`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    QueueFull,
    QueueTimeout,
    /// Taken out of the queue to make room for a client holding fewer
    /// slots (fair admission).
    Displaced,
}

impl Rejection {
    pub const ALL: &'static [Rejection] = &[
        Rejection::QueueFull,
        Rejection::QueueTimeout,
        Rejection::Displaced,
    ];

    /// The name in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::QueueTimeout => "queue_timeout",
            Rejection::Displaced => "displaced",
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &'static str {
        match self {
            Rejection::QueueFull => "too many requests in flight and queued; retry later",
            Rejection::QueueTimeout => "no capacity freed up in time; retry later",
            Rejection::Displaced => {
                "this client holds more of the capacity than others; retry later"
            }
        }
    }
}
