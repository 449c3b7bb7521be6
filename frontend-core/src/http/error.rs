//! The one place where failures become HTTP: each [`ApiError`] has a stable
//! [`ErrorCode`], a status and a message, and renders as
//! `{"error":{"code":…,"message":…}}` (plus the partial answer, when there
//! is one). A client never sees a panic or a stack trace. The query layer's
//! [`QueryError`] is mapped here, and only here.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::response::SearchBody;
use crate::query::QueryError;

/// The stable `error.code` of every failure the API reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MissingQuery,
    EmptyQuery,
    QueryTooLong,
    InvalidK,
    InvalidTimeout,
    InvalidUtf8,
    InvalidEncoding,
    InvalidParameter,
    MalformedJson,
    BodyTooLarge,
    InvalidQuery,
    Unavailable,
    Partial,
    Overloaded,
    Internal,
    NotFound,
    QueryRejected,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MissingQuery,
        ErrorCode::EmptyQuery,
        ErrorCode::QueryTooLong,
        ErrorCode::InvalidK,
        ErrorCode::InvalidTimeout,
        ErrorCode::InvalidUtf8,
        ErrorCode::InvalidEncoding,
        ErrorCode::InvalidParameter,
        ErrorCode::MalformedJson,
        ErrorCode::BodyTooLarge,
        ErrorCode::InvalidQuery,
        ErrorCode::Unavailable,
        ErrorCode::Partial,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
        ErrorCode::NotFound,
        ErrorCode::QueryRejected,
    ];

    /// The code as clients see it.
    pub fn label(&self) -> &'static str {
        match self {
            ErrorCode::MissingQuery => "missing_query",
            ErrorCode::EmptyQuery => "empty_query",
            ErrorCode::QueryTooLong => "query_too_long",
            ErrorCode::InvalidK => "invalid_k",
            ErrorCode::InvalidTimeout => "invalid_timeout",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::InvalidEncoding => "invalid_encoding",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Partial => "partial",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
            ErrorCode::QueryRejected => "query_rejected",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a search request ended; the `outcome` label of
/// `frontend_search_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    Complete,
    Partial,
    BadRequest,
    Unavailable,
    Overloaded,
    Error,
}

impl RequestOutcome {
    pub const ALL: &'static [RequestOutcome] = &[
        RequestOutcome::Complete,
        RequestOutcome::Partial,
        RequestOutcome::BadRequest,
        RequestOutcome::Unavailable,
        RequestOutcome::Overloaded,
        RequestOutcome::Error,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            RequestOutcome::Complete => "complete",
            RequestOutcome::Partial => "partial",
            RequestOutcome::BadRequest => "bad_request",
            RequestOutcome::Unavailable => "unavailable",
            RequestOutcome::Overloaded => "overloaded",
            RequestOutcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` on 503s.
    pub retry_after: Option<u32>,
    /// The (partial) answer, for 503s caused by `allow_partial=false` or by
    /// no shard answering, so clients see the coverage.
    pub answer: Option<Box<SearchBody>>,
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            retry_after: None,
            answer: None,
        }
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>, retry_after: u32) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
            retry_after: Some(retry_after),
            answer: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Internal,
            message: message.into(),
            retry_after: None,
            answer: None,
        }
    }

    pub fn with_answer(mut self, answer: SearchBody) -> Self {
        self.answer = Some(Box::new(answer));
        self
    }

    /// The outcome label for metrics.
    pub fn outcome(&self) -> RequestOutcome {
        match self.status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                RequestOutcome::BadRequest
            }
            StatusCode::SERVICE_UNAVAILABLE if self.code == ErrorCode::Overloaded => {
                RequestOutcome::Overloaded
            }
            StatusCode::SERVICE_UNAVAILABLE => RequestOutcome::Unavailable,
            _ => RequestOutcome::Error,
        }
    }
}

/// Seconds a client is told to wait after a 503 without a better figure.
const RETRY_AFTER_UNAVAILABLE: u32 = 1;

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let message = error.to_string();
        match error {
            QueryError::InvalidQuery(_) => ApiError::bad_request(ErrorCode::InvalidQuery, message),
            QueryError::Overloaded {
                retry_after_secs, ..
            } => ApiError::unavailable(ErrorCode::Overloaded, message, retry_after_secs),
            QueryError::NoShardAnswered { answer } => {
                let error =
                    ApiError::unavailable(ErrorCode::Unavailable, message, RETRY_AFTER_UNAVAILABLE);
                match answer {
                    Some(answer) => error.with_answer(SearchBody::from(&*answer)),
                    None => error,
                }
            }
            QueryError::PartialNotAllowed { answer } => {
                ApiError::unavailable(ErrorCode::Partial, message, RETRY_AFTER_UNAVAILABLE)
                    .with_answer(SearchBody::from(&*answer))
            }
            QueryError::QueryRejected { retry_after, .. } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: ErrorCode::QueryRejected,
                message,
                retry_after: Some(u32::try_from(retry_after.as_secs()).unwrap_or(u32::MAX)),
                answer: None,
            },
            QueryError::Internal(_) => ApiError::internal(message),
        }
    }
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    answer: Option<&'a SearchBody>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.label(),
                message: &self.message,
            },
            answer: self.answer.as_deref(),
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::error::Rejection;

    #[test]
    fn every_code_has_a_distinct_label() {
        let mut labels: Vec<&str> = ErrorCode::ALL.iter().map(ErrorCode::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn query_errors_keep_their_codes_statuses_and_messages() {
        let error = ApiError::from(QueryError::Overloaded {
            reason: Rejection::QueueFull,
            retry_after_secs: 1,
        });
        assert_eq!(error.code.to_string(), "overloaded");
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.retry_after.is_some());
        assert_eq!(error.outcome(), RequestOutcome::Overloaded);
        assert_eq!(
            error.message,
            "too many requests in flight and queued; retry later"
        );

        let error = ApiError::from(QueryError::InvalidQuery("bad".into()));
        assert_eq!(error.code, ErrorCode::InvalidQuery);
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.message, "query cannot be parsed: bad");

        let error = ApiError::from(QueryError::NoShardAnswered { answer: None });
        assert_eq!(
            (error.code, error.retry_after, error.message.as_str()),
            (ErrorCode::Unavailable, Some(1), "no shard answered in time")
        );
        assert_eq!(error.outcome(), RequestOutcome::Unavailable);

        let error = ApiError::from(QueryError::Internal("the fan-out task failed".into()));
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.outcome(), RequestOutcome::Error);
    }
}
