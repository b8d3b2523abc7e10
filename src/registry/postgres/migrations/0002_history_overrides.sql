-- Operator overrides of hard constraints, recorded in the assignment history: the constraints
-- the write was allowed to break (comma-separated names) and the reason.
ALTER TABLE {schema}.assignment_history
    ADD COLUMN override_constraints text,
    ADD COLUMN override_reason      text,
    ADD CONSTRAINT assignment_history_override_complete
        CHECK ((override_constraints IS NULL) = (override_reason IS NULL));
