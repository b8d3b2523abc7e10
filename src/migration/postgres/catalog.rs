//! The declared tables as a stamp database has them (columns, key types), and the mover's
//! schema and fence trigger that [`PgTableMover::install`] puts there.

use super::ops::{connect, pg_err, Cols};
use super::{quote_table, MovedTable, PgTableMover, Versioning};
use crate::migration::driver::DriverError;
use crate::model::StampId;

/// The name of the fence trigger on every declared table.
pub(super) const TRIGGER: &str = "stamps_mover_guard";

/// One column the mover copies (generated columns are not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) ty: String,
}

/// A declared table, checked against one stamp database.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub(super) decl: MovedTable,
    pub(super) columns: Vec<Column>,
    pub(super) key_types: Vec<String>,
}

fn q(name: &str) -> String {
    format!("\"{name}\"")
}

impl TableInfo {
    /// The quoted table name.
    pub(super) fn table(&self) -> String {
        quote_table(&self.decl.table)
    }

    /// The table's label in the change log.
    pub(super) fn label(&self) -> String {
        super::ops::lit(&self.decl.table)
    }

    /// `"a", "b", …`, prefixed by `alias.` if given.
    pub(super) fn columns(&self, alias: &str) -> String {
        self.columns
            .iter()
            .map(|c| format!("{alias}{}", q(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns, prefixed by `alias.`.
    pub(super) fn key(&self, alias: &str) -> String {
        self.decl
            .key
            .iter()
            .map(|k| format!("{alias}{}", q(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns in descending order, for `ORDER BY`.
    pub(super) fn key_desc(&self, alias: &str) -> String {
        self.decl
            .key
            .iter()
            .map(|k| format!("{alias}{} DESC", q(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key as `text[]` (the change log's form).
    pub(super) fn key_text(&self, alias: &str) -> String {
        let parts: Vec<String> = self.decl.key.iter().map(|k| format!("{alias}{}::text", q(k))).collect();
        format!("ARRAY[{}]", parts.join(", "))
    }

    /// `alias.k1 = (arr[1])::type AND …`: the row whose key is the `text[]` `arr`.
    pub(super) fn key_is(&self, alias: &str, arr: &str) -> String {
        self.decl
            .key
            .iter()
            .zip(&self.key_types)
            .enumerate()
            .map(|(i, (k, ty))| format!("{alias}{} = (({arr})[{}])::{ty}", q(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// `alias."tenant" = 'id'`.
    pub(super) fn of_tenant(&self, alias: &str, tenant: &str) -> String {
        format!(
            "{alias}{}::text = {}",
            q(&self.decl.tenant_column),
            super::ops::lit(tenant)
        )
    }

    /// The version column, prefixed by `alias.`.
    pub(super) fn version(&self, alias: &str) -> String {
        format!("{alias}{}", q(&self.decl.version))
    }

    /// A 64-bit hash of the row's values but its version, as a `bigint` expression.
    pub(super) fn row_hash(&self, alias: &str) -> String {
        let cols: Vec<String> = self
            .columns
            .iter()
            .filter(|c| c.name != self.decl.version)
            .map(|c| format!("{alias}{}", q(&c.name)))
            .collect();
        format!(
            "('x' || left(md5(ROW({})::text), 16))::bit(64)::bigint",
            cols.join(", ")
        )
    }

    /// `SET a = EXCLUDED.a, …` over the columns not in the key.
    pub(super) fn update_set(&self) -> String {
        self.columns
            .iter()
            .filter(|c| !self.decl.key.contains(&c.name))
            .map(|c| format!("{n} = EXCLUDED.{n}", n = q(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The name of the session's staging table for this table (named after the table and
    /// its columns, so a pooled session never reuses one of another shape).
    pub(super) fn stage(&self) -> String {
        let shape = format!("{}:{}", self.decl.table, self.columns(""));
        let types: Vec<&str> = self.columns.iter().map(|c| c.ty.as_str()).collect();
        let shape = format!("{shape}:{}", types.join(","));
        format!("stamps_stage_{:016x}", crate::hash::fnv1a_64(shape.as_bytes()))
    }
}

/// Reads the declared tables from `stamp`'s database and checks them.
pub(super) async fn introspect(mover: &PgTableMover, stamp: StampId) -> Result<Vec<TableInfo>, DriverError> {
    let client = connect(mover, stamp).await?;
    let mut out = Vec::new();
    for decl in mover.tables() {
        let name = quote_table(&decl.table);
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attnotnull \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&name],
            )
            .await
            .map_err(|e| pg_err(&format!("reading the columns of {} on {stamp}", decl.table), e))?;
        if rows.is_empty() {
            return Err(DriverError::permanent(format!(
                "table {} does not exist on {stamp}'s database",
                decl.table
            )));
        }
        let mut columns = Vec::new();
        let mut not_null = Vec::new();
        for r in &rows {
            let (n, ty, generated, nn): (String, String, bool, bool) = (r.col(0)?, r.col(1)?, r.col(2)?, r.col(3)?);
            if nn {
                not_null.push(n.clone());
            }
            if !generated {
                columns.push(Column { name: n, ty });
            }
        }
        let type_of = |c: &str| columns.iter().find(|x| x.name == c).map(|x| x.ty.clone());
        let missing = |what: &str, c: &str| {
            DriverError::permanent(format!(
                "{what} {c} of {} is not a plain column on {stamp}'s database",
                decl.table
            ))
        };
        type_of(&decl.tenant_column).ok_or_else(|| missing("tenant column", &decl.tenant_column))?;
        match type_of(&decl.version) {
            Some(t) if t == "bigint" && not_null.contains(&decl.version) => {}
            Some(t) if t == "bigint" => {
                return Err(DriverError::permanent(format!(
                    "version column {} of {} may be NULL on {stamp}'s database; make it NOT NULL (DEFAULT 0 for existing rows)",
                    decl.version, decl.table
                )))
            }
            Some(t) => {
                return Err(DriverError::permanent(format!(
                    "version column {} of {} is {t} on {stamp}'s database; it must be bigint",
                    decl.version, decl.table
                )))
            }
            None => return Err(missing("version column", &decl.version)),
        }
        let mut key_types = Vec::new();
        for k in &decl.key {
            key_types.push(type_of(k).ok_or_else(|| missing("key column", k))?);
        }
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass($1) AND i.indisunique \
                   AND i.indpred IS NULL AND i.indexprs IS NULL AND i.indnkeyatts = cardinality($2::text[]) \
                   AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a \
                        WHERE a.attrelid = i.indrelid AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])) \
                       = (SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) x))",
                &[&name, &decl.key],
            )
            .await
            .map_err(|e| pg_err(&format!("reading the indexes of {} on {stamp}", decl.table), e))?
            .col(0)?;
        if !unique {
            return Err(DriverError::permanent(format!(
                "{} on {stamp}'s database has no unique index on exactly ({}); declare its primary key",
                decl.table,
                decl.key.join(", ")
            )));
        }
        let installed: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)",
                &[&name, &TRIGGER],
            )
            .await
            .map_err(|e| pg_err("reading the triggers", e))?
            .col(0)?;
        if !installed {
            return Err(DriverError::permanent(format!(
                "the mover's fence trigger is not installed on {} in {stamp}'s database; call PgTableMover::install()",
                decl.table
            )));
        }
        out.push(TableInfo {
            decl: decl.clone(),
            columns,
            key_types,
        });
    }
    Ok(out)
}

/// Refuses two stamps whose declared tables differ in copied columns or their types.
pub(super) fn same_columns(a: StampId, ta: &[TableInfo], b: StampId, tb: &[TableInfo]) -> Result<(), DriverError> {
    for (x, y) in ta.iter().zip(tb) {
        if x.columns != y.columns {
            let show = |t: &TableInfo| {
                t.columns
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.ty))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(DriverError::permanent(format!(
                "{} differs between {a} ({}) and {b} ({}); migrate both schemas to the same version first",
                x.decl.table,
                show(x),
                show(y)
            )));
        }
    }
    Ok(())
}

const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS stamps_mover;
CREATE TABLE IF NOT EXISTS stamps_mover.meta (
    id int PRIMARY KEY CHECK (id = 1),
    stamp bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS stamps_mover.fences (
    tenant text PRIMARY KEY,
    epoch numeric(20, 0) NOT NULL DEFAULT 0,
    holds boolean NOT NULL DEFAULT true,
    tracking boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS stamps_mover.generations (
    migration bigint PRIMARY KEY,
    generation bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS stamps_mover.changes (
    tenant text NOT NULL,
    table_name text NOT NULL,
    key text[] NOT NULL,
    version bigint,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS changes_by_key ON stamps_mover.changes (tenant, table_name, key);
CREATE TABLE IF NOT EXISTS stamps_mover.progress (
    migration bigint PRIMARY KEY,
    tenant text NOT NULL,
    cursor text NOT NULL,
    table_index int NOT NULL DEFAULT 0,
    last_key text[],
    imported bigint NOT NULL DEFAULT 0,
    caught_up bigint NOT NULL DEFAULT 0
);
";

/// The trigger function guarding `t`: refuses stale epochs, stamps versions if asked, and
/// logs changed keys while the tenant is tracked. The mover's own writes (`stamps.mover`
/// set to `on` in the transaction) pass untouched: the trigger's `WHEN` clause skips them
/// without calling the function (and the function checks again).
fn guard_function(t: &TableInfo, function: &str) -> String {
    let tc = q(&t.decl.tenant_column);
    let v = q(&t.decl.version);
    let stamp_version = match t.decl.versioning {
        Versioning::Mover => format!(
            "IF TG_OP <> 'DELETE' THEN
    NEW.{v} := greatest(CASE WHEN TG_OP = 'UPDATE' THEN coalesce(OLD.{v}, 0) + 1 ELSE 1 END,
                        (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  END IF;"
        ),
        Versioning::Host => String::new(),
    };
    let (old_key, new_key) = (t.key_text("OLD."), t.key_text("NEW."));
    let label = t.label();
    format!(
        r#"CREATE OR REPLACE FUNCTION stamps_mover.{function}() RETURNS trigger LANGUAGE plpgsql AS $stamps$
DECLARE
  t text;
  f record;
  e text;
  s text;
  here bigint;
BEGIN
  IF TG_OP = 'DELETE' THEN t := OLD.{tc}::text; ELSE t := NEW.{tc}::text; END IF;
  IF TG_OP = 'UPDATE' AND OLD.{tc} IS DISTINCT FROM NEW.{tc} THEN
    RAISE EXCEPTION USING ERRCODE = 'SF400',
      MESSAGE = format('stamps fence: a row of %s cannot move from tenant %s to %s; delete it and insert it', TG_TABLE_NAME, OLD.{tc}, NEW.{tc});
  END IF;
  IF coalesce(current_setting('stamps.mover', true), '') = 'on' THEN
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
  END IF;
  {stamp_version}
  SELECT fe.epoch, fe.holds, fe.tracking INTO f FROM stamps_mover.fences fe WHERE fe.tenant = t FOR SHARE;
  IF FOUND THEN
    e := coalesce(current_setting('stamps.epoch', true), '');
    IF e !~ '^[0-9]{{1,20}}$' THEN
      RAISE EXCEPTION USING ERRCODE = 'SF428',
        MESSAGE = format('stamps fence: tenant %s is fenced on this stamp (epoch %s) and the write carries no epoch; set it in the write''s transaction with set_config(''stamps.epoch'', <the route''s epoch>, true)', t, f.epoch);
    END IF;
    s := coalesce(current_setting('stamps.stamp', true), '');
    IF s <> '' THEN
      SELECT m.stamp INTO here FROM stamps_mover.meta m WHERE m.id = 1;
      IF here IS NOT NULL AND s <> here::text THEN
        RAISE EXCEPTION USING ERRCODE = 'SF421',
          MESSAGE = format('stamps fence: write addressed to stamp %s reached stamp %s; route again', s, here),
          DETAIL = format('wrong_stamp:%s:%s', here, s);
      END IF;
    END IF;
    IF e::numeric < f.epoch THEN
      RAISE EXCEPTION USING ERRCODE = 'SF409',
        MESSAGE = format('stamps fence: write carries epoch %s but the stamp knows %s for tenant %s; refresh the route and retry', e, f.epoch, t),
        DETAIL = format('stale:%s:%s', e, f.epoch);
    END IF;
    IF e::numeric = f.epoch AND NOT f.holds THEN
      RAISE EXCEPTION USING ERRCODE = 'SF410',
        MESSAGE = format('stamps fence: the stamp gave tenant %s up at epoch %s; refresh the route and retry on its new stamp', t, f.epoch),
        DETAIL = format('not_held:%s', f.epoch);
    END IF;
    IF f.tracking THEN
      IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND {old_key} IS DISTINCT FROM {new_key}) THEN
        INSERT INTO stamps_mover.changes (tenant, table_name, key, version) VALUES (t, {label}, {old_key}, OLD.{v});
      END IF;
      IF TG_OP <> 'DELETE' THEN
        INSERT INTO stamps_mover.changes (tenant, table_name, key, version) VALUES (t, {label}, {new_key}, NEW.{v});
      END IF;
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END
$stamps$"#
    )
}

/// Installs the schema, the stamp's identity and the triggers in `stamp`'s database, in one
/// transaction under an advisory lock.
pub(super) async fn install(mover: &PgTableMover, stamp: StampId) -> Result<(), DriverError> {
    let mut client = connect(mover, stamp).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_err(&format!("installing on {stamp}"), e))?;
    let fail = |e| pg_err(&format!("installing the mover on {stamp}"), e);
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('stamps_mover.install'))", &[])
        .await
        .map_err(fail)?;
    tx.batch_execute(SCHEMA_SQL).await.map_err(fail)?;
    let id = i64::from(stamp.0);
    let recorded: i64 = tx
        .query_one(
            "WITH ins AS (INSERT INTO stamps_mover.meta (id, stamp) VALUES (1, $1) ON CONFLICT (id) DO NOTHING RETURNING stamp) \
             SELECT stamp FROM ins UNION ALL SELECT stamp FROM stamps_mover.meta WHERE id = 1 LIMIT 1",
            &[&id],
        )
        .await
        .map_err(fail)?
        .col(0)?;
    if recorded != id {
        return Err(DriverError::permanent(format!(
            "the database given for {stamp} is recorded as stamp {recorded}'s; two stamps cannot share a database"
        )));
    }
    // The trigger functions need the columns; read them without the trigger check.
    for decl in mover.tables() {
        let name = quote_table(&decl.table);
        let rows = tx
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
                 ORDER BY a.attnum",
                &[&name],
            )
            .await
            .map_err(fail)?;
        if rows.is_empty() {
            return Err(DriverError::permanent(format!(
                "table {} does not exist on {stamp}'s database",
                decl.table
            )));
        }
        let info = TableInfo {
            decl: decl.clone(),
            columns: rows
                .iter()
                .map(|r| {
                    Ok(Column {
                        name: r.col(0)?,
                        ty: r.col(1)?,
                    })
                })
                .collect::<Result<_, DriverError>>()?,
            key_types: Vec::new(),
        };
        for c in decl.key.iter().chain([&decl.tenant_column, &decl.version]) {
            if !info.columns.iter().any(|x| &x.name == c) {
                return Err(DriverError::permanent(format!(
                    "column {c} of {} is not a plain column on {stamp}'s database",
                    decl.table
                )));
            }
        }
        let function = format!("guard_{:016x}", crate::hash::fnv1a_64(decl.table.as_bytes()));
        tx.batch_execute(&guard_function(&info, &function))
            .await
            .map_err(fail)?;
        tx.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {TRIGGER} ON {name}; \
             CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OR DELETE ON {name} \
             FOR EACH ROW WHEN (current_setting('stamps.mover', true) IS DISTINCT FROM 'on') \
             EXECUTE FUNCTION stamps_mover.{function}()"
        ))
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)
}
