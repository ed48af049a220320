-- Campaign lifecycle, idempotent single sends, contacts, lists and segments.
--
-- A campaign's status lives in its row, so a status change is one conditional UPDATE
-- and of several callers racing exactly one matches. Campaigns stored before this
-- migration were sent as soon as they were created: they become `running`, their
-- status dated from their creation. status_at, scheduled_at and every time of the
-- new tables are engine values (milliseconds since the Unix epoch, passed in).

ALTER TABLE campaigns ADD COLUMN status TEXT NOT NULL DEFAULT 'running'
    CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'cancelled'));
ALTER TABLE campaigns ADD COLUMN scheduled_at INTEGER;
ALTER TABLE campaigns ADD COLUMN status_at INTEGER NOT NULL DEFAULT 0;
UPDATE campaigns SET status_at = created_at;

-- Due scheduled campaigns and running ones to launch.
CREATE INDEX campaigns_by_status ON campaigns (status, scheduled_at);

-- Recipients waiting for their campaign to run. seq is the staging order: the rowid,
-- AUTOINCREMENT so a number is never reused. Staging a message id again replaces its
-- row (REPLACE deletes and inserts), which gives it a new, last seq. message_id is
-- the key the engine uses; seq only orders.
CREATE TABLE staged_recipients (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT    NOT NULL UNIQUE,
    campaign   TEXT    NOT NULL REFERENCES campaigns (id),
    email      TEXT    NOT NULL,
    -- the recipient's variables as a JSON object of strings
    vars       TEXT    NOT NULL,
    state      TEXT    NOT NULL CHECK (state IN ('pending', 'launched'))
);

-- Every index ends with the rowid, so this one also gives a state's rows in seq order.
CREATE INDEX staged_by_campaign ON staged_recipients (campaign, state);

-- Single sends under a caller's idempotency key: the first request with a key stores
-- its send; repeats read it back.
CREATE TABLE idempotent_sends (
    tenant      TEXT    NOT NULL,
    idem_key    TEXT    NOT NULL,
    campaign    TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL CHECK (length(fingerprint) = 32),
    accepted_at INTEGER NOT NULL,
    enqueued    INTEGER NOT NULL CHECK (enqueued IN (0, 1)),
    PRIMARY KEY (tenant, idem_key)
) WITHOUT ROWID;

-- A tenant's contacts; attributes is a JSON object of strings.
CREATE TABLE contacts (
    tenant     TEXT    NOT NULL REFERENCES tenants (id),
    email      TEXT    NOT NULL,
    attributes TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, email)
) WITHOUT ROWID;

CREATE TABLE lists (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (tenant, id)
) WITHOUT ROWID;

CREATE INDEX lists_by_tenant ON lists (tenant, created_at, id);

-- Memberships carry the tenant in both foreign keys, so a list can only hold
-- contacts of its own tenant; deleting a list or a contact deletes its memberships.
CREATE TABLE list_members (
    tenant  TEXT NOT NULL,
    list_id TEXT NOT NULL,
    email   TEXT NOT NULL,
    PRIMARY KEY (tenant, list_id, email),
    FOREIGN KEY (tenant, list_id) REFERENCES lists (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, email) REFERENCES contacts (tenant, email) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE INDEX list_members_by_contact ON list_members (tenant, email);

-- Saved filters: `filter` is the engine's expression as written (never parsed by
-- SQL); list_id, when set, restricts it to one list's members. It is not a foreign
-- key: a segment outlives the list it names, and finds it gone.
CREATE TABLE segments (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    list_id    TEXT,
    filter     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX segments_by_tenant ON segments (tenant, created_at, id);
