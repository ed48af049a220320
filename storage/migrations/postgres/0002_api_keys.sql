-- API keys: the credentials tenants use on the public APIs, now with store methods.
--
-- 0001 created a placeholder `api_keys` table (looked up by the hash of the whole
-- presented secret, UUID ids, TIMESTAMPTZ times) that nothing ever wrote. Keys are now
-- `mly_<id>_<secret>`: looked up by their public id and the secret's hash compared in
-- constant time, so the id is text and the hash needs no unique index. The placeholder
-- is replaced; should it hold rows written by hand, the migration stops rather than
-- drop them.
--
-- Only a hash of each key's secret is stored (secret_hash, 32 bytes); the secret is
-- shown once when the key is created and never kept. A key is never deleted, only
-- revoked (revoked_at set), so its id is never reused and audit trails stay readable.
-- The timestamps are engine values (passed in by the API), so they are BIGINT
-- milliseconds since the Unix epoch like the other engine times.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM api_keys) THEN
        RAISE EXCEPTION 'api_keys holds rows no store method wrote; move them away before migrating';
    END IF;
END
$$;

DROP TABLE api_keys;

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant       TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name         TEXT   NOT NULL,
    scopes       TEXT[] NOT NULL,
    secret_hash  BYTEA  NOT NULL CHECK (octet_length(secret_hash) = 32),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id);
