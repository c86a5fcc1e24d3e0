-- berth schema 1: repositories, content-addressed blobs, manifests and the references between
-- them. Garbage collection and retention are queries over these references: a blob file is
-- garbage when no repository links it and no manifest references it; a manifest is unreachable
-- when no tag points at it and no index lists it.

CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) STRICT;

-- One row per blob file on disk, shared by every repository that links it.
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL CHECK (size >= 0),
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A blob is visible through a repository only once it was pushed or mounted there.
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    linked_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);

-- Manifests are small (4 MiB at most) and kept here, so one read answers a GET.
CREATE TABLE manifests (
    id             INTEGER PRIMARY KEY,
    repository_id  INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    artifact_type  TEXT,
    subject_digest TEXT,
    annotations    TEXT,
    size           INTEGER NOT NULL,
    content        BLOB NOT NULL,
    pushed_at      INTEGER NOT NULL,
    last_pulled_at INTEGER,
    UNIQUE (repository_id, digest)
) STRICT;
-- The referrers API: manifests in a repository whose subject is a given digest.
CREATE INDEX manifests_subject ON manifests(repository_id, subject_digest)
    WHERE subject_digest IS NOT NULL;

-- Config and layer blobs an image manifest references.
CREATE TABLE manifest_blobs (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (manifest_id, digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX manifest_blobs_digest ON manifest_blobs(digest);

-- Child manifests an index lists (by digest, in the same repository).
CREATE TABLE manifest_children (
    manifest_id  INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    child_digest TEXT NOT NULL,
    PRIMARY KEY (manifest_id, child_digest)
) STRICT, WITHOUT ROWID;
CREATE INDEX manifest_children_child ON manifest_children(child_digest);

CREATE TABLE tags (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    manifest_id   INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name)
) STRICT, WITHOUT ROWID;
CREATE INDEX tags_manifest ON tags(manifest_id);

-- Upload sessions in progress. The bytes live in <data>/uploads/<id>; the offset is the
-- file's length, so a session survives a restart.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
