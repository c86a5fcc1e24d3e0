//! `/metrics`: what a Prometheus server scrapes, in the OpenMetrics text format.
//!
//! Counters live in one process-wide `Metrics` (they count events wherever they happen:
//! requests, pushes, pulls, failed logins, bodies a proxy dropped, collections); gauges that
//! describe state (open upload sessions, bytes stored, free disk, certificate expiry) are read
//! when scraped, so they are never stale. This is berth's one global: counters only, nothing
//! that decides behaviour.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `route_group` of the path.
    pub group: &'static str,
    pub status: u16,
}

/// An upstream of the pull-through cache, by its configured name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub pushes: Counter,
    pub pulls: Counter,
    pub login_failures: Counter,
    pub proxy_dropped_bodies: Counter,
    pub gc_runs: Counter,
    pub gc_freed_bytes: Counter,
    pub cache_fills: Counter,
    pub cache_fill_failures: Counter,
    pub cache_stale: Counter,
    // Read at scrape time.
    pub upload_sessions: Gauge,
    pub blob_store_bytes: Gauge,
    pub blobs: Gauge,
    pub disk_free_bytes: Gauge,
    pub certificate_expiry: Gauge,
    pub gc_last_run: Gauge,
    pub upstream_ratelimit_remaining: Family<UpstreamLabels, Gauge>,
    pub upstream_ratelimit_limit: Family<UpstreamLabels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let m = Metrics {
            requests: Family::default(),
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            pushes: Counter::default(),
            pulls: Counter::default(),
            login_failures: Counter::default(),
            proxy_dropped_bodies: Counter::default(),
            gc_runs: Counter::default(),
            gc_freed_bytes: Counter::default(),
            cache_fills: Counter::default(),
            cache_fill_failures: Counter::default(),
            cache_stale: Counter::default(),
            upload_sessions: Gauge::default(),
            blob_store_bytes: Gauge::default(),
            blobs: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            certificate_expiry: Gauge::default(),
            gc_last_run: Gauge::default(),
            upstream_ratelimit_remaining: Family::default(),
            upstream_ratelimit_limit: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route group and status",
            m.requests.clone(),
        );
        registry.register(
            "http_received_bytes",
            "Request body bytes received",
            m.received_bytes.clone(),
        );
        registry.register(
            "http_sent_bytes",
            "Response body bytes sent",
            m.sent_bytes.clone(),
        );
        registry.register("pushes", "Manifests pushed", m.pushes.clone());
        registry.register("pulls", "Manifests pulled (GET)", m.pulls.clone());
        registry.register(
            "login_failures",
            "Logins refused for a wrong password or name",
            m.login_failures.clone(),
        );
        registry.register(
            "proxy_dropped_bodies",
            "Uploads whose streamed PATCH body a proxy in front probably dropped",
            m.proxy_dropped_bodies.clone(),
        );
        registry.register(
            "gc_runs",
            "Garbage collection runs finished",
            m.gc_runs.clone(),
        );
        registry.register(
            "gc_freed_bytes",
            "Bytes freed by garbage collection",
            m.gc_freed_bytes.clone(),
        );
        registry.register(
            "cache_fills",
            "Blob downloads the pull-through cache started from an upstream",
            m.cache_fills.clone(),
        );
        registry.register(
            "cache_fill_failures",
            "Blob downloads from an upstream that failed or did not verify (nothing stored)",
            m.cache_fill_failures.clone(),
        );
        registry.register(
            "cache_stale",
            "Cached tags served while their upstream failed to confirm them",
            m.cache_stale.clone(),
        );
        registry.register(
            "gc_last_run_timestamp_seconds",
            "When the last garbage collection finished (Unix time; 0: none since start)",
            m.gc_last_run.clone(),
        );
        registry.register(
            "upload_sessions_open",
            "Upload sessions open",
            m.upload_sessions.clone(),
        );
        registry.register(
            "blob_store_bytes",
            "Bytes of the blobs stored",
            m.blob_store_bytes.clone(),
        );
        registry.register("blobs", "Blobs stored", m.blobs.clone());
        registry.register(
            "disk_free_bytes",
            "Free bytes on the data directory's file system",
            m.disk_free_bytes.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate in use expires (Unix time; absent without TLS)",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "upstream_ratelimit_remaining",
            "Pulls the upstream says are left in its window (its ratelimit-remaining header, last seen)",
            m.upstream_ratelimit_remaining.clone(),
        );
        registry.register(
            "upstream_ratelimit_limit",
            "Pulls the upstream allows per window (its ratelimit-limit header, last seen)",
            m.upstream_ratelimit_limit.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Count one answered request.
    pub fn request(&self, path: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                group: route_group(path),
                status,
            })
            .inc();
    }
}

/// The process's counters.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The Content-Type of `render`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A small fixed set of labels for a path (never the path itself: repository names are
/// unbounded and private).
pub fn route_group(path: &str) -> &'static str {
    if path == "/v2" || path == "/v2/" {
        return "v2_base";
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        return if rest == "_catalog" {
            "v2_catalog"
        } else if rest.contains("/blobs/uploads") {
            "v2_uploads"
        } else if rest.contains("/blobs/") {
            "v2_blobs"
        } else if rest.contains("/manifests/") {
            "v2_manifests"
        } else if rest.ends_with("/tags/list") {
            "v2_tags"
        } else if rest.contains("/referrers/") {
            "v2_referrers"
        } else {
            "v2_other"
        };
    }
    match path {
        "/token" => "token",
        "/healthz" | "/readyz" => "health",
        "/metrics" => "metrics",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_groups() {
        for (path, group) in [
            ("/v2/", "v2_base"),
            ("/v2/_catalog", "v2_catalog"),
            ("/v2/a/b/blobs/uploads/", "v2_uploads"),
            ("/v2/a/b/blobs/uploads/0123", "v2_uploads"),
            ("/v2/a/blobs/sha256:00", "v2_blobs"),
            ("/v2/a/manifests/latest", "v2_manifests"),
            ("/v2/a/tags/list", "v2_tags"),
            ("/v2/a/referrers/sha256:00", "v2_referrers"),
            ("/v2/x", "v2_other"),
            ("/token", "token"),
            ("/readyz", "health"),
            ("/metrics", "metrics"),
            ("/favicon.ico", "other"),
        ] {
            assert_eq!(route_group(path), group, "{path}");
        }
    }

    #[test]
    fn renders_openmetrics_text() {
        let m = Metrics::new();
        m.request("/v2/a/manifests/1", 201);
        m.pushes.inc();
        m.disk_free_bytes.set(42);
        let text = m.render();
        assert!(
            text.contains("berth_http_requests_total{group=\"v2_manifests\",status=\"201\"} 1"),
            "{text}"
        );
        assert!(text.contains("berth_pushes_total 1"), "{text}");
        assert!(text.contains("berth_disk_free_bytes 42"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
