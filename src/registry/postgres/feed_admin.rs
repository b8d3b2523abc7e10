//! The change feed's administration on `PgRegistry`: its head, pruning, its term (history
//! identity) and opening a new one, and the bench's floor query.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::codec::{big, version_of};
use super::connection::{on_conn, Lease};
use super::fault::{corrupt, Fault};
use super::{FeedTerm, PgRegistry};
use crate::error::Result;
use crate::model::{TenantId, Version};

impl PgRegistry {
    /// The newest version of the change feed.
    pub async fn head(&self) -> Result<Version> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.head).await?;
            let row = c.query_one(&stmt, &[]).await?;
            version_of(row.try_get(0)?)
        })
    }

    /// Deletes change-feed rows up to `through` (always keeping the newest one) and returns how
    /// many were deleted. Followers behind the pruned range get
    /// [`Error::ChangeFeedTruncated`](crate::Error::ChangeFeedTruncated) and resynchronise. History is never pruned.
    pub async fn prune_changes(&self, through: Version) -> Result<u64> {
        let through = big(through.0, "through")?;
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.prune).await?;
            Ok(c.execute(&stmt, &[&through]).await?)
        })
    }

    /// The floor the `postgres` bench compares [`Registry::assignment`] with: the same prepared
    /// single-row `SELECT` by primary key on the same pool, reading one column and decoding
    /// nothing else. Not part of the stable API.
    #[doc(hidden)]
    pub async fn bare_select_by_key(&self, tenant: &TenantId) -> Result<Option<i64>> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.assignment_get).await?;
            let row = c.query_opt(&stmt, &[&tenant.as_str()]).await?;
            Ok(match row {
                Some(r) => Some(r.try_get::<_, i64>(1)?),
                None => None,
            })
        })
    }

    /// The change feed's current term: how many times its history changed (a promotion or a
    /// restore opened a new one), the last version it shares with the previous term and its
    /// first version. See the guide's "Replicas and failover".
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) -> stamps::Result<()> {
    /// let term = registry.feed_term().await?;
    /// println!("term {} since v{} (shares up to v{}), head v{}", term.term, term.start, term.base, term.head);
    /// # Ok(()) }
    /// ```
    pub async fn feed_term(&self) -> Result<FeedTerm> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.term).await?;
            let row = c.query_one(&stmt, &[]).await?;
            Ok(FeedTerm {
                term: u32::try_from(row.try_get::<_, i32>("term")?).map_err(|_| corrupt("feed.term"))?,
                base: version_of(row.try_get("base")?)?,
                start: version_of(row.try_get("term_start")?)?,
                head: version_of(row.try_get("head")?)?,
            })
        })
    }

    /// Makes the next write open a new term of the change feed, so every follower whose cursor
    /// is past the current head resynchronises instead of skipping changes. Writes do this by
    /// themselves after a promotion or a point-in-time restore ([`PgConfig::timelines`](super::PgConfig::timelines)); call
    /// it after restoring a logical dump (`pg_restore`), or on engines without WAL timelines
    /// after any event that may have lost acknowledged writes, before the first write.
    ///
    /// ```no_run
    /// # async fn demo(registry: stamps::registry::postgres::PgRegistry) -> stamps::Result<()> {
    /// registry.begin_new_term().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin_new_term(&self) -> Result<()> {
        on_conn!(self, retry_unique = false, |c| async {
            let stmt = c.prepare_cached(&self.inner.sql.begin_term).await?;
            c.execute(&stmt, &[]).await?;
            Ok(())
        })
    }
}
