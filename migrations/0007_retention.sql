-- berth schema 7: retention policies (edited with `berth retention`, later the web UI) and
-- the record of each retention run, real or preview.
CREATE TABLE retention_policies (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE retention_runs (
    id          INTEGER PRIMARY KEY,
    trigger     TEXT NOT NULL,
    dry_run     INTEGER NOT NULL CHECK (dry_run IN (0, 1)),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    deleted     INTEGER NOT NULL,
    report      TEXT NOT NULL
) STRICT;
