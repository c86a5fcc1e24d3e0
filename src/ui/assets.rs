//! Static files, embedded in the binary and served under names that carry a hash of their
//! content, so browsers may keep them for a year and a new release is fetched at once.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub struct Asset {
    /// `berth.css`: the name in `static/`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    hashed: OnceLock<String>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type,
            bytes,
            hashed: OnceLock::new(),
        }
    }

    /// `/static/berth.0123456789ab.css`.
    pub fn path(&'static self) -> &'static str {
        self.hashed.get_or_init(|| {
            let hex = crate::oci::Digest::sha256_of(self.bytes).hex().to_string();
            let (stem, ext) = self.name.rsplit_once('.').unwrap_or((self.name, ""));
            format!("/static/{stem}.{}.{ext}", &hex[..12])
        })
    }
}

pub static CSS: Asset = Asset::new(
    "berth.css",
    "text/css; charset=utf-8",
    include_bytes!("../../static/berth.css"),
);
pub static JS: Asset = Asset::new(
    "berth.js",
    "text/javascript; charset=utf-8",
    include_bytes!("../../static/berth.js"),
);
pub static ICON: Asset = Asset::new(
    "berth.svg",
    "image/svg+xml",
    include_bytes!("../../static/berth.svg"),
);

/// GET /favicon.ico, for browsers that ask before reading a page's icon link.
pub async fn favicon() -> Response {
    serve(Path(ICON.path().trim_start_matches("/static/").to_string())).await
}

/// GET /static/{file}: only the current hashed names exist.
pub async fn serve(Path(file): Path<String>) -> Response {
    for a in [&CSS, &JS, &ICON] {
        if a.path().strip_prefix("/static/") == Some(file.as_str()) {
            let mut r = (StatusCode::OK, a.bytes).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            );
            return r;
        }
    }
    super::page::UiError::NotFound("no such file".into()).into_response()
}
