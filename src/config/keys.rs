//! The configuration keys, how the user wrote each one (`listen`, `BERTH_LISTEN`,
//! `--listen`), and the checks whose errors must name them that way: addresses and the log
//! filter. Error text never carries a source path, a Rust type or a secret.

use std::net::SocketAddr;

use figment::{Figment, Metadata, Source};

/// Every key, dotted. `BERTH_` plus the key in capitals with `__` for the dot sets it.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "log",
    "durability",
    "shutdown_grace_secs",
    "admin_password_file",
    "external_url",
    "trusted_proxies",
    "tls.mode",
    "tls.domains",
    "tls.email",
    "tls.directory",
    "tls.directory_ca_file",
    "tls.challenge",
    "tls.cert_file",
    "tls.key_file",
    "tls.http_listen",
    "tls.hsts",
    "limits.max_connections",
    "limits.header_timeout_secs",
    "limits.idle_timeout_secs",
    "limits.min_free_space",
    "limits.max_upload_sessions",
    "limits.max_upload_size",
    "gc.enabled",
    "gc.interval",
    "gc.window",
    "gc.grace",
    "gc.untagged_grace",
    "gc.upload_expiry",
    "metrics.listen",
    "metrics.token_file",
];

/// The keys that are also command-line flags.
const FLAGS: &[&str] = &["listen", "data_dir"];

/// `BERTH_*` variables that are read elsewhere, not configuration keys.
const NOT_KEYS: &[&str] = &["BERTH_CONFIG", "BERTH_ADMIN_PASSWORD"];

/// The environment variable of a dotted key.
pub fn env_name(key: &str) -> String {
    format!("BERTH_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Whether an environment key (after `BERTH_`, `__` already turned into dots) is a key.
pub fn is_key(k: &str) -> bool {
    KEYS.iter().any(|x| x.eq_ignore_ascii_case(k))
}

/// Warnings for `BERTH_*` variables that look like a misspelled key (others, such as a CI's
/// `BERTH_TOKEN`, are none of berth's business and pass in silence).
pub fn env_warnings(vars: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    for var in vars {
        if !var.starts_with("BERTH_") || NOT_KEYS.contains(&var.as_str()) {
            continue;
        }
        if KEYS.iter().any(|k| env_name(k) == var.to_ascii_uppercase()) {
            continue;
        }
        let upper = var.to_ascii_uppercase();
        let near = KEYS
            .iter()
            .map(|k| env_name(k))
            .filter(|name| distance(name, &upper) <= 2)
            .min_by_key(|name| distance(name, &upper));
        if let Some(name) = near {
            out.push(format!(
                "{var} is not a configuration variable and is ignored (did you mean {name}?)"
            ));
        }
    }
    out
}

/// Levenshtein distance, for names of a few dozen characters.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// How the user wrote the key `path` in the layer that supplied it: `BERTH_TLS__MODE`,
/// `--listen`, `tls.mode in /etc/berth/berth.toml`, or the dotted key for a default.
pub fn as_written(meta: Option<&Metadata>, path: &str) -> String {
    let Some(meta) = meta else {
        return path.to_string();
    };
    match &meta.source {
        Some(Source::File(file)) => format!("{path} in {}", file.display()),
        _ if meta.name.contains("environment") => env_name(path),
        _ if meta.name.contains("Overrides") && FLAGS.contains(&path) => {
            format!("--{}", path.replace('_', "-"))
        }
        _ => path.to_string(),
    }
}

/// `as_written` for a key of a merged figment.
pub fn written(fig: &Figment, key: &str) -> String {
    as_written(fig.find_metadata(key), key)
}

/// One line for a figment error: the key as written, and what is wrong, without the
/// provider's source location or the Rust type it was read into.
pub fn describe(e: &figment::Error) -> String {
    let path = e.path.join(".");
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            let key = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            return format!(
                "{}: not a configuration key",
                as_written(e.metadata.as_ref(), &key)
            );
        }
        figment::error::Kind::InvalidType(actual, expected)
        | figment::error::Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value {actual}: expected {}",
                plain_expected(expected)
            )
        }
        figment::error::Kind::UnknownVariant(v, expected) => {
            format!(
                "unknown value {v:?}: expected one of {}",
                expected.join(", ")
            )
        }
        other => other.to_string(),
    };
    if path.is_empty() {
        // A file that is not valid TOML: name the file.
        match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(Source::File(file)) => format!("{}: {what}", file.display()),
            _ => what,
        }
    } else {
        format!("{}: {what}", as_written(e.metadata.as_ref(), &path))
    }
}

/// serde's expectations name Rust types ("struct Config", "u64"); say it plainly.
fn plain_expected(expected: &str) -> String {
    match expected {
        "u64" | "u32" | "usize" | "u16" | "u8" => "a whole number".into(),
        "i64" | "i32" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        e if e.starts_with("struct ") || e.starts_with("a sequence") => {
            if e.starts_with("a sequence") {
                "a list".into()
            } else {
                "a table".into()
            }
        }
        e => e.into(),
    }
}

/// A listen address as registry:2 users type it: `HOST:PORT`, `:PORT` (every interface) or
/// `localhost:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let bad = || {
        format!(
            "{s:?} is not an address: expected HOST:PORT, such as 0.0.0.0:5000, 127.0.0.1:5000 or :5000"
        )
    };
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    // A host name: only one that names this machine makes sense to listen on.
    match s.rsplit_once(':') {
        Some(("localhost", port)) => {
            let port: u16 = port.parse().map_err(|_| bad())?;
            Ok(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        _ => Err(bad()),
    }
}

/// A log filter: comma-separated levels (`info`) or `target=level` pairs.
pub fn check_log(s: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let level_ok = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    let ok = !s.trim().is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            None => level_ok(d),
            Some((target, level)) => {
                !target.trim().is_empty()
                    && target
                        .trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_:-".contains(&b))
                    && level_ok(level)
            }
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a log filter: expected a level (trace, debug, info, warn, error, off) or target=level pairs such as berth=debug,info"
        ))
    }
}

/// A URL with any user info replaced, for error messages.
pub fn redact_url(u: &str) -> String {
    match (u.find("://"), u.find('@')) {
        (Some(i), Some(at)) if at > i => format!("{}://***@{}", &u[..i], &u[at + 1..]),
        _ => u.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_people_type_them() {
        assert_eq!(
            parse_addr(":5000").unwrap(),
            "0.0.0.0:5000".parse().unwrap()
        );
        assert_eq!(
            parse_addr("localhost:5000").unwrap(),
            "127.0.0.1:5000".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        for bad in ["5000", ":x", "localhost", "0.0.0.0:99999", ""] {
            assert!(parse_addr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn log_filters() {
        for good in [
            "info",
            "berth=debug,info",
            "WARN",
            "hyper=off,berth::auth=trace",
        ] {
            assert!(check_log(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "", "berth=loud", "=info", "info,"] {
            assert!(check_log(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn misspelled_variables_are_named_and_others_ignored() {
        let vars = [
            "BERTH_LISTNE",
            "BERTH_TOKEN",
            "BERTH_URL",
            "BERTH_TLS__MODE",
            "BERTH_CONFIG",
        ];
        let w = env_warnings(vars.iter().map(|s| s.to_string()));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("did you mean BERTH_LISTEN?"), "{w:?}");
    }

    #[test]
    fn user_info_is_never_shown() {
        assert_eq!(redact_url("https://u:secret@host"), "https://***@host");
        assert_eq!(redact_url("https://host"), "https://host");
    }
}
