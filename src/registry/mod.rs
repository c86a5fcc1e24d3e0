//! The `/v2` API: OCI Distribution Spec v1.1 with the Docker Registry v2 behaviour clients
//! rely on.
//!
//! Layering: handlers translate HTTP to calls on `core::Registry` and back; they hold no
//! business rules and never touch `db` or `storage`. One catch-all route feeds the pure
//! `route::parse`, then a `(route, method)` table picks the handler.

mod auth;
mod blobs;
pub(crate) mod cache;
mod error;
mod listing;
mod manifests;
mod proxy;
mod query;
pub mod route;
pub mod token;
mod uploads;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

pub use error::ApiError;
use query::Query;
use route::Route;

use crate::auth::{Credentials, Subject};
use crate::core::Error;
use crate::http::origin::Origin;
use crate::state::AppState;

pub type ApiResult = Result<Response, ApiError>;

const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");

/// `* /v2/*`: every registry request enters here.
pub async fn dispatch(State(app): State<AppState>, req: Request) -> Response {
    let routed = route::parse(req.uri().path())
        .and_then(|route| cache::addressed(&app.registry, route, &req));
    let mut resp = match routed {
        Ok(route) => guarded(&app, route, req)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert("Docker-Distribution-API-Version", API_VERSION);
    resp
}

/// Who is asking, from where: what handlers need beyond the route.
pub struct Caller {
    pub subject: Subject,
    pub origin: Origin,
}

/// Authenticate, check access for the route, then run the handler.
async fn guarded(app: &AppState, route: Route, req: Request) -> ApiResult {
    let mut origin = app.origin(&req);
    if let Some(base) = cache::mirror_base(&app.registry, &req, &origin.base) {
        origin.base = base;
    }
    let creds =
        auth::credentials(req.headers()).map_err(|why| auth::challenge(&origin.base, None, why))?;
    let need = auth::need(&route, req.method());
    if let Some(resp) = deferred_read(app, &route, req.method(), &creds, &origin, &need).await {
        return Ok(resp);
    }
    let subject = app
        .auth
        .authenticate(&creds, &origin.client)
        .await
        .map_err(|e| auth::refused(&origin.base, e))?;
    auth::check(&origin.base, &creds, &subject, &need)?;
    let caller = Caller { subject, origin };
    handle(app, &caller, route, req).await
}

/// Manifest reads, the hottest path, in one database trip when the caller's state is cached:
/// access is decided from the cache and the manifest read checks that the auth epoch has not
/// moved since (`auth::Deferred`). `None`: take the usual path (nothing cached, access not
/// granted from the cache, or the epoch moved).
async fn deferred_read(
    app: &AppState,
    route: &Route,
    method: &Method,
    creds: &Credentials,
    origin: &Origin,
    need: &auth::Need,
) -> Option<Response> {
    let Route::Manifest(repo, reference) = route else {
        return None;
    };
    // A cache repository's tags may need the upstream.
    if app.registry.caches().of(repo).is_some() {
        return None;
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    let d = app.auth.deferred(creds, &origin.client)?;
    auth::check(&origin.base, creds, &d.subject, need).ok()?;
    let head = *method == Method::HEAD;
    let puller = d.subject.name.as_deref().unwrap_or("anonymous");
    let result =
        manifests::get_at_epoch(&app.registry, repo, reference, head, d.epoch, puller).await?;
    app.auth.confirmed(&d, creds, &origin.client);
    Some(result.unwrap_or_else(|e| e.into_response()))
}

async fn handle(app: &AppState, caller: &Caller, route: Route, req: Request) -> ApiResult {
    let reg = &app.registry;
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let head = method == Method::HEAD;
    if let Some(repo) = route.repo()
        && matches!(route, Route::UploadStart(_) | Route::Upload(..))
            | matches!(
                (&route, &method),
                (
                    Route::Manifest(..) | Route::ManifestBadRef(..),
                    &Method::PUT
                )
            )
    {
        reg.writable(repo)?;
    }
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(base(reg).await),
        (Route::Catalog, Method::GET) => listing::catalog(reg, &caller.subject, &query).await,
        (Route::Tags(repo), Method::GET) => listing::tags(reg, &repo, &query).await,
        (Route::Referrers(repo, d), Method::GET) => {
            listing::referrers(reg, &repo, &d, &query).await
        }
        (Route::Manifest(repo, r), Method::GET | Method::HEAD) => {
            let puller = caller.subject.name.as_deref().unwrap_or("anonymous");
            manifests::get(reg, reg.caches().of(&repo), &repo, &r, head, puller).await
        }
        (Route::Manifest(repo, r), Method::PUT) => {
            let pusher = caller.subject.name.as_deref();
            manifests::put(reg, &caller.origin, &repo, &r, pusher, req).await
        }
        // Nothing is ever stored under an invalid reference: reads find nothing.
        (Route::ManifestBadRef(..), Method::GET | Method::HEAD | Method::DELETE) => {
            Err(Error::ManifestUnknown.into())
        }
        (Route::ManifestBadRef(_, bad), Method::PUT) => Err(bad.error()),
        (Route::Manifest(repo, r), Method::DELETE) => {
            let resp = manifests::delete(reg, &repo, &r).await?;
            audit(app, caller, "manifest.delete", format!("{repo}:{r}")).await;
            Ok(resp)
        }
        (Route::Blob(repo, d), Method::GET | Method::HEAD) => {
            blobs::get(reg, reg.caches().of(&repo), &repo, &d, req.headers(), head).await
        }
        (Route::Blob(repo, d), Method::DELETE) => {
            let resp = blobs::delete(reg, &repo, &d).await?;
            audit(app, caller, "blob.delete", format!("{repo}@{d}")).await;
            Ok(resp)
        }
        (Route::UploadStart(repo), Method::POST) => {
            let mount_ok = auth::may_mount_from(&caller.subject, &query);
            let who = uploads::uploader(&caller.subject);
            uploads::start(reg, &caller.origin, &repo, &query, mount_ok, &who, req).await
        }
        (Route::Upload(repo, id), Method::GET) => {
            uploads::status(reg, &caller.origin, &repo, &id).await
        }
        (Route::Upload(repo, id), Method::PATCH) => {
            uploads::patch(reg, &caller.origin, &repo, &id, req).await
        }
        (Route::Upload(repo, id), Method::PUT) => {
            uploads::put(reg, &caller.origin, &repo, &id, &query, req).await
        }
        (Route::Upload(repo, id), Method::DELETE) => uploads::cancel(reg, &repo, &id).await,
        (_, m) => Err(ApiError::Method(m.to_string())),
    }
}

/// Deletes are audited after they succeed.
async fn audit(app: &AppState, caller: &Caller, action: &str, detail: String) {
    app.auth
        .audit(&caller.subject, &caller.origin.client, action, detail)
        .await;
}

/// GET /v2/ — `200 {}`; while uploads are refused for lack of space, a `Warning` header says
/// so (the body stays what clients expect).
async fn base(reg: &crate::core::Registry) -> Response {
    let mut r = json_ok("{}");
    if let Ok(status) = reg.write_status().await
        && let Some(e) = reg.refusal(status)
        && let Ok(v) = HeaderValue::from_str(&format!("199 berth \"uploads refused: {e}\""))
    {
        r.headers_mut().insert("Warning", v);
    }
    r
}

fn json_ok(body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert("Content-Type", HeaderValue::from_static("application/json"));
    r
}

/// The request body as a stream, or `None` when it is known to be empty.
fn body_stream(body: Body) -> Option<axum::body::BodyDataStream> {
    if axum::body::HttpBody::size_hint(&body).exact() == Some(0) {
        return None;
    }
    Some(body.into_data_stream())
}

/// A header value built from text we produced (digests, digits, validated names).
fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).expect("registry header values are plain ASCII")
}
