//! The fleet-wide checks an operator runs on demand: configuration drift
//! (`GET /api/drift`) and the registry reconciled against every stamp's inventory
//! (`GET /api/reconcile`). Each asks every stamp, concurrently and under the per-stamp timeout
//! of [`ReconcileOptions`], so they are not on the dashboard's own path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use http::request::Parts;
use serde::Serialize;

use super::api::{check, ApiError, ApiResult};
use super::{Access, Inner};
use crate::model::{RunningConfig, StampId};
use crate::reconcile::{collect_drift, reconcile};

/// `GET /api/drift`: what every stamp runs, grouped, against the desired configuration.
#[derive(Debug, Serialize)]
pub(super) struct DriftView {
    desired: RunningConfig,
    groups: Vec<DriftGroupView>,
    /// Stamps whose configuration could not be read, with the reason.
    unreported: Vec<(StampId, String)>,
    /// Stamps whose registry version label disagrees with what they run.
    label_mismatch: Vec<StampId>,
}

#[derive(Debug, Serialize)]
struct DriftGroupView {
    running: RunningConfig,
    stamps: Vec<StampId>,
    /// What differs from the desired configuration (`version`, `fingerprint`); empty when
    /// the group runs the desired one.
    differs: Vec<&'static str>,
}

fn not_configured(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_configured",
        format!("this admin API has no {what}; the host wires one with AdminApi::{what}"),
    )
}

pub(super) async fn drift(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Json<DriftView>> {
    check(&inner, &parts, Access::Read)?;
    let (source, desired) = inner.drift.clone().ok_or_else(|| not_configured("drift"))?;
    let fleet = inner.registry.fleet().await?;
    let report = collect_drift(&fleet, source, &desired, &inner.checks).await;
    Ok(Json(DriftView {
        desired: report.desired.config,
        groups: report
            .groups
            .into_iter()
            .map(|g| DriftGroupView {
                running: g.running,
                stamps: g.stamps,
                differs: g.differs,
            })
            .collect(),
        unreported: report.unreported,
        label_mismatch: report.label_mismatch,
    }))
}

/// `GET /api/reconcile`: the registry against every stamp's inventory.
#[derive(Debug, Serialize)]
pub(super) struct ReconcileView {
    /// Assignments read from the registry.
    assignments: u64,
    /// Tenant copies the stamps reported.
    copies: u64,
    /// Whether every stamp answered in full (findings are only complete then).
    complete: bool,
    findings: Vec<FindingView>,
    unreadable: Vec<UnreadableView>,
    /// Stamps with no inventory configured.
    not_inventoried: Vec<StampId>,
}

#[derive(Debug, Serialize)]
struct FindingView {
    tenant: String,
    stamp: StampId,
    /// `orphan`, `missing`, `leftover_shadow`, `stray_copy` or `invalid_id`.
    kind: &'static str,
    /// The repair to apply (`reconcile::apply_repair`), in words.
    repair: String,
}

#[derive(Debug, Serialize)]
struct UnreadableView {
    stamp: StampId,
    reason: String,
    read_up_to: Option<String>,
}

pub(super) async fn reconcile_report(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Json<ReconcileView>> {
    check(&inner, &parts, Access::Read)?;
    let inventories = inner.inventories.clone().ok_or_else(|| not_configured("inventories"))?;
    let report = reconcile(&*inner.registry, &inventories, &inner.checks).await?;
    Ok(Json(ReconcileView {
        assignments: report.assignments,
        copies: report.copies,
        complete: report.is_complete(),
        findings: report
            .findings
            .iter()
            .map(|f| FindingView {
                tenant: f.tenant.clone(),
                stamp: f.stamp,
                kind: f.kind.as_str(),
                repair: f.repair.to_string(),
            })
            .collect(),
        unreadable: report
            .unreadable
            .into_iter()
            .map(|u| UnreadableView {
                stamp: u.stamp,
                reason: u.reason,
                read_up_to: u.read_up_to,
            })
            .collect(),
        not_inventoried: report.not_inventoried,
    }))
}
