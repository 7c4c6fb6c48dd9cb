-- 0003_audit_chain: the audit log as a hash chain (DESIGN 10, issue 16).
-- Every event from now on stores the hash of the event before it and its own
-- hash (server/proofs/chain.h); events written before this migration (id <=
-- legacy_max_id) stay unchained. audit_checkpoints holds the signed head of
-- the chain at each soup change; append-only like the log itself.
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
CREATE TABLE audit_chain (
  id            INTEGER PRIMARY KEY CHECK (id = 1),
  legacy_max_id INTEGER NOT NULL
);
INSERT INTO audit_chain (id, legacy_max_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;
CREATE TABLE audit_checkpoints (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id   INTEGER NOT NULL,
  head_hash  TEXT NOT NULL,
  body       TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object')
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
  SELECT RAISE(ABORT, 'audit_checkpoints: append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
  SELECT RAISE(ABORT, 'audit_checkpoints: append-only');
END;
