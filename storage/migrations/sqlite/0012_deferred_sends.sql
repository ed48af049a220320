-- Sends held back from their sender's window until a due time, because their
-- destination's limits would have kept them waiting (a throttled domain): each row is
-- one send record, with the key of the log record it came in, owned by the sender of
-- its partition. `taken` marks rows that sender has taken back into its window; a new
-- owner of the partition releases them all when it starts. A row goes once its
-- message is delivered, bounced, deferred to a retry tier or rejected.
CREATE TABLE deferred_sends (
    message_id  TEXT    NOT NULL PRIMARY KEY,
    part        INTEGER NOT NULL CHECK (part BETWEEN 0 AND 4294967295),
    destination TEXT    NOT NULL,
    due_at      INTEGER NOT NULL,
    taken       INTEGER NOT NULL DEFAULT 0 CHECK (taken IN (0, 1)),
    record_key  BLOB    NOT NULL,
    payload     BLOB    NOT NULL
) WITHOUT ROWID;
CREATE INDEX deferred_sends_due ON deferred_sends (part, taken, due_at);
