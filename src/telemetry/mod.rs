//! Metric names, and the points where the crate records them (feature `metrics`).
//!
//! The crate records through the [`metrics`](https://docs.rs/metrics) facade: install any
//! recorder (`metrics-exporter-prometheus`, an OpenTelemetry bridge, your own) and the
//! metrics below appear; without a recorder, or without the feature, recording costs nothing.
//! Names follow Prometheus conventions: a `stamps_` prefix, the unit in the name
//! (`_seconds`, `_ratio`, `_total` for counters), and bounded label sets: a label is a method,
//! a state, a reason, a resource or a stamp (the fleet is bounded), never a tenant.
//!
//! Where each family comes from:
//! - router counters and gauges are *exported on scrape* by
//!   [`Router::export_metrics`](crate::router::Router::export_metrics): the hit path keeps
//!   counting in its per-thread stripes and never touches the recorder;
//! - registry calls are recorded by the
//!   [`Observed`](crate::registry::Observed) decorator around any registry;
//! - fleet gauges (stamp utilisation, tenants, migrations by state, provisioning signals) by
//!   `integrations::FleetMetrics` (feature `tokio` and `metrics`), also on scrape;
//! - migration steps, health transitions and placement decisions where they happen.
//!
//! `docs/observability.md` lists every metric with the alert to set on it.
//!
//! ```
//! use stamps::telemetry::names;
//! assert_eq!(names::ROUTER_HITS, "stamps_router_hits_total");
//! assert!(names::ALL.iter().all(|(name, _, _)| name.starts_with("stamps_")));
//! ```

pub mod names;

#[doc = include_str!("../../docs/observability.md")]
pub mod guide {}

/// A label value that is either static text or a stamp id (formatted on recording).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Value<'a> {
    /// Static text: a method, a state, a reason.
    Str(&'static str),
    /// A stamp id.
    Stamp(u32),
    /// Other bounded text (a region, a resource name), copied on recording.
    Text(&'a str),
}

#[cfg(feature = "metrics")]
fn labels(pairs: &[(&'static str, Value<'_>)]) -> Vec<metrics::Label> {
    pairs
        .iter()
        .map(|(k, v)| match v {
            Value::Str(s) => metrics::Label::from_static_parts(k, s),
            Value::Stamp(id) => metrics::Label::new(*k, id.to_string()),
            Value::Text(s) => metrics::Label::new(*k, s.to_string()),
        })
        .collect()
}

/// Adds `n` to a counter.
#[inline]
pub(crate) fn count(name: &'static str, pairs: &[(&'static str, Value<'_>)], n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name, labels(pairs)).increment(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, pairs, n);
}

/// Sets a counter to `n` (a total kept elsewhere, exported on scrape).
#[inline]
pub(crate) fn absolute(name: &'static str, pairs: &[(&'static str, Value<'_>)], n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name, labels(pairs)).absolute(n);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, pairs, n);
}

/// Sets a gauge.
#[inline]
pub(crate) fn gauge(name: &'static str, pairs: &[(&'static str, Value<'_>)], v: f64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(name, labels(pairs)).set(v);
    #[cfg(not(feature = "metrics"))]
    let _ = (name, pairs, v);
}

/// Records a duration, in seconds, into a histogram.
#[inline]
pub(crate) fn seconds(name: &'static str, pairs: &[(&'static str, Value<'_>)], d: std::time::Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(name, labels(pairs)).record(d.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (name, pairs, d);
}

/// Registers the descriptions of every metric in [`names::ALL`] with the installed recorder
/// (exporters print them as `# HELP` lines). Call once after installing the recorder; without
/// the `metrics` feature it does nothing.
///
/// ```
/// stamps::telemetry::describe();
/// ```
pub fn describe() {
    #[cfg(feature = "metrics")]
    for (name, kind, help) in names::ALL {
        match kind {
            names::Kind::Counter => metrics::describe_counter!(*name, *help),
            names::Kind::Gauge => metrics::describe_gauge!(*name, *help),
            names::Kind::Histogram => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
}
