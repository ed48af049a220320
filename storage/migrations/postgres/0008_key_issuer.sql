-- The tenant key that issued a key, if one did: revoking it revokes what it issued.
ALTER TABLE api_keys ADD COLUMN issued_by TEXT COLLATE "C";
CREATE INDEX api_keys_by_issuer ON api_keys (issued_by) WHERE issued_by IS NOT NULL;
