//! Combinators: wrap policies to add filters, preferences and fallbacks.

use super::{Explanation, FleetView, Mask, Placement, PlacementError, Rejection, StampFilter};
use crate::model::{StampId, StampLoad, TenantSpec};

/// A boxed policy, for type erasure (`Vec<BoxPlacement>`, a policy chosen from configuration).
pub type BoxPlacement = Box<dyn Placement>;

/// Combinators for every [`Placement`], with a blanket implementation.
///
/// # Order
/// A combinator wraps the policy written before it, so the last one written runs first and
/// decides when the inner ones run:
///
/// ```text
/// base.filter(f).prefer(p).or_else(fallback)
///   = or_else( prefer( filter(base, f), p ), fallback )
/// ```
/// 1. `or_else` runs `base.filter(f).prefer(p)`; only if that finds no stamp, `fallback`.
/// 2. `prefer(p)` runs `base.filter(f)` on the stamps that pass `p`; if none fits, on all.
/// 3. `filter(f)` runs `base` on the stamps that pass `f` (a hard constraint).
/// 4. `base` filters, scores and selects among the stamps left.
///
/// On a [`Pipeline`](super::Pipeline), `.filter(f)` is the pipeline's own method: it adds `f`
/// to the pipeline, with the same effect as the combinator.
///
/// # Example
/// ```
/// use stamps::placement::{policies, InRegion, PlacementExt, BoxPlacement};
/// use stamps::{StampLoad, TenantSpec};
/// let policy: BoxPlacement = policies::least_loaded()
///     .prefer(InRegion)
///     .or_else(policies::most_available())
///     .boxed();
/// # let _ = policy;
/// ```
pub trait PlacementExt: Placement + Sized {
    /// A hard filter: the policy only sees stamps that pass `filter`.
    fn filter<F: StampFilter>(self, filter: F) -> Filter<Self, F> {
        Filter { inner: self, filter }
    }

    /// A soft filter: the policy first sees only the stamps that pass `filter`; if it finds
    /// none, it runs again on all stamps.
    fn prefer<F: StampFilter>(self, filter: F) -> Prefer<Self, F> {
        Prefer { inner: self, filter }
    }

    /// A fallback: if this policy finds no stamp, `other` decides.
    fn or_else<B: Placement>(self, other: B) -> Fallback<Self, B> {
        Fallback {
            primary: self,
            fallback: other,
        }
    }

    /// Boxes the policy.
    fn boxed(self) -> BoxPlacement
    where
        Self: 'static,
    {
        Box::new(self)
    }
}

impl<P: Placement> PlacementExt for P {}

/// Restricts a view to the stamps that pass `filter` for `tenant` (and the parent's own mask).
struct Bound<'a, F> {
    parent: FleetView<'a>,
    tenant: &'a TenantSpec,
    filter: &'a F,
}

impl<F: StampFilter> Mask for Bound<'_, F> {
    fn check<'s>(&self, load: &'s StampLoad) -> Result<(), Rejection<'s>> {
        self.parent.admits(load)?;
        self.filter.check(self.tenant, load, &self.parent)
    }
}

/// A policy restricted by a hard filter: see [`PlacementExt::filter`].
///
/// ```
/// use stamps::placement::{policies, Filter, PlacementExt, Placement, FleetView};
/// use stamps::*;
/// let even: Filter<_, _> = policies::rendezvous()
///     .boxed()
///     .filter(|_: &TenantSpec, s: &StampLoad| s.id().0 % 2 == 0);
/// let fleet = Fleet::default();
/// assert!(even.place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Filter<P, F> {
    inner: P,
    filter: F,
}

impl<P: Placement, F: StampFilter> Filter<P, F> {
    fn chosen(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        let bound = Bound {
            parent: *fleet,
            tenant,
            filter: &self.filter,
        };
        let view = fleet.with_mask(&bound);
        let id = self.inner.place(tenant, &view)?;
        // The inner policy may ignore the view's restriction; never let that through.
        match view.get(id) {
            Some(_) => Ok(id),
            None => Err(PlacementError::Policy {
                reason: "the inner policy chose a stamp the filter excludes",
            }),
        }
    }
}

impl<P: Placement, F: StampFilter> Placement for Filter<P, F> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        self.chosen(tenant, fleet)
    }

    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        let bound = Bound {
            parent: *fleet,
            tenant,
            filter: &self.filter,
        };
        let mut e = self.inner.explain(tenant, &fleet.with_mask(&bound));
        e.outcome = self.chosen(tenant, fleet);
        e.notes.push(format!("hard filter `{}` applied", self.filter.name()));
        e
    }
}

/// A policy with a soft preference: see [`PlacementExt::prefer`].
///
/// ```
/// use stamps::placement::{policies, InRegion, PlacementExt, Placement, FleetView};
/// use stamps::*;
/// let p = policies::least_loaded().prefer(InRegion);
/// let fleet = Fleet::default();
/// assert!(p.place(&TenantSpec::new(TenantId::new("a")?), &FleetView::new(&fleet)).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Prefer<P, F> {
    inner: P,
    filter: F,
}

impl<P: Placement, F: StampFilter> Placement for Prefer<P, F> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        let bound = Bound {
            parent: *fleet,
            tenant,
            filter: &self.filter,
        };
        let view = fleet.with_mask(&bound);
        match self.inner.place(tenant, &view) {
            Ok(id) if view.get(id).is_some() => Ok(id),
            _ => self.inner.place(tenant, fleet),
        }
    }

    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        let bound = Bound {
            parent: *fleet,
            tenant,
            filter: &self.filter,
        };
        let view = fleet.with_mask(&bound);
        let first = self.inner.explain(tenant, &view);
        match &first.outcome {
            Ok(id) if view.get(*id).is_some() => {
                let mut e = first;
                e.notes.push(format!("preference `{}` met", self.filter.name()));
                e
            }
            other => {
                let why = match other {
                    Err(err) => err.to_string(),
                    Ok(_) => "the inner policy ignored it".to_string(),
                };
                let mut e = self.inner.explain(tenant, fleet);
                e.notes.push(format!(
                    "preference `{}` not met ({why}); tried again without it",
                    self.filter.name()
                ));
                e
            }
        }
    }
}

/// A policy with a fallback: see [`PlacementExt::or_else`].
///
/// ```
/// use stamps::placement::{policies, InRegion, PlacementExt};
/// let p = policies::least_loaded().filter(InRegion).or_else(policies::least_loaded());
/// # let _ = p;
/// ```
#[derive(Debug, Clone)]
pub struct Fallback<A, B> {
    primary: A,
    fallback: B,
}

impl<A: Placement, B: Placement> Placement for Fallback<A, B> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        match self.primary.place(tenant, fleet) {
            Ok(id) => Ok(id),
            Err(_) => self.fallback.place(tenant, fleet),
        }
    }

    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        let first = self.primary.explain(tenant, fleet);
        match &first.outcome {
            Ok(_) => first,
            Err(err) => {
                let mut e = self.fallback.explain(tenant, fleet);
                e.notes.insert(
                    0,
                    format!("primary policy found no stamp ({err}); the fallback decided"),
                );
                e
            }
        }
    }
}

/// One of two policies, chosen when the policy is built (from configuration, say).
///
/// ```
/// use stamps::placement::{policies, Either, Placement};
/// let pack_for_cost = true;
/// let p = if pack_for_cost {
///     Either::Left(policies::bin_packing())
/// } else {
///     Either::Right(policies::least_loaded())
/// };
/// fn takes(_: &dyn Placement) {}
/// takes(&p);
/// ```
#[derive(Debug, Clone)]
pub enum Either<A, B> {
    /// The first policy.
    Left(A),
    /// The second policy.
    Right(B),
}

impl<A: Placement, B: Placement> Placement for Either<A, B> {
    fn place(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Result<StampId, PlacementError> {
        match self {
            Either::Left(a) => a.place(tenant, fleet),
            Either::Right(b) => b.place(tenant, fleet),
        }
    }

    fn explain(&self, tenant: &TenantSpec, fleet: &FleetView<'_>) -> Explanation {
        match self {
            Either::Left(a) => a.explain(tenant, fleet),
            Either::Right(b) => b.explain(tenant, fleet),
        }
    }
}
