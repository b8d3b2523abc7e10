-- stamps registry schema, version 1.
-- Every object lives in the registry's schema ({schema} is replaced by its quoted name).
-- Timestamps are milliseconds since the Unix epoch (the crate's injected Clock); amounts are
-- exact thousandths of a unit ("milli") keyed by resource name.

-- The change-feed counter: one row. Every writing transaction increments it and so holds its
-- row lock until commit, which orders commits by version: a poller reading `version > last`
-- can never see a version before a smaller one commits.
CREATE TABLE {schema}.feed (
    id   smallint PRIMARY KEY CHECK (id = 1),
    head bigint   NOT NULL CHECK (head >= 0)
);
INSERT INTO {schema}.feed (id, head) VALUES (1, 0);

CREATE TABLE {schema}.stamps (
    id               bigint  PRIMARY KEY CHECK (id BETWEEN 0 AND 4294967295),
    name             text    NOT NULL,
    region           text    NOT NULL,
    residency        text,
    tier             text    NOT NULL,
    labels           jsonb   NOT NULL DEFAULT '{}',
    deployed_version text,
    endpoint         text,
    limits_milli     jsonb   NOT NULL,
    headroom_ppm     bigint  NOT NULL CHECK (headroom_ppm BETWEEN 0 AND 999999),
    state            text    NOT NULL
        CHECK (state IN ('provisioning', 'active', 'draining', 'decommissioned')),
    -- What the stamp's tenants use (serving and reserved by migrations), kept by the same
    -- transaction that changes an assignment, under this row's lock.
    usage_milli      jsonb   NOT NULL DEFAULT '{}',
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL
);

-- One row per assigned tenant (one home). COLLATE "C" makes tenant order byte order, the
-- order of the in-memory registry and of paging by tenant id.
CREATE TABLE {schema}.assignments (
    tenant       text COLLATE "C" PRIMARY KEY,
    stamp_id     bigint NOT NULL REFERENCES {schema}.stamps (id),
    epoch        bigint NOT NULL CHECK (epoch > 0),
    mode         text   NOT NULL CHECK (mode IN ('serving', 'dual_write', 'frozen')),
    shadow_id    bigint REFERENCES {schema}.stamps (id),
    frozen_until bigint,
    -- The tenant spec as admitted.
    region       text,
    residency    text,
    tier         text   NOT NULL,
    pin_stamp_id bigint,
    demand_milli jsonb  NOT NULL DEFAULT '{}',
    labels       jsonb  NOT NULL DEFAULT '{}',
    assigned_at  bigint NOT NULL,
    updated_at   bigint NOT NULL,
    CHECK (shadow_id IS NULL OR shadow_id <> stamp_id),
    CHECK ((mode = 'frozen') = (frozen_until IS NOT NULL)),
    CHECK (mode <> 'dual_write' OR shadow_id IS NOT NULL),
    CHECK (mode <> 'serving' OR shadow_id IS NULL)
);
-- Tenants of a stamp (drain, rebalance, audits) and reservations held by migrations.
CREATE INDEX assignments_stamp_idx ON {schema}.assignments (stamp_id);
CREATE INDEX assignments_shadow_idx ON {schema}.assignments (shadow_id) WHERE shadow_id IS NOT NULL;
-- Pins (overrides): tenants pinned to a stamp.
CREATE INDEX assignments_pin_idx ON {schema}.assignments (pin_stamp_id) WHERE pin_stamp_id IS NOT NULL;

-- Append-only history of every assignment write.
CREATE TABLE {schema}.assignment_history (
    version      bigint PRIMARY KEY,
    tenant       text COLLATE "C" NOT NULL,
    at           bigint NOT NULL,
    action       text   NOT NULL
        CHECK (action IN ('assigned', 'moved', 'mode_changed', 'resized', 'unassigned')),
    from_stamp   bigint,
    to_stamp     bigint,
    epoch        bigint NOT NULL,
    mode         text   NOT NULL,
    shadow_id    bigint,
    frozen_until bigint,
    actor        text
);
CREATE INDEX assignment_history_tenant_idx ON {schema}.assignment_history (tenant, version);

CREATE FUNCTION {schema}.reject_history_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'assignment history is append-only' USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER assignment_history_append_only
    BEFORE UPDATE OR DELETE ON {schema}.assignment_history
    FOR EACH ROW EXECUTE FUNCTION {schema}.reject_history_change();
-- stamps:optional truncate_trigger (Portability::truncate_trigger)
CREATE TRIGGER assignment_history_no_truncate
    BEFORE TRUNCATE ON {schema}.assignment_history
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.reject_history_change();
-- stamps:end optional

-- The change feed: one row per write to a stamp or an assignment, gap-free versions.
-- `payload` is the stamp or assignment row after the write (NULL when a tenant was
-- unassigned); followers read `version > $cursor ORDER BY version` on the primary key.
CREATE TABLE {schema}.changes (
    version  bigint PRIMARY KEY,
    at       bigint NOT NULL,
    kind     text   NOT NULL CHECK (kind IN ('assignment', 'stamp')),
    tenant   text COLLATE "C",
    stamp_id bigint,
    payload  jsonb,
    CHECK ((kind = 'assignment') = (tenant IS NOT NULL))
);

-- Tenant migration records, saved with optimistic concurrency on `revision`.
CREATE TABLE {schema}.tenant_migrations (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant         text COLLATE "C" NOT NULL,
    source_id      bigint NOT NULL REFERENCES {schema}.stamps (id),
    destination_id bigint NOT NULL REFERENCES {schema}.stamps (id),
    state          text   NOT NULL,
    revision       bigint NOT NULL CHECK (revision > 0),
    data           jsonb  NOT NULL DEFAULT '{}',
    created_at     bigint NOT NULL,
    updated_at     bigint NOT NULL,
    CHECK (source_id <> destination_id)
);
CREATE INDEX tenant_migrations_tenant_idx ON {schema}.tenant_migrations (tenant, id);
-- At most one migration in progress per tenant.
CREATE UNIQUE INDEX tenant_migrations_one_active ON {schema}.tenant_migrations (tenant)
    WHERE state NOT IN ('completed', 'cancelled', 'rolled_back', 'failed');
