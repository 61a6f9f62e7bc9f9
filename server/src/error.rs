//! The one error shape every response uses: `{"error":{"code","message"}}` with a stable code
//! (the library's `cairn::Error::code()` where the library said no) and the matching HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as the API returns it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable machine-readable code (`session_not_found`, `forbidden`...).
    pub code: &'static str,
    /// One line saying what is wrong and what to do.
    pub message: String,
    /// Seconds a client should wait before retrying (sent as `Retry-After`).
    pub retry_after: Option<u32>,
}

/// The JSON body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code: the same codes as `cairn --json` (`session_not_found`, `invalid_input`,
    /// `limit_exceeded`...) plus the HTTP layer's own (`unauthorized`, `forbidden`,
    /// `payload_too_large`, `request_timeout`, `overloaded`, `quota_exceeded`, `hash_mismatch`,
    /// `range_not_satisfiable`, `not_found`, `method_not_allowed`).
    pub code: String,
    /// One line for people.
    pub message: String,
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_input`: a parameter, header or body field is wrong.
    pub fn invalid(what: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("invalid {what}: {message}"),
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`: the token lacks the scope.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413 `payload_too_large`: the body is over `max_body_bytes`.
    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than the server's limit of {limit} bytes (max_body_bytes); nothing was stored"
            ),
        )
    }

    /// 500 `internal`: something on the server side that the caller cannot fix.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status the library's error maps to.
    pub fn status_of(e: &cairn::Error) -> StatusCode {
        use cairn::Error as E;
        match e {
            E::SessionNotFound { .. }
            | E::ArtifactNotFound { .. }
            | E::CheckpointNotFound { .. }
            | E::ContentMissing { .. } => StatusCode::NOT_FOUND,
            E::InvalidTransition { .. }
            | E::KeyConflict { .. }
            | E::AlreadyExists { .. }
            | E::HasChildren { .. }
            | E::SessionClosed { .. } => StatusCode::CONFLICT,
            E::InvalidInput { .. } | E::InvalidGlob { .. } | E::InputIo { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::LimitExceeded { limit, .. } if *limit == "max_artifact_size" => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            E::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Unavailable { .. } | E::WriteConflict { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<cairn::Error> for ApiError {
    fn from(e: cairn::Error) -> Self {
        let status = Self::status_of(&e);
        let mut out = Self::new(status, e.code(), e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // A shared metadata server restarting, or a write that kept losing races: the
            // request did nothing partial; the client may retry.
            out.retry_after = Some(1);
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut r = (self.status, bytes).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // The code, for the request log line written by the middleware.
        r.extensions_mut().insert(ErrorCode(self.code));
        r
    }
}

/// The error code of a response, kept as an extension for the request log.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);
