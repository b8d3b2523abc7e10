-- Ephemeral stamps and tenants: a stamp's teardown time (NULL: long-lived) and whether a
-- tenant is ephemeral (the only kind an ephemeral stamp takes).
ALTER TABLE {schema}.stamps ADD COLUMN expires_at bigint;
ALTER TABLE {schema}.assignments ADD COLUMN ephemeral boolean NOT NULL DEFAULT false;
