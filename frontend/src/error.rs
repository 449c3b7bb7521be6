//! The one place where failures become HTTP: each [`ApiError`] has a stable
//! code, a status and a message, and renders as
//! `{"error":{"code":…,"message":…}}` (plus the partial answer, when there
//! is one). A client never sees a panic or a stack trace.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::SearchBody;

#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` on 503s.
    pub retry_after: Option<u32>,
    /// The (partial) answer, for 503s caused by `allow_partial=false` or by
    /// no shard answering, so clients see the coverage.
    pub answer: Option<Box<SearchBody>>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            retry_after: None,
            answer: None,
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
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
            code: "internal",
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
    pub fn outcome(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::SERVICE_UNAVAILABLE if self.code == "overloaded" => "overloaded",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "error",
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
                code: self.code,
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
