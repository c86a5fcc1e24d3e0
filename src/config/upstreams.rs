//! `[[upstreams]]`: the registries berth caches (a pull-through cache), each under a
//! repository prefix of its own.
//!
//! ```toml
//! upstreams = [{ name = "dockerhub", url = "docker.io" }]
//! ```

use serde::{Deserialize, Serialize};

use super::{Size, Span};

/// Docker Hub's registry, for `url = "docker.io"`.
pub const DOCKER_HUB: &str = "https://registry-1.docker.io";
/// The names containerd and k3s use for Docker Hub in `?ns=`.
const DOCKER_HUB_NAMES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The repository prefix the cache lives under: `<name>/library/nginx`.
    pub name: String,
    /// `https://host[:port]`, or `docker.io` for Docker Hub.
    pub url: String,
    /// Registry host names that `?ns=` (containerd, k3s) maps to this upstream; by default
    /// the URL's host, and for Docker Hub also `docker.io` and `index.docker.io`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registries: Vec<String>,
    /// Host names (as in the `Host` header) whose requests are all for this upstream: the
    /// Docker daemon's `registry-mirrors`, which sends no `ns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror_hosts: Vec<String>,
    /// Repositories of the upstream that may be cached (patterns as in grants:
    /// `library/*`, `bitnami/**`); empty for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// A user name for the upstream, with `password_file` or `password_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// How long a cached tag is served without asking the upstream whether it moved.
    #[serde(default = "default_check_interval")]
    pub check_interval: Span,
    /// Requests to the upstream at once (more wait their turn).
    #[serde(default = "default_concurrency")]
    pub max_concurrent: u32,
    /// Bytes of blobs the cache may hold that no pushed image uses: over it, garbage
    /// collection evicts the least recently pulled images first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Size>,
    /// Images not pulled for this long are evicted at the next collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpulled_expiry: Option<Span>,
    /// Images pulled within this long are never evicted, even over quota.
    #[serde(default = "default_keep")]
    pub keep_pulled_within: Span,
}

fn default_keep() -> Span {
    Span::Text("7d".into())
}

fn default_check_interval() -> Span {
    Span::Text("5m".into())
}

fn default_concurrency() -> u32 {
    16
}

impl Upstream {
    /// An upstream with every optional setting at its default.
    pub fn new(name: &str, url: &str) -> Upstream {
        Upstream {
            name: name.into(),
            url: url.into(),
            registries: vec![],
            mirror_hosts: vec![],
            repositories: vec![],
            username: None,
            password_file: None,
            password_env: None,
            check_interval: default_check_interval(),
            max_concurrent: default_concurrency(),
            quota: None,
            unpulled_expiry: None,
            keep_pulled_within: default_keep(),
        }
    }

    /// The URL berth reads from.
    pub fn base_url(&self) -> String {
        match self.url.trim_end_matches('/') {
            "docker.io" | "https://docker.io" | "https://index.docker.io" => DOCKER_HUB.into(),
            u => u.to_string(),
        }
    }

    /// Whether this is Docker Hub (or stands for it: it serves `?ns=docker.io`), where a
    /// one-part name is under `library/`.
    pub fn is_docker_hub(&self) -> bool {
        self.base_url() == DOCKER_HUB || self.registries.iter().any(|r| r == "docker.io")
    }

    /// The registry names `?ns=` maps here, lower case.
    pub fn registry_names(&self) -> Vec<String> {
        if !self.registries.is_empty() {
            return self.registries.iter().map(|r| r.to_lowercase()).collect();
        }
        if self.is_docker_hub() {
            return DOCKER_HUB_NAMES.iter().map(|s| s.to_string()).collect();
        }
        url_host(&self.base_url()).into_iter().collect()
    }

    /// The upstream's password, read from its file or variable.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(f) = &self.password_file {
            let p = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read password_file {}: {e}", f.display()))?;
            return Ok(Some(p.trim_end_matches(['\r', '\n']).to_string()));
        }
        if let Some(v) = &self.password_env {
            let p = std::env::var(v)
                .map_err(|_| format!("the environment variable {v} (password_env) is not set"))?;
            return Ok(Some(p));
        }
        Ok(None)
    }

    /// Check one entry; `Err` names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        let ok_name = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-');
        if !ok_name {
            return Err(format!(
                "name {n:?}: use lower-case letters, digits and inner dashes (it is a repository prefix)"
            ));
        }
        let url = self.base_url();
        if url_host(&url).is_none() {
            return Err(format!(
                "{n}: url {:?} is not https://host[:port] (or docker.io)",
                self.url
            ));
        }
        if self.username.is_some() != (self.password_file.is_some() || self.password_env.is_some())
        {
            return Err(format!(
                "{n}: username goes with password_file or password_env"
            ));
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(format!("{n}: give password_file or password_env, not both"));
        }
        match self.check_interval.seconds() {
            Ok(Some(s)) if s <= 30 * 86_400 => {}
            Ok(_) => return Err(format!("{n}: check_interval is 0s to 30d")),
            Err(e) => return Err(format!("{n}: check_interval: {e}")),
        }
        if let Some(q) = &self.quota {
            q.bytes().map_err(|e| format!("{n}: quota: {e}"))?;
        }
        for (key, span) in [
            ("unpulled_expiry", self.unpulled_expiry.as_ref()),
            ("keep_pulled_within", Some(&self.keep_pulled_within)),
        ] {
            match span.map(Span::seconds) {
                None | Some(Ok(Some(_))) => {}
                Some(Ok(None)) => return Err(format!("{n}: {key} cannot be never")),
                Some(Err(e)) => return Err(format!("{n}: {key}: {e}")),
            }
        }
        if self.max_concurrent == 0 || self.max_concurrent > 1024 {
            return Err(format!("{n}: max_concurrent is 1 to 1024"));
        }
        for p in &self.repositories {
            crate::auth::pattern::Pattern::parse(p)
                .map_err(|e| format!("{n}: repositories: {p:?}: {e}"))?;
        }
        Ok(())
    }
}

/// The host (with port) of an `http(s)://host[:port]` URL without a path.
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let ok = !rest.is_empty()
        && !rest.contains(['/', '@', '?', '#', ' '])
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    ok.then(|| rest.to_lowercase())
}

/// Check the whole table: each entry, and no name or host claimed twice.
pub fn validate(list: &[Upstream]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    let mut hosts = std::collections::HashSet::new();
    for u in list {
        u.validate()?;
        if !names.insert(u.name.as_str()) {
            return Err(format!("the name {:?} is used twice", u.name));
        }
        for h in u.registry_names() {
            if !hosts.insert(format!("ns:{h}")) {
                return Err(format!("the registry {h:?} is claimed by two upstreams"));
            }
        }
        for h in &u.mirror_hosts {
            if !hosts.insert(format!("host:{}", h.to_lowercase())) {
                return Err(format!("the mirror host {h:?} is claimed by two upstreams"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, url: &str) -> Upstream {
        Upstream::new(name, url)
    }

    #[test]
    fn docker_hub_is_one_word() {
        let u = up("dockerhub", "docker.io");
        assert_eq!(u.base_url(), DOCKER_HUB);
        assert!(u.is_docker_hub());
        assert_eq!(
            u.registry_names(),
            ["docker.io", "index.docker.io", "registry-1.docker.io"]
        );
        let g = up("ghcr", "https://ghcr.io/");
        assert!(!g.is_docker_hub());
        assert_eq!(g.registry_names(), ["ghcr.io"]);
        assert_eq!(
            up("l", "http://127.0.0.1:5000").registry_names(),
            ["127.0.0.1:5000"]
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for (u, want) in [
            (up("Hub", "docker.io"), "name"),
            (up("-x", "docker.io"), "name"),
            (up("a/b", "docker.io"), "name"),
            (up("hub", "ftp://x"), "url"),
            (up("hub", "https://x/path"), "url"),
            (up("hub", "https://u:p@x"), "url"),
        ] {
            let e = u.validate().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let mut u = up("hub", "docker.io");
        u.username = Some("me".into());
        assert!(u.validate().unwrap_err().contains("password_file"));
        u.password_env = Some("X".into());
        u.validate().unwrap();
        u.repositories = vec!["[".into()];
        assert!(u.validate().is_err());
        let e = validate(&[up("a", "docker.io"), up("b", "https://index.docker.io")]).unwrap_err();
        assert!(e.contains("claimed by two"), "{e}");
        let e = validate(&[up("a", "docker.io"), up("a", "https://ghcr.io")]).unwrap_err();
        assert!(e.contains("used twice"), "{e}");
    }
}
