-- Suppressions ignore the case of the whole address (EmailAddress::mailbox_key): rows
-- that differ only in case become one lower-cased row keeping the oldest reason.
DELETE FROM suppressions
WHERE EXISTS (
    SELECT 1 FROM suppressions t
    WHERE t.tenant = suppressions.tenant
      AND lower(t.email) = lower(suppressions.email)
      AND t.email <> suppressions.email
      AND (t.created_at < suppressions.created_at
           OR (t.created_at = suppressions.created_at AND t.email < suppressions.email))
);

UPDATE suppressions SET email = lower(email) WHERE email <> lower(email);
