//! `berth user …`, `berth token …`, `berth anonymous …`: administration on the data
//! directory, safe while the server runs (SQLite transactions; the server re-reads
//! credentials on every request).

use crate::config::Config;
use std::io::BufRead;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;

use crate::auth::accounts::{self, CLI};
use crate::clock::{Clock, SystemClock, rfc3339};
use crate::db::Db;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user. Without --password-stdin a random password is generated and printed.
    Add {
        name: String,
        /// May do everything, including administration.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password. Without --password-stdin a random one is generated and printed.
    Passwd {
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users with their grants.
    List,
    /// Refuse every login and token of a user, at once.
    Disable { name: String },
    /// Allow a disabled user's logins and tokens again.
    Enable { name: String },
    /// Remove a user and their tokens.
    Remove { name: String },
    /// Allow ACTIONS (pull,push,delete or *) on repositories matching PATTERN
    /// (`*` within one path component, `**` across: team-a/*, team-a/**, **).
    Grant {
        name: String,
        pattern: String,
        actions: String,
    },
    /// Remove a user's grant on PATTERN.
    Revoke { name: String, pattern: String },
    /// Add the users of an htpasswd file (`htpasswd -B`) or of a Caddyfile's basicauth
    /// blocks with their bcrypt hashes: their passwords keep working, and each is re-hashed
    /// with argon2id at its first login. Existing users are left as they are.
    ImportHtpasswd {
        file: std::path::PathBuf,
        /// PATTERN:ACTIONS given to every imported user, e.g. 'team-a/**:pull,push'; repeat
        /// for several.
        #[arg(long = "grant", value_name = "PATTERN:ACTIONS")]
        grants: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a robot token for `docker login -u NAME --password-stdin`; prints the secret
    /// alone on stdout, once. It never gets more than its owner holds when it is used.
    Create {
        /// The owning user.
        #[arg(long)]
        user: String,
        /// The token's name, unique on the server: the login user name.
        #[arg(long)]
        name: String,
        /// PATTERN:ACTIONS, e.g. team-a/*:pull; repeat for several. At least one.
        #[arg(long = "scope", value_name = "PATTERN:ACTIONS", required = true)]
        scopes: Vec<String>,
        /// Lifetime: 30d, 12h, 90m, 3600s or never.
        #[arg(long, default_value = "90d")]
        expires: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Only the tokens of this user.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token, at once.
    Revoke { name: String },
    /// Give a token a new secret, printed alone on stdout once: the old one is refused at
    /// once; name, scopes and expiry stay (the login name of CI and clusters does not change).
    Rotate { name: String },
    /// Delete a revoked or expired token, so that its name can be used again.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum AnonymousCommand {
    /// Let anyone pull repositories matching PATTERN without credentials.
    Allow { pattern: String },
    /// Stop anonymous pulls of PATTERN.
    Deny { pattern: String },
    /// List patterns open to anonymous pulls.
    List,
}

fn open(config: &Config) -> anyhow::Result<Db> {
    crate::state::open_existing_database(config)
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        let p = crate::auth::password::random().map_err(|e| anyhow!(e))?;
        return Ok((p, true));
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    if p.is_empty() {
        bail!("the password on stdin is empty");
    }
    Ok((p, false))
}

/// `30d`, `12h`, `90m`, `3600s` → seconds; `never` → `None`.
pub fn parse_expiry(s: &str) -> anyhow::Result<Option<i64>> {
    if s == "never" {
        return Ok(None);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow!("invalid expiry {s:?}: use 30d, 12h, 90m, 3600s or never"))?;
    let mult = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => bail!("invalid expiry {s:?}: use 30d, 12h, 90m, 3600s or never"),
    };
    if n <= 0 {
        bail!("invalid expiry {s:?}: must be positive");
    }
    Ok(Some(n.saturating_mul(mult)))
}

fn when(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_else(|| "-".into())
}

pub fn user(config: &Config, cmd: UserCommand) -> anyhow::Result<()> {
    let db = open(config)?;
    let now = SystemClock.now();
    match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            let (pass, generated) = read_password(password_stdin)?;
            accounts::add_user(&db, now, &CLI, &name, &pass, admin)?;
            if generated {
                println!("{pass}");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (pass, generated) = read_password(password_stdin)?;
            accounts::set_password(&db, now, &CLI, &name, &pass)?;
            if generated {
                println!("{pass}");
            }
        }
        UserCommand::List => {
            let users = accounts::list_users(&db)?;
            if users.is_empty() {
                println!("no users");
                return Ok(());
            }
            println!(
                "{:<20} {:<6} {:<9} {:<21} GRANTS",
                "NAME", "ADMIN", "STATE", "LAST LOGIN"
            );
            for u in users {
                let grants: Vec<String> =
                    u.grants.iter().map(|(p, a)| format!("{p}:{a}")).collect();
                println!(
                    "{:<20} {:<6} {:<9} {:<21} {}",
                    u.user.name,
                    if u.user.is_admin { "yes" } else { "no" },
                    if u.user.disabled {
                        "disabled"
                    } else {
                        "active"
                    },
                    when(u.user.last_login_at),
                    if u.user.is_admin {
                        "(all)".to_string()
                    } else {
                        grants.join(" ")
                    },
                );
            }
        }
        UserCommand::Disable { name } => accounts::set_disabled(&db, now, &CLI, &name, true)?,
        UserCommand::Enable { name } => accounts::set_disabled(&db, now, &CLI, &name, false)?,
        UserCommand::Remove { name } => accounts::remove_user(&db, now, &CLI, &name)?,
        UserCommand::Grant {
            name,
            pattern,
            actions,
        } => accounts::grant(&db, now, &CLI, &name, &pattern, &actions)?,
        UserCommand::Revoke { name, pattern } => {
            accounts::revoke_grant(&db, now, &CLI, &name, &pattern)?
        }
        UserCommand::ImportHtpasswd { file, grants } => import_htpasswd(&db, now, &file, &grants)?,
    }
    Ok(())
}

/// The largest users file read: thousands of lines.
const MAX_USERS_FILE: u64 = 1 << 20;

fn import_htpasswd(
    db: &Db,
    now: i64,
    file: &std::path::Path,
    grants: &[String],
) -> anyhow::Result<()> {
    use std::io::Read as _;
    let grants = grants
        .iter()
        .map(|g| accounts::parse_scope(g))
        .collect::<Result<Vec<_>, _>>()?;
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_USERS_FILE + 1).read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", file.display()))?;
    if text.len() as u64 > MAX_USERS_FILE {
        bail!("{} is larger than {MAX_USERS_FILE} bytes", file.display());
    }
    let entries = crate::auth::htpasswd::parse(&text);
    if entries.is_empty() {
        bail!(
            "no users in {}: expected NAME:HASH lines or a Caddyfile basicauth block",
            file.display()
        );
    }
    let (mut added, mut existing, mut refused) = (0, 0, 0);
    for e in entries {
        let outcome = e
            .hash
            .map_err(anyhow::Error::msg)
            .and_then(|h| Ok(accounts::import_user(db, now, &CLI, &e.name, &h, &grants)?));
        match outcome {
            Ok(true) => {
                added += 1;
                println!("added     {}", e.name);
            }
            Ok(false) => {
                existing += 1;
                println!("exists    {} (left as it is)", e.name);
            }
            Err(why) => {
                refused += 1;
                println!("skipped   {} (line {}): {why}", e.name, e.line);
            }
        }
    }
    println!("{added} added, {existing} already there, {refused} skipped");
    if refused > 0 {
        bail!(
            "{refused} of the users in {} could not be imported",
            file.display()
        );
    }
    Ok(())
}

pub fn token(config: &Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let db = open(config)?;
    let now = SystemClock.now();
    match cmd {
        TokenCommand::Create {
            user,
            name,
            scopes,
            expires,
        } => {
            let expires_at = parse_expiry(&expires)?.map(|s| now.saturating_add(s));
            let scopes = scopes
                .iter()
                .map(|s| accounts::parse_scope(s))
                .collect::<Result<Vec<_>, _>>()?;
            let secret = accounts::create_token(&db, now, &CLI, &user, &name, &scopes, expires_at)?;
            println!("{}", secret.expose());
        }
        TokenCommand::List { user } => {
            let list = accounts::list_tokens(&db, user.as_deref())?;
            if list.is_empty() {
                match user {
                    Some(u) => println!("no tokens of user {u}"),
                    None => println!("no tokens"),
                }
                return Ok(());
            }
            println!(
                "{:<20} {:<14} {:<8} {:<21} {:<21} {:<16} SCOPES",
                "NAME", "USER", "STATE", "EXPIRES", "LAST USED", "FROM"
            );
            for t in list {
                let tk = &t.token;
                let state = if tk.revoked_at.is_some() {
                    "revoked"
                } else if tk.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let scopes: Vec<String> =
                    t.scopes.iter().map(|(p, a)| format!("{p}:{a}")).collect();
                println!(
                    "{:<20} {:<14} {:<8} {:<21} {:<21} {:<16} {}",
                    tk.name,
                    tk.user_name,
                    state,
                    tk.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
                    when(tk.last_used_at),
                    tk.last_used_addr.as_deref().unwrap_or("-"),
                    scopes.join(" "),
                );
            }
        }
        TokenCommand::Revoke { name } => accounts::revoke_token(&db, now, &CLI, &name)?,
        TokenCommand::Rotate { name } => {
            let secret = accounts::rotate_token(&db, now, &CLI, &name)?;
            println!("{}", secret.expose());
        }
        TokenCommand::Remove { name } => accounts::remove_token(&db, now, &CLI, &name)?,
    }
    Ok(())
}

pub fn anonymous(config: &Config, cmd: AnonymousCommand) -> anyhow::Result<()> {
    let db = open(config)?;
    let now = SystemClock.now();
    match cmd {
        AnonymousCommand::Allow { pattern } => {
            accounts::set_anonymous(&db, now, &CLI, &pattern, true)?;
        }
        AnonymousCommand::Deny { pattern } => {
            if !accounts::set_anonymous(&db, now, &CLI, &pattern, false)? {
                bail!("{pattern:?} was not open to anonymous pulls");
            }
        }
        AnonymousCommand::List => {
            let patterns = accounts::anonymous_patterns(&db)?;
            if patterns.is_empty() {
                // On stderr: stdout stays a list of patterns, one a line, for scripts.
                eprintln!("no repository is open to anonymous pulls");
            }
            for p in patterns {
                println!("{p}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_expiry;

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("30d").unwrap(), Some(30 * 86_400));
        assert_eq!(parse_expiry("12h").unwrap(), Some(12 * 3_600));
        assert_eq!(parse_expiry("never").unwrap(), None);
        for bad in ["", "d", "30", "30w", "-1d", "0h", "1.5d"] {
            assert!(parse_expiry(bad).is_err(), "{bad:?}");
        }
    }
}
