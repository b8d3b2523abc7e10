//! Configuration drift: what each stamp runs against what it should.
//!
//! Identical stamps are the pattern's premise, and drift is its second pitfall: stamps
//! diverge one hand-applied setting at a time until "30% of regional stamps had different GC
//! settings" ("Deployment Stamps for Availability: Multi-Region Guide"). Each stamp reports
//! what it runs as a [`RunningConfig`] (its deployed version and a fingerprint of its
//! configuration); [`drift_report`] groups the fleet by what it runs against a
//! [`DesiredConfig`], names what differs, and lists the stamps that did not report. The
//! collection from live stamps is `stamps::reconcile::collect_drift`; placement can keep new
//! tenants off drifted stamps with `stamps::placement::OnDesiredConfig`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Fleet, StampId, StampState};
use crate::hash::Fnv1a;

/// What a stamp runs: its deployed version and a fingerprint of its configuration (the host's
/// choice: a hash of its rendered settings, an image digest; see
/// [`RunningConfig::from_settings`]).
///
/// ```
/// use stamps::RunningConfig;
/// let a = RunningConfig::from_settings("2026.11.3", [("gc", "g1"), ("pool", "64")]);
/// let b = RunningConfig::from_settings("2026.11.3", [("pool", "64"), ("gc", "g1")]);
/// assert_eq!(a, b, "the order settings are given in does not matter");
/// assert_ne!(a, RunningConfig::from_settings("2026.11.3", [("gc", "zgc"), ("pool", "64")]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RunningConfig {
    /// The deployed version (release, image tag).
    pub version: String,
    /// A fingerprint of the configuration: equal when the configuration is.
    pub fingerprint: String,
}

impl RunningConfig {
    /// A configuration from its version and fingerprint.
    ///
    /// ```
    /// # use stamps::RunningConfig;
    /// let c = RunningConfig::new("2026.11.3", "sha256:9f2c");
    /// assert_eq!(c.fingerprint, "sha256:9f2c");
    /// ```
    pub fn new(version: impl Into<String>, fingerprint: impl Into<String>) -> RunningConfig {
        RunningConfig {
            version: version.into(),
            fingerprint: fingerprint.into(),
        }
    }

    /// A configuration whose fingerprint is the FNV-1a hash of its settings in key order
    /// (`key=value` lines), so the same settings give the same fingerprint whatever order they
    /// are listed in.
    pub fn from_settings<K, V>(version: impl Into<String>, settings: impl IntoIterator<Item = (K, V)>) -> RunningConfig
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let sorted: BTreeMap<String, String> = settings
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let mut h = Fnv1a::new();
        for (k, v) in &sorted {
            h.write(k.as_bytes());
            h.write(b"=");
            h.write(v.as_bytes());
            h.write(b"\n");
        }
        RunningConfig::new(version, format!("fnv1a:{:016x}", h.finish()))
    }
}

impl fmt::Display for RunningConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.fingerprint)
    }
}

/// What every stamp should run.
///
/// ```
/// use stamps::{DesiredConfig, RunningConfig};
/// let desired = DesiredConfig::new(RunningConfig::new("2026.11.3", "fnv1a:01"));
/// assert!(desired.is_met_by(&RunningConfig::new("2026.11.3", "fnv1a:01")));
/// assert_eq!(desired.differences(&RunningConfig::new("2026.10.1", "fnv1a:01")), vec!["version"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DesiredConfig {
    /// The target.
    pub config: RunningConfig,
}

impl DesiredConfig {
    /// The target configuration.
    pub fn new(config: RunningConfig) -> DesiredConfig {
        DesiredConfig { config }
    }

    /// Whether `running` is the target.
    pub fn is_met_by(&self, running: &RunningConfig) -> bool {
        self.config == *running
    }

    /// What differs from the target: `"version"`, `"fingerprint"` (empty when it is met).
    pub fn differences(&self, running: &RunningConfig) -> Vec<&'static str> {
        let mut d = Vec::new();
        if running.version != self.config.version {
            d.push("version");
        }
        if running.fingerprint != self.config.fingerprint {
            d.push("fingerprint");
        }
        d
    }
}

/// Stamps running one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriftGroup {
    /// What they run.
    pub running: RunningConfig,
    /// Which stamps, by id.
    pub stamps: Vec<StampId>,
    /// What differs from the desired configuration (empty for the group on it).
    pub differs: Vec<&'static str>,
}

impl DriftGroup {
    /// Whether this group runs the desired configuration.
    pub fn on_desired(&self) -> bool {
        self.differs.is_empty()
    }
}

/// The fleet grouped by what it runs ([`drift_report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriftReport {
    /// The target.
    pub desired: DesiredConfig,
    /// One group per configuration seen: the group on the desired configuration first, then
    /// the others by size (largest first), then by configuration.
    pub groups: Vec<DriftGroup>,
    /// Stamps that did not report, with why (unreachable, timed out, not asked).
    pub unreported: Vec<(StampId, String)>,
    /// Stamps whose reported version differs from the version label the registry holds for
    /// them (`StampSpec::version`): the registry's view of the fleet is stale.
    pub label_mismatch: Vec<StampId>,
}

impl DriftReport {
    /// The stamps on the desired configuration.
    pub fn conforming(&self) -> impl Iterator<Item = StampId> + '_ {
        self.groups
            .iter()
            .filter(|g| g.on_desired())
            .flat_map(|g| g.stamps.iter().copied())
    }

    /// The stamps reporting another configuration.
    pub fn drifted(&self) -> impl Iterator<Item = StampId> + '_ {
        self.groups
            .iter()
            .filter(|g| !g.on_desired())
            .flat_map(|g| g.stamps.iter().copied())
    }

    /// Whether every stamp reported the desired configuration.
    pub fn is_clean(&self) -> bool {
        self.unreported.is_empty() && self.drifted().next().is_none()
    }
}

impl fmt::Display for DriftReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "desired: {}", self.desired.config)?;
        for g in &self.groups {
            let ids: Vec<String> = g.stamps.iter().map(|s| s.0.to_string()).collect();
            let verdict = if g.on_desired() {
                "on desired".to_string()
            } else {
                format!("differs in {}", g.differs.join(", "))
            };
            let noun = if g.stamps.len() == 1 { "stamp" } else { "stamps" };
            writeln!(
                f,
                "  {} {noun} [{}]: {} — {verdict}",
                g.stamps.len(),
                ids.join(", "),
                g.running
            )?;
        }
        for (id, why) in &self.unreported {
            writeln!(f, "  stamp {} did not report: {why}", id.0)?;
        }
        if !self.label_mismatch.is_empty() {
            let ids: Vec<String> = self.label_mismatch.iter().map(|s| s.0.to_string()).collect();
            writeln!(f, "  registry version label stale for stamps [{}]", ids.join(", "))?;
        }
        Ok(())
    }
}

/// Groups the fleet's stamps (every stamp not decommissioned) by the configuration each one
/// reported in `running`, against `desired`. A stamp of the fleet missing from `running` is
/// unreported ("not asked"), unless `unreported` already says why; reports for stamps not in
/// the fleet (or decommissioned) are ignored. Each stamp lands in exactly one group or in
/// `unreported`.
///
/// ```
/// use stamps::*;
/// let desired = DesiredConfig::new(RunningConfig::from_settings("v2", [("gc", "g1")]));
/// let fleet = Fleet::new(Vec::new(), Version(0), Timestamp::ZERO);
/// let report = drift_report(&fleet, &[], &[], &desired);
/// assert!(report.is_clean(), "an empty fleet has no drift");
/// ```
pub fn drift_report(
    fleet: &Fleet,
    running: &[(StampId, RunningConfig)],
    unreported: &[(StampId, String)],
    desired: &DesiredConfig,
) -> DriftReport {
    let live: BTreeMap<StampId, Option<&str>> = fleet
        .stamps
        .iter()
        .filter(|s| s.stamp.state != StampState::Decommissioned)
        .map(|s| (s.id(), s.stamp.spec.version.as_deref()))
        .collect();
    let mut by_config: BTreeMap<&RunningConfig, BTreeSet<StampId>> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    let mut label_mismatch = Vec::new();
    for (id, config) in running {
        let Some(label) = live.get(id) else { continue };
        if !reported.insert(*id) {
            continue; // the first report of a stamp counts
        }
        by_config.entry(config).or_default().insert(*id);
        if label.is_some_and(|l| l != config.version) {
            label_mismatch.push(*id);
        }
    }
    let mut groups: Vec<DriftGroup> = by_config
        .into_iter()
        .map(|(config, stamps)| DriftGroup {
            differs: desired.differences(config),
            running: config.clone(),
            stamps: stamps.into_iter().collect(),
        })
        .collect();
    groups.sort_by(|a, b| {
        b.on_desired()
            .cmp(&a.on_desired())
            .then(b.stamps.len().cmp(&a.stamps.len()))
            .then(a.running.cmp(&b.running))
    });
    let why: BTreeMap<StampId, &String> = unreported.iter().map(|(id, w)| (*id, w)).collect();
    let unreported = live
        .keys()
        .filter(|id| !reported.contains(id))
        .map(|id| {
            (
                *id,
                why.get(id).map_or_else(|| "not asked".to_string(), |w| (*w).clone()),
            )
        })
        .collect();
    label_mismatch.sort();
    DriftReport {
        desired: desired.clone(),
        groups,
        unreported,
        label_mismatch,
    }
}
