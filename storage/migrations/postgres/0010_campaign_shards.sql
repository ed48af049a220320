-- Campaign shards. A campaign's recipients are launched under `shards` partition keys
-- (0 until the launcher first launches it; fixed from then on, so a message is always
-- produced under the same key), and its stats are kept per part: each analytics
-- partition that sees the campaign's events owns one row, and a campaign's figures are
-- the sum of its rows. Rows written before parts existed become part 0, which the
-- sum keeps counting.
ALTER TABLE campaigns ADD COLUMN shards INTEGER NOT NULL DEFAULT 0
    CHECK (shards BETWEEN 0 AND 65535);

ALTER TABLE campaign_stats ADD COLUMN part BIGINT NOT NULL DEFAULT 0
    CHECK (part BETWEEN 0 AND 4294967295);
ALTER TABLE campaign_stats DROP CONSTRAINT campaign_stats_pkey;
ALTER TABLE campaign_stats ADD PRIMARY KEY (campaign, part);
