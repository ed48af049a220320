-- Partition ownership: leases fenced by epoch, and engine membership by heartbeat.
--
-- A lease row is never deleted. Releasing one only expires it, so the owner and epoch
-- stay and the next taker still raises the epoch: a fence that was ever valid for a
-- resource can never become valid again once the lease has changed hands.

CREATE TABLE leases (
    resource   TEXT    NOT NULL PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL CHECK (epoch >= 1),
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE members (
    member    TEXT    NOT NULL PRIMARY KEY,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
