-- berth schema 5: what online garbage collection needs.
--
-- A repository's link to a blob carries the last time a client was told the blob is there
-- (upload, mount, HEAD): a link no manifest of its repository uses is kept for a grace period
-- after that, so a client that skipped an upload because of the answer can still push the
-- manifest that references the blob. Blob rows go once no link and no manifest holds them.
ALTER TABLE repository_blobs RENAME COLUMN linked_at TO seen_at;

-- Upload sessions expire by last activity, not by age: a slow upload that keeps sending
-- survives.
ALTER TABLE uploads ADD COLUMN active_at INTEGER NOT NULL DEFAULT 0;
UPDATE uploads SET active_at = created_at;

-- One row per collection, real or dry run; `report` is the JSON report (items capped).
CREATE TABLE gc_runs (
    id          INTEGER PRIMARY KEY,
    trigger     TEXT NOT NULL,
    dry_run     INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    bytes_freed INTEGER NOT NULL,
    report      TEXT NOT NULL
) STRICT;
