-- berth schema 6.
--
-- Who opened each upload session, so that one credential cannot hold an unbounded number of
-- them (`limits.max_upload_sessions`): `u:<id>` a user, `t:<id>` a robot token, `a`
-- anonymous; '' for sessions opened before this schema.
ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
CREATE INDEX uploads_owner ON uploads(owner);

-- When a manifest last lost a tag (the tag moved to another manifest, or was deleted): the
-- untagged grace of garbage collection counts from the latest of push, pull and this, so an
-- image that was `prod` until a minute ago is not collected because it was pushed long ago.
-- Manifests untagged before this schema count from now.
ALTER TABLE manifests ADD COLUMN untagged_at INTEGER;
UPDATE manifests SET untagged_at = unixepoch()
WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = manifests.id);
