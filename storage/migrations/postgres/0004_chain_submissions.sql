-- Transactions sent to EVM chains and not yet confirmed, one per chain (or
-- "<chain>/rewards") and epoch. Written before the transaction is broadcast and
-- deleted once it is confirmed, so an engine that restarts in between finds it and
-- waits for it instead of sending a second one. hashes holds every version's 32-byte
-- hash back to back (resubmissions with higher fees share the nonce); raw is the
-- latest version as signed.
CREATE TABLE chain_submissions (
    chain    TEXT COLLATE "C" NOT NULL,
    epoch    BIGINT      NOT NULL CHECK (epoch >= 0),
    nonce    BIGINT      NOT NULL CHECK (nonce >= 0),
    hashes   BYTEA       NOT NULL CHECK (octet_length(hashes) % 32 = 0),
    raw      BYTEA       NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, epoch)
);
