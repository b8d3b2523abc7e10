//! Fencing at the stamp: [`FenceToken`] and [`Fence`].

use std::collections::HashMap;
use std::fmt;

use crate::model::{Assignment, AssignmentMode, Epoch, StampId, TenantId};
use crate::router::Route;
use crate::time::Timestamp;

/// What a writer presents to a stamp with every write: "I write tenant `tenant` on `stamp`
/// under assignment epoch `epoch`". Made from the assignment the writer routed by, so a
/// writer routing by a stale cached assignment carries a stale epoch.
///
/// ```
/// use stamps::migration::FenceToken;
/// use stamps::{Epoch, StampId, TenantId};
/// let t = FenceToken::new(TenantId::new("acme")?, StampId(2), Epoch(9));
/// assert_eq!(t.to_string(), "acme@stamp-002/e9");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FenceToken {
    /// The tenant written.
    pub tenant: TenantId,
    /// The stamp the write is addressed to.
    pub stamp: StampId,
    /// The epoch of the assignment the writer routed by.
    pub epoch: Epoch,
}

impl FenceToken {
    /// A token.
    pub fn new(tenant: TenantId, stamp: StampId, epoch: Epoch) -> Self {
        FenceToken { tenant, stamp, epoch }
    }

    /// The tokens for a write at `now` routed by `assignment`: one for the serving stamp
    /// and, in dual-write, one for the shadow. Empty while the assignment is frozen at `now`
    /// (writes wait); once a freeze expired, the tokens of dual-write to its shadow (the
    /// stamp's fence admits them at the freeze's epoch, and a later cutover freezes again).
    /// Allocates nothing (see [`RouteTokens`]).
    ///
    /// ```
    /// # use stamps::*;
    /// # use stamps::migration::FenceToken;
    /// let spec = TenantSpec::new(TenantId::new("acme")?);
    /// let a = Assignment::new(spec, StampId(1), Epoch(4), AssignmentMode::DualWrite { shadow: StampId(2) },
    ///     Timestamp::ZERO, Timestamp::ZERO);
    /// let stamps: Vec<_> = FenceToken::for_write(&a, Timestamp::ZERO).map(|t| t.stamp).collect();
    /// assert_eq!(stamps, [StampId(1), StampId(2)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_write(assignment: &Assignment, now: Timestamp) -> RouteTokens {
        RouteTokens::new(
            assignment.tenant(),
            assignment.stamp,
            assignment.epoch,
            assignment.mode.at(now),
        )
    }

    /// The tokens for a write to `tenant` at `now` routed by a router's [`Route`]: one for
    /// the serving stamp and, in dual-write, one for the shadow; none while the route is
    /// frozen at `now` ([`Route::writes_allowed_at`]); an expired freeze gives dual-write's.
    /// This is the hot path of a host's writes, so it allocates nothing: the tokens live in
    /// the returned fixed-size iterator and the tenant id is shared, not copied.
    ///
    /// ```
    /// use stamps::migration::FenceToken;
    /// use stamps::router::Route;
    /// use stamps::{AssignmentMode, Epoch, StampId, TenantId, Timestamp};
    /// let acme = TenantId::new("acme")?;
    /// let mut route = Route::new(StampId(1), Epoch(4));
    /// route.mode = AssignmentMode::DualWrite { shadow: StampId(2) };
    /// let tokens = FenceToken::for_route(&acme, &route, Timestamp::ZERO);
    /// assert_eq!(tokens.len(), 2);
    /// let shown: Vec<String> = tokens.map(|t| t.to_string()).collect();
    /// assert_eq!(shown, ["acme@stamp-001/e4", "acme@stamp-002/e4"]);
    ///
    /// // Frozen for a cutover until t = 5 s: no tokens before, dual-write's after.
    /// route.mode = AssignmentMode::Frozen { shadow: Some(StampId(2)), until: Timestamp::from_millis(5_000) };
    /// assert_eq!(FenceToken::for_route(&acme, &route, Timestamp::from_millis(4_999)).len(), 0);
    /// assert_eq!(FenceToken::for_route(&acme, &route, Timestamp::from_millis(5_000)).len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn for_route(tenant: &TenantId, route: &Route, now: Timestamp) -> RouteTokens {
        RouteTokens::new(tenant, route.stamp, route.epoch, route.mode.at(now))
    }
}

/// The fence tokens of one write: at most two (serving stamp, then the dual-write shadow),
/// held inline, so making them allocates nothing. Made by [`FenceToken::for_route`] and
/// [`FenceToken::for_write`].
///
/// ```
/// use stamps::migration::{FenceToken, RouteTokens};
/// use stamps::router::Route;
/// use stamps::{Epoch, StampId, TenantId, Timestamp};
/// let route = Route::new(StampId(3), Epoch(1));
/// let tokens: RouteTokens = FenceToken::for_route(&TenantId::new("acme")?, &route, Timestamp::ZERO);
/// assert_eq!(tokens.map(|t| t.stamp).collect::<Vec<_>>(), [StampId(3)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RouteTokens {
    tokens: [Option<FenceToken>; 2],
    next: usize,
}

impl RouteTokens {
    fn new(tenant: &TenantId, stamp: StampId, epoch: Epoch, mode: AssignmentMode) -> Self {
        if mode.is_frozen() {
            return RouteTokens {
                tokens: [None, None],
                next: 0,
            };
        }
        let shadow = mode
            .shadow()
            .filter(|s| *s != stamp)
            .map(|s| FenceToken::new(tenant.clone(), s, epoch));
        RouteTokens {
            tokens: [Some(FenceToken::new(tenant.clone(), stamp, epoch)), shadow],
            next: 0,
        }
    }
}

impl Iterator for RouteTokens {
    type Item = FenceToken;

    fn next(&mut self) -> Option<FenceToken> {
        while self.next < self.tokens.len() {
            let i = self.next;
            self.next += 1;
            if let Some(t) = self.tokens[i].take() {
                return Some(t);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.tokens[self.next.min(2)..].iter().filter(|t| t.is_some()).count();
        (n, Some(n))
    }
}

impl ExactSizeIterator for RouteTokens {}

impl std::iter::FusedIterator for RouteTokens {}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}/{}", self.tenant, self.stamp, self.epoch)
    }
}

/// Why a stamp refused a write. A small `Copy` value.
///
/// ```
/// use stamps::migration::FenceRejection;
/// use stamps::Epoch;
/// let r = FenceRejection::Stale { token: Epoch(3), current: Epoch(5) };
/// assert!(r.to_string().contains("refresh the route"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FenceRejection {
    /// The token is addressed to another stamp.
    WrongStamp {
        /// This stamp.
        this: StampId,
        /// The token's stamp.
        token: StampId,
    },
    /// The token's epoch is older than the newest this stamp knows for the tenant.
    Stale {
        /// The token's epoch.
        token: Epoch,
        /// The newest epoch the stamp knows.
        current: Epoch,
    },
    /// The stamp no longer holds the tenant as of `since` (moved away, or a migration's copy
    /// was dropped).
    NotHeld {
        /// The epoch at which the stamp gave the tenant up.
        since: Epoch,
    },
}

impl fmt::Display for FenceRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceRejection::WrongStamp { this, token } => {
                write!(f, "write addressed to {token} reached {this}; route again")
            }
            FenceRejection::Stale { token, current } => write!(
                f,
                "write carries epoch {token} but the stamp knows {current}; refresh the route and retry"
            ),
            FenceRejection::NotHeld { since } => write!(
                f,
                "the stamp gave the tenant up at {since}; refresh the route and retry on its new stamp"
            ),
        }
    }
}

impl std::error::Error for FenceRejection {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FenceEntry {
    epoch: Epoch,
    holds: bool,
}

/// One stamp's fence table: per tenant, the newest assignment epoch the stamp has seen and
/// whether it still holds the tenant.
///
/// A write is admitted if its [`FenceToken`] is addressed to this stamp and its epoch is newer
/// than the stamp's, or equal while the stamp still holds the tenant; an admitted newer epoch
/// is remembered (the fence ratchets). The migration engine raises fences through
/// [`MigrationDriver::fence`](super::MigrationDriver::fence) at every assignment change it
/// makes, so after a cutover the old stamp refuses every write routed by a stale cache.
///
/// `Fence` does no locking: keep it under the **same** lock (or in the same database
/// transaction, as a `tenant_fences` row updated with `... WHERE epoch <= $token`) as the data
/// it protects, and call [`Fence::admit`] and apply the write in one critical section. That is
/// what makes [`Fence::raise`] a drain: once it returns, no older write can land.
///
/// ```
/// use stamps::migration::{Fence, FenceRejection, FenceToken};
/// use stamps::{Epoch, StampId, TenantId};
/// let acme = TenantId::new("acme")?;
/// let mut source = Fence::new(StampId(1));
/// source.admit(&FenceToken::new(acme.clone(), StampId(1), Epoch(4)))?; // dual-write era
/// // Cutover: the tenant moved to stamp 2 at epoch 6; stamp 1 keeps a reverse-dual-write copy.
/// source.raise(&acme, Epoch(6), true);
/// let stale = FenceToken::new(acme.clone(), StampId(1), Epoch(4));
/// assert_eq!(source.admit(&stale), Err(FenceRejection::Stale { token: Epoch(4), current: Epoch(6) }));
/// // Cleanup: stamp 1 gives the tenant up at epoch 7.
/// source.raise(&acme, Epoch(7), false);
/// assert_eq!(source.admit(&FenceToken::new(acme, StampId(1), Epoch(7))),
///     Err(FenceRejection::NotHeld { since: Epoch(7) }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fence {
    stamp: StampId,
    tenants: HashMap<TenantId, FenceEntry>,
}

impl Fence {
    /// An empty fence for `stamp` (it admits the first token of every tenant).
    pub fn new(stamp: StampId) -> Self {
        Fence {
            stamp,
            tenants: HashMap::new(),
        }
    }

    /// The stamp this fence guards.
    pub fn stamp(&self) -> StampId {
        self.stamp
    }

    /// Checks `token` without remembering it.
    pub fn check(&self, token: &FenceToken) -> Result<(), FenceRejection> {
        if token.stamp != self.stamp {
            return Err(FenceRejection::WrongStamp {
                this: self.stamp,
                token: token.stamp,
            });
        }
        match self.tenants.get(&token.tenant) {
            None => Ok(()),
            Some(e) if token.epoch > e.epoch => Ok(()),
            Some(e) if token.epoch == e.epoch && e.holds => Ok(()),
            Some(e) if token.epoch == e.epoch => Err(FenceRejection::NotHeld { since: e.epoch }),
            Some(e) => Err(FenceRejection::Stale {
                token: token.epoch,
                current: e.epoch,
            }),
        }
    }

    /// Checks `token` and, if admitted, remembers its epoch (a newer epoch means a newer
    /// assignment that routes writes here, so the stamp holds the tenant).
    pub fn admit(&mut self, token: &FenceToken) -> Result<(), FenceRejection> {
        self.check(token)?;
        let entry = self.tenants.entry(token.tenant.clone()).or_insert(FenceEntry {
            epoch: token.epoch,
            holds: true,
        });
        if token.epoch > entry.epoch {
            *entry = FenceEntry {
                epoch: token.epoch,
                holds: true,
            };
        }
        Ok(())
    }

    /// Raises the tenant's fence to `epoch`, noting whether this stamp still holds the tenant
    /// at that epoch. A raise to an older epoch than known does nothing (fences never go
    /// down); a raise to the same epoch may only give the tenant up, not take it back.
    pub fn raise(&mut self, tenant: &TenantId, epoch: Epoch, holds: bool) {
        match self.tenants.get_mut(tenant) {
            Some(e) if epoch < e.epoch => {}
            Some(e) if epoch == e.epoch => e.holds = e.holds && holds,
            Some(e) => *e = FenceEntry { epoch, holds },
            None => {
                self.tenants.insert(tenant.clone(), FenceEntry { epoch, holds });
            }
        }
    }

    /// The newest epoch known for `tenant`, and whether the stamp holds it.
    pub fn current(&self, tenant: &TenantId) -> Option<(Epoch, bool)> {
        self.tenants.get(tenant).map(|e| (e.epoch, e.holds))
    }
}
