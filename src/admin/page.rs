//! The HTML half: the fleet dashboard and the stamp and tenant pages, rendered on the server.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use http::request::Parts;

use super::api::{check, parse_stamp, stamp_detail, tenant_detail, ApiResult, PageQuery};
use super::svg;
use super::{Access, Inner};
use crate::integrations::FleetOverview;
use crate::model::HealthStatus;

/// Text made safe for HTML text and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The prefix the API is nested under (`/admin`), for links.
fn base(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::NestedPath>()
        .map(|p| p.as_str().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}\
th{background:#f5f5f5}.unhealthy{color:#c62828;font-weight:bold}.degraded{color:#ef8f00}.healthy{color:#2e7d32}\
.unknown{color:#777}.frozen{color:#1565c0;font-weight:bold}.signal{color:#c62828}.muted{color:#777}code{font-size:12px}";

/// The dashboard's own address: the prefix itself (axum answers a nested `/` at the prefix
/// without a trailing slash), or `/` when not nested.
fn home(base: &str) -> &str {
    if base.is_empty() {
        "/"
    } else {
        base
    }
}

fn layout(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        t = escape(title)
    ))
}

fn health_cell(h: Option<HealthStatus>, reason: Option<&str>) -> String {
    let (class, text) = match h {
        Some(HealthStatus::Unhealthy) => ("unhealthy", "✖ unhealthy"),
        Some(HealthStatus::Degraded) => ("degraded", "▲ degraded"),
        Some(HealthStatus::Healthy) => ("healthy", "● healthy"),
        None => ("unknown", "unknown"),
    };
    let reason = reason
        .map(|r| format!(" <span class=\"muted\">{}</span>", escape(r)))
        .unwrap_or_default();
    format!("<td class=\"health {class}\" data-health=\"{class}\">{text}{reason}</td>")
}

fn days(secs: Option<f64>, above: bool) -> String {
    match (above, secs) {
        (true, _) => "<span class=\"signal\">past the trigger</span>".to_string(),
        (false, Some(s)) => format!("{:.1} d", s / 86_400.0),
        (false, None) => "<span class=\"muted\">—</span>".to_string(),
    }
}

/// The dashboard's body for `view`.
fn dashboard_body(title: &str, base: &str, view: &FleetOverview) -> String {
    let mut b = format!(
        "<h1>{}</h1><p class=\"muted\">Fleet at version {} · read at {} · <a href=\"{base}/api/fleet\">JSON</a></p>",
        escape(title),
        view.version,
        view.at
    );
    match &view.feed {
        Some(f) if f.versions == 0 => {
            let _ = write!(b, "<p id=\"feed\">Router feed: caught up at version {}.</p>", f.cursor);
        }
        Some(f) => {
            let _ = write!(
                b,
                "<p id=\"feed\" class=\"signal\">Router feed: {} versions behind (cursor {}, head {}) for {:.1} s.</p>",
                f.versions, f.cursor, f.head, f.seconds
            );
        }
        None => b.push_str("<p id=\"feed\" class=\"muted\">No router attached: feed lag unknown.</p>"),
    }
    b.push_str("<h2>Provisioning signals</h2>");
    if view.regions_needing_stamps.is_empty() {
        b.push_str("<p id=\"signals\">No region needs a new stamp.</p>");
    } else {
        b.push_str("<ul id=\"signals\">");
        for r in &view.regions_needing_stamps {
            let _ = write!(
                b,
                "<li class=\"signal\">Region <b>{}</b> needs a new stamp ({}); start provisioning by {}.</li>",
                escape(r.region.as_str()),
                r.reason.replace('_', " "),
                r.deadline
            );
        }
        b.push_str("</ul>");
    }
    let _ = write!(
        b,
        "<h2>Stamps</h2><p class=\"muted\">Bars: usage over the limit; dashed line: the soft limit (headroom beyond it); blue line: the provisioning trigger ({:.0} % of the soft limit).</p>",
        view.trigger_utilization * 100.0
    );
    b.push_str("<table id=\"stamps\"><tr><th>Stamp</th><th>Region</th><th>State</th><th>Health</th><th>Tenants</th><th>Utilisation</th><th>Time to trigger</th></tr>");
    for s in &view.stamps {
        let _ = write!(
            b,
            "<tr class=\"stamp\" data-stamp=\"{id}\"><td><a href=\"{base}/stamps/{id}\">{name}</a> <span class=\"muted\">#{id}</span></td><td>{region}</td><td>{state}</td>{health}<td>{tenants}</td><td>{bars}</td><td>{ttt}</td></tr>",
            id = s.id.0,
            name = escape(&s.name),
            region = escape(&s.region),
            state = s.state,
            health = health_cell(s.health, s.health_reason.as_deref()),
            tenants = s.tenants,
            bars = svg::utilisation_bars(&s.resources, view.trigger_utilization),
            ttt = days(s.time_to_trigger_seconds, s.above_trigger),
        );
    }
    b.push_str("</table>");
    if !view.unreadable_stamps.is_empty() {
        b.push_str("<p class=\"signal\">Unreadable stamp rows: ");
        for (id, why) in &view.unreadable_stamps {
            let _ = write!(b, "#{} ({}); ", id.0, escape(why));
        }
        b.push_str("</p>");
    }
    b.push_str("<h2>Migrations in flight</h2>");
    if view.migrations.is_empty() {
        b.push_str("<p id=\"migrations\">None.</p>");
    } else {
        b.push_str("<table id=\"migrations\"><tr><th>Migration</th><th>Tenant</th><th>From → to</th><th>State</th><th>Freeze</th><th>Updated</th></tr>");
        for m in &view.migrations {
            let freeze = match (m.frozen_seconds, m.frozen_until) {
                (Some(s), Some(until)) => {
                    format!("<span class=\"frozen\">writes frozen {s:.1} s</span> (until {until})")
                }
                _ => "<span class=\"muted\">—</span>".to_string(),
            };
            let _ = write!(
                b,
                "<tr class=\"migration\" data-migration=\"{id}\"><td>{id}</td><td><a href=\"{base}/tenants/{t}\">{t}</a></td><td>#{src} → #{dst}</td><td class=\"state\">{state}</td><td>{freeze}</td><td>{at}</td></tr>",
                id = m.id.0,
                t = escape(m.tenant.as_str()),
                src = m.source.0,
                dst = m.destination.0,
                state = m.state,
                at = m.updated_at,
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Capacity plan</h2>");
    b.push_str(&svg::time_to_trigger(&view.stamps));
    b
}

/// `GET /`: the fleet dashboard.
pub(super) async fn dashboard(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Html<String>> {
    check(&inner, &parts, Access::Read)?;
    let view = inner.overview().await?;
    Ok(layout(
        &inner.title,
        &dashboard_body(&inner.title, &base(&parts), &view),
    ))
}

/// `GET /capacity.svg`: time to the trigger per stamp.
pub(super) async fn capacity_chart(State(inner): State<Arc<Inner>>, parts: Parts) -> ApiResult<Response> {
    check(&inner, &parts, Access::Read)?;
    let view = inner.overview().await?;
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml")],
        svg::time_to_trigger(&view.stamps),
    )
        .into_response())
}

/// `GET /stamps/{id}?after=&limit=`: one stamp and a page of its tenants.
pub(super) async fn stamp(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Html<String>> {
    check(&inner, &parts, Access::Read)?;
    let base = base(&parts);
    let d = stamp_detail(&inner, parse_stamp(&id)?, q).await?;
    let s = &d.stamp;
    let home = home(&base);
    let mut b = format!(
        "<p><a href=\"{home}\">← fleet</a></p><h1>Stamp {name} <span class=\"muted\">#{id}</span></h1><table><tr><th>Region</th><td>{region}</td></tr><tr><th>State</th><td>{state}</td></tr><tr><th>Health</th>{health}</tr><tr><th>Version</th><td>{version}</td></tr><tr><th>Tenants</th><td>{tenants}</td></tr><tr><th>Utilisation</th><td>{bars}</td></tr></table>",
        name = escape(&s.name),
        id = s.id.0,
        region = escape(&s.region),
        state = s.state,
        health = health_cell(s.health, s.health_reason.as_deref()),
        version = escape(s.version.as_deref().unwrap_or("—")),
        tenants = s.tenants,
        bars = svg::utilisation_bars(&s.resources, 1.0),
    );
    if let Some(r) = &d.redirect {
        let _ = write!(
            b,
            "<p class=\"signal\">Routing override: {}</p>",
            escape(&format!("{r:?}"))
        );
    }
    b.push_str(
        "<h2>Tenants</h2><table id=\"tenants\"><tr><th>Tenant</th><th>Epoch</th><th>Mode</th><th>Assigned</th></tr>",
    );
    for t in &d.tenants {
        let _ = write!(
            b,
            "<tr><td><a href=\"{base}/tenants/{t}\">{t}</a></td><td>{e}</td><td>{m}</td><td>{at}</td></tr>",
            t = escape(t.tenant.as_str()),
            e = t.epoch,
            m = escape(&t.mode),
            at = t.assigned_at
        );
    }
    b.push_str("</table>");
    if let Some(next) = &d.next_after {
        let _ = write!(
            b,
            "<p><a id=\"next\" href=\"{base}/stamps/{}?after={}\">next page →</a></p>",
            s.id.0,
            escape(next.as_str())
        );
    }
    Ok(layout(&format!("stamp {}", s.name), &b))
}

/// `GET /tenants/{id}`: one tenant's assignment, route, pin, migrations and history.
pub(super) async fn tenant(
    State(inner): State<Arc<Inner>>,
    parts: Parts,
    Path(id): Path<String>,
) -> ApiResult<Html<String>> {
    check(&inner, &parts, Access::Read)?;
    let base = base(&parts);
    let d = tenant_detail(&inner, &id).await?;
    let t = escape(d.tenant.as_str());
    let home = home(&base);
    let mut b = format!("<p><a href=\"{home}\">← fleet</a></p><h1>Tenant {t}</h1><table>");
    match &d.assignment {
        Some(a) => {
            let _ = write!(
                b,
                "<tr><th>Stamp</th><td><a href=\"{base}/stamps/{s}\">#{s}</a></td></tr><tr><th>Epoch</th><td>{e}</td></tr><tr><th>Mode</th><td>{m}</td></tr>",
                s = a.stamp.0,
                e = a.epoch.0,
                m = escape(&a.mode.to_string())
            );
        }
        None => b.push_str("<tr><th>Stamp</th><td class=\"muted\">unassigned</td></tr>"),
    }
    let route = match (&d.route, &d.route_error) {
        (Some(r), _) => format!(
            "#{} at epoch {}{}{}",
            r.stamp.0,
            r.epoch,
            r.endpoint.map(|e| format!(" → {}", escape(e))).unwrap_or_default(),
            if r.stale { " (stale)" } else { "" }
        ),
        (None, Some(e)) => escape(e),
        (None, None) => "no router attached".to_string(),
    };
    let _ = write!(b, "<tr><th>Route (this router)</th><td id=\"route\">{route}</td></tr>");
    if let Some(p) = d.pin.as_ref().and_then(|p| p.stamp) {
        let _ = write!(b, "<tr><th>Pinned to</th><td>#{}</td></tr>", p.0);
    }
    b.push_str("</table><h2>Migrations</h2><ul>");
    for m in &d.migrations {
        let _ = write!(
            b,
            "<li>{} #{} → #{}: {}</li>",
            m.id, m.source.0, m.destination.0, m.state
        );
    }
    b.push_str("</ul><h2>History</h2><table id=\"history\"><tr><th>At</th><th>Action</th><th>From → to</th><th>Epoch</th><th>By</th><th>Reason</th></tr>");
    let stamp = |s: Option<crate::model::StampId>| s.map(|s| format!("#{}", s.0)).unwrap_or_else(|| "—".into());
    for h in &d.history {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            h.at,
            h.action.as_str(),
            stamp(h.from),
            stamp(h.to),
            h.epoch.0,
            escape(h.actor.as_deref().unwrap_or("")),
            escape(h.reason.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table>");
    Ok(layout(&format!("tenant {}", d.tenant.as_str()), &b))
}
