-- Sending domains: a tenant may send From addresses of a domain it registered and
-- verified. A domain belongs to one tenant. Times are engine milliseconds.
CREATE TABLE tenant_domains (
    domain      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    tenant      TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    token       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    verified_at BIGINT
);

CREATE INDEX tenant_domains_by_tenant ON tenant_domains (tenant, domain);
