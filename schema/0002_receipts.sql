-- 0002_receipts: signed receipts of registrations and withdrawals (DESIGN 10,
-- issue 16). `body` is the receipt exactly as signed and returned (compact
-- JSON); it is committed in the same transaction as the change and its audit
-- event, and like the audit log it is never updated or deleted.
CREATE TABLE receipts (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  shard_id   INTEGER NOT NULL,
  event_id   INTEGER NOT NULL,
  body       TEXT NOT NULL CHECK (json_valid(body) AND json_type(body) = 'object'),
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX receipts_shard ON receipts (shard_id);
CREATE TRIGGER receipts_no_update BEFORE UPDATE ON receipts
BEGIN
  SELECT RAISE(ABORT, 'receipts: rows are never changed');
END;
CREATE TRIGGER receipts_no_delete BEFORE DELETE ON receipts
BEGIN
  SELECT RAISE(ABORT, 'receipts: rows are never deleted');
END;
