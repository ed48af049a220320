-- API keys: the credentials tenants use on the public APIs.
--
-- Only a hash of each key's secret is stored (secret_hash, 32 bytes); the secret is
-- shown once when the key is created and never kept. A key is never deleted, only
-- revoked (revoked_at set), so its id is never reused and audit trails stay readable.
-- scopes is a JSON array of scope names; timestamps are milliseconds since the Unix
-- epoch, as the engine passes them.

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant       TEXT    NOT NULL REFERENCES tenants (id),
    name         TEXT    NOT NULL,
    scopes       TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL CHECK (length(secret_hash) = 32),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) WITHOUT ROWID;

CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id);
