//! The dashboard's pictures, drawn as inline SVG: a stamp's utilisation bars against its
//! headroom and trigger lines, and time to the provisioning trigger per stamp.

use std::fmt::Write;

use super::page::escape;
use crate::integrations::{ResourceUse, StampOverview};

/// Width of a utilisation bar, in pixels.
const BAR: f64 = 180.0;

/// One bar per resource: usage over the hard limit, a dashed line at the soft limit (the
/// headroom starts there) and a solid one at the trigger. Green below the trigger, amber past
/// it, red past the soft limit.
pub(super) fn utilisation_bars(resources: &[ResourceUse], trigger: f64) -> String {
    let row = 18.0;
    let height = row * resources.len().max(1) as f64;
    let mut out = format!(
        r#"<svg class="bars" role="img" width="{w}" height="{height}" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg">"#,
        w = BAR + 110.0
    );
    if resources.is_empty() {
        out.push_str(r##"<text x="0" y="13" font-size="11" fill="#666">no limits</text>"##);
    }
    for (i, r) in resources.iter().enumerate() {
        let y = i as f64 * row;
        let of_limit = if r.limit > 0.0 { r.usage / r.limit } else { 0.0 };
        let soft = if r.limit > 0.0 { r.soft_limit / r.limit } else { 1.0 };
        let color = if r.utilization >= 1.0 {
            "#c62828"
        } else if r.utilization >= trigger {
            "#ef8f00"
        } else {
            "#2e7d32"
        };
        let width = (of_limit.clamp(0.0, 1.0) * BAR).max(0.0);
        let soft_x = soft.clamp(0.0, 1.0) * BAR;
        let trigger_x = (soft * trigger).clamp(0.0, 1.0) * BAR;
        let _ = write!(
            out,
            concat!(
                r##"<rect x="0" y="{y}" width="{bar}" height="12" fill="#eceff1"/>"##,
                r##"<rect class="use" x="0" y="{y}" width="{width:.1}" height="12" fill="{color}"><title>{name}: {usage} of {limit} ({pct:.0} % of the soft limit)</title></rect>"##,
                r##"<line x1="{soft_x:.1}" x2="{soft_x:.1}" y1="{y}" y2="{y2}" stroke="#37474f" stroke-dasharray="2,2"/>"##,
                r##"<line x1="{trigger_x:.1}" x2="{trigger_x:.1}" y1="{y}" y2="{y2}" stroke="#1565c0"/>"##,
                r##"<text x="{tx}" y="{ty}" font-size="11">{name} {pct:.0}%</text>"##
            ),
            y = y,
            y2 = y + 12.0,
            bar = BAR,
            width = width,
            color = color,
            name = escape(&r.resource),
            usage = r.usage,
            limit = r.limit,
            pct = r.utilization * 100.0,
            soft_x = soft_x,
            trigger_x = trigger_x,
            tx = BAR + 6.0,
            ty = y + 11.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// Time to the provisioning trigger per stamp, as horizontal bars on one scale (days): a stamp
/// already past its trigger shows "now" in red, one without growth or limits "no trigger".
pub(super) fn time_to_trigger(stamps: &[StampOverview]) -> String {
    let day = 86_400.0;
    let longest = stamps
        .iter()
        .filter_map(|s| s.time_to_trigger_seconds)
        .fold(0.0f64, f64::max)
        .max(day);
    let (label, row, chart) = (150.0, 22.0, 360.0);
    let height = 30.0 + row * stamps.len() as f64;
    let mut out = format!(
        r#"<svg class="capacity" role="img" aria-label="time to provisioning trigger per stamp" width="{w}" height="{height}" viewBox="0 0 {w} {height}" xmlns="http://www.w3.org/2000/svg">"#,
        w = label + chart + 120.0
    );
    let _ = write!(
        out,
        r#"<text x="0" y="14" font-size="12" font-weight="bold">Time to provisioning trigger (days; scale to {:.1} d)</text>"#,
        longest / day
    );
    for (i, s) in stamps.iter().enumerate() {
        let y = 24.0 + i as f64 * row;
        let _ = write!(
            out,
            r#"<text x="0" y="{ty}" font-size="11">{name} (#{id})</text>"#,
            ty = y + 12.0,
            name = escape(&s.name),
            id = s.id.0
        );
        match (s.above_trigger, s.time_to_trigger_seconds) {
            (true, _) => {
                let _ = write!(
                    out,
                    r##"<rect x="{label}" y="{y}" width="4" height="14" fill="#c62828"/><text class="ttt" x="{tx}" y="{ty}" font-size="11" fill="#c62828">now: past the trigger</text>"##,
                    tx = label + 10.0,
                    ty = y + 12.0
                );
            }
            (false, Some(secs)) => {
                let width = (secs / longest * chart).clamp(1.0, chart);
                let color = if secs < 7.0 * day { "#ef8f00" } else { "#2e7d32" };
                let _ = write!(
                    out,
                    r##"<rect x="{label}" y="{y}" width="{width:.1}" height="14" fill="{color}"/><text class="ttt" x="{tx:.1}" y="{ty}" font-size="11">{days:.1} d</text>"##,
                    tx = label + width + 6.0,
                    ty = y + 12.0,
                    days = secs / day
                );
            }
            (false, None) => {
                let _ = write!(
                    out,
                    r##"<text class="ttt" x="{label}" y="{ty}" font-size="11" fill="#666">no trigger (no growth or no limits)</text>"##,
                    ty = y + 12.0
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}
