//! `RegistryExt::all_assignments` reads every page in tenant order, and a backend whose pages
//! do not advance (a buggy or hostile implementation) gives `Error::Corrupt` instead of an
//! endless loop.

use stamps::registry::{ChangeSignal, RegistryExt};
use stamps::*;

/// How a [`Paging`] registry misbehaves when listing assignments.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Listing {
    Honest,
    /// Always the first page, whatever `after` says.
    Repeats,
    /// One more row than asked.
    Overlong,
}

#[derive(Debug)]
struct Paging {
    inner: InMemoryRegistry,
    listing: Listing,
}

#[stamps::async_trait]
impl Registry for Paging {
    async fn assignments(&self, after: Option<&TenantId>, limit: usize) -> Result<Vec<Assignment>> {
        match self.listing {
            Listing::Honest => self.inner.assignments(after, limit).await,
            Listing::Repeats => self.inner.assignments(None, limit).await,
            Listing::Overlong => self.inner.assignments(after, limit + 1).await,
        }
    }
    async fn assign(&self, tenant: &TenantSpec, stamp: StampId) -> Result<Assignment> {
        self.inner.assign(tenant, stamp).await
    }
    async fn put_stamp(&self, spec: StampSpec) -> Result<Stamp> {
        self.inner.put_stamp(spec).await
    }
    async fn stamp(&self, id: StampId) -> Result<Option<Stamp>> {
        self.inner.stamp(id).await
    }
    async fn set_stamp_state(&self, id: StampId, state: StampState) -> Result<Stamp> {
        self.inner.set_stamp_state(id, state).await
    }
    async fn fleet(&self) -> Result<Fleet> {
        self.inner.fleet().await
    }
    async fn assignment(&self, tenant: &TenantId) -> Result<Option<Assignment>> {
        self.inner.assignment(tenant).await
    }
    async fn compare_and_set(
        &self,
        tenant: &TenantId,
        expected: Epoch,
        change: AssignmentChange,
    ) -> Result<Assignment> {
        self.inner.compare_and_set(tenant, expected, change).await
    }
    async fn unassign(&self, tenant: &TenantId, expected: Epoch) -> Result<()> {
        self.inner.unassign(tenant, expected).await
    }
    async fn history(&self, tenant: &TenantId) -> Result<Vec<HistoryEntry>> {
        self.inner.history(tenant).await
    }
    async fn changes_since(&self, after: Version, limit: usize) -> Result<ChangeBatch> {
        self.inner.changes_since(after, limit).await
    }
    fn change_signal(&self) -> ChangeSignal {
        self.inner.change_signal()
    }
    async fn create_migration(&self, record: MigrationRecord) -> Result<MigrationRecord> {
        self.inner.create_migration(record).await
    }
    async fn migration(&self, id: MigrationId) -> Result<Option<MigrationRecord>> {
        self.inner.migration(id).await
    }
    async fn save_migration(&self, record: &MigrationRecord) -> Result<MigrationRecord> {
        self.inner.save_migration(record).await
    }
    async fn migrations(&self, tenant: Option<&TenantId>) -> Result<Vec<MigrationRecord>> {
        self.inner.migrations(tenant).await
    }
}

/// 2,500 tenants: two full pages and a partial one.
async fn fleet(listing: Listing) -> Paging {
    let inner = InMemoryRegistry::new();
    let cap = Capacity::new([(Resource::Tenants, 10_000.0)], 0.0).unwrap();
    let spec = StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap();
    inner.put_active_stamp(spec).await.unwrap();
    for i in 0..2_500 {
        let t = TenantId::new(&format!("t{i:05}")).unwrap();
        inner.assign(&TenantSpec::new(t), StampId(1)).await.unwrap();
    }
    Paging { inner, listing }
}

#[tokio::test]
async fn every_page_is_read_once_in_tenant_order() {
    let all = fleet(Listing::Honest).await.all_assignments().await.unwrap();
    assert_eq!(all.len(), 2_500);
    assert!(all.windows(2).all(|w| w[0].tenant() < w[1].tenant()));
}

#[tokio::test]
async fn pages_that_do_not_advance_are_refused_not_looped_over() {
    for listing in [Listing::Repeats, Listing::Overlong] {
        let e = fleet(listing).await.all_assignments().await;
        assert!(
            matches!(&e, Err(Error::Corrupt { what, .. }) if what == "assignment listing"),
            "{listing:?}: {e:?}"
        );
    }
}
