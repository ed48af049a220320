-- The first schema of the SQLite store.
--
-- Conventions: ids are stored as text (tenant slugs, hyphenated lower-case UUIDs, so
-- text order is id order); timestamps are milliseconds since the Unix epoch; u64
-- counters and offsets are INTEGER (checked to fit 63 bits on the way in); u128
-- rewards are decimal TEXT because they do not fit an INTEGER; hashes are 32-byte BLOBs.
--
-- Only structural parent/child links carry foreign keys. The analytics and
-- suppression tables are fed from the event log and must never refuse a flush over a
-- missing parent row, or a consumer would stall on it forever.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE campaigns (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    from_addr  TEXT    NOT NULL,
    from_name  TEXT,
    -- the engine's Template as JSON
    template   TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX campaigns_by_tenant ON campaigns (tenant);

CREATE TABLE consumer_offsets (
    grp         TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, part)
) WITHOUT ROWID;

CREATE TABLE campaign_stats (
    campaign     TEXT    NOT NULL PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    injected     INTEGER NOT NULL,
    delivered    INTEGER NOT NULL,
    deferred     INTEGER NOT NULL,
    bounced_hard INTEGER NOT NULL,
    bounced_soft INTEGER NOT NULL,
    expired      INTEGER NOT NULL,
    opened       INTEGER NOT NULL,
    clicked      INTEGER NOT NULL,
    unsubscribed INTEGER NOT NULL,
    complained   INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    suppressed   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE messages (
    message_id TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    campaign   TEXT    NOT NULL,
    recipient  TEXT    NOT NULL,
    mask       INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    detail     TEXT
);

CREATE INDEX messages_by_campaign_status ON messages (campaign, status);

CREATE TABLE suppressions (
    tenant     TEXT    NOT NULL,
    email      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, email)
) WITHOUT ROWID;

CREATE TABLE settlements (
    epoch      INTEGER NOT NULL PRIMARY KEY,
    settled_at INTEGER NOT NULL,
    grp        TEXT    NOT NULL
);

-- The offsets a settlement included, as committed (consumer_offsets moves on later).
CREATE TABLE settlement_offsets (
    epoch       INTEGER NOT NULL REFERENCES settlements (epoch),
    idx         INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    part        INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (epoch, idx)
) WITHOUT ROWID;

CREATE TABLE settlement_entries (
    epoch        INTEGER NOT NULL REFERENCES settlements (epoch),
    campaign     TEXT    NOT NULL,
    -- position in the settlement, so entries come back in the order they were given
    idx          INTEGER NOT NULL,
    tenant       TEXT    NOT NULL,
    injected     INTEGER NOT NULL,
    delivered    INTEGER NOT NULL,
    deferred     INTEGER NOT NULL,
    bounced_hard INTEGER NOT NULL,
    bounced_soft INTEGER NOT NULL,
    expired      INTEGER NOT NULL,
    opened       INTEGER NOT NULL,
    clicked      INTEGER NOT NULL,
    unsubscribed INTEGER NOT NULL,
    complained   INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    suppressed   INTEGER NOT NULL,
    reward_total TEXT    NOT NULL,
    reward_delta TEXT    NOT NULL,
    PRIMARY KEY (epoch, campaign)
) WITHOUT ROWID;

CREATE TABLE ledger (
    epoch INTEGER NOT NULL PRIMARY KEY,
    root  BLOB    NOT NULL CHECK (length(root) = 32),
    prev  BLOB    NOT NULL CHECK (length(prev) = 32),
    hash  BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32),
    at    INTEGER NOT NULL
);

CREATE TABLE anchors (
    chain       TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    root        BLOB    NOT NULL CHECK (length(root) = 32),
    reference   TEXT    NOT NULL,
    anchored_at INTEGER NOT NULL,
    PRIMARY KEY (chain, epoch)
) WITHOUT ROWID;

CREATE TABLE proofs (
    epoch        INTEGER NOT NULL,
    campaign     TEXT    NOT NULL,
    leaf_index   INTEGER NOT NULL,
    root         BLOB    NOT NULL CHECK (length(root) = 32),
    injected     INTEGER NOT NULL,
    delivered    INTEGER NOT NULL,
    deferred     INTEGER NOT NULL,
    bounced_hard INTEGER NOT NULL,
    bounced_soft INTEGER NOT NULL,
    expired      INTEGER NOT NULL,
    opened       INTEGER NOT NULL,
    clicked      INTEGER NOT NULL,
    unsubscribed INTEGER NOT NULL,
    complained   INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    suppressed   INTEGER NOT NULL,
    reward_total TEXT    NOT NULL,
    -- sibling hashes from the leaf up, concatenated 32 bytes each
    proof        BLOB    NOT NULL CHECK (length(proof) % 32 = 0),
    PRIMARY KEY (epoch, campaign)
) WITHOUT ROWID;
