-- Operators' standing directives as tables: per-tenant pins and per-stamp routing overrides,
-- each written with who decided and why; and that reason in the assignment history.
CREATE TABLE {schema}.pins (
    tenant   text COLLATE "C" PRIMARY KEY,
    stamp_id bigint NOT NULL CHECK (stamp_id BETWEEN 0 AND 4294967295),
    actor    text   NOT NULL,
    reason   text   NOT NULL,
    at       bigint NOT NULL,
    version  bigint NOT NULL
);
-- Pins that assignments carried before pins were a table.
INSERT INTO {schema}.pins (tenant, stamp_id, actor, reason, at, version)
SELECT tenant, pin_stamp_id, 'assign', 'pinned by its assignment', updated_at, epoch
FROM {schema}.assignments WHERE pin_stamp_id IS NOT NULL;

-- Every override write (sets and clears), keyed by its feed version; the override in force
-- for a stamp is its newest row, when that row has a target.
CREATE TABLE {schema}.route_overrides (
    version  bigint PRIMARY KEY,
    stamp_id bigint NOT NULL REFERENCES {schema}.stamps (id),
    to_stamp bigint REFERENCES {schema}.stamps (id),
    applies  text CHECK (applies IN ('always', 'while_unhealthy')),
    actor    text   NOT NULL,
    reason   text   NOT NULL,
    at       bigint NOT NULL,
    CHECK ((to_stamp IS NULL) = (applies IS NULL)),
    CHECK (to_stamp IS DISTINCT FROM stamp_id)
);
CREATE INDEX route_overrides_stamp_idx ON {schema}.route_overrides (stamp_id, version);

ALTER TABLE {schema}.assignment_history
    ADD COLUMN reason text,
    DROP CONSTRAINT IF EXISTS assignment_history_action_check,
    ADD CONSTRAINT assignment_history_action_check CHECK (action IN (
        'assigned', 'moved', 'mode_changed', 'resized', 'unassigned', 'pinned', 'unpinned', 'repaired'));

ALTER TABLE {schema}.changes
    DROP CONSTRAINT IF EXISTS changes_kind_check,
    DROP CONSTRAINT IF EXISTS changes_check,
    ADD CONSTRAINT changes_kind_check
        CHECK (kind IN ('assignment', 'stamp', 'pin', 'route_override', 'repaired')),
    ADD CONSTRAINT changes_tenant_check
        CHECK ((kind IN ('assignment', 'pin', 'repaired')) = (tenant IS NOT NULL));
