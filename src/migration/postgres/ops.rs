//! The mover's database plumbing: connections with the session settings the copy relies
//! on, error classification, the generation check every effect makes, fence rows, batched
//! deletes and the progress row.

use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::Transaction;

use super::{MoveProgress, PgTableMover};
use crate::migration::driver::{DriverError, MigrationContext};
use crate::model::{Epoch, MigrationId, StampId};

/// Typed column reads that fail with an error, never a panic.
pub(super) trait Cols {
    /// Column `i` as `T`; a permanent error if the database returned something else.
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T, DriverError>;
}

impl Cols for tokio_postgres::Row {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, i: usize) -> Result<T, DriverError> {
        self.try_get(i)
            .map_err(|e| DriverError::permanent(format!("the database returned an unreadable value: {e}")))
    }
}

/// A SQL string literal (standard-conforming strings are on in the mover's sessions).
pub(super) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Classifies a driver error: a lost connection, a timeout, lack of resources, a
/// serialization failure or a deadlock is retryable; anything else (a missing table, a
/// permission, a type mismatch) is permanent.
pub(super) fn pg_err(what: &str, e: tokio_postgres::Error) -> DriverError {
    let retryable = e.code().is_none_or(|c| crate::registry::postgres::transient(c.code()));
    let message = match e.as_db_error() {
        Some(db) => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{what}: {e}"),
    };
    let err = if retryable {
        DriverError::retryable(message)
    } else {
        DriverError::permanent(message)
    };
    err.caused_by(e)
}

/// A connection to `stamp`'s database with the mover's session settings: statement and
/// lock timeouts, UTC, ISO dates and exact floats (so values read as text on one stamp
/// mean the same on the other).
pub(super) async fn connect(mover: &PgTableMover, stamp: StampId) -> Result<Object, DriverError> {
    let pool = mover.pool(stamp)?;
    let client = pool
        .get()
        .await
        .map_err(|e| DriverError::retryable(format!("cannot connect to {stamp}'s database: {e}")))?;
    let ms = mover.settings().statement_timeout.as_millis().max(1);
    let setup = format!(
        "SET statement_timeout = {ms}; SET lock_timeout = {ms}; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
         SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET standard_conforming_strings = on; \
         SET bytea_output = 'hex'"
    );
    bounded(
        mover,
        &format!("setting up a session on {stamp}"),
        client.batch_execute(&setup),
    )
    .await?;
    Ok(client)
}

/// Runs a statement bounded on the client side too (a little past the server's timeout),
/// classifying its error.
pub(super) async fn bounded<T>(
    mover: &PgTableMover,
    what: &str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DriverError> {
    let limit = mover.settings().statement_timeout + Duration::from_secs(5);
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(pg_err(what, e)),
        Err(_) => Err(DriverError::retryable(format!("{what}: no answer within {limit:?}"))),
    }
}

/// Records `ctx`'s generation for its migration on this database, refusing an older one
/// (the caller's transaction then rolls back with its effects).
pub(super) async fn check_generation(
    tx: &Transaction<'_>,
    ctx: &MigrationContext,
    stamp: StampId,
) -> Result<(), DriverError> {
    let (id, generation) = (ctx.id.0 as i64, ctx.generation as i64);
    let row = tx
        .query_opt(
            "INSERT INTO stamps_mover.generations (migration, generation) VALUES ($1, $2) \
             ON CONFLICT (migration) DO UPDATE SET generation = EXCLUDED.generation \
             WHERE stamps_mover.generations.generation <= EXCLUDED.generation RETURNING generation",
            &[&id, &generation],
        )
        .await
        .map_err(|e| pg_err(&format!("checking the lease generation on {stamp}"), e))?;
    if row.is_none() {
        return Err(DriverError::permanent(format!(
            "{} on {stamp}: lease generation {} is older than the newest seen there; a newer worker took the migration over",
            ctx.id, ctx.generation
        )));
    }
    Ok(())
}

/// A read-only `REPEATABLE READ` transaction: one snapshot for all its statements.
pub(super) async fn snapshot_tx(c: &mut tokio_postgres::Client) -> Result<Transaction<'_>, tokio_postgres::Error> {
    c.build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// The snapshot of a [`snapshot_tx`] (`pg_current_snapshot()` as text).
pub(super) async fn snapshot_of(tx: &Transaction<'_>) -> Result<String, tokio_postgres::Error> {
    tx.query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .try_get(0)
}

/// Marks the transaction as the mover's own (the fence trigger lets it through unchanged).
pub(super) async fn as_mover(tx: &Transaction<'_>, stamp: StampId) -> Result<(), DriverError> {
    tx.batch_execute("SET LOCAL stamps.mover = 'on'")
        .await
        .map_err(|e| pg_err(&format!("starting a mover transaction on {stamp}"), e))
}

/// What a fence row update does.
#[derive(Debug, Clone, Copy)]
pub(super) enum FenceUpdate {
    /// Turn change tracking on (snapshot on the source, import on the destination).
    Track,
    /// Raise the fence to `epoch`, noting whether the stamp still holds the tenant.
    Raise(Epoch, bool),
    /// Turn change tracking off (the move ended).
    Untrack,
}

/// Updates the tenant's fence row on `stamp` after checking the generation, in one
/// transaction. Updating an existing row waits for every write holding it (the trigger
/// locks it `FOR SHARE`): the drain. A row created here cannot have been locked by writers
/// already running, so the call then waits until every transaction whose snapshot predates
/// the row has ended (at most the settle timeout).
pub(super) async fn update_fence(
    mover: &PgTableMover,
    ctx: &MigrationContext,
    stamp: StampId,
    update: FenceUpdate,
) -> Result<(), DriverError> {
    let tenant = ctx.tenant.as_str();
    let mut client = connect(mover, stamp).await?;
    let fail = |e| pg_err(&format!("updating the fence of {tenant} on {stamp}"), e);
    let tx = client.transaction().await.map_err(fail)?;
    check_generation(&tx, ctx, stamp).await?;
    let created: bool = match update {
        FenceUpdate::Track => tx
            .query_one(
                "INSERT INTO stamps_mover.fences (tenant, tracking) VALUES ($1, true) \
                 ON CONFLICT (tenant) DO UPDATE SET tracking = true RETURNING xmax = 0",
                &[&tenant],
            )
            .await
            .map_err(fail)?
            .col(0)?,
        FenceUpdate::Raise(epoch, holds) => {
            // Fence::raise: never lower; at the same epoch, holds may only be given up.
            let e = epoch.0.to_string();
            tx.query_one(
                "INSERT INTO stamps_mover.fences (tenant, epoch, holds) VALUES ($1, $2::text::numeric, $3) \
                 ON CONFLICT (tenant) DO UPDATE SET \
                   holds = CASE WHEN EXCLUDED.epoch > stamps_mover.fences.epoch THEN EXCLUDED.holds \
                                WHEN EXCLUDED.epoch = stamps_mover.fences.epoch THEN stamps_mover.fences.holds AND EXCLUDED.holds \
                                ELSE stamps_mover.fences.holds END, \
                   epoch = greatest(stamps_mover.fences.epoch, EXCLUDED.epoch) \
                 RETURNING xmax = 0",
                &[&tenant, &e, &holds],
            )
            .await
            .map_err(fail)?
            .col(0)?
        }
        FenceUpdate::Untrack => {
            tx.execute(
                "UPDATE stamps_mover.fences SET tracking = false WHERE tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(fail)?;
            false
        }
    };
    let committed_at: std::time::SystemTime = tx
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(fail)?
        .col(0)?;
    tx.commit().await.map_err(fail)?;
    if created {
        settle(mover, &client, stamp, committed_at).await?;
    }
    Ok(())
}

/// Waits until no other session of the database holds a snapshot or has written in a
/// transaction begun before `since` (such a writer may not have seen the new fence row).
async fn settle(
    mover: &PgTableMover,
    client: &Object,
    stamp: StampId,
    since: std::time::SystemTime,
) -> Result<(), DriverError> {
    let started = Instant::now();
    loop {
        let pids: Vec<i32> = client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) AND xact_start < $1",
                &[&since],
            )
            .await
            .map_err(|e| pg_err(&format!("waiting for older transactions on {stamp}"), e))?
            .iter()
            .map(|r| r.col(0))
            .collect::<Result<_, _>>()?;
        if pids.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= mover.settings().settle_timeout {
            return Err(DriverError::retryable(format!(
                "transactions older than the tenant's new fence row are still open on {stamp} (pids {pids:?}) after {:?}",
                mover.settings().settle_timeout
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deletes the tenant's rows of every declared table on `stamp`, in batches of the
/// configured size, each batch its own transaction checking the generation; then its change
/// log entries and, if `progress_of` is given, that migration's progress row.
pub(super) async fn delete_tenant(
    mover: &PgTableMover,
    ctx: &MigrationContext,
    stamp: StampId,
    progress_of: Option<MigrationId>,
) -> Result<u64, DriverError> {
    let tables = mover.catalog(stamp).await?;
    let mut client = connect(mover, stamp).await?;
    let tenant = ctx.tenant.as_str();
    let fail = |e| pg_err(&format!("deleting {tenant}'s rows on {stamp}"), e);
    let batch = mover.settings().delete_batch as i64;
    let mut deleted = 0;
    for t in tables.iter() {
        let sql = format!(
            "DELETE FROM {tbl} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {tbl} x WHERE {of} LIMIT $1))",
            tbl = t.table(),
            of = t.of_tenant("x.", tenant)
        );
        loop {
            let tx = client.transaction().await.map_err(fail)?;
            check_generation(&tx, ctx, stamp).await?;
            as_mover(&tx, stamp).await?;
            let n = bounded(mover, "deleting a batch", tx.execute(&sql, &[&batch])).await?;
            tx.commit().await.map_err(fail)?;
            deleted += n;
            if n < batch as u64 {
                break;
            }
        }
    }
    let tx = client.transaction().await.map_err(fail)?;
    check_generation(&tx, ctx, stamp).await?;
    bounded(
        mover,
        "clearing the change log",
        tx.execute("DELETE FROM stamps_mover.changes WHERE tenant = $1", &[&tenant]),
    )
    .await?;
    if let Some(m) = progress_of {
        tx.execute(
            "DELETE FROM stamps_mover.progress WHERE migration = $1",
            &[&(m.0 as i64)],
        )
        .await
        .map_err(fail)?;
    }
    tx.commit().await.map_err(fail)?;
    Ok(deleted)
}

/// Forgets the move on `stamp`: tracking off, change log and progress row gone (the rows
/// stay).
pub(super) async fn forget(mover: &PgTableMover, ctx: &MigrationContext, stamp: StampId) -> Result<(), DriverError> {
    update_fence(mover, ctx, stamp, FenceUpdate::Untrack).await?;
    let mut client = connect(mover, stamp).await?;
    let fail = |e| pg_err(&format!("clearing the move's log on {stamp}"), e);
    let tx = client.transaction().await.map_err(fail)?;
    check_generation(&tx, ctx, stamp).await?;
    let tenant = ctx.tenant.as_str();
    bounded(
        mover,
        "clearing the change log",
        tx.execute("DELETE FROM stamps_mover.changes WHERE tenant = $1", &[&tenant]),
    )
    .await?;
    tx.execute(
        "DELETE FROM stamps_mover.progress WHERE migration = $1",
        &[&(ctx.id.0 as i64)],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)
}

/// The progress row of `migration` on `destination`.
pub(super) async fn progress(
    mover: &PgTableMover,
    destination: StampId,
    migration: MigrationId,
) -> Result<Option<MoveProgress>, DriverError> {
    let client = connect(mover, destination).await?;
    let row = client
        .query_opt(
            "SELECT table_index, imported, caught_up, cursor FROM stamps_mover.progress WHERE migration = $1",
            &[&(migration.0 as i64)],
        )
        .await
        .map_err(|e| pg_err(&format!("reading the progress of {migration}"), e))?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(MoveProgress {
        table: usize::try_from(r.col::<i32>(0)?).unwrap_or(0),
        imported: u64::try_from(r.col::<i64>(1)?).unwrap_or(0),
        caught_up: u64::try_from(r.col::<i64>(2)?).unwrap_or(0),
        cursor: r.col(3)?,
    }))
}
