-- berth schema 4: a random stamp per user and per robot token, drawn anew whenever what a
-- bearer token stood for ends: a password change, a disable or an enable, a token rotation.
-- Bearer tokens carry the stamp of their holder and are refused when it differs, so a token
-- outlives none of these, and a new holder that gets a deleted one's row id (SQLite may
-- reuse the largest id) never matches a token issued to the old one.

ALTER TABLE users ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;
UPDATE users SET stamp = random();
ALTER TABLE tokens ADD COLUMN stamp INTEGER NOT NULL DEFAULT 0;
UPDATE tokens SET stamp = random();
