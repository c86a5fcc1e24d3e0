//! Repositories: the list (sorted, filtered, paged, its state in the URL), a repository's
//! tags with platforms, sizes and pull commands, tag deletes, and one manifest's parts.
//!
//! Repository names contain slashes, so everything under `/repositories/` enters one route
//! and the pure `parse` splits it at `/-/`, which no name component can be.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::page::{self, Chrome, UiError, bytes, registry_host, render, short_digest};
use super::pager::Pager;
use super::session::Viewer;
use crate::auth::Action;
use crate::core::browse::{ManifestView, Platform, RepoQuery, RepoSort};
use crate::db::browse::TagOrder;
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::state::AppState;

const PER_PAGE: u64 = 50;
/// Tags one delete may name.
const MAX_DELETE: usize = 1000;

/// What a path under `/repositories/` names.
#[derive(Debug, PartialEq, Eq)]
pub enum RepoRoute {
    Tags(RepoName),
    Manifest(RepoName, Digest),
    DeleteTags(RepoName),
}

/// Split `team/app`, `team/app/-/manifests/sha256:…` or `team/app/-/delete`.
pub fn parse(rest: &str) -> Result<RepoRoute, UiError> {
    let bad = |m: String| UiError::NotFound(m);
    let (name, tail) = match rest.split_once("/-/") {
        Some((n, t)) => (n, Some(t)),
        None => (rest.trim_end_matches('/'), None),
    };
    let repo = RepoName::parse(name).map_err(|e| bad(format!("not a repository name: {e}")))?;
    match tail {
        None => Ok(RepoRoute::Tags(repo)),
        Some("delete") => Ok(RepoRoute::DeleteTags(repo)),
        Some(t) => match t.strip_prefix("manifests/") {
            Some(d) => Digest::parse(d)
                .map(|d| RepoRoute::Manifest(repo, d))
                .map_err(|e| bad(format!("not a digest: {e}"))),
            None => Err(bad("no such page".into())),
        },
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<u64>,
}

struct RepoLine {
    name: String,
    href: String,
    tags: u64,
    size: String,
    own: String,
    shared: String,
    pushed: String,
    pushed_by: String,
    pulled: String,
}

#[derive(Template)]
#[template(path = "repos/list.html")]
struct ListPage {
    chrome: Chrome,
    q: String,
    sort: &'static str,
    dir: &'static str,
    /// (column key, label, link to sort by it, arrow if it is the current sort)
    columns: Vec<(&'static str, &'static str, String, &'static str)>,
    rows: Vec<RepoLine>,
    pager: Pager,
}

fn sort_of(s: Option<&str>) -> (RepoSort, &'static str) {
    match s {
        Some("tags") => (RepoSort::Tags, "tags"),
        Some("size") => (RepoSort::Size, "size"),
        Some("pushed") => (RepoSort::Pushed, "pushed"),
        Some("pulled") => (RepoSort::Pulled, "pulled"),
        _ => (RepoSort::Name, "name"),
    }
}

/// GET /repositories
pub async fn list(
    State(app): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let (sort, sort_key) = sort_of(q.sort.as_deref());
    let descending = q.dir.as_deref() == Some("desc");
    let dir = if descending { "desc" } else { "asc" };
    let filter = page::query_text(q.q, 200);
    let (page_no, offset) = super::pager::page_and_offset(q.page, PER_PAGE);
    let subject = viewer.subject.clone();
    let (total, found) = app
        .registry
        .browse_repositories(
            RepoQuery {
                filter: filter.clone(),
                sort,
                descending,
                offset,
                limit: PER_PAGE,
            },
            move |name| subject.may(name, Action::Pull),
        )
        .await?;
    let now = app.registry.now();
    let rows = found
        .into_iter()
        .map(|r| RepoLine {
            href: format!("/repositories/{}", r.row.name),
            name: r.row.name,
            tags: r.row.tags,
            size: bytes(r.size.0),
            own: bytes(r.size.1),
            shared: bytes(r.size.0 - r.size.1),
            pushed: page::ago(r.row.pushed_at, now),
            pushed_by: r.row.pushed_by.unwrap_or_default(),
            pulled: page::ago(r.row.pulled_at, now),
        })
        .collect();
    let link = |sort: &str, dir: &str, page: u64| {
        format!(
            "/repositories?q={}&sort={sort}&dir={dir}&page={page}",
            page::encode_query(&filter)
        )
    };
    let columns = [
        ("name", "Repository"),
        ("tags", "Tags"),
        ("size", "Size"),
        ("pushed", "Last push"),
        ("pulled", "Last pull"),
    ]
    .into_iter()
    .map(|(key, label)| {
        let current = key == sort_key;
        let next_dir = if current && !descending {
            "desc"
        } else {
            "asc"
        };
        let arrow = match (current, descending) {
            (false, _) => "",
            (true, false) => "▲",
            (true, true) => "▼",
        };
        (key, label, link(key, next_dir, 1), arrow)
    })
    .collect();
    let pager = Pager::new(page_no, PER_PAGE, total, |p| link(sort_key, dir, p));
    Ok(render(&ListPage {
        chrome: Chrome::new("Repositories", &viewer, "repositories"),
        q: filter,
        sort: sort_key,
        dir,
        columns,
        rows,
        pager,
    }))
}

/// GET /repositories/{*rest}
pub async fn show(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(rest): Path<String>,
    Query(q): Query<TagQuery>,
) -> Result<Response, UiError> {
    match parse(&rest)? {
        RepoRoute::Tags(repo) => tags(&app, &viewer, &repo, q).await,
        RepoRoute::Manifest(repo, d) => manifest(&app, &viewer, &repo, &d).await,
        RepoRoute::DeleteTags(_) => Err(UiError::NotFound("no such page".into())),
    }
}

/// A repository the viewer may not pull is reported as absent, so its name is not revealed.
fn visible(viewer: &Viewer, repo: &RepoName) -> Result<(), UiError> {
    if viewer.subject.may(repo.as_str(), Action::Pull) {
        Ok(())
    } else {
        Err(UiError::NotFound("no such repository".into()))
    }
}

#[derive(Deserialize, Default)]
pub struct TagQuery {
    q: Option<String>,
    sort: Option<String>,
    page: Option<u64>,
}

/// The pull command of each client for `reference` (`host/repo:tag` or `host/repo@digest`).
pub fn pull_commands(reference: &str, plain_http: bool) -> Vec<String> {
    let (tls_podman, tls_skopeo, plain_ctr, insecure_nerdctl) = if plain_http {
        (
            " --tls-verify=false",
            " --src-tls-verify=false",
            " --plain-http",
            " --insecure-registry",
        )
    } else {
        ("", "", "", "")
    };
    vec![
        format!("docker pull {reference}"),
        format!("podman pull{tls_podman} {reference}"),
        format!("nerdctl pull{insecure_nerdctl} {reference}"),
        format!("ctr images pull{plain_ctr} --user USER {reference}"),
        format!("skopeo copy{tls_skopeo} docker://{reference} oci-archive:image.tar"),
    ]
}

struct TagLine {
    name: String,
    digest: String,
    short: String,
    manifest_href: String,
    kind: &'static str,
    platforms: Vec<PlatformLine>,
    pushed: String,
    pushed_at: String,
    pushed_by: String,
    pulled: String,
    referrers: Vec<(String, String)>,
    by_tag: Vec<String>,
    by_digest: Vec<String>,
}

struct PlatformLine {
    name: String,
    size: String,
}

fn platform_lines(p: &[Platform]) -> Vec<PlatformLine> {
    p.iter()
        .map(|p| PlatformLine {
            name: p.name.clone(),
            size: p.size.map_or_else(|| "not stored".into(), bytes),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "repos/tags.html")]
struct TagsPage {
    chrome: Chrome,
    repo: String,
    q: String,
    sort: &'static str,
    /// (key, label, link) of each order.
    orders: Vec<(&'static str, &'static str, String)>,
    rows: Vec<TagLine>,
    pager: Pager,
    may_delete: bool,
    delete_action: String,
}

async fn tags(
    app: &AppState,
    viewer: &Viewer,
    repo: &RepoName,
    q: TagQuery,
) -> Result<Response, UiError> {
    visible(viewer, repo)?;
    let (order, sort) = match q.sort.as_deref() {
        Some("oldest") => (TagOrder::OldestFirst, "oldest"),
        Some("name") => (TagOrder::Name, "name"),
        _ => (TagOrder::NewestFirst, "newest"),
    };
    let filter = page::query_text(q.q, 128);
    let (page_no, offset) = super::pager::page_and_offset(q.page, PER_PAGE);
    let (total, found) = app
        .registry
        .browse_tags(repo, &filter, order, offset, PER_PAGE)
        .await?;
    let now = app.registry.now();
    let (host, plain) = registry_host(&viewer.origin);
    let rows = found
        .into_iter()
        .map(|t| {
            let m = &t.manifest;
            TagLine {
                by_tag: pull_commands(&format!("{host}/{repo}:{}", t.name), plain),
                by_digest: pull_commands(&format!("{host}/{repo}@{}", m.digest), plain),
                manifest_href: format!("/repositories/{repo}/-/manifests/{}", m.digest),
                short: short_digest(&m.digest),
                digest: m.digest.clone(),
                kind: if t.platforms.len() > 1
                    || m.media_type.contains("index")
                    || m.media_type.contains("list")
                {
                    "index"
                } else {
                    "image"
                },
                platforms: platform_lines(&t.platforms),
                pushed: page::ago(Some(t.pushed_at), now),
                pushed_at: page::utc(t.pushed_at),
                pushed_by: t.pushed_by.clone().unwrap_or_default(),
                pulled: page::ago(m.pulled_at, now),
                referrers: t
                    .referrers
                    .iter()
                    .map(|(d, kind)| (short_digest(d), kind.clone()))
                    .collect(),
                name: t.name,
            }
        })
        .collect();
    let base = format!("/repositories/{repo}");
    let link = |sort: &str, page: u64| {
        format!(
            "{base}?q={}&sort={sort}&page={page}",
            page::encode_query(&filter)
        )
    };
    let orders = [
        ("newest", "Newest push first"),
        ("oldest", "Oldest push first"),
        ("name", "By name"),
    ]
    .into_iter()
    .map(|(k, l)| (k, l, link(k, 1)))
    .collect();
    let pager = Pager::new(page_no, PER_PAGE, total, |p| link(sort, p));
    Ok(render(&TagsPage {
        chrome: Chrome::new(repo.to_string(), viewer, "repositories"),
        repo: repo.to_string(),
        q: filter,
        sort,
        orders,
        rows,
        pager,
        may_delete: viewer.subject.may(repo.as_str(), Action::Delete),
        delete_action: format!("/repositories/{repo}/-/delete"),
    }))
}

struct LayerLine {
    digest: String,
    short: String,
    media_type: String,
    size: String,
    shared_with: u64,
}

#[derive(Template)]
#[template(path = "repos/manifest.html")]
struct ManifestPage {
    chrome: Chrome,
    repo: String,
    repo_href: String,
    digest: String,
    media_type: String,
    artifact_type: String,
    size: String,
    is_index: bool,
    platforms: Vec<(String, String, String, String)>,
    config: Option<LayerLine>,
    layers: Vec<LayerLine>,
    total_size: String,
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
    subject: Option<(String, String)>,
    referrers: Vec<(String, String, String)>,
    tags: Vec<String>,
    pushed: String,
    pushed_by: String,
    pulled: String,
    pulls: Vec<String>,
    pretty: String,
}

async fn manifest(
    app: &AppState,
    viewer: &Viewer,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response, UiError> {
    visible(viewer, repo)?;
    let v: ManifestView = app.registry.browse_manifest(repo, digest).await?;
    let now = app.registry.now();
    let href = |d: &str| format!("/repositories/{repo}/-/manifests/{d}");
    let layer = |l: &crate::core::browse::Layer| LayerLine {
        short: short_digest(&l.digest),
        digest: l.digest.clone(),
        media_type: l.media_type.clone(),
        size: bytes(l.size),
        shared_with: l.shared_with,
    };
    let (host, plain) = registry_host(&viewer.origin);
    let total: u64 = v.config.iter().chain(&v.layers).map(|l| l.size).sum();
    Ok(render(&ManifestPage {
        chrome: Chrome::new(
            format!("{repo}@{}", short_digest(&v.row.digest)),
            viewer,
            "repositories",
        ),
        repo: repo.to_string(),
        repo_href: format!("/repositories/{repo}"),
        pulls: pull_commands(&format!("{host}/{repo}@{}", v.row.digest), plain),
        digest: v.row.digest.clone(),
        media_type: v.row.media_type.clone(),
        artifact_type: v.row.artifact_type.clone().unwrap_or_default(),
        size: bytes(v.row.size),
        is_index: v.is_index,
        platforms: v
            .platforms
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    short_digest(&p.digest),
                    href(&p.digest),
                    p.size.map_or_else(|| "not stored".into(), bytes),
                )
            })
            .collect(),
        config: v.config.as_ref().map(layer),
        layers: v.layers.iter().map(layer).collect(),
        total_size: bytes(total),
        labels: v.labels.clone(),
        annotations: v.annotations.clone(),
        subject: v.subject.as_ref().map(|d| (short_digest(d), href(d))),
        referrers: v
            .referrers
            .iter()
            .map(|(d, kind)| (short_digest(d), kind.clone(), href(d)))
            .collect(),
        tags: v.tags.clone(),
        pushed: format!(
            "{} ({})",
            page::ago(Some(v.row.pushed_at), now),
            page::utc(v.row.pushed_at)
        ),
        pushed_by: v.row.pushed_by.clone().unwrap_or_default(),
        pulled: match (&v.row.pulled_at, &v.row.pulled_by) {
            (Some(at), Some(by)) => format!("{} by {by}", page::ago(Some(*at), now)),
            (at, _) => page::ago(*at, now),
        },
        pretty: v.pretty,
    }))
}

/// POST /repositories/{*rest}: deleting tags (`tag` repeated; `confirm` must repeat the
/// repository's name when more than one is named).
pub async fn post(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(rest): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, UiError> {
    let RepoRoute::DeleteTags(repo) = parse(&rest)? else {
        return Err(UiError::NotFound("no such page".into()));
    };
    visible(&viewer, &repo)?;
    if !viewer.subject.may(repo.as_str(), Action::Delete) {
        return Err(UiError::Forbidden(format!(
            "you may not delete in {repo} (the delete action is not granted to you)"
        )));
    }
    let mut names = Vec::new();
    let mut confirm = None;
    for (k, v) in fields {
        match k.as_str() {
            "tag" => names.push(v),
            "confirm" => confirm = Some(v),
            _ => {}
        }
    }
    if names.is_empty() {
        return Err(UiError::BadRequest("no tag was selected".into()));
    }
    if names.len() > MAX_DELETE {
        return Err(UiError::BadRequest(format!(
            "at most {MAX_DELETE} tags may be deleted at once"
        )));
    }
    if names.len() > 1 && confirm.as_deref().map(str::trim) != Some(repo.as_str()) {
        return Err(UiError::BadRequest(format!(
            "to delete {} tags at once, type the repository's name ({repo}) to confirm",
            names.len()
        )));
    }
    let tags = names
        .iter()
        .map(|n| Tag::parse(n).map_err(|e| UiError::BadRequest(format!("{n:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    for t in tags {
        match app
            .registry
            .delete_manifest(&repo, &Reference::Tag(t.clone()))
            .await
        {
            Ok(()) => {
                viewer
                    .audit(&app, "tag.delete", format!("{repo}:{t}"))
                    .await
            }
            // Gone already (another tab, a client): what was asked holds.
            Err(crate::core::Error::ManifestUnknown) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Redirect::to(&format!("/repositories/{repo}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_at_the_separator() {
        let d = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(
            parse("team/app").unwrap(),
            RepoRoute::Tags(RepoName::parse("team/app").unwrap())
        );
        assert_eq!(
            parse(&format!("team/app/-/manifests/{d}")).unwrap(),
            RepoRoute::Manifest(
                RepoName::parse("team/app").unwrap(),
                Digest::parse(d).unwrap()
            )
        );
        assert_eq!(
            parse("a/-/delete").unwrap(),
            RepoRoute::DeleteTags(RepoName::parse("a").unwrap())
        );
        assert!(parse("Team/App").is_err());
        assert!(parse("a/-/manifests/nope").is_err());
        assert!(parse("a/-/other").is_err());
    }

    #[test]
    fn plain_http_pull_commands_say_so() {
        let c = pull_commands("h:5000/a:v1", true);
        assert_eq!(c[0], "docker pull h:5000/a:v1");
        assert!(c[1].contains("--tls-verify=false"));
        assert!(c[3].contains("--plain-http"));
        assert!(!pull_commands("h/a:v1", false)[1].contains("tls"));
    }
}
