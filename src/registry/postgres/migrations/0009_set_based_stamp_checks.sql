-- Assignment rows name stamps that exist, checked once per statement instead of once per row.
-- Until version 8 two foreign keys (`stamp_id`, `shadow_id`) made PostgreSQL run one
-- referential-integrity query per inserted row; a bulk import writes thousands of rows per
-- statement, where those queries took a fifth of the time. The same guarantee now comes from:
--   * inserts: one check per statement over the statement's new rows (a transition table);
--   * updates that change `stamp_id` or `shadow_id`: the same check for the row;
--   * the stamps: a stamp that an assignment names cannot be deleted (the deletion first takes
--     a SHARE lock on the assignments, so it waits for every transaction writing them and then
--     sees what they committed), stamp ids never change, and the stamps cannot be truncated
--     while assignments exist.
-- Violations raise SQLSTATE 23503 (foreign_key_violation), as the foreign keys did. These
-- checks see other transactions' commits as READ COMMITTED does: SQL run by hand at
-- REPEATABLE READ or SERIALIZABLE that deletes stamps is not covered (the registry never
-- deletes stamps, and its own writes lock the stamps they name).
ALTER TABLE {schema}.assignments
    DROP CONSTRAINT assignments_stamp_id_fkey,
    DROP CONSTRAINT assignments_shadow_id_fkey;

-- One query on the transition table: PostgreSQL plans it on every call, so it stays simple
-- (a single-row `assign` pays for it too).
CREATE FUNCTION {schema}.check_inserted_assignment_stamps() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing bigint;
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_assignments n
        WHERE NOT EXISTS (SELECT 1 FROM {schema}.stamps s WHERE s.id = n.stamp_id)
           OR (n.shadow_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {schema}.stamps s WHERE s.id = n.shadow_id))
    ) THEN
        SELECT min(u.id) INTO missing
        FROM (SELECT stamp_id FROM new_assignments UNION SELECT shadow_id FROM new_assignments) AS u(id)
        WHERE u.id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {schema}.stamps s WHERE s.id = u.id);
        RAISE EXCEPTION 'an assignment names stamp %, which does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER assignments_stamps_exist_on_insert
    AFTER INSERT ON {schema}.assignments
    REFERENCING NEW TABLE AS new_assignments
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.check_inserted_assignment_stamps();

CREATE FUNCTION {schema}.check_updated_assignment_stamps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {schema}.stamps s WHERE s.id = NEW.stamp_id)
        OR (NEW.shadow_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {schema}.stamps s WHERE s.id = NEW.shadow_id)) THEN
        RAISE EXCEPTION 'the assignment of % names a stamp that does not exist (% or %)',
            NEW.tenant, NEW.stamp_id, NEW.shadow_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER assignments_stamps_exist_on_update
    AFTER UPDATE OF stamp_id, shadow_id ON {schema}.assignments
    FOR EACH ROW
    WHEN (NEW.stamp_id IS DISTINCT FROM OLD.stamp_id OR NEW.shadow_id IS DISTINCT FROM OLD.shadow_id)
    EXECUTE FUNCTION {schema}.check_updated_assignment_stamps();

-- Before a statement deletes stamps: wait for every transaction writing assignments (and keep
-- new ones out until this one ends), so the row check below sees all committed assignments.
-- The registry never deletes stamps; this guards deletions made by hand.
CREATE FUNCTION {schema}.lock_assignments_for_stamp_deletion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {schema}.assignments IN SHARE MODE;
    RETURN NULL;
END;
$$;
CREATE TRIGGER stamps_deletion_waits_for_writers
    BEFORE DELETE ON {schema}.stamps
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.lock_assignments_for_stamp_deletion();

CREATE FUNCTION {schema}.keep_named_stamps() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'stamp ids never change (% to %)', OLD.id, NEW.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM {schema}.assignments WHERE stamp_id = OLD.id)
        OR EXISTS (SELECT 1 FROM {schema}.assignments WHERE shadow_id = OLD.id) THEN
        RAISE EXCEPTION 'stamp % is named by assignments and cannot be deleted', OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER stamps_named_not_deleted
    BEFORE DELETE ON {schema}.stamps
    FOR EACH ROW EXECUTE FUNCTION {schema}.keep_named_stamps();
CREATE TRIGGER stamps_ids_fixed
    BEFORE UPDATE OF id ON {schema}.stamps
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id)
    EXECUTE FUNCTION {schema}.keep_named_stamps();
-- stamps:optional truncate_trigger (Portability::truncate_trigger)
CREATE FUNCTION {schema}.keep_stamps_of_assignments() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    LOCK TABLE {schema}.assignments IN SHARE MODE;
    IF EXISTS (SELECT 1 FROM {schema}.assignments) THEN
        RAISE EXCEPTION 'stamps cannot be truncated while assignments name them'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER stamps_not_truncated_under_assignments
    BEFORE TRUNCATE ON {schema}.stamps
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.keep_stamps_of_assignments();
-- stamps:end optional
