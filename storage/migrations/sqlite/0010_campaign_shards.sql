-- Campaign shards. A campaign's recipients are launched under `shards` partition keys
-- (0 until the launcher first launches it; fixed from then on, so a message is always
-- produced under the same key), and its stats are kept per part: each analytics
-- partition that sees the campaign's events owns one row, and a campaign's figures are
-- the sum of its rows. Rows written before parts existed become part 0, which the
-- sum keeps counting. SQLite cannot change a primary key in place: the table is
-- rebuilt.
ALTER TABLE campaigns ADD COLUMN shards INTEGER NOT NULL DEFAULT 0
    CHECK (shards BETWEEN 0 AND 65535);

CREATE TABLE campaign_stats_parts (
    campaign     TEXT    NOT NULL,
    part         INTEGER NOT NULL DEFAULT 0 CHECK (part BETWEEN 0 AND 4294967295),
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
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (campaign, part)
);
INSERT INTO campaign_stats_parts (campaign, part, tenant, injected, delivered, deferred,
    bounced_hard, bounced_soft, expired, opened, clicked, unsubscribed, complained,
    rejected, suppressed, updated_at)
SELECT campaign, 0, tenant, injected, delivered, deferred, bounced_hard, bounced_soft,
    expired, opened, clicked, unsubscribed, complained, rejected, suppressed, updated_at
FROM campaign_stats;
DROP TABLE campaign_stats;
ALTER TABLE campaign_stats_parts RENAME TO campaign_stats;
