-- berth schema 9: the web UI's sign-in sessions, and who pushed what.
--
-- A session is stored by the SHA-256 of its cookie value, never the value. It carries the
-- user's stamp at sign-in: a password change, a disable or an enable draws a new stamp, so
-- every session of that user ends with it; removing the user removes its sessions.
CREATE TABLE ui_sessions (
    id_sha256   TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    stamp       INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    seen_at     INTEGER NOT NULL,
    client_addr TEXT NOT NULL,
    user_agent  TEXT NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX ui_sessions_user ON ui_sessions(user_id);

-- Who pushed a manifest first, and who last pointed each tag at its manifest (a user's or a
-- robot token's name). NULL for what was pushed before this schema, or imported.
ALTER TABLE manifests ADD COLUMN pushed_by TEXT;
ALTER TABLE tags ADD COLUMN pushed_by TEXT;
