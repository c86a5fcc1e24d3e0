//! Users from the setup berth replaces: an htpasswd file (`htpasswd -B`) or the `basicauth`
//! blocks of a Caddyfile, both holding bcrypt hashes. Pure parsing; the hashes are kept as
//! they are, so the old passwords keep working until each user's first login re-hashes it.

/// The highest bcrypt cost taken: Caddy's default (`htpasswd -B` uses 5). Each check of an
/// imported hash costs about a second of CPU at 14, until the user's first login replaces
/// it; a higher cost would make guessed logins a CPU sink.
pub const MAX_COST: u32 = 14;

/// One user line found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number, for messages.
    pub line: usize,
    pub name: String,
    /// The bcrypt hash, or why the line cannot be used.
    pub hash: Result<String, String>,
}

/// Parse `text` as a Caddyfile when it has a `basicauth` / `basic_auth` block, else as an
/// htpasswd file. Blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<Entry> {
    let caddyfile = text.lines().any(|l| {
        let first = l.split_whitespace().next().unwrap_or("");
        (first == "basicauth" || first == "basic_auth") && l.trim_end().ends_with('{')
    });
    if caddyfile {
        parse_caddyfile(text)
    } else {
        parse_htpasswd(text)
    }
}

fn parse_htpasswd(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = match line.split_once(':') {
            Some((n, h)) => (n.trim(), check_hash(h.trim())),
            None => (line, Err("not NAME:HASH".to_string())),
        };
        out.push(Entry {
            line: i + 1,
            name: name.to_string(),
            hash,
        });
    }
    out
}

fn parse_caddyfile(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if !inside {
            inside = (first == "basicauth" || first == "basic_auth") && line.ends_with('{');
            continue;
        }
        if first == "}" {
            inside = false;
            continue;
        }
        let hash = match (words.next(), words.next()) {
            (Some(h), None) => check_hash(&caddy_hash(h)),
            _ => Err("not NAME HASH".to_string()),
        };
        out.push(Entry {
            line: i + 1,
            name: first.to_string(),
            hash,
        });
    }
    out
}

/// Caddy up to 2.3 wrote base64 of the bcrypt hash; later versions the hash itself.
fn caddy_hash(h: &str) -> String {
    use base64::Engine as _;
    if h.starts_with("$2") {
        return h.to_string();
    }
    base64::engine::general_purpose::STANDARD
        .decode(h)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| s.starts_with("$2"))
        .unwrap_or_else(|| h.to_string())
}

/// A bcrypt hash berth takes: `$2a$`, `$2b$` or `$2y$`, a cost from 4 to `MAX_COST`, and
/// the 53 characters of salt and hash.
pub fn check_hash(h: &str) -> Result<String, String> {
    let parts: Vec<&str> = h.split('$').collect();
    let scheme_ok =
        parts.len() == 4 && parts[0].is_empty() && matches!(parts[1], "2a" | "2b" | "2y");
    if !scheme_ok {
        let kind = if h.starts_with("$apr1$") {
            "an Apache MD5 hash"
        } else if h.starts_with("{SHA}") {
            "a SHA-1 hash"
        } else if h.starts_with("$argon2") {
            "an argon2 hash"
        } else {
            "not a bcrypt hash"
        };
        return Err(format!(
            "{kind}; only bcrypt (htpasswd -B, caddy hash-password) can be imported: set a password with `berth user passwd`"
        ));
    }
    let cost: u32 = parts[2]
        .parse()
        .map_err(|_| "a bcrypt hash with a malformed cost".to_string())?;
    if !(4..=MAX_COST).contains(&cost) {
        return Err(format!(
            "a bcrypt hash of cost {cost}; berth takes costs 4 to {MAX_COST}"
        ));
    }
    let rest = parts[3];
    if rest.len() != 53
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return Err("a malformed bcrypt hash".to_string());
    }
    Ok(h.to_string())
}

/// Whether a stored hash is an imported bcrypt one (replaced by argon2id at the next login).
pub fn is_bcrypt(h: &str) -> bool {
    h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB ci secret` and `caddy hash-password --plaintext secret` style hashes.
    const H5: &str = "$2y$05$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234";
    const H14: &str = "$2a$14$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234";

    #[test]
    fn htpasswd_lines() {
        let text = format!(
            "# users\nci:{H5}\n\nold:$apr1$x$y\nbroken\nflux: {H14} \nslow:$2y$20$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234\n"
        );
        let e = parse(&text);
        assert_eq!(e.len(), 5);
        assert_eq!((e[0].name.as_str(), e[0].line), ("ci", 2));
        assert_eq!(e[0].hash.as_deref(), Ok(H5));
        assert!(e[1].hash.as_ref().unwrap_err().contains("Apache MD5"));
        assert!(e[2].hash.as_ref().unwrap_err().contains("NAME:HASH"));
        assert_eq!(e[3].hash.as_deref(), Ok(H14));
        assert!(e[4].hash.as_ref().unwrap_err().contains("cost 20"));
    }

    #[test]
    fn caddyfile_blocks_plain_and_base64() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(H14);
        let text = format!(
            "registry.example.com {{\n  basicauth /v2/* {{\n    ci {H5}\n    k3s {b64}  # old Caddy\n  }}\n  reverse_proxy localhost:5000\n}}\nother.example.com {{\n  basic_auth {{\n    flux {H14}\n    bad\n  }}\n}}\n"
        );
        let e = parse(&text);
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["ci", "k3s", "flux", "bad"]);
        assert_eq!(e[0].hash.as_deref(), Ok(H5));
        assert_eq!(e[1].hash.as_deref(), Ok(H14));
        assert_eq!(e[2].hash.as_deref(), Ok(H14));
        assert!(e[3].hash.is_err());
        assert_eq!(e[2].line, 10);
    }

    #[test]
    fn hash_checks() {
        assert!(check_hash(H5).is_ok());
        assert!(check_hash("$2y$05$short").is_err());
        assert!(
            check_hash("$2x$05$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234").is_err()
        );
        assert!(
            check_hash("$2y$03$abcdefghijklmnopqrstuOabcdefghijklmnopqrstuvwxyz01234").is_err()
        );
        assert!(is_bcrypt(H5) && !is_bcrypt("$argon2id$v=19$..."));
    }
}
