-- Campaign lifecycle, idempotent single sends, contacts, lists and segments.
--
-- A campaign's status lives in its row, so a status change is one conditional UPDATE
-- and of several callers racing exactly one matches (the losers wait for the row
-- lock, then find the status changed). Campaigns stored before this migration were
-- sent as soon as they were created: they become `running`, their status dated from
-- their creation. status_at, scheduled_at and every time of the new tables are engine
-- values (BIGINT milliseconds since the Unix epoch, passed in).
--
-- 0001 created placeholder contacts, lists, list_members and segments tables that
-- nothing ever wrote. They are replaced by tables keyed the way the store methods
-- use them (contacts by tenant and address, engine times); should they hold rows
-- written by hand, the migration stops rather than drop them.

ALTER TABLE campaigns
    ADD COLUMN status TEXT COLLATE "C" NOT NULL DEFAULT 'running'
        CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'cancelled')),
    ADD COLUMN scheduled_at BIGINT,
    ADD COLUMN status_at BIGINT;
UPDATE campaigns SET status_at = floor(extract(epoch FROM created_at) * 1000)::bigint;
ALTER TABLE campaigns ALTER COLUMN status_at SET NOT NULL;

-- Due scheduled campaigns and running ones to launch.
CREATE INDEX campaigns_by_status ON campaigns (status, scheduled_at);

-- Recipients waiting for their campaign to run. seq is the staging order; staging a
-- message id again takes a new seq, so the row moves to the end.
CREATE TABLE staged_recipients (
    message_id UUID   NOT NULL PRIMARY KEY,
    campaign   UUID   NOT NULL REFERENCES campaigns (id),
    email      TEXT   NOT NULL,
    -- the recipient's variables as a JSON object of strings, an opaque payload here
    vars       TEXT   NOT NULL,
    state      TEXT COLLATE "C" NOT NULL CHECK (state IN ('pending', 'launched')),
    seq        BIGSERIAL NOT NULL
);

CREATE INDEX staged_by_campaign ON staged_recipients (campaign, state, seq);

-- Single sends under a caller's idempotency key: the first request with a key stores
-- its send; repeats read it back.
CREATE TABLE idempotent_sends (
    tenant      TEXT COLLATE "C" NOT NULL,
    idem_key    TEXT COLLATE "C" NOT NULL,
    campaign    UUID    NOT NULL,
    message_id  UUID    NOT NULL,
    email       TEXT    NOT NULL,
    fingerprint BYTEA   NOT NULL CHECK (octet_length(fingerprint) = 32),
    accepted_at BIGINT  NOT NULL,
    enqueued    BOOLEAN NOT NULL,
    PRIMARY KEY (tenant, idem_key)
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM list_members) OR EXISTS (SELECT 1 FROM lists)
       OR EXISTS (SELECT 1 FROM contacts) OR EXISTS (SELECT 1 FROM segments) THEN
        RAISE EXCEPTION 'contacts, lists, list_members or segments hold rows no store method wrote; move them away before migrating';
    END IF;
END
$$;

DROP TABLE list_members;
DROP TABLE lists;
DROP TABLE segments;
DROP TABLE contacts;

CREATE TABLE contacts (
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    email      TEXT COLLATE "C" NOT NULL,
    attributes JSONB  NOT NULL CHECK (jsonb_typeof(attributes) = 'object'),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, email)
);

CREATE TABLE lists (
    id         UUID   NOT NULL PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, id)
);

CREATE INDEX lists_by_tenant ON lists (tenant, created_at, id);

-- Memberships carry the tenant in both foreign keys, so a list can only hold
-- contacts of its own tenant; deleting a list or a contact deletes its memberships.
CREATE TABLE list_members (
    tenant  TEXT COLLATE "C" NOT NULL,
    list_id UUID NOT NULL,
    email   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (tenant, list_id, email),
    FOREIGN KEY (tenant, list_id) REFERENCES lists (tenant, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant, email) REFERENCES contacts (tenant, email) ON DELETE CASCADE
);

CREATE INDEX list_members_by_contact ON list_members (tenant, email);

-- Saved filters: `filter` is the engine's expression as written (never parsed by
-- SQL); list_id, when set, restricts it to one list's members. It is not a foreign
-- key: a segment outlives the list it names, and finds it gone.
CREATE TABLE segments (
    id         UUID   NOT NULL PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name       TEXT   NOT NULL,
    list_id    UUID,
    filter     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX segments_by_tenant ON segments (tenant, created_at, id);
