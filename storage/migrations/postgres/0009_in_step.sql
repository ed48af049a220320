-- No change. SQLite's schema took one more migration than Postgres' early on (its
-- leases came in 0002), so the numbers drifted; this one brings Postgres to the same
-- number, and from here on a change has one number in both dialects.
SELECT 1;
