//! The one place where domain errors become `/v2` responses: the spec's JSON body
//! `{"errors":[{"code","message","detail"}]}` with the spec's status. Internal causes are
//! logged here and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::Error;

/// A `/v2` error response.
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// Build a spec error body with a status.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        use StatusCode as S;
        let e = self.0;
        let (status, code) = match &e {
            Error::NameInvalid => (S::BAD_REQUEST, "NAME_INVALID"),
            Error::NameUnknown => (S::NOT_FOUND, "NAME_UNKNOWN"),
            Error::TagInvalid => (S::BAD_REQUEST, "TAG_INVALID"),
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
            Error::Unsupported(_) => (S::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            Error::PaginationInvalid => (S::BAD_REQUEST, "PAGINATION_NUMBER_INVALID"),
            Error::Db(_) | Error::Io(_) => (S::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        };
        let message = match &e {
            Error::Db(_) | Error::Io(_) => {
                tracing::error!(error = %e, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = error_body(status, code, &message);
        let headers = resp.headers_mut();
        match e {
            Error::UploadRange { len } => {
                headers.insert(header::RANGE, range_value(len));
            }
            Error::BlobRange { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// The `Range` header of an upload holding `len` bytes: `0-<len-1>` (`0-0` when empty, as
/// distribution sends and clients expect).
pub fn range_value(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", len.saturating_sub(1))).expect("digits are valid")
}
