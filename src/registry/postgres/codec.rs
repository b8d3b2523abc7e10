//! Rows (and their JSON images in the change feed) to model values, and model values to
//! column parameters. Every value read back goes through the model's validating
//! constructors, so a row edited by hand yields an error, never an invalid value.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::fault::{corrupt, named, Fault};
use crate::error::InvalidInput;
use crate::model::{
    Amount, Amounts, Assignment, AssignmentMode, Capacity, Change, ChangeKind, ConstraintKind, Decision, Demand, Epoch,
    HistoryAction, HistoryEntry, Labels, MigrationId, MigrationRecord, MigrationState, Override, Pin, Redirect,
    RedirectWhen, Region, Residency, Resource, RouteOverride, Stamp, StampId, StampLoad, StampSpec, StampState,
    TenantId, TenantSpec, Tier, Version,
};
use crate::time::Timestamp;

/// Named fields of a row: a result row, or its JSON image (`row_to_json`) stored in the change feed.
pub(crate) trait Fields {
    fn int(&self, name: &str) -> Result<Option<i64>, Fault>;
    fn text(&self, name: &str) -> Result<Option<&str>, Fault>;
    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Fault>;
    fn flag(&self, name: &str) -> Result<Option<bool>, Fault>;
}

impl Fields for Row {
    // A value of the column's type that does not convert (a JSON document of another shape,
    // say) is a corrupt row, not a driver failure.
    fn int(&self, name: &str) -> Result<Option<i64>, Fault> {
        self.try_get(name).map_err(|_| corrupt(name))
    }
    fn text(&self, name: &str) -> Result<Option<&str>, Fault> {
        self.try_get(name).map_err(|_| corrupt(name))
    }
    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Fault> {
        Ok(self
            .try_get::<_, Option<Json<T>>>(name)
            .map_err(|_| corrupt(name))?
            .map(|j| j.0))
    }
    fn flag(&self, name: &str) -> Result<Option<bool>, Fault> {
        self.try_get(name).map_err(|_| corrupt(name))
    }
}

impl Fields for Map<String, Value> {
    fn int(&self, name: &str) -> Result<Option<i64>, Fault> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| corrupt(name)),
        }
    }
    fn text(&self, name: &str) -> Result<Option<&str>, Fault> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| corrupt(name)),
        }
    }
    fn flag(&self, name: &str) -> Result<Option<bool>, Fault> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| corrupt(name)),
        }
    }
    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Fault> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|_| corrupt(name)),
        }
    }
}

fn req<T>(v: Option<T>, name: &str) -> Result<T, Fault> {
    v.ok_or_else(|| corrupt(name))
}

fn int_req(f: &impl Fields, name: &str) -> Result<i64, Fault> {
    req(f.int(name)?, name)
}

fn text_req<'a>(f: &'a impl Fields, name: &str) -> Result<&'a str, Fault> {
    req(f.text(name)?, name)
}

fn u64_of(v: i64, name: &str) -> Result<u64, Fault> {
    u64::try_from(v).map_err(|_| corrupt(name))
}

fn stamp_of(v: i64, name: &str) -> Result<StampId, Fault> {
    u32::try_from(v).map(StampId).map_err(|_| corrupt(name))
}

fn time_of(f: &impl Fields, name: &str) -> Result<Timestamp, Fault> {
    Ok(Timestamp::from_millis(u64_of(int_req(f, name)?, name)?))
}

/// An unsigned model value as a `bigint` parameter.
pub(crate) fn big(v: u64, field: &'static str) -> Result<i64, InvalidInput> {
    i64::try_from(v).map_err(|_| InvalidInput::new(field, "is beyond the registry's range (2^63 - 1)"))
}

/// A timestamp as a `bigint` parameter.
pub(crate) fn millis(t: Timestamp) -> Result<i64, InvalidInput> {
    big(t.as_millis(), "timestamp")
}

/// Amounts as a `{resource: milli}` JSON object.
pub(crate) fn amounts_json<'a>(items: impl Iterator<Item = (&'a Resource, Amount)>) -> Value {
    Value::Object(
        items
            .map(|(r, a)| (r.name().to_string(), Value::from(a.as_milli())))
            .collect(),
    )
}

fn amount_pairs(map: BTreeMap<String, u64>, name: &str) -> Result<Vec<(Resource, u64)>, Fault> {
    map.into_iter()
        .map(|(k, v)| Resource::parse(&k).map(|r| (r, v)).map_err(|_| corrupt(name)))
        .collect()
}

/// Usage read back exactly (it is a sum of milli amounts, not a user input).
fn usage_of(f: &impl Fields, name: &str) -> Result<Amounts, Fault> {
    let mut usage = Amounts::default();
    for (r, v) in amount_pairs(f.json(name)?.unwrap_or_default(), name)? {
        usage.set(&r, Amount::from_milli(v));
    }
    Ok(usage)
}

/// A demand rebuilt through [`Demand::of`], checked to round-trip exactly.
fn demand_of(f: &impl Fields, name: &str) -> Result<Demand, Fault> {
    let pairs = amount_pairs(f.json(name)?.unwrap_or_default(), name)?;
    let demand = Demand::of(pairs.iter().map(|(r, v)| (r.clone(), *v as f64 / 1000.0))).map_err(|_| corrupt(name))?;
    if pairs.iter().any(|(r, v)| demand.get(r).as_milli() != *v) {
        return Err(corrupt(name));
    }
    Ok(demand)
}

fn capacity_of(f: &impl Fields) -> Result<Capacity, Fault> {
    let pairs = amount_pairs(req(f.json("limits_milli")?, "limits_milli")?, "limits_milli")?;
    let ppm = int_req(f, "headroom_ppm")?;
    let cap = Capacity::new(
        pairs.iter().map(|(r, v)| (r.clone(), *v as f64 / 1000.0)),
        ppm as f64 / 1e6,
    )
    .map_err(|_| corrupt("limits_milli"))?;
    let exact = pairs
        .iter()
        .all(|(r, v)| cap.limit(r).map(Amount::as_milli) == Some(*v))
        && i64::from(cap.headroom().as_ppm()) == ppm
        && cap.limits().len() == pairs.len();
    if !exact {
        return Err(corrupt("limits_milli"));
    }
    // Absent in change payloads written before the column existed.
    let own: BTreeMap<String, u64> = f.json("headroom_by_resource")?.unwrap_or_default();
    let mut cap = cap;
    for (name, ppm) in own {
        let resource = Resource::parse(&name).map_err(|_| corrupt("headroom_by_resource"))?;
        let fraction = u32::try_from(ppm).map_err(|_| corrupt("headroom_by_resource"))?;
        cap = cap
            .headroom_on(resource.clone(), f64::from(fraction) / 1e6)
            .map_err(|_| corrupt("headroom_by_resource"))?;
        if u64::from(cap.headroom_for(&resource).as_ppm()) != ppm {
            return Err(corrupt("headroom_by_resource"));
        }
    }
    Ok(cap)
}

/// A capacity's own headrooms as the `headroom_by_resource` column (`{resource: ppm}`).
pub(crate) fn headroom_json(cap: &Capacity) -> Value {
    Value::Object(
        cap.headroom_by_resource()
            .iter()
            .map(|(r, h)| (r.name().to_string(), Value::from(h.as_ppm())))
            .collect(),
    )
}

fn labels_of(f: &impl Fields, name: &str) -> Result<Labels, Fault> {
    Ok(f.json::<Labels>(name)?.unwrap_or_default())
}

fn region_of(f: &impl Fields, name: &str) -> Result<Option<Region>, Fault> {
    f.text(name)?
        .map(|s| Region::new(s).map_err(|_| corrupt(name)))
        .transpose()
}

fn residency_of(f: &impl Fields, name: &str) -> Result<Option<Residency>, Fault> {
    f.text(name)?
        .map(|s| Residency::new(s).map_err(|_| corrupt(name)))
        .transpose()
}

fn tier_of(f: &impl Fields) -> Result<Tier, Fault> {
    Tier::parse(text_req(f, "tier")?).map_err(|_| corrupt("tier"))
}

/// The mode from its columns (`mode`, `shadow_id`, `frozen_until`).
pub(crate) fn mode_of(f: &impl Fields) -> Result<AssignmentMode, Fault> {
    let shadow = f.int("shadow_id")?.map(|s| stamp_of(s, "shadow_id")).transpose()?;
    Ok(match text_req(f, "mode")? {
        "serving" => AssignmentMode::Serving,
        "dual_write" => AssignmentMode::DualWrite {
            shadow: req(shadow, "shadow_id")?,
        },
        "frozen" => AssignmentMode::Frozen {
            shadow,
            until: Timestamp::from_millis(u64_of(int_req(f, "frozen_until")?, "frozen_until")?),
        },
        _ => return Err(corrupt("mode")),
    })
}

/// The mode as column parameters: name, shadow stamp, frozen-until.
pub(crate) fn mode_params(mode: &AssignmentMode) -> Result<(&'static str, Option<i64>, Option<i64>), InvalidInput> {
    let until = match mode {
        AssignmentMode::Frozen { until, .. } => Some(millis(*until)?),
        _ => None,
    };
    Ok((mode.as_str(), mode.shadow().map(|s| i64::from(s.0)), until))
}

/// A stamp with its usage.
pub(crate) fn stamp_load(f: &impl Fields) -> Result<StampLoad, Fault> {
    let stamp = stamp(f)?;
    let usage = named(usage_of(f, "usage_milli"), || row_name(f, "stamp", "id"))?;
    Ok(StampLoad::new(stamp, usage))
}

/// A stamp; a corrupt value is [`Error::Corrupt`](crate::Error::Corrupt) naming `stamp <id>`.
pub(crate) fn stamp(f: &impl Fields) -> Result<Stamp, Fault> {
    named(stamp_fields(f), || row_name(f, "stamp", "id"))
}

/// The row's name for errors: `"<kind> <key>"`, the key as stored (escaped) when readable.
fn row_name(f: &impl Fields, kind: &str, key: &str) -> String {
    let key = match (f.int(key), f.text(key)) {
        (Ok(Some(i)), _) => i.to_string(),
        (_, Ok(Some(t))) => format!("{:?}", t.chars().take(80).collect::<String>()),
        _ => "(unreadable key)".to_string(),
    };
    format!("{kind} {key}")
}

fn stamp_fields(f: &impl Fields) -> Result<Stamp, Fault> {
    let id = stamp_of(int_req(f, "id")?, "id")?;
    let region = req(region_of(f, "region")?, "region")?;
    let mut spec = StampSpec::new(id, text_req(f, "name")?, region, capacity_of(f)?).map_err(|_| corrupt("name"))?;
    spec.residency = residency_of(f, "residency")?;
    spec.tier = tier_of(f)?;
    spec.labels = labels_of(f, "labels")?;
    spec.version = f.text("deployed_version")?.map(str::to_string);
    spec.endpoint = f.text("endpoint")?.map(str::to_string);
    spec.expires_at = f
        .int("expires_at")?
        .map(|ms| u64_of(ms, "expires_at").map(Timestamp::from_millis))
        .transpose()?;
    let state = StampState::parse(text_req(f, "state")?).ok_or_else(|| corrupt("state"))?;
    Ok(Stamp::new(
        spec,
        state,
        time_of(f, "created_at")?,
        time_of(f, "updated_at")?,
    ))
}

/// An assignment; a corrupt value is [`Error::Corrupt`](crate::Error::Corrupt) naming
/// `assignment of tenant "<id>"`.
pub(crate) fn assignment(f: &impl Fields) -> Result<Assignment, Fault> {
    named(assignment_fields(f), || row_name(f, "assignment of tenant", "tenant"))
}

fn assignment_fields(f: &impl Fields) -> Result<Assignment, Fault> {
    let tenant = TenantId::new(text_req(f, "tenant")?).map_err(|_| corrupt("tenant"))?;
    let mut spec = TenantSpec::new(tenant);
    spec.demand = demand_of(f, "demand_milli")?;
    spec.region = region_of(f, "region")?;
    spec.residency = residency_of(f, "residency")?;
    spec.tier = tier_of(f)?;
    spec.pin = f
        .int("pin_stamp_id")?
        .map(|p| stamp_of(p, "pin_stamp_id"))
        .transpose()?;
    spec.labels = labels_of(f, "labels")?;
    // Absent in change payloads written before the column existed.
    spec.ephemeral = f.flag("ephemeral")?.unwrap_or(false);
    Ok(Assignment::new(
        spec,
        stamp_of(int_req(f, "stamp_id")?, "stamp_id")?,
        Epoch(u64_of(int_req(f, "epoch")?, "epoch")?),
        mode_of(f)?,
        time_of(f, "assigned_at")?,
        time_of(f, "updated_at")?,
    ))
}

/// A history entry; a corrupt value names `history v<version>`.
pub(crate) fn history_entry(f: &impl Fields) -> Result<HistoryEntry, Fault> {
    named(history_fields(f), || {
        row_name(f, "history entry v", "version").replacen("v ", "v", 1)
    })
}

fn history_fields(f: &impl Fields) -> Result<HistoryEntry, Fault> {
    let opt_stamp =
        |name: &str| -> Result<Option<StampId>, Fault> { f.int(name)?.map(|v| stamp_of(v, name)).transpose() };
    Ok(HistoryEntry::new(
        Version(u64_of(int_req(f, "version")?, "version")?),
        time_of(f, "at")?,
        TenantId::new(text_req(f, "tenant")?).map_err(|_| corrupt("tenant"))?,
        HistoryAction::parse(text_req(f, "action")?).ok_or_else(|| corrupt("action"))?,
        opt_stamp("from_stamp")?,
        opt_stamp("to_stamp")?,
        Epoch(u64_of(int_req(f, "epoch")?, "epoch")?),
        mode_of(f)?,
        f.text("actor")?.map(str::to_string),
    )
    .overriding(override_of(f)?)
    .because(f.text("reason")?.map(str::to_string)))
}

/// The decision recorded with a pin or an override (`actor`, `reason`).
fn decision_of(f: &impl Fields) -> Result<Decision, Fault> {
    Decision::new(text_req(f, "actor")?, text_req(f, "reason")?).map_err(|_| corrupt("actor or reason"))
}

/// A pin: a row of `pins`, or the image a `pin` change carries (`stamp_id` null when the
/// change cleared it). A corrupt value names `pin <tenant>`.
pub(crate) fn pin(f: &impl Fields) -> Result<Pin, Fault> {
    named(pin_fields(f), || row_name(f, "pin", "tenant"))
}

fn pin_fields(f: &impl Fields) -> Result<Pin, Fault> {
    Ok(Pin::new(
        TenantId::new(text_req(f, "tenant")?).map_err(|_| corrupt("tenant"))?,
        f.int("stamp_id")?.map(|v| stamp_of(v, "stamp_id")).transpose()?,
        decision_of(f)?,
        time_of(f, "at")?,
        version_of(int_req(f, "version")?)?,
    ))
}

/// A routing override: a row of `route_overrides`, or its image in a change. A corrupt value
/// names `route override v<version>`.
pub(crate) fn route_override(f: &impl Fields) -> Result<RouteOverride, Fault> {
    named(route_override_fields(f), || {
        row_name(f, "route override v", "version").replacen("v ", "v", 1)
    })
}

fn route_override_fields(f: &impl Fields) -> Result<RouteOverride, Fault> {
    let redirect = match (f.int("to_stamp")?, f.text("applies")?) {
        (Some(to), Some(when)) => Some(Redirect::new(
            stamp_of(to, "to_stamp")?,
            RedirectWhen::parse(when).ok_or_else(|| corrupt("applies"))?,
        )),
        (None, None) => None,
        _ => return Err(corrupt("to_stamp")),
    };
    let o = RouteOverride::new(
        stamp_of(int_req(f, "stamp_id")?, "stamp_id")?,
        redirect,
        decision_of(f)?,
        time_of(f, "at")?,
        version_of(int_req(f, "version")?)?,
    );
    o.validate().map_err(|_| corrupt("to_stamp"))?;
    Ok(o)
}

/// The override recorded with a history entry (`override_constraints`, `override_reason`).
fn override_of(f: &impl Fields) -> Result<Option<Override>, Fault> {
    let (Some(names), Some(reason)) = (f.text("override_constraints")?, f.text("override_reason")?) else {
        return Ok(None);
    };
    let mut kinds = names
        .split(',')
        .map(|n| ConstraintKind::parse(n).ok_or_else(|| corrupt("override_constraints")));
    let first = kinds.next().ok_or_else(|| corrupt("override_constraints"))??;
    let mut o = Override::new(first, reason);
    for k in kinds {
        o = o.and(k?);
    }
    Ok(Some(o))
}

/// An override as the `override_constraints` and `override_reason` parameters.
pub(crate) fn override_params(o: Option<&Override>) -> (Option<String>, Option<String>) {
    match o {
        Some(o) => (
            Some(o.constraints.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")),
            Some(o.reason.clone()),
        ),
        None => (None, None),
    }
}

/// A migration record; a corrupt value names `migration <id>`.
pub(crate) fn migration(f: &impl Fields) -> Result<MigrationRecord, Fault> {
    named(migration_fields(f), || row_name(f, "migration", "id"))
}

fn migration_fields(f: &impl Fields) -> Result<MigrationRecord, Fault> {
    let mut rec = MigrationRecord::planned(
        TenantId::new(text_req(f, "tenant")?).map_err(|_| corrupt("tenant"))?,
        stamp_of(int_req(f, "source_id")?, "source_id")?,
        stamp_of(int_req(f, "destination_id")?, "destination_id")?,
    );
    rec.id = MigrationId(u64_of(int_req(f, "id")?, "id")?);
    rec.state = MigrationState::parse(text_req(f, "state")?).ok_or_else(|| corrupt("state"))?;
    rec.revision = u64_of(int_req(f, "revision")?, "revision")?;
    rec.data = f.json::<BTreeMap<String, String>>("data")?.unwrap_or_default();
    rec.created_at = time_of(f, "created_at")?;
    rec.updated_at = time_of(f, "updated_at")?;
    Ok(rec)
}

/// A JSON object (a change payload).
pub(crate) fn object(v: &Value) -> Result<&Map<String, Value>, Fault> {
    v.as_object().ok_or_else(|| corrupt("changes.payload"))
}

pub(crate) fn labels_json(labels: &crate::model::Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

pub(crate) fn data_json(data: &std::collections::BTreeMap<String, String>) -> Value {
    labels_json(data)
}

pub(crate) fn version_of(v: i64) -> Result<Version, Fault> {
    u64::try_from(v).map(Version).map_err(|_| corrupt("version"))
}

/// An assignment's columns as parameters.
pub(crate) struct AssignmentParams<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) stamp: i64,
    pub(crate) mode: (&'static str, Option<i64>, Option<i64>),
    pub(crate) region: Option<&'a str>,
    pub(crate) residency: Option<&'a str>,
    pub(crate) tier: &'a str,
    pub(crate) pin: Option<i64>,
    pub(crate) demand: Value,
    pub(crate) labels: Value,
    pub(crate) at: i64,
    pub(crate) ephemeral: bool,
}

impl<'a> AssignmentParams<'a> {
    pub(crate) fn new(a: &'a Assignment, at: Timestamp) -> Result<Self, Fault> {
        Ok(AssignmentParams {
            tenant: a.spec.id.as_str(),
            stamp: i64::from(a.stamp.0),
            mode: mode_params(&a.mode)?,
            region: a.spec.region.as_ref().map(|r| r.as_str()),
            residency: a.spec.residency.as_ref().map(|r| r.as_str()),
            tier: a.spec.tier.as_str(),
            pin: a.spec.pin.map(|p| i64::from(p.0)),
            demand: amounts_json(a.spec.demand.iter()),
            labels: labels_json(&a.spec.labels),
            at: millis(at)?,
            ephemeral: a.spec.ephemeral,
        })
    }
}

/// The version of a change row (`None` on the feed's head-only row).
pub(crate) fn change_version(row: &Row) -> Result<Option<Version>, Fault> {
    row.int("version")?.map(version_of).transpose()
}

/// Decodes a change row; a corrupt value is [`Error::Corrupt`](crate::Error::Corrupt) naming
/// `change v<version>` (and the assignment or stamp inside it).
pub(crate) fn change_of(row: &Row) -> Result<Option<Change>, Fault> {
    let Some(version) = change_version(row)? else {
        return Ok(None);
    };
    named(change_fields(row, version), || format!("change v{}", version.0)).map(Some)
}

fn change_fields(row: &Row, version: Version) -> Result<Change, Fault> {
    let at = Timestamp::from_millis(u64_of(int_req(row, "at")?, "changes.at")?);
    let payload: Option<Value> = row.json("payload")?;
    let kind = match text_req(row, "kind")? {
        "assignment" => {
            let tenant = TenantId::new(text_req(row, "tenant")?).map_err(|_| corrupt("changes.tenant"))?;
            let assignment = match &payload {
                Some(p) => Some(Arc::new(assignment(object(p)?)?)),
                None => None,
            };
            ChangeKind::Assignment { tenant, assignment }
        }
        "stamp" => {
            let p = payload.ok_or_else(|| corrupt("changes.payload"))?;
            ChangeKind::Stamp(Box::new(stamp(object(&p)?)?))
        }
        "pin" => {
            let p = payload.ok_or_else(|| corrupt("changes.payload"))?;
            ChangeKind::Pin(Box::new(pin(object(&p)?)?))
        }
        "route_override" => {
            let p = payload.ok_or_else(|| corrupt("changes.payload"))?;
            ChangeKind::RouteOverride(Box::new(route_override(object(&p)?)?))
        }
        "repaired" => {
            let tenant = TenantId::new(text_req(row, "tenant")?).map_err(|_| corrupt("changes.tenant"))?;
            let p = payload.ok_or_else(|| corrupt("changes.payload"))?;
            let stamp = stamp_of(int_req(object(&p)?, "stamp_id")?, "stamp_id")?;
            ChangeKind::Repaired { tenant, stamp }
        }
        _ => return Err(corrupt("changes.kind")),
    };
    Ok(Change::new(version, at, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Demand;
    use proptest::prelude::*;

    fn demand_map(d: &Demand) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("demand_milli".into(), amounts_json(d.iter()));
        m
    }

    proptest! {
        /// Demands round-trip exactly through the stored milli form over the whole range a
        /// realistic fleet uses (up to a trillion units at a thousandth's precision).
        #[test]
        fn demand_round_trips(conn in 0u64..1_000_000_000_000_000, rps in 0u64..1_000_000) {
            let d = Demand::of([
                (Resource::Connections, conn as f64 / 1000.0),
                (Resource::RequestsPerSecond, rps as f64 / 1000.0),
            ]).unwrap();
            let back = demand_of(&demand_map(&d), "demand_milli").unwrap();
            prop_assert_eq!(back, d);
        }
    }

    #[test]
    fn corrupt_values_are_errors() {
        let mut m = Map::new();
        m.insert("demand_milli".into(), serde_json::json!({"tenants": 1000}));
        assert!(demand_of(&m, "demand_milli").is_err());
        m.insert("demand_milli".into(), serde_json::json!({"Bad Name": 1}));
        assert!(demand_of(&m, "demand_milli").is_err());
        m.insert("mode".into(), serde_json::json!("dual_write"));
        assert!(mode_of(&m).is_err());
        m.insert("mode".into(), serde_json::json!("teleport"));
        assert!(mode_of(&m).is_err());
        assert!(big(u64::MAX, "epoch").is_err());
    }
}
