//! curl against the real binary, with the response parsed from `curl -i`.

use std::process::Command;

use super::cmd::run;
use super::net::error_code;
use super::require_tool;

/// A response as `curl -i` shows it.
pub struct CurlResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    #[track_caller]
    pub fn assert(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.body);
        self
    }

    /// A `401` with the Bearer challenge clients follow, and the spec's error body.
    #[track_caller]
    pub fn assert_challenge(&self, host: &str) -> &Self {
        self.assert(401);
        let challenge = self
            .header("www-authenticate")
            .unwrap_or_else(|| panic!("a 401 without WWW-Authenticate: {:?}", self.headers));
        let expected = format!("Bearer realm=\"http://{host}/token\",service=\"berth\"");
        assert!(challenge.starts_with(&expected), "{challenge}");
        assert_eq!(error_code(self.body.as_bytes()), "UNAUTHORIZED");
        self
    }
}

/// `curl -sS -i ARGS`.
#[track_caller]
pub fn curl(args: &[&str]) -> CurlResponse {
    let out = run(Command::new(require_tool("curl"))
        .args(["-sS", "-i"])
        .args(args));
    let (head, body) = out
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in curl's output:\n{out}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    CurlResponse {
        status,
        headers,
        body: body.to_string(),
    }
}
