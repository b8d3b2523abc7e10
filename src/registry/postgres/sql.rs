//! The registry's SQL, with the schema name quoted in once at construction.

use super::schema::quoted;

pub(super) const STAMP_COLS: &str =
    "id, name, region, residency, tier, labels, deployed_version, endpoint, limits_milli, \
                          headroom_ppm, state, usage_milli, created_at, updated_at, headroom_by_resource, expires_at";
pub(super) const ASSIGNMENT_COLS: &str =
    "tenant, stamp_id, epoch, mode, shadow_id, frozen_until, region, residency, tier, \
                               pin_stamp_id, demand_milli, labels, assigned_at, updated_at, ephemeral";
pub(super) const HISTORY_COLS: &str =
    "version, tenant, at, action, from_stamp, to_stamp, epoch, mode, shadow_id, frozen_until, actor, \
     override_constraints, override_reason, reason";
const MIGRATION_COLS: &str = "id, tenant, source_id, destination_id, state, revision, data, created_at, updated_at";
/// Makes a write statement fail (division by zero, SQLSTATE 22012) when it wrote no change
/// row, for example because its target row vanished: with the `COMMIT` pipelined behind it,
/// a write that matched nothing must abort rather than commit a version without a change.
pub(super) const GUARD: &str = "(SELECT 1 / (SELECT count(*)::int FROM chg) AS written) g";
const TERMINAL: &str = "('completed', 'cancelled', 'rolled_back', 'failed')";

/// Every statement the registry runs.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) channel: String,
    pub(crate) listen: String,
    pub(crate) head: String,
    pub(crate) bump: String,
    /// [`Sql::bump`] by `$2` versions (a bulk import).
    pub(crate) bump_many: String,
    /// Bulk import.
    pub(crate) import: super::import::ImportSql,
    /// Group commit of `compare_and_set`.
    pub(crate) change_group: super::group_change::ChangeGroupSql,
    pub(crate) stamp_get: String,
    pub(crate) stamps_lock: String,
    pub(crate) fleet: String,
    pub(crate) stamp_insert: String,
    pub(crate) stamp_update: String,
    pub(crate) stamp_state: String,
    pub(crate) assignment_get: String,
    pub(crate) assignment_lock: String,
    /// Locks the assignments of the tenants in `$1`, in tenant order (a group of changes).
    pub(crate) assignments_lock: String,
    pub(crate) assignments_page: String,
    pub(crate) assign_write: String,
    pub(crate) update_write: String,
    pub(crate) unassign_write: String,
    pub(crate) history: String,
    pub(crate) stamp_holder: String,
    pub(crate) changes: String,
    pub(crate) prune: String,
    pub(crate) migration_insert: String,
    pub(crate) migration_active: String,
    pub(crate) migration_get: String,
    pub(crate) migration_save: String,
    pub(crate) migrations: String,
    /// An assignment and the feed's head in one snapshot (reads from a replica).
    pub(crate) assignment_at: String,
    /// A page of assignments and the feed's head in one snapshot (reads from a replica).
    pub(crate) assignments_page_at: String,
    /// The head and whether the server is a standby (replica probes).
    pub(crate) probe: String,
    /// Asks the next write to open a term.
    pub(crate) begin_term: String,
    /// The feed's term, its start and base.
    pub(crate) term: String,
    /// Every tenant a stamp holds (serving or as a shadow), read under the stamp's lock.
    pub(crate) stamp_tenants: String,
    /// The first `$2` tenants a stamp holds, in tenant order.
    pub(crate) stamp_tenant_sample: String,
    /// Pins, routing overrides and repair records.
    pub(crate) directives: super::directives::DirectiveSql,
    /// Rollout records.
    pub(crate) rollouts: super::rollouts::RolloutSql,
    pub(crate) health: super::health::HealthSql,
}

/// The server's current WAL timeline (PostgreSQL; `NULL` on a standby, where no write runs).
const TIMELINE: &str = "(CASE WHEN pg_is_in_recovery() THEN NULL \
                        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::bigint END)";

impl Sql {
    /// `timelines`: whether writes read the server's WAL timeline to open a new term after a
    /// promotion or a restore (off on engines without `pg_current_wal_lsn`).
    pub(crate) fn new(schema: &str, notify: bool, timelines: bool) -> Sql {
        let s = quoted(schema);
        let timeline = if timelines { TIMELINE } else { "NULL::bigint" };
        // A new term when the recorded timeline is known and differs from the server's.
        let fresh = "(f.timeline IS NOT NULL AND f.timeline IS DISTINCT FROM t.tl)";
        // The clock is read once per statement (in `t` below), so the head and the recorded
        // start of a new term are the same value.
        let start = "GREATEST(f.head + 1, t.clock)";
        let channel = format!("stamps_{schema}");
        // NOTIFY is transactional: delivered at commit, in commit order. Only a wake-up.
        let notify_col = if notify {
            format!(", pg_notify('{channel}', (SELECT max(version) FROM chg)::text)::text AS notified")
        } else {
            String::new()
        };
        let head_expr = format!("(SELECT head FROM {s}.feed WHERE id = 1)");
        let stamp_change = format!(
            "chg AS (
                INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                SELECT {head_expr}, up.updated_at, 'stamp', NULL, up.id, row_to_json(up) FROM up
                RETURNING version
            )
            SELECT w.*, g.written{notify_col}
            FROM {GUARD} LEFT JOIN (SELECT up.*, chg.version FROM up, chg) w ON true"
        );
        // Shared tail of an assignment write whose new row is `ins`: usage of the affected
        // stamps ($13, {stamp id: usage}), the history entry and the change row.
        let assignment_tail = format!(
            "usage_upd AS (
                UPDATE {s}.stamps st SET usage_milli = u.value
                FROM jsonb_each($13::jsonb) u WHERE st.id = u.key::bigint
                RETURNING st.id
            ), hist AS (
                INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                SELECT ins.epoch, ins.tenant, $12, $14, $15, ins.stamp_id, ins.epoch, ins.mode, ins.shadow_id,
                       ins.frozen_until, $16, $17, $18, NULL
                FROM ins
                RETURNING version
            ), chg AS (
                INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                SELECT ins.epoch, $12, 'assignment', ins.tenant, NULL, row_to_json(ins) FROM ins
                RETURNING version
            )
            SELECT chg.version, (SELECT count(*) FROM usage_upd) AS stamps_updated,
                   (SELECT count(*) FROM hist) AS history_rows, g.written{notify_col}
            FROM {GUARD} LEFT JOIN chg ON true"
        );
        // Takes `n` versions for one transaction (the last is the new head): from the feed's
        // head, or from a new term's start.
        let bump_by = |n: &str| {
            format!(
                "WITH b AS (
                    UPDATE {s}.feed f SET
                        term = CASE WHEN {fresh} THEN f.term + 1 ELSE f.term END,
                        base = CASE WHEN {fresh} THEN f.head ELSE f.base END,
                        term_start = CASE WHEN {fresh} THEN {start} ELSE f.term_start END,
                        head = CASE WHEN {fresh} THEN {start} + {n} - 1 ELSE f.head + {n} END,
                        timeline = t.tl
                    FROM (SELECT {timeline} AS tl,
                                 (extract(epoch FROM clock_timestamp()) * 1000)::bigint << {shift} AS clock) t
                    WHERE f.id = 1
                    RETURNING f.head, f.term, f.base, f.term_start, f.timeline
                ), opened AS (
                    INSERT INTO {s}.feed_terms (term, base, term_start, timeline, started_at)
                    SELECT term, base, term_start, timeline, $1 FROM b WHERE term > 0 AND head - {n} + 1 = term_start
                    RETURNING term
                )
                SELECT head, (SELECT count(*) FROM opened) AS opened FROM b",
                shift = super::history::START_SHIFT
            )
        };
        Sql {
            listen: format!("LISTEN \"{channel}\"; LISTEN \"{channel}_health\""),
            head: format!("SELECT head FROM {s}.feed WHERE id = 1"),
            bump: bump_by("1"),
            bump_many: bump_by("$2::bigint"),
            import: super::import::ImportSql::new(schema, &notify_col),
            change_group: super::group_change::ChangeGroupSql::new(schema, &notify_col),
            stamp_tenants: format!(
                "SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE stamp_id = $1 OR shadow_id = $1 ORDER BY tenant"
            ),
            stamp_tenant_sample: format!(
                "SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE stamp_id = $1 OR shadow_id = $1
                 ORDER BY tenant LIMIT $2"
            ),
            begin_term: format!("UPDATE {s}.feed SET timeline = -1 WHERE id = 1"),
            term: format!("SELECT head, term, base, term_start FROM {s}.feed WHERE id = 1"),
            probe: format!("SELECT head, pg_is_in_recovery() AS standby FROM {s}.feed WHERE id = 1"),
            assignment_at: format!(
                "SELECT f.head AS feed_head, a.* FROM {s}.feed f
                 LEFT JOIN (SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant = $1) a ON true
                 WHERE f.id = 1"
            ),
            assignments_page_at: format!(
                "SELECT f.head AS feed_head, a.* FROM {s}.feed f
                 LEFT JOIN LATERAL (
                     SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant > $1 ORDER BY tenant LIMIT $2
                 ) a ON true
                 WHERE f.id = 1 ORDER BY a.tenant"
            ),
            stamp_get: format!("SELECT {STAMP_COLS} FROM {s}.stamps WHERE id = $1"),
            // Ordered, so concurrent writers lock stamps in the same order (no deadlocks).
            // NO KEY UPDATE: blocks other writers of the row but not the foreign-key checks of
            // migration records and routing overrides.
            stamps_lock: format!(
                "SELECT {STAMP_COLS} FROM {s}.stamps WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE"
            ),
            fleet: format!(
                "SELECT f.head, st.id, st.name, st.region, st.residency, st.tier, st.labels, st.deployed_version,
                        st.endpoint, st.limits_milli, st.headroom_ppm, st.state, st.usage_milli, st.created_at,
                        st.updated_at, st.headroom_by_resource, st.expires_at
                 FROM {s}.feed f LEFT JOIN {s}.stamps st ON true WHERE f.id = 1 ORDER BY st.id"
            ),
            stamp_insert: format!(
                "WITH up AS (
                    INSERT INTO {s}.stamps ({STAMP_COLS})
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'provisioning', '{{}}', $11, $11, $12, $13)
                    RETURNING *
                ), {stamp_change}"
            ),
            stamp_update: format!(
                "WITH up AS (
                    UPDATE {s}.stamps SET name = $2, region = $3, residency = $4, tier = $5, labels = $6,
                        deployed_version = $7, endpoint = $8, limits_milli = $9, headroom_ppm = $10, updated_at = $11,
                        headroom_by_resource = $12, expires_at = $13
                    WHERE id = $1
                    RETURNING *
                ), {stamp_change}"
            ),
            stamp_state: format!(
                "WITH up AS (
                    UPDATE {s}.stamps SET state = $2, updated_at = $3 WHERE id = $1 RETURNING *
                ), {stamp_change}"
            ),
            assignment_get: format!("SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant = $1"),
            // Run after the stamp's row is locked: every write that adds or removes a tenant on
            // a stamp locks that row first, so the answer holds until the caller commits.
            stamp_holder: format!(
                "SELECT tenant FROM {s}.assignments WHERE (stamp_id = $1 OR shadow_id = $1) AND tenant <> $2
                 ORDER BY tenant LIMIT 1"
            ),
            assignment_lock: format!("SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant = $1 FOR UPDATE"),
            assignments_lock: format!(
                "SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant = ANY($1::text[]) ORDER BY tenant FOR UPDATE"
            ),
            assignments_page: format!(
                "SELECT {ASSIGNMENT_COLS} FROM {s}.assignments WHERE tenant > $1 ORDER BY tenant LIMIT $2"
            ),
            // $19, $20: a pin the spec brings (recorded with the assignment) and its actor; $21:
            // whether the tenant is ephemeral.
            assign_write: format!(
                "WITH ins AS (
                    INSERT INTO {s}.assignments ({ASSIGNMENT_COLS})
                    VALUES ($1, $2, {head_expr}, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $21)
                    RETURNING *
                ), pin_ins AS (
                    INSERT INTO {s}.pins (tenant, stamp_id, actor, reason, at, version)
                    SELECT ins.tenant, $19::bigint, $20::text, 'pinned by its assignment', $12, ins.epoch
                    FROM ins WHERE $19::bigint IS NOT NULL
                    RETURNING tenant
                ), {assignment_tail}"
            ),
            update_write: format!(
                "WITH ins AS (
                    UPDATE {s}.assignments SET stamp_id = $2, epoch = {head_expr}, mode = $3, shadow_id = $4,
                        frozen_until = $5, region = $6, residency = $7, tier = $8, pin_stamp_id = $9,
                        demand_milli = $10, labels = $11, updated_at = $12, ephemeral = $20
                    WHERE tenant = $1 AND epoch = $19
                    RETURNING *
                ), {assignment_tail}"
            ),
            unassign_write: format!(
                "WITH del AS (
                    DELETE FROM {s}.assignments WHERE tenant = $1 AND epoch = $2 RETURNING tenant, stamp_id
                ), usage_upd AS (
                    UPDATE {s}.stamps st SET usage_milli = u.value
                    FROM jsonb_each($3::jsonb) u WHERE st.id = u.key::bigint
                    RETURNING st.id
                ), hist AS (
                    INSERT INTO {s}.assignment_history ({HISTORY_COLS})
                    SELECT f.head, del.tenant, $4, 'unassigned', del.stamp_id, NULL, f.head, 'serving', NULL, NULL, $5,
                           NULL, NULL, NULL
                    FROM del, {s}.feed f WHERE f.id = 1
                    RETURNING version
                ), chg AS (
                    INSERT INTO {s}.changes (version, at, kind, tenant, stamp_id, payload)
                    SELECT f.head, $4, 'assignment', del.tenant, NULL, NULL FROM del, {s}.feed f WHERE f.id = 1
                    RETURNING version
                )
                SELECT chg.version, (SELECT count(*) FROM usage_upd) AS stamps_updated,
                       (SELECT count(*) FROM hist) AS history_rows, g.written{notify_col}
                FROM {GUARD} LEFT JOIN chg ON true"
            ),
            history: format!("SELECT {HISTORY_COLS} FROM {s}.assignment_history WHERE tenant = $1 ORDER BY version"),
            // `payload::json`: the same result type before and after schema migration 10
            // (jsonb to json), so a statement prepared before `migrate()` stays valid.
            changes: format!(
                "SELECT f.head, f.term, nt.base AS next_base, nt.term_start AS next_start,
                        c.version, c.at, c.kind, c.tenant, c.payload::json AS payload
                 FROM {s}.feed f
                 LEFT JOIN LATERAL (
                     SELECT base, term_start FROM {s}.feed_terms WHERE term_start > $1 ORDER BY term_start LIMIT 1
                 ) nt ON true
                 LEFT JOIN LATERAL (
                     SELECT version, at, kind, tenant, payload FROM {s}.changes
                     WHERE version > $1 ORDER BY version LIMIT $2
                 ) c ON true
                 WHERE f.id = 1
                 ORDER BY c.version"
            ),
            prune: format!("DELETE FROM {s}.changes WHERE version <= $1 AND version < {head_expr}"),
            migration_insert: format!(
                "INSERT INTO {s}.tenant_migrations (tenant, source_id, destination_id, state, revision, data,
                                                    created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 1, $5, $6, $6)
                 RETURNING {MIGRATION_COLS}"
            ),
            migration_active: format!(
                "SELECT id FROM {s}.tenant_migrations WHERE tenant = $1 AND state NOT IN {TERMINAL}"
            ),
            migration_get: format!("SELECT {MIGRATION_COLS} FROM {s}.tenant_migrations WHERE id = $1"),
            migration_save: format!(
                "UPDATE {s}.tenant_migrations SET state = $2, data = $3, revision = revision + 1, updated_at = $4
                 WHERE id = $1 AND revision = $5 AND tenant = $6 AND source_id = $7 AND destination_id = $8
                   AND (state = $2 OR state = ANY($9))
                 RETURNING {MIGRATION_COLS}"
            ),
            migrations: format!(
                "SELECT {MIGRATION_COLS} FROM {s}.tenant_migrations
                 WHERE $1::text IS NULL OR tenant = $1 ORDER BY id"
            ),
            directives: super::directives::DirectiveSql::new(schema, &notify_col),
            rollouts: super::rollouts::RolloutSql::new(schema),
            health: super::health::HealthSql::new(schema, notify),
            channel,
        }
    }
}
