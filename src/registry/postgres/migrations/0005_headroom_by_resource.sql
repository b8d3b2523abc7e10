-- A headroom of its own for some resources of a stamp (`Capacity::headroom_on`): parts per
-- million keyed by resource name; resources not listed keep `headroom_ppm`.
ALTER TABLE {schema}.stamps
    ADD COLUMN headroom_by_resource jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(headroom_by_resource) = 'object');
