//! The one place where every `/v2` and `/token` failure becomes a response: status, code,
//! message, detail and headers. Codes are those of the OCI distribution spec's error table
//! (`BLOB_UNKNOWN` … `TOOMANYREQUESTS`); the two failures that are the server's own and not a
//! client's, `UNKNOWN` (500) and `UNAVAILABLE` (503, a busy database, with `Retry-After`),
//! are distribution's. Internal causes are logged here, once, and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::{Action, AuthError};
use crate::core::Error;

/// The service name in challenges and tokens.
pub const SERVICE: &str = "berth";

/// Seconds a client is asked to wait when the database is busy.
const BUSY_RETRY_SECS: u32 = 5;

/// Why a `/v2` or `/token` request is refused.
#[derive(Debug)]
pub enum ApiError {
    /// A failure of the registry's rules or storage.
    Core(Error),
    /// An authentication failure.
    Auth(AuthError),
    /// No endpoint has this path.
    NoEndpoint,
    /// The endpoint exists but not with this method.
    Method(String),
    /// An invalid repository name.
    NameInvalid,
    /// A manifest pushed under a reference that is neither a tag nor a digest.
    TagInvalid,
    /// `n` of a paginated list is not a non-negative integer.
    Pagination,
    /// `401` with a Bearer challenge (`base` is the client's view of berth), naming the scope
    /// to ask for when the request needs one.
    Challenge {
        base: String,
        scope: Option<(String, Vec<Action>)>,
        message: String,
    },
    /// `401` of the token endpoint: it wants Basic credentials.
    BasicChallenge(String),
    /// `403`: the caller is known and may not do this.
    Denied {
        who: String,
        repo: String,
        action: Action,
    },
    /// An OAuth2 error of `POST /token` (`{"error": code}`).
    OAuth(StatusCode, &'static str),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Core(e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Auth(e)
    }
}

/// A spec error body `{"errors":[{"code","message","detail"}]}` with a status.
fn error_body(status: StatusCode, code: &str, message: &str, detail: Value) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": detail }] });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn with_header(mut r: Response, name: header::HeaderName, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
    r
}

/// `500 UNKNOWN` or, for a busy database, `503 UNAVAILABLE` with `Retry-After`; the cause is
/// logged.
fn internal(cause: &dyn std::fmt::Display, is_busy: bool) -> Response {
    if is_busy {
        tracing::warn!(error = %cause, "database busy; asked the client to retry");
        let r = error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the registry is busy; retry shortly",
            Value::Null,
        );
        return with_header(r, header::RETRY_AFTER, &BUSY_RETRY_SECS.to_string());
    }
    tracing::error!(error = %cause, "internal error");
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error; see the server log",
        Value::Null,
    )
}

/// `507 Insufficient Storage`: the disk filled up under a write; nothing half-stored remains.
fn storage_full(cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %cause, "out of disk space");
    error_body(
        StatusCode::INSUFFICIENT_STORAGE,
        "DENIED",
        "the registry ran out of disk space while storing this; nothing of it was kept",
        Value::Null,
    )
}

fn core_response(e: Error) -> Response {
    use StatusCode as S;
    let (status, code) = match &e {
        Error::NameUnknown => (S::NOT_FOUND, "NAME_UNKNOWN"),
        Error::DigestInvalid(_) => (S::BAD_REQUEST, "DIGEST_INVALID"),
        Error::BlobUnknown => (S::NOT_FOUND, "BLOB_UNKNOWN"),
        Error::UploadUnknown => (S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
        Error::UploadInvalid(_) => (S::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
        Error::UploadRange { .. } => (S::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
        Error::BlobRange { .. } => (S::RANGE_NOT_SATISFIABLE, "SIZE_INVALID"),
        Error::SizeInvalid(_) => (S::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
        Error::ManifestInvalid(_) => (S::BAD_REQUEST, "MANIFEST_INVALID"),
        Error::ManifestUnknown => (S::NOT_FOUND, "MANIFEST_UNKNOWN"),
        Error::ManifestBlobUnknown(_) => (S::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
        Error::TooManyUploads { .. } => (S::TOO_MANY_REQUESTS, "TOOMANYREQUESTS"),
        // Administration errors; no /v2 request leads to them.
        Error::PolicyInvalid(_)
        | Error::PolicyUnknown(_)
        | Error::ImportSource(_)
        | Error::Backup(_) => (S::BAD_REQUEST, "UNSUPPORTED"),
        // A refusal the client cannot fix by retrying: clients stop at once and show it.
        Error::OutOfSpace { .. } => (S::FORBIDDEN, "DENIED"),
        Error::ReadOnlyCache { .. } => (S::FORBIDDEN, "DENIED"),
        Error::NotCached(_) => (S::NOT_FOUND, "NAME_UNKNOWN"),
        Error::CacheRefused(_) => (S::FORBIDDEN, "DENIED"),
        // The upstream's trouble, not the client's, and not berth's: distribution's code
        // for a service that cannot answer now.
        Error::Upstream { .. } => (S::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        _ if e.is_storage_full() => return storage_full(&e),
        Error::Db(d) => return internal(&e, d.is_busy()),
        Error::Io(_) => return internal(&e, false),
    };
    let r = error_body(status, code, &e.to_string(), Value::Null);
    match e {
        Error::UploadRange { len } => with_header(r, header::RANGE, &range_text(len)),
        Error::BlobRange { size } => {
            with_header(r, header::CONTENT_RANGE, &format!("bytes */{size}"))
        }
        Error::Upstream {
            retry_after: Some(s),
            ..
        } => with_header(r, header::RETRY_AFTER, &s.to_string()),
        _ => r,
    }
}

fn challenge(base: &str, scope: Option<&(String, Vec<Action>)>, message: &str) -> Response {
    let mut value = format!("Bearer realm=\"{base}/token\",service=\"{SERVICE}\"");
    if let Some((repo, actions)) = scope {
        let mut names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
        // Docker asks for pull with push; offer the same.
        if names.contains(&"push") && !names.contains(&"pull") {
            names.insert(0, "pull");
        }
        value.push_str(&format!(",scope=\"repository:{repo}:{}\"", names.join(",")));
    }
    let r = error_body(
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
        message,
        Value::Null,
    );
    with_header(r, header::WWW_AUTHENTICATE, &value)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let plain = |status, code, message: &str| error_body(status, code, message, Value::Null);
        match self {
            ApiError::Core(e) => core_response(e),
            // The token endpoint's refusal: it wants Basic credentials. (`/v2` turns an
            // authentication failure into a Bearer `Challenge` instead: `auth::refused`.)
            ApiError::Auth(AuthError::Unauthorized(why)) => {
                ApiError::BasicChallenge(why.to_string()).into_response()
            }
            ApiError::Auth(e @ AuthError::Locked(secs)) => with_header(
                plain(S::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", &e.to_string()),
                header::RETRY_AFTER,
                &secs.to_string(),
            ),
            ApiError::Auth(AuthError::Db(d)) => internal(&d, d.is_busy()),
            ApiError::Auth(e @ AuthError::Internal(_)) => internal(&e, false),
            ApiError::NoEndpoint => plain(
                S::NOT_FOUND,
                "UNSUPPORTED",
                "no such endpoint in the registry API",
            ),
            ApiError::Method(m) => plain(
                S::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                &format!("{m} is not supported on this endpoint"),
            ),
            ApiError::NameInvalid => {
                plain(S::BAD_REQUEST, "NAME_INVALID", "invalid repository name")
            }
            ApiError::TagInvalid => plain(
                S::BAD_REQUEST,
                "MANIFEST_INVALID",
                "invalid tag: a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ),
            ApiError::Pagination => plain(
                S::BAD_REQUEST,
                "UNSUPPORTED",
                "n must be a non-negative integer",
            ),
            ApiError::Challenge {
                base,
                scope,
                message,
            } => challenge(&base, scope.as_ref(), &message),
            ApiError::BasicChallenge(message) => with_header(
                plain(S::UNAUTHORIZED, "UNAUTHORIZED", &message),
                header::WWW_AUTHENTICATE,
                "Basic realm=\"berth\"",
            ),
            ApiError::Denied { who, repo, action } => {
                // A message of our own and a detail object: clients (Docker's among them) stop
                // at once on DENIED and show the message; the bare default text with a null
                // detail makes some retry for a minute before printing only "denied".
                let message = format!(
                    "{who} may not {} repository {repo}: {} access is not granted",
                    action.as_str(),
                    action.as_str()
                );
                error_body(
                    S::FORBIDDEN,
                    "DENIED",
                    &message,
                    json!({ "repository": repo, "action": action.as_str() }),
                )
            }
            ApiError::OAuth(status, code) => {
                let mut r = (status, json!({ "error": code }).to_string()).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

/// The `Range` header of an upload holding `len` bytes: `0-<len-1>` (`0-0` when empty, as
/// distribution sends and clients expect).
pub fn range_value(len: u64) -> HeaderValue {
    HeaderValue::from_str(&range_text(len)).expect("digits are valid")
}

fn range_text(len: u64) -> String {
    format!("0-{}", len.saturating_sub(1))
}
