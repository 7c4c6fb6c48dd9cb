-- 0001_init.sql: the first registry schema (server/registry/registry.h).
-- Migrations are append-only: never edit a released file, add NNNN_what.sql.
-- Each file runs inside one transaction with its user_version bump
-- (server/registry/migrate.c): no BEGIN/COMMIT or PRAGMA journal_mode here.
-- Invariants enforced here, not only in C:
--   * at most one ACTIVE shard per name and per sha256 (partial unique indexes);
--   * shard rows are never deleted, and a withdrawn row is final;
--   * events and soup_versions are append-only (UPDATE/DELETE raise ABORT);
--   * soup versions strictly increase;
--   * tokens store only the SHA-256 of the token, never the token.
-- Times: RFC 3339 UTC with milliseconds.

CREATE TABLE shards (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  name            TEXT NOT NULL CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 128),
  provider        TEXT NOT NULL CHECK (length(CAST(provider AS BLOB)) BETWEEN 1 AND 128),
  status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn')),
  weight_q        INTEGER NOT NULL CHECK (typeof(weight_q) = 'integer' AND weight_q > 0),
  sha256          TEXT NOT NULL CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
  size_bytes      INTEGER NOT NULL CHECK (typeof(size_bytes) = 'integer' AND size_bytes >= 0),
  dtype           TEXT NOT NULL,
  tensors         INTEGER NOT NULL CHECK (typeof(tensors) = 'integer' AND tensors >= 0),
  params          INTEGER NOT NULL CHECK (typeof(params) = 'integer' AND params >= 0),
  description     TEXT NOT NULL DEFAULT '',
  metadata        TEXT NOT NULL DEFAULT '{}'
                  CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
  created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  withdrawn_at    TEXT,
  withdraw_reason TEXT,
  CHECK ((status = 'active') = (withdrawn_at IS NULL))
);
CREATE UNIQUE INDEX shards_active_name ON shards (name) WHERE status = 'active';
CREATE UNIQUE INDEX shards_active_sha256 ON shards (sha256) WHERE status = 'active';
CREATE INDEX shards_provider ON shards (provider);

CREATE TRIGGER shards_no_delete BEFORE DELETE ON shards
BEGIN
  SELECT RAISE(ABORT, 'shards: rows are never deleted');
END;
CREATE TRIGGER shards_withdrawn_final BEFORE UPDATE ON shards
WHEN OLD.status = 'withdrawn'
BEGIN
  SELECT RAISE(ABORT, 'shards: a withdrawn shard is final');
END;
CREATE TRIGGER shards_identity_immutable BEFORE UPDATE ON shards
WHEN NEW.id IS NOT OLD.id OR NEW.name IS NOT OLD.name OR NEW.provider IS NOT OLD.provider
  OR NEW.sha256 IS NOT OLD.sha256 OR NEW.size_bytes IS NOT OLD.size_bytes
  OR NEW.dtype IS NOT OLD.dtype OR NEW.tensors IS NOT OLD.tensors
  OR NEW.params IS NOT OLD.params OR NEW.created_at IS NOT OLD.created_at
BEGIN
  SELECT RAISE(ABORT, 'shards: identity columns are immutable');
END;

CREATE TABLE tokens (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  token_hash TEXT NOT NULL UNIQUE
             CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
  role       TEXT NOT NULL CHECK (role IN ('admin', 'provider', 'client')),
  provider   TEXT CHECK ((role = 'provider') = (provider IS NOT NULL)),
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  revoked_at TEXT
);
CREATE TRIGGER tokens_no_delete BEFORE DELETE ON tokens
BEGIN
  SELECT RAISE(ABORT, 'tokens: rows are never deleted (revoke instead)');
END;

-- The audit log (reliability.md, "Unlearning and audit"). No foreign keys:
-- a denied attempt may name a shard that does not exist.
CREATE TABLE events (
  id                  INTEGER PRIMARY KEY AUTOINCREMENT,
  at                  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  type                TEXT NOT NULL CHECK (length(type) > 0),
  principal           TEXT,
  token_id            INTEGER,
  shard_id            INTEGER,
  sha256              TEXT,
  soup_version_before INTEGER,
  soup_version_after  INTEGER,
  soup_hash_before    TEXT,
  soup_hash_after     TEXT,
  members             TEXT CHECK (members IS NULL
                                  OR (json_valid(members) AND json_type(members) = 'array')),
  base_sha256         TEXT,
  algorithm           TEXT,
  outcome             TEXT NOT NULL CHECK (outcome IN ('ok', 'denied', 'failed')),
  detail              TEXT NOT NULL DEFAULT '{}'
                      CHECK (json_valid(detail) AND json_type(detail) = 'object')
);
CREATE INDEX events_shard ON events (shard_id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
  SELECT RAISE(ABORT, 'events: the audit log is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
  SELECT RAISE(ABORT, 'events: the audit log is append-only');
END;

CREATE TABLE soup_versions (
  version  INTEGER PRIMARY KEY CHECK (version >= 0),
  hash     TEXT NOT NULL CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
  at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  event_id INTEGER REFERENCES events (id),
  members  TEXT NOT NULL DEFAULT '[]'
           CHECK (json_valid(members) AND json_type(members) = 'array')
);
CREATE TRIGGER soup_versions_increase BEFORE INSERT ON soup_versions
WHEN NEW.version <= (SELECT coalesce(max(version), -1) FROM soup_versions)
BEGIN
  SELECT RAISE(ABORT, 'soup_versions: versions must increase');
END;
CREATE TRIGGER soup_versions_no_update BEFORE UPDATE ON soup_versions
BEGIN
  SELECT RAISE(ABORT, 'soup_versions: history is append-only');
END;
CREATE TRIGGER soup_versions_no_delete BEFORE DELETE ON soup_versions
BEGIN
  SELECT RAISE(ABORT, 'soup_versions: history is append-only');
END;
