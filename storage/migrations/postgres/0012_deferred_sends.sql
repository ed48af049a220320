-- Sends held back from their sender's window until a due time, because their
-- destination's limits would have kept them waiting (a throttled domain): each row is
-- one send record, with the key of the log record it came in, owned by the sender of
-- its partition. `taken` marks rows that sender has taken back into its window; a new
-- owner of the partition releases them all when it starts. A row goes once its
-- message is delivered, bounced, deferred to a retry tier or rejected.
CREATE TABLE deferred_sends (
    message_id  UUID    PRIMARY KEY,
    part        BIGINT  NOT NULL CHECK (part BETWEEN 0 AND 4294967295),
    destination TEXT    COLLATE "C" NOT NULL,
    due_at      BIGINT  NOT NULL,
    taken       BOOLEAN NOT NULL DEFAULT false,
    record_key  BYTEA   NOT NULL,
    payload     BYTEA   NOT NULL
);
CREATE INDEX deferred_sends_due ON deferred_sends (part, taken, due_at);
