//! A pure parser from a `/v2` path to a route. axum cannot match names with slashes in the
//! middle of a path, so the tail keyword is read from the right, as distribution does.
//! Every value in a `Route` is validated: nothing malformed reaches `core` or the disk.

use super::ApiError;
use crate::core::Error;
use crate::oci::{Digest, Reference, RepoName, UploadId, name::ReferenceError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/manifests/<reference>` where the reference is neither a tag nor a digest:
    /// nothing can be stored under it, so reads find nothing and pushes are invalid.
    ManifestBadRef(RepoName, BadRef),
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, UploadId),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

/// Why a manifest reference is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRef {
    Tag,
    Digest(String),
}

impl BadRef {
    /// The error of a push under this reference.
    pub fn error(&self) -> ApiError {
        match self {
            BadRef::Tag => ApiError::TagInvalid,
            BadRef::Digest(e) => Error::DigestInvalid(e.clone()).into(),
        }
    }
}

impl Route {
    /// The repository the route is about, if any.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags(r)
            | Route::Manifest(r, _)
            | Route::ManifestBadRef(r, _)
            | Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Referrers(r, _) => Some(r),
        }
    }

    /// The same route in another repository.
    pub fn with_repo(self, repo: RepoName) -> Route {
        match self {
            Route::Base | Route::Catalog => self,
            Route::Tags(_) => Route::Tags(repo),
            Route::Manifest(_, r) => Route::Manifest(repo, r),
            Route::ManifestBadRef(_, b) => Route::ManifestBadRef(repo, b),
            Route::Blob(_, d) => Route::Blob(repo, d),
            Route::UploadStart(_) => Route::UploadStart(repo),
            Route::Upload(_, id) => Route::Upload(repo, id),
            Route::Referrers(_, d) => Route::Referrers(repo, d),
        }
    }
}

fn name(segs: &[&str]) -> Result<RepoName, ApiError> {
    RepoName::parse(&segs.join("/")).map_err(|_| ApiError::NameInvalid)
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|e| Error::DigestInvalid(e.to_string()).into())
}

/// Parse the raw (still percent-encoded) request path.
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let rest = match path.strip_prefix("/v2") {
        Some("" | "/") => return Ok(Route::Base),
        Some(r) => r.strip_prefix('/').ok_or(ApiError::NoEndpoint)?,
        None => return Err(ApiError::NoEndpoint),
    };
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n < 3 {
        return Err(ApiError::NoEndpoint);
    }
    let (last, second) = (segs[n - 1], segs[n - 2]);
    if n >= 4 && segs[n - 3] == "blobs" && second == "uploads" {
        let repo = name(&segs[..n - 3])?;
        if last.is_empty() {
            return Ok(Route::UploadStart(repo));
        }
        let id = UploadId::parse(last).map_err(|_| ApiError::Core(Error::UploadUnknown))?;
        return Ok(Route::Upload(repo, id));
    }
    let head = &segs[..n - 2];
    match (second, last) {
        ("tags", "list") => Ok(Route::Tags(name(head)?)),
        ("blobs", "uploads") => Ok(Route::UploadStart(name(head)?)),
        ("manifests", r) => {
            let repo = name(head)?;
            Ok(match Reference::parse(r) {
                Ok(reference) => Route::Manifest(repo, reference),
                Err(ReferenceError::Tag) => Route::ManifestBadRef(repo, BadRef::Tag),
                Err(ReferenceError::Digest(d)) => {
                    Route::ManifestBadRef(repo, BadRef::Digest(d.to_string()))
                }
            })
        }
        ("blobs", d) => {
            let repo = name(head)?;
            Ok(Route::Blob(repo, digest(d)?))
        }
        ("referrers", d) => {
            let repo = name(head)?;
            Ok(Route::Referrers(repo, digest(d)?))
        }
        _ => Err(ApiError::NoEndpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(p: &str) -> Route {
        parse(p).unwrap_or_else(|e| panic!("{p}: {e:?}"))
    }

    fn invalid(p: &str) -> ApiError {
        match parse(p) {
            Err(e) => e,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn routes_by_tail_keyword() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert!(matches!(ok("/v2/a/b/tags/list"), Route::Tags(n) if n.as_str() == "a/b"));
        assert!(matches!(
            ok("/v2/a/manifests/latest"),
            Route::Manifest(_, Reference::Tag(_))
        ));
        assert!(matches!(
            ok(&format!("/v2/a/manifests/{D}")),
            Route::Manifest(_, Reference::Digest(_))
        ));
        assert!(matches!(ok(&format!("/v2/a/blobs/{D}")), Route::Blob(..)));
        assert!(matches!(ok("/v2/a/blobs/uploads/"), Route::UploadStart(n) if n.as_str() == "a"));
        assert!(matches!(ok("/v2/a/blobs/uploads"), Route::UploadStart(_)));
        let id = "0123456789abcdef0123456789abcdef";
        assert!(
            matches!(ok(&format!("/v2/x/y/blobs/uploads/{id}")), Route::Upload(n, _) if n.as_str() == "x/y")
        );
        assert!(matches!(
            ok(&format!("/v2/a/referrers/{D}")),
            Route::Referrers(..)
        ));
    }

    #[test]
    fn keywords_may_be_name_components() {
        assert!(
            matches!(ok("/v2/manifests/manifests/v1"), Route::Manifest(n, _) if n.as_str() == "manifests")
        );
        assert!(matches!(ok("/v2/tags/tags/list"), Route::Tags(n) if n.as_str() == "tags"));
        assert!(
            matches!(ok("/v2/blobs/uploads/blobs/uploads/"), Route::UploadStart(n) if n.as_str() == "blobs/uploads")
        );
    }

    #[test]
    fn invalid_parts_are_named() {
        assert!(matches!(invalid("/v2/A/tags/list"), ApiError::NameInvalid));
        assert!(matches!(
            invalid("/v2/../../etc/tags/list"),
            ApiError::NameInvalid
        ));
        assert!(matches!(
            invalid("/v2/a%2f..%2fb/tags/list"),
            ApiError::NameInvalid
        ));
        assert!(matches!(invalid("/v2//tags/list"), ApiError::NameInvalid));
        assert!(matches!(
            ok("/v2/a/manifests/bad:tag"),
            Route::ManifestBadRef(_, BadRef::Digest(_))
        ));
        assert!(matches!(
            ok("/v2/a/manifests/-bad"),
            Route::ManifestBadRef(_, BadRef::Tag)
        ));
        assert!(matches!(
            ok("/v2/a/manifests/.INVALID_MANIFEST_NAME"),
            Route::ManifestBadRef(_, BadRef::Tag)
        ));
        assert!(matches!(
            invalid("/v2/a/blobs/sha256:..%2f..%2fx"),
            ApiError::Core(Error::DigestInvalid(_))
        ));
        assert!(matches!(
            invalid("/v2/a/blobs/uploads/..%2f..%2fx"),
            ApiError::Core(Error::UploadUnknown)
        ));
        assert!(matches!(
            invalid("/v2/a/referrers/nope"),
            ApiError::Core(Error::DigestInvalid(_))
        ));
    }

    #[test]
    fn a_route_moves_to_another_repository() {
        let to = RepoName::parse("hub/library/x").unwrap();
        for p in [
            "/v2/x/tags/list".to_string(),
            "/v2/x/manifests/1".to_string(),
            format!("/v2/x/blobs/{D}"),
            "/v2/x/blobs/uploads/".to_string(),
            format!("/v2/x/referrers/{D}"),
        ] {
            let moved = ok(&p).with_repo(to.clone());
            assert_eq!(moved.repo(), Some(&to), "{p}");
        }
        assert_eq!(ok("/v2/_catalog").with_repo(to).repo(), None);
    }

    #[test]
    fn unknown_shapes_are_not_found() {
        for p in [
            "/v3/",
            "/v2x",
            "/v2/a",
            "/v2/a/b",
            "/v2/a/nothing/here",
            "/v2/a/tags/other",
        ] {
            assert!(matches!(parse(p), Err(ApiError::NoEndpoint)), "{p}");
        }
    }
}
