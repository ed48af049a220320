-- Suppressions ignore the case of the whole address (EmailAddress::mailbox_key): rows
-- that differ only in case become one lower-cased row keeping the oldest reason.
DELETE FROM suppressions s
USING suppressions t
WHERE s.tenant = t.tenant
  AND lower(s.email) = lower(t.email)
  AND s.email <> t.email
  AND (s.created_at, s.email) > (t.created_at, t.email);

UPDATE suppressions SET email = lower(email) WHERE email <> lower(email);
