//! The API's error type: every failure becomes a JSON `{"error":{"code","message"}}` with the right
//! status and caching headers. Internal details are logged, never sent.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};

use crate::cache::BREAKER_OPEN;

/// An HTTP-level failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// A malformed parameter; `cache_control` is the route's negative caching.
    #[error("{message}")]
    BadRequest {
        /// What is wrong, for the client.
        message: String,
        /// Negative caching of the route (edge only, brief).
        cache_control: HeaderValue,
    },
    /// A non-canonical spelling of a resource's path; `location` is the canonical one. The
    /// redirect never changes, so it is cached like the route's answers.
    #[error("the canonical path of this resource is {location}")]
    NonCanonical {
        /// Where the resource lives.
        location: String,
        /// The route's caching.
        cache_control: HeaderValue,
    },
    /// No such route.
    #[error("no such resource")]
    NotFound {
        /// Negative caching.
        cache_control: HeaderValue,
    },
    /// A method other than GET, HEAD or OPTIONS.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The database is unavailable and nothing stale could be served.
    #[error("service temporarily unavailable")]
    Unavailable,
    /// Anything else; the cause was logged where it happened.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::NonCanonical { .. } => (StatusCode::PERMANENT_REDIRECT, "moved"),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Renders the JSON error body.
pub(crate) fn error_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Bytes::from(body.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut response = (status, error_body(code, &self.to_string())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            Self::BadRequest { cache_control, .. } | Self::NotFound { cache_control } => {
                headers.insert(header::CACHE_CONTROL, cache_control);
            }
            Self::NonCanonical { location, cache_control } => {
                // Built from validated values: always a valid header.
                if let Ok(location) = HeaderValue::try_from(location) {
                    headers.insert(header::LOCATION, location);
                }
                headers.insert(header::CACHE_CONTROL, cache_control);
            }
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static(super::ALLOWED_METHODS));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Self::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(BREAKER_OPEN.as_secs().max(1)));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Self::Internal => {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
        response
    }
}
