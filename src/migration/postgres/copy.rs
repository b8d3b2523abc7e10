//! Copying rows between stamp databases: the import (from one `REPEATABLE READ` snapshot of
//! the source, in key order, batch by batch with its progress) and the change copy (the rows
//! whose keys the change log recorded since a cursor, present ones upserted, absent ones
//! deleted), both merging by row version into the other side.

use std::pin::pin;

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Transaction;

use super::catalog::{same_columns, TableInfo};
use super::ops::{
    as_mover, bounded, check_generation, connect, lit, pg_err, snapshot_of, snapshot_tx, update_fence, Cols,
    FenceUpdate,
};
use super::PgTableMover;
use crate::migration::driver::{DriverError, MigrationContext, SnapshotInfo};
use crate::model::StampId;

/// Refuses a cursor that is not a `pg_snapshot` text (`xmin:xmax:xip,…`); it is put in SQL
/// as a literal.
pub(super) fn check_cursor(cursor: &str) -> Result<(), DriverError> {
    let ok = !cursor.is_empty()
        && cursor.len() < 1 << 20
        && cursor.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b',')
        && cursor.split(':').count() == 3;
    if ok {
        Ok(())
    } else {
        Err(DriverError::permanent(format!(
            "snapshot {cursor:?} is not a PostgreSQL snapshot this mover took"
        )))
    }
}

/// Streams `out_sql` (a `COPY … TO STDOUT`) from one transaction into `in_sql` (a `COPY …
/// FROM STDIN`) of another; the rows copied, or the database's error as it is.
async fn pipe_raw(
    mover: &PgTableMover,
    what: &str,
    from: &Transaction<'_>,
    out_sql: &str,
    to: &Transaction<'_>,
    in_sql: &str,
) -> Result<Result<u64, tokio_postgres::Error>, DriverError> {
    let run = async {
        let out = from.copy_out(out_sql).await?;
        let sink = to.copy_in(in_sql).await?;
        let mut out = pin!(out);
        let mut sink = pin!(sink);
        while let Some(chunk) = out.next().await {
            // `feed`, not `send`: the sink batches the rows' messages instead of flushing
            // every row.
            sink.feed(chunk?).await?;
        }
        sink.as_mut().finish().await
    };
    let limit = mover.settings().statement_timeout + std::time::Duration::from_secs(5);
    tokio::time::timeout(limit, run)
        .await
        .map_err(|_| DriverError::retryable(format!("{what}: no answer within {limit:?}")))
}

/// [`pipe_raw`] with the error classified.
async fn pipe(
    mover: &PgTableMover,
    what: &str,
    from: &Transaction<'_>,
    out_sql: &str,
    to: &Transaction<'_>,
    in_sql: &str,
) -> Result<u64, DriverError> {
    pipe_raw(mover, what, from, out_sql, to, in_sql)
        .await?
        .map_err(|e| pg_err(what, e))
}

/// Creates the session's staging table for `t` if missing (emptied at every commit).
async fn stage(mover: &PgTableMover, tx: &Transaction<'_>, t: &TableInfo) -> Result<(), DriverError> {
    let sql = format!(
        "SET LOCAL client_min_messages = warning; \
         CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {tbl} WITH NO DATA; \
         TRUNCATE {stage}",
        stage = t.stage(),
        cols = t.columns(""),
        tbl = t.table()
    );
    bounded(mover, "creating a staging table", tx.batch_execute(&sql)).await
}

/// Merges the staged rows of `t` into the table: a row is inserted, or replaces one with a
/// lower version; it is skipped if this side logged a change of its key at the same or a
/// higher version (a newer write, or a deletion, that the copy must not undo). The check of
/// the log is left out when this side logged nothing for the tenant's table.
async fn merge(mover: &PgTableMover, tx: &Transaction<'_>, t: &TableInfo, tenant: &str) -> Result<u64, DriverError> {
    let logged = format!(
        "SELECT 1 FROM stamps_mover.changes c WHERE c.tenant = {lt} AND c.table_name = {label}",
        lt = lit(tenant),
        label = t.label(),
    );
    let any_logged: bool = bounded(
        mover,
        "reading the change log",
        tx.query_one(&format!("SELECT EXISTS ({logged})"), &[]),
    )
    .await?
    .col(0)?;
    let unless_logged = if any_logged {
        format!(
            " WHERE NOT EXISTS ({logged} AND c.key = {skey} AND c.version >= s.{v})",
            skey = t.key_text("s."),
            v = t.version(""),
        )
    } else {
        String::new()
    };
    let sql = format!(
        "INSERT INTO {tbl} AS d ({cols}) OVERRIDING SYSTEM VALUE \
         SELECT {scols} FROM {stage} s{unless_logged} \
         ON CONFLICT ({key}) DO UPDATE SET {set} WHERE d.{v} < EXCLUDED.{v}",
        tbl = t.table(),
        cols = t.columns(""),
        scols = t.columns("s."),
        stage = t.stage(),
        v = t.version(""),
        key = t.key(""),
        set = t.update_set(),
    );
    bounded(
        mover,
        &format!("merging rows of {}", t.decl.table()),
        tx.execute(&sql, &[]),
    )
    .await
}

/// The catalogs of both sides, checked to have the same columns.
async fn both(mover: &PgTableMover, from: StampId, to: StampId) -> Result<std::sync::Arc<Vec<TableInfo>>, DriverError> {
    let a = mover.catalog(from).await?;
    let b = mover.catalog(to).await?;
    same_columns(from, &a, to, &b)?;
    Ok(b)
}

/// Imports the tenant's rows into the destination (see the module documentation).
pub(super) async fn import(
    mover: &PgTableMover,
    ctx: &MigrationContext,
    snap: &SnapshotInfo,
) -> Result<(), DriverError> {
    check_cursor(&snap.id)?;
    let (src, dst) = (ctx.source, ctx.destination);
    let tables = both(mover, src, dst).await?;
    let tenant = ctx.tenant.as_str();
    // Tracking on the destination first: dual-writes that delete rows are then logged, and
    // the merge never brings such a row back.
    update_fence(mover, ctx, dst, FenceUpdate::Track).await?;
    let mut dc = connect(mover, dst).await?;
    let fail_d = |e| pg_err(&format!("importing {tenant} into {dst}"), e);
    let id = ctx.id.0 as i64;
    let (mut table, mut last_key): (usize, Option<Vec<String>>) = {
        let tx = dc.transaction().await.map_err(fail_d)?;
        check_generation(&tx, ctx, dst).await?;
        tx.execute(
            "INSERT INTO stamps_mover.progress (migration, tenant, cursor) VALUES ($1, $2, $3) ON CONFLICT (migration) DO NOTHING",
            &[&id, &tenant, &snap.id],
        )
        .await
        .map_err(fail_d)?;
        let row = tx
            .query_one(
                "SELECT table_index, last_key FROM stamps_mover.progress WHERE migration = $1",
                &[&id],
            )
            .await
            .map_err(fail_d)?;
        tx.commit().await.map_err(fail_d)?;
        (usize::try_from(row.col::<i32>(0)?).unwrap_or(0), row.col(1)?)
    };
    if table >= tables.len() {
        return Ok(());
    }
    let mut sc = connect(mover, src).await?;
    let fail_s = |e| pg_err(&format!("reading {tenant} on {src}"), e);
    let stx = snapshot_tx(&mut sc).await.map_err(fail_s)?;
    let batch = mover.settings().batch_rows;
    while let Some(t) = tables.get(table) {
        let after = |alias: &str| match &last_key {
            Some(k) => format!(
                " AND ({}) > ({})",
                t.key(alias),
                k.iter().map(|v| lit(v)).collect::<Vec<_>>().join(", ")
            ),
            None => String::new(),
        };
        let out_sql = format!(
            "COPY (SELECT {cols} FROM {tbl} WHERE {of}{after} ORDER BY {key} LIMIT {batch}) TO STDOUT (FORMAT binary)",
            after = after(""),
            cols = t.columns(""),
            tbl = t.table(),
            of = t.of_tenant("", tenant),
            key = t.key(""),
        );
        let tx = dc.transaction().await.map_err(fail_d)?;
        check_generation(&tx, ctx, dst).await?;
        as_mover(&tx, dst).await?;
        let what = format!("copying {}", t.decl.table());
        // Straight into the table when the destination holds nothing of the tenant past the
        // last batch and logged no write of it (a fresh import): no staging, no merge. A row
        // that appears meanwhile (a misrouted write) fails the copy, which then merges.
        let fresh_sql = format!(
            "SELECT NOT EXISTS (SELECT 1 FROM {tbl} x WHERE {of}{after_x}) \
             AND NOT EXISTS (SELECT 1 FROM stamps_mover.changes c WHERE c.tenant = {lt} AND c.table_name = {label})",
            tbl = t.table(),
            of = t.of_tenant("x.", tenant),
            after_x = after("x."),
            lt = lit(tenant),
            label = t.label(),
        );
        let fresh: bool = bounded(mover, "probing the destination", tx.query_one(&fresh_sql, &[]))
            .await?
            .col(0)?;
        let mut direct = None;
        if fresh {
            tx.batch_execute("SAVEPOINT stamps_direct").await.map_err(fail_d)?;
            let in_sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", t.table(), t.columns(""));
            match pipe_raw(mover, &what, &stx, &out_sql, &tx, &in_sql).await? {
                Ok(n) => direct = Some(n),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT stamps_direct")
                        .await
                        .map_err(fail_d)?;
                }
                Err(e) => return Err(pg_err(&what, e)),
            }
        }
        let n = match direct {
            Some(n) => n,
            None => {
                stage(mover, &tx, t).await?;
                let in_sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", t.stage(), t.columns(""));
                let n = pipe(mover, &what, &stx, &out_sql, &tx, &in_sql).await?;
                merge(mover, &tx, t, tenant).await?;
                n
            }
        };
        let next: Option<Vec<String>> = if n >= batch {
            // The batch's last key: the highest staged one or, copied straight in, the
            // highest of the tenant's on this side (it held none past the previous batch).
            let sql = match direct {
                Some(_) => format!(
                    "SELECT {kt} FROM {tbl} x WHERE {of} ORDER BY {key} LIMIT 1",
                    kt = t.key_text("x."),
                    tbl = t.table(),
                    of = t.of_tenant("x.", tenant),
                    key = t.key_desc("x.")
                ),
                None => format!(
                    "SELECT {kt} FROM {stage} x ORDER BY {key} LIMIT 1",
                    kt = t.key_text("x."),
                    stage = t.stage(),
                    key = t.key_desc("x.")
                ),
            };
            Some(tx.query_one(&sql, &[]).await.map_err(fail_d)?.col(0)?)
        } else {
            None
        };
        let next_table = if next.is_none() { table + 1 } else { table };
        tx.execute(
            "UPDATE stamps_mover.progress SET table_index = $2, last_key = $3, imported = imported + $4 WHERE migration = $1",
            &[&id, &(next_table as i32), &next, &(n as i64)],
        )
        .await
        .map_err(fail_d)?;
        tx.commit().await.map_err(fail_d)?;
        table = next_table;
        last_key = next;
    }
    stx.commit().await.map_err(fail_s)
}

/// Copies to `to` the rows of the tenant whose keys `from`'s change log recorded: since
/// `cursor` (a `pg_snapshot` of `from`) or, without one, all of them. Present rows merge by
/// version; a row absent on `from` is deleted on `to` unless `to` holds it at a higher
/// version than the deleted one. With `progress`, the progress row of the migration on `to`
/// gets the new cursor in the same transaction. Returns the rows copied or deleted.
pub(super) async fn copy_changes(
    mover: &PgTableMover,
    ctx: &MigrationContext,
    from: StampId,
    to: StampId,
    cursor: Option<&str>,
    progress: bool,
) -> Result<u64, DriverError> {
    if let Some(c) = cursor {
        check_cursor(c)?;
    }
    let tables = both(mover, from, to).await?;
    let tenant = ctx.tenant.as_str();
    let mut fc = connect(mover, from).await?;
    let mut tc = connect(mover, to).await?;
    let fail_f = |e| pg_err(&format!("reading {tenant}'s changes on {from}"), e);
    let fail_t = |e| pg_err(&format!("applying {tenant}'s changes on {to}"), e);
    let ftx = snapshot_tx(&mut fc).await.map_err(fail_f)?;
    let next = snapshot_of(&ftx).await.map_err(fail_f)?;
    let tx = tc.transaction().await.map_err(fail_t)?;
    check_generation(&tx, ctx, to).await?;
    as_mover(&tx, to).await?;
    bounded(
        mover,
        "creating the deletion staging table",
        tx.batch_execute(
            "SET LOCAL client_min_messages = warning; \
             CREATE TEMP TABLE IF NOT EXISTS stamps_gone (key text[], version bigint) ON COMMIT DELETE ROWS",
        ),
    )
    .await?;
    let since = cursor
        .map(|c| format!(" AND NOT pg_visible_in_snapshot(c.xid, {}::pg_snapshot)", lit(c)))
        .unwrap_or_default();
    let mut copied = 0;
    for t in tables.iter() {
        let changed = format!(
            "SELECT c.key, max(c.version) AS version FROM stamps_mover.changes c \
             WHERE c.tenant = {lt} AND c.table_name = {label}{since} GROUP BY c.key",
            lt = lit(tenant),
            label = t.label(),
        );
        stage(mover, &tx, t).await?;
        let present = format!(
            "COPY (SELECT {cols} FROM {tbl} x JOIN ({changed}) k ON {is} WHERE {of}) TO STDOUT (FORMAT binary)",
            cols = t.columns("x."),
            tbl = t.table(),
            is = t.key_is("x.", "k.key"),
            of = t.of_tenant("x.", tenant),
        );
        let in_sql = format!("COPY {} ({}) FROM STDIN (FORMAT binary)", t.stage(), t.columns(""));
        let what = format!("copying changed rows of {}", t.decl.table());
        let n = pipe(mover, &what, &ftx, &present, &tx, &in_sql).await?;
        let merged = merge(mover, &tx, t, tenant).await?;
        copied += merged.min(n);
        let gone = format!(
            "COPY (SELECT k.key, k.version FROM ({changed}) k WHERE NOT EXISTS (\
               SELECT 1 FROM {tbl} x WHERE {of} AND {is})) TO STDOUT (FORMAT binary)",
            tbl = t.table(),
            of = t.of_tenant("x.", tenant),
            is = t.key_is("x.", "k.key"),
        );
        tx.batch_execute("TRUNCATE stamps_gone").await.map_err(fail_t)?;
        let what = format!("copying deleted keys of {}", t.decl.table());
        pipe(
            mover,
            &what,
            &ftx,
            &gone,
            &tx,
            "COPY stamps_gone (key, version) FROM STDIN (FORMAT binary)",
        )
        .await?;
        let delete = format!(
            "DELETE FROM {tbl} d USING stamps_gone g WHERE {of} AND {is} AND d.{v} <= g.version",
            tbl = t.table(),
            of = t.of_tenant("d.", tenant),
            is = t.key_is("d.", "g.key"),
            v = t.version(""),
        );
        copied += bounded(
            mover,
            "deleting rows deleted on the other side",
            tx.execute(&delete, &[]),
        )
        .await?;
    }
    if progress {
        tx.execute(
            "UPDATE stamps_mover.progress SET cursor = $2, caught_up = caught_up + $3 WHERE migration = $1",
            &[&(ctx.id.0 as i64), &next, &(copied as i64)],
        )
        .await
        .map_err(fail_t)?;
    }
    tx.commit().await.map_err(fail_t)?;
    ftx.commit().await.map_err(fail_f)?;
    Ok(copied)
}

/// The forward catch-up: the source's changes since the destination's cursor (the
/// snapshot's, before any catch-up).
pub(super) async fn catch_up(
    mover: &PgTableMover,
    ctx: &MigrationContext,
    snap: &SnapshotInfo,
) -> Result<u64, DriverError> {
    let client = connect(mover, ctx.destination).await?;
    let cursor: Option<String> = client
        .query_opt(
            "SELECT cursor FROM stamps_mover.progress WHERE migration = $1",
            &[&(ctx.id.0 as i64)],
        )
        .await
        .map_err(|e| pg_err(&format!("reading the cursor of {}", ctx.id), e))?
        .map(|r| r.col(0))
        .transpose()?;
    drop(client);
    let cursor = cursor.unwrap_or_else(|| snap.id.clone());
    copy_changes(mover, ctx, ctx.source, ctx.destination, Some(&cursor), true).await
}
