-- berth schema 10: the pull-through cache.
--
-- A cached image manifest is stored as soon as a client asks for it, before its blobs: the
-- client fetches those next, one at a time, and berth fetches each from the upstream only
-- when it is asked for. A reference to a blob berth does not hold yet waits here, and moves
-- to `manifest_blobs` in the transaction that records the blob; garbage collection counts
-- only `manifest_blobs`, so nothing here keeps or frees anything.
CREATE TABLE cache_pending (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    digest      TEXT NOT NULL,
    PRIMARY KEY (manifest_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX cache_pending_digest ON cache_pending(digest);

-- When the upstream last confirmed what a cached tag points at: within the upstream's check
-- interval the tag is served without asking. NULL for tags pushed to berth.
ALTER TABLE tags ADD COLUMN checked_at INTEGER;

-- The upstream a manifest was fetched from (its name in the configuration); NULL for what
-- was pushed or imported. An index fetched from an upstream lists children berth fetches only
-- when a client asks for them: a missing child is expected there, not damage.
ALTER TABLE manifests ADD COLUMN upstream TEXT;
