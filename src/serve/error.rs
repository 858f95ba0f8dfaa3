//! The one error a handler returns: an HTTP status and a JSON body
//! `{"error": {"code", "message", "field"?}}`. Library errors map to 4xx when the request was at
//! fault (bad value, wrong dimension, unknown id, undecodable image) and to 5xx otherwise.

use crate::error::Error;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. `code` is a stable machine-readable word; `field` names the request field
/// at fault when there is one (`"k"`, `"queries[3].text"`).
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (sent as `Retry-After` with 429 and 503).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a ApiError,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A 400 about one field.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::BAD_REQUEST, code, message)
        }
    }

    /// Set the field at fault (and prefix the message with it) when none is set yet.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        if self.field.is_none() && self.status.is_client_error() {
            let field = field.into();
            self.message = format!("{field}: {}", self.message);
            self.field = Some(field);
        }
        self
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 503 with `Retry-After`: the queue is full or the server is stopping.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u32) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = match &e {
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_value"),
            Error::DimensionMismatch { .. } => (StatusCode::BAD_REQUEST, "dimension_mismatch"),
            Error::Shape(_) => (StatusCode::BAD_REQUEST, "invalid_value"),
            Error::Empty(_) => (StatusCode::BAD_REQUEST, "empty"),
            // Only a query image that does not decode reaches here as a format error: index
            // files are read at open, before the server answers anything.
            Error::Format { .. } => (StatusCode::BAD_REQUEST, "bad_image"),
            Error::UnknownId(_) => (StatusCode::NOT_FOUND, "unknown_id"),
            Error::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Error::Io { .. }
            | Error::Corrupt { .. }
            | Error::Tensor(_)
            | Error::Json { .. }
            | Error::Msg(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut a = ApiError::new(status, code, e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            a.retry_after = Some(1);
        }
        a
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&ErrorBody { error: &self }).unwrap_or_default();
        let mut r = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
