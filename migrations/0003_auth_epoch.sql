-- berth schema 3: an epoch that every change to who may do what moves forward, in the same
-- transaction as the change (triggers), whichever process makes it. The server caches each
-- credential's state and re-reads it only when the epoch moved, so a request costs one tiny
-- read while revocations still take effect at once. Bookkeeping columns (last login, last
-- use) do not move it.

CREATE TABLE auth_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
) STRICT;
INSERT INTO auth_epoch (id, n) VALUES (1, 0);

CREATE TRIGGER users_insert AFTER INSERT ON users BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER users_delete AFTER DELETE ON users BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER users_update AFTER UPDATE OF name, password_hash, is_admin, disabled ON users
BEGIN UPDATE auth_epoch SET n = n + 1; END;

CREATE TRIGGER grants_insert AFTER INSERT ON grants BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER grants_delete AFTER DELETE ON grants BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER grants_update AFTER UPDATE ON grants BEGIN UPDATE auth_epoch SET n = n + 1; END;

CREATE TRIGGER tokens_insert AFTER INSERT ON tokens BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER tokens_delete AFTER DELETE ON tokens BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER tokens_update AFTER UPDATE OF name, user_id, secret_sha256, expires_at, revoked_at ON tokens
BEGIN UPDATE auth_epoch SET n = n + 1; END;

CREATE TRIGGER token_scopes_insert AFTER INSERT ON token_scopes BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER token_scopes_delete AFTER DELETE ON token_scopes BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER token_scopes_update AFTER UPDATE ON token_scopes BEGIN UPDATE auth_epoch SET n = n + 1; END;

CREATE TRIGGER anonymous_insert AFTER INSERT ON anonymous_pulls BEGIN UPDATE auth_epoch SET n = n + 1; END;
CREATE TRIGGER anonymous_delete AFTER DELETE ON anonymous_pulls BEGIN UPDATE auth_epoch SET n = n + 1; END;
