-- Each sending domain gets the tenant's own DKIM key, made when it is registered,
-- and may get a return-path domain and a tracking host of its own.
-- The four columns are set together or not at all (domains registered before keys).
ALTER TABLE tenant_domains ADD COLUMN dkim_selector TEXT;
ALTER TABLE tenant_domains ADD COLUMN dkim_algorithm TEXT;
ALTER TABLE tenant_domains ADD COLUMN dkim_key TEXT;
ALTER TABLE tenant_domains ADD COLUMN dkim_record TEXT;
-- The tenant's own return-path domain (<label>.<domain>), once its MX was seen.
ALTER TABLE tenant_domains ADD COLUMN return_path TEXT;
-- The tenant's own tracking host (<label>.<domain>), once its CNAME was seen.
ALTER TABLE tenant_domains ADD COLUMN tracking_host TEXT;
