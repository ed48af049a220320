-- Transactions sent to EVM chains and not yet confirmed, one per chain (or
-- "<chain>/rewards") and epoch. Written before the transaction is broadcast and
-- deleted once it is confirmed, so an engine that restarts in between finds it and
-- waits for it instead of sending a second one. hashes holds every version's 32-byte
-- hash back to back (resubmissions with higher fees share the nonce); raw is the
-- latest version as signed.
CREATE TABLE chain_submissions (
    chain    TEXT    NOT NULL,
    epoch    INTEGER NOT NULL CHECK (epoch >= 0),
    nonce    INTEGER NOT NULL CHECK (nonce >= 0),
    hashes   BLOB    NOT NULL CHECK (length(hashes) % 32 = 0),
    raw      BLOB    NOT NULL,
    saved_at INTEGER NOT NULL,
    PRIMARY KEY (chain, epoch)
) WITHOUT ROWID;
