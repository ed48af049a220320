-- The first schema of the Postgres store.
--
-- Conventions: campaign, message and product-entity ids are UUIDs; tenant ids are
-- slugs in TEXT. Identifier and key columns use the "C" collation, so ORDER BY is
-- byte order whatever the database's locale (the same order the SQLite store gives).
-- Timestamps that are engine values (lease expiry, heartbeats, ledger and settlement
-- times) are BIGINT milliseconds since the Unix epoch, exactly the engine's
-- `Timestamp`; bookkeeping times the store sets itself (created_at, updated_at) are
-- TIMESTAMPTZ. u64 counters and offsets are BIGINT (checked to fit 63 bits on the
-- way in); u32 values are BIGINT with a range check; u128 rewards are NUMERIC(39,0);
-- hashes are 32-byte BYTEA.
--
-- Only structural parent/child links carry foreign keys. The analytics and
-- suppression tables are fed from the event log and must never refuse a flush over a
-- missing parent row, or a consumer would stall on it forever.

CREATE TABLE tenants (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id         UUID        NOT NULL PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name       TEXT        NOT NULL,
    from_addr  TEXT        NOT NULL,
    from_name  TEXT,
    -- the engine's Template
    template   JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX campaigns_by_tenant ON campaigns (tenant);

CREATE TABLE consumer_offsets (
    grp         TEXT COLLATE "C" NOT NULL,
    topic       TEXT COLLATE "C" NOT NULL,
    part        BIGINT NOT NULL CHECK (part BETWEEN 0 AND 4294967295),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (grp, topic, part)
);

CREATE TABLE campaign_stats (
    campaign     UUID   NOT NULL PRIMARY KEY,
    tenant       TEXT COLLATE "C" NOT NULL,
    injected     BIGINT NOT NULL,
    delivered    BIGINT NOT NULL,
    deferred     BIGINT NOT NULL,
    bounced_hard BIGINT NOT NULL,
    bounced_soft BIGINT NOT NULL,
    expired      BIGINT NOT NULL,
    opened       BIGINT NOT NULL,
    clicked      BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    complained   BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    suppressed   BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE messages (
    message_id UUID   NOT NULL PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL,
    campaign   UUID   NOT NULL,
    recipient  TEXT   NOT NULL,
    -- bits of EventKind::bit, a u32
    mask       BIGINT NOT NULL CHECK (mask BETWEEN 0 AND 4294967295),
    status     TEXT COLLATE "C" NOT NULL,
    detail     TEXT
);

CREATE INDEX messages_by_campaign_status ON messages (campaign, status);

CREATE TABLE suppressions (
    tenant     TEXT COLLATE "C" NOT NULL,
    email      TEXT COLLATE "C" NOT NULL,
    reason     TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, email)
);

CREATE TABLE settlements (
    epoch      BIGINT NOT NULL PRIMARY KEY CHECK (epoch >= 0),
    settled_at BIGINT NOT NULL,
    grp        TEXT COLLATE "C" NOT NULL
);

-- The offsets a settlement included, as committed (consumer_offsets moves on later).
CREATE TABLE settlement_offsets (
    epoch       BIGINT NOT NULL REFERENCES settlements (epoch),
    idx         BIGINT NOT NULL,
    topic       TEXT COLLATE "C" NOT NULL,
    part        BIGINT NOT NULL CHECK (part BETWEEN 0 AND 4294967295),
    next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
    PRIMARY KEY (epoch, idx)
);

CREATE TABLE settlement_entries (
    epoch        BIGINT NOT NULL REFERENCES settlements (epoch),
    campaign     UUID   NOT NULL,
    -- position in the settlement, so entries come back in the order they were given
    idx          BIGINT NOT NULL,
    tenant       TEXT COLLATE "C" NOT NULL,
    injected     BIGINT NOT NULL,
    delivered    BIGINT NOT NULL,
    deferred     BIGINT NOT NULL,
    bounced_hard BIGINT NOT NULL,
    bounced_soft BIGINT NOT NULL,
    expired      BIGINT NOT NULL,
    opened       BIGINT NOT NULL,
    clicked      BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    complained   BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    suppressed   BIGINT NOT NULL,
    reward_total NUMERIC(39, 0) NOT NULL CHECK (reward_total >= 0),
    reward_delta NUMERIC(39, 0) NOT NULL CHECK (reward_delta >= 0),
    PRIMARY KEY (epoch, campaign)
);

-- `prev` is unique as well as `hash`: two entries chaining onto the same one would be
-- a fork, which append_ledger refuses and this makes impossible.
CREATE TABLE ledger (
    epoch BIGINT NOT NULL PRIMARY KEY CHECK (epoch >= 0),
    root  BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    prev  BYTEA  NOT NULL UNIQUE CHECK (octet_length(prev) = 32),
    hash  BYTEA  NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    at    BIGINT NOT NULL
);

CREATE TABLE anchors (
    chain       TEXT COLLATE "C" NOT NULL,
    epoch       BIGINT      NOT NULL CHECK (epoch >= 0),
    root        BYTEA       NOT NULL CHECK (octet_length(root) = 32),
    reference   TEXT        NOT NULL,
    anchored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, epoch)
);

CREATE TABLE proofs (
    epoch        BIGINT NOT NULL CHECK (epoch >= 0),
    campaign     UUID   NOT NULL,
    leaf_index   BIGINT NOT NULL CHECK (leaf_index BETWEEN 0 AND 4294967295),
    root         BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    injected     BIGINT NOT NULL,
    delivered    BIGINT NOT NULL,
    deferred     BIGINT NOT NULL,
    bounced_hard BIGINT NOT NULL,
    bounced_soft BIGINT NOT NULL,
    expired      BIGINT NOT NULL,
    opened       BIGINT NOT NULL,
    clicked      BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    complained   BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    suppressed   BIGINT NOT NULL,
    reward_total NUMERIC(39, 0) NOT NULL CHECK (reward_total >= 0),
    -- sibling hashes from the leaf up, concatenated 32 bytes each
    proof        BYTEA  NOT NULL CHECK (octet_length(proof) % 32 = 0),
    PRIMARY KEY (epoch, campaign)
);

-- Partition ownership: leases fenced by epoch, and engine membership by heartbeat.
--
-- A lease row is never deleted. Releasing one only expires it, so the owner and epoch
-- stay and the next taker still raises the epoch: a fence that was ever valid for a
-- resource can never become valid again once the lease has changed hands.
CREATE TABLE leases (
    resource   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    owner      TEXT COLLATE "C" NOT NULL,
    epoch      BIGINT NOT NULL CHECK (epoch >= 1),
    expires_at BIGINT NOT NULL
);

CREATE TABLE members (
    member    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    last_seen BIGINT NOT NULL
);

-- Product tables with no store methods yet, created now so their shape is fixed.
--
-- Every row belongs to a tenant. Lists, contacts and their memberships carry the
-- tenant in their keys so that a membership can only join a list and a contact of the
-- same tenant: isolation is a constraint, not a convention.

-- API credentials. Only a hash of the secret is stored; a key is looked up by the
-- hash of what the client presents, hence the unique index.
CREATE TABLE api_keys (
    id          UUID        NOT NULL PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name        TEXT        NOT NULL,
    secret_hash BYTEA       NOT NULL UNIQUE CHECK (octet_length(secret_hash) >= 16),
    scopes      TEXT[]      NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- set once; a revoked key is kept so audit trails can still name it
    revoked_at  TIMESTAMPTZ
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant);

CREATE TABLE contacts (
    id         UUID        NOT NULL PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    email      TEXT COLLATE "C" NOT NULL,
    attributes JSONB       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, email),
    UNIQUE (tenant, id)
);

CREATE TABLE lists (
    id         UUID        NOT NULL PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name       TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, name),
    UNIQUE (tenant, id)
);

CREATE TABLE list_members (
    tenant   TEXT COLLATE "C" NOT NULL,
    list     UUID        NOT NULL,
    contact  UUID        NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (list, contact),
    FOREIGN KEY (tenant, list) REFERENCES lists (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, contact) REFERENCES contacts (tenant, id) ON DELETE CASCADE
);

-- "Which lists is this contact on", and deleting a contact, without a full scan.
CREATE INDEX list_members_by_contact ON list_members (contact);

-- A saved audience: contacts matching `filter`, an expression over their attributes
-- in the product's filter language (parsed by the engine, never by SQL).
CREATE TABLE segments (
    id         UUID        NOT NULL PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name       TEXT        NOT NULL,
    filter     TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, name)
);
