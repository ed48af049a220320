-- Retention: when a staged recipient was launched and when a message's state last
-- changed (milliseconds since the epoch, like keyed sends' accepted_at), indexed with
-- keyed sends' acceptance so the leader deletes old rows without scanning. Rows from
-- before this migration count from now.
ALTER TABLE staged_recipients ADD COLUMN launched_at BIGINT;
UPDATE staged_recipients SET launched_at = floor(extract(epoch FROM now()) * 1000)::bigint
    WHERE state = 'launched';
CREATE INDEX staged_by_launch ON staged_recipients (launched_at) WHERE state = 'launched';

ALTER TABLE messages ADD COLUMN updated_at BIGINT NOT NULL
    DEFAULT floor(extract(epoch FROM now()) * 1000)::bigint;
CREATE INDEX messages_by_age ON messages (updated_at);

CREATE INDEX idempotent_sends_by_age ON idempotent_sends (accepted_at);
