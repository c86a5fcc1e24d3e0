-- berth schema 2: people, robot tokens, their grants, the audit trail and server settings.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    -- argon2id PHC string.
    password_hash TEXT NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
) STRICT;

-- What a non-admin user may do: a repository pattern and a set of actions.
CREATE TABLE grants (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pattern TEXT NOT NULL,
    actions TEXT NOT NULL,
    PRIMARY KEY (user_id, pattern)
) STRICT, WITHOUT ROWID;

-- Robot tokens: only the SHA-256 of the secret is stored.
CREATE TABLE tokens (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret_sha256  TEXT NOT NULL UNIQUE,
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    last_used_addr TEXT,
    revoked_at     INTEGER
) STRICT;

CREATE TABLE token_scopes (
    token_id INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    pattern  TEXT NOT NULL,
    actions  TEXT NOT NULL,
    PRIMARY KEY (token_id, pattern)
) STRICT, WITHOUT ROWID;

-- Repository patterns anyone may pull without credentials.
CREATE TABLE anonymous_pulls (
    pattern TEXT PRIMARY KEY
) STRICT, WITHOUT ROWID;

CREATE TABLE audit (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT,
    client_addr TEXT,
    action      TEXT NOT NULL,
    detail      TEXT
) STRICT;
CREATE INDEX audit_at ON audit(at);

-- Server-wide values such as the key that signs bearer tokens.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT, WITHOUT ROWID;
