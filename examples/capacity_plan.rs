//! A whole capacity plan from the inputs of the worked example in *Deployment Stamps for
//! Availability: Multi-Region Guide*: the five calculations of its "Math & Calculations"
//! section, the sizing figures of its answer to "What's the right size for a deployment
//! stamp?" (blast radius and recovery time) and shuffle-sharding figures, printed as labelled
//! tables; then provisioning signals read off a small live fleet held in an in-memory
//! registry. The section numbers match `docs/capacity-planning.md`.
//!
//! ```text
//! cargo run --example capacity_plan
//! cargo run --example capacity_plan -- --tenants 25000 --pooling 4 --lead-time-hours 6
//! cargo run --example capacity_plan -- --help
//! ```

use std::error::Error;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use stamps::capacity::{
    apportion, fleet_economics, fraction_affected, min_stamps_for_blast_radius, peak_load, provisioning_signals,
    provisioning_thresholds, regional_fleet, servers_needed, stamps_needed, tenants_per_stamp, Bytes, BytesPerSecond,
    Headroom, LineItem, Money, ProvisionReason, RequestsPerSecond, Resource, ResourceLimit, RestoreModel,
    RevenueTarget, ShuffleSharding, SignalPolicy, StampCost, TenantsPerDay,
};
use stamps::{
    Capacity, Demand, InMemoryRegistry, Region, Registry, RegistryExt, StampId, StampSpec, StampState, TenantId,
    TenantSpec,
};

/// The plan's inputs; [`Inputs::from_guide`] holds the guide's figures (and this example's own
/// assumptions where the guide gives none: restore speed and shuffle sharding).
#[derive(Debug, Clone)]
struct Inputs {
    db_connections: f64,
    connections_per_tenant: f64,
    pooling: f64,
    rps_per_tenant: f64,
    rps_per_server: f64,
    headroom: f64,
    trigger_utilization: f64,
    growth_per_day: f64,
    lead_time: Duration,
    total_tenants: u64,
    regions: Vec<(&'static str, f64)>,
    cost_share_of_revenue: f64,
    blast_radius: f64,
    data_per_tenant: Bytes,
    restore_mib_per_sec: f64,
    restore_overhead: Duration,
    sharding_stamps: u64,
    shard_size: u64,
}

impl Inputs {
    fn from_guide() -> Self {
        Inputs {
            db_connections: 5_000.0,
            connections_per_tenant: 25.0,
            pooling: 1.0,
            rps_per_tenant: 10.0,
            rps_per_server: 100.0,
            headroom: 0.25,
            trigger_utilization: 0.75,
            growth_per_day: 5.0,
            lead_time: Duration::from_secs(2 * 3_600),
            total_tenants: 10_000,
            regions: vec![
                ("North America", 0.50),
                ("Europe", 0.30),
                ("Asia-Pacific", 0.15),
                ("Other regions", 0.05),
            ],
            cost_share_of_revenue: 0.40,
            blast_radius: 0.05,
            data_per_tenant: Bytes::from_gib(10),
            restore_mib_per_sec: 1_024.0,
            restore_overhead: Duration::from_secs(15 * 60),
            sharding_stamps: 8,
            shard_size: 2,
        }
    }
}

const USAGE: &str = "\
usage: capacity_plan [FLAGS]   (every flag is optional; defaults are the guide's figures)
  --tenants N                  total tenants in the fleet            (10000)
  --db-connections X           database connection limit per stamp   (5000)
  --connections-per-tenant X   connections per active tenant          (25)
  --pooling X                  pooler multiplexing factor, >= 1       (1)
  --rps-per-tenant X           peak requests/s per tenant             (10)
  --rps-per-server X           requests/s one app server handles      (100)
  --headroom X                 spare fraction, in [0, 1)              (0.25)
  --trigger X                  utilization to provision at, (0, 1]    (0.75)
  --growth-per-day X           tenants added per day                  (5)
  --lead-time-hours X          provisioning lead time in hours        (2)
  --cost-share X               infrastructure share of revenue        (0.40)
  --blast-radius X             max fraction of tenants per stamp      (0.05)
  --sharding-stamps N          stamps for shuffle sharding            (8)
  --shard-size N               stamps per tenant shard                (2)
  --help                       print this";

/// Parses `--flag value` pairs over the guide's inputs. `Ok(None)` means `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Inputs>, String> {
    let mut inputs = Inputs::from_guide();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        if !USAGE.contains(&format!("{flag} ")) || !flag.starts_with("--") {
            return Err(format!("unknown flag `{flag}`"));
        }
        let value = args.next().ok_or_else(|| format!("flag `{flag}` needs a value"))?;
        let float = || {
            value
                .parse::<f64>()
                .map_err(|e| format!("flag `{flag}`: `{value}` is not a number ({e})"))
        };
        let int = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("flag `{flag}`: `{value}` is not a whole number ({e})"))
        };
        match flag.as_str() {
            "--tenants" => inputs.total_tenants = int()?,
            "--db-connections" => inputs.db_connections = float()?,
            "--connections-per-tenant" => inputs.connections_per_tenant = float()?,
            "--pooling" => inputs.pooling = float()?,
            "--rps-per-tenant" => inputs.rps_per_tenant = float()?,
            "--rps-per-server" => inputs.rps_per_server = float()?,
            "--headroom" => inputs.headroom = float()?,
            "--trigger" => inputs.trigger_utilization = float()?,
            "--growth-per-day" => inputs.growth_per_day = float()?,
            "--lead-time-hours" => {
                let hours = float()?;
                inputs.lead_time = Duration::try_from_secs_f64(hours * 3_600.0)
                    .map_err(|e| format!("flag `{flag}`: `{value}` is not a valid duration ({e})"))?;
            }
            "--cost-share" => inputs.cost_share_of_revenue = float()?,
            "--blast-radius" => inputs.blast_radius = float()?,
            "--sharding-stamps" => inputs.sharding_stamps = int()?,
            "--shard-size" => inputs.shard_size = int()?,
            _ => return Err(format!("unknown flag `{flag}`")),
        }
    }
    Ok(Some(inputs))
}

/// A table: a title, column headers, rows of cells; the first column left-aligned, the
/// others right-aligned.
struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: &[&dyn Display]) -> &mut Self {
        self.rows.push(cells.iter().map(|c| c.to_string()).collect());
        self
    }

    fn print(&self) {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::from("  ");
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                if i == 0 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(" | ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            println!("{}", out.trim_end());
        };
        println!();
        println!("{}", self.title);
        println!("{}", "=".repeat(self.title.chars().count()));
        line(&self.headers);
        let rule: Vec<String> = widths.iter().take(columns).map(|w| "-".repeat(*w)).collect();
        line(&rule);
        for row in &self.rows {
            line(row);
        }
    }
}

fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

fn hours(d: Duration) -> String {
    format!("{:.2} h", d.as_secs_f64() / 3_600.0)
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A quantity with thousands separators when it is whole, as is otherwise.
fn qty(x: f64) -> String {
    if x.fract() == 0.0 && (0.0..1e15).contains(&x) {
        group(x as u64)
    } else {
        x.to_string()
    }
}

fn rps(x: RequestsPerSecond) -> String {
    format!("{} rps", qty(x.get()))
}

fn plan(inputs: &Inputs) -> Result<(), Box<dyn Error>> {
    let headroom = Headroom::from_fraction(inputs.headroom)?;
    let growth = TenantsPerDay(inputs.growth_per_day);

    // Calculation 1: tenants per stamp from the bottleneck.
    let db = ResourceLimit::new(
        Resource::Connections,
        inputs.db_connections,
        inputs.connections_per_tenant,
    )
    .pooling(inputs.pooling);
    let stamp = tenants_per_stamp(std::slice::from_ref(&db), headroom)?;
    let mut t = Table::new(
        "1. Tenants per stamp (bottleneck resource)",
        &[
            "resource",
            "limit",
            "per tenant",
            "pooling",
            "usable",
            "no headroom",
            "tenants",
        ],
    );
    for fit in &stamp.per_resource {
        t.row(&[
            &fit.resource,
            &qty(inputs.db_connections),
            &qty(inputs.connections_per_tenant),
            &format!("x{}", inputs.pooling),
            &qty(fit.usable),
            &fit.tenants_without_headroom,
            &fit.tenants,
        ]);
    }
    t.row(&[&"=> max tenants per stamp", &"", &"", &"", &"", &"", &stamp.tenants]);
    t.row(&[&"=> bound by", &"", &"", &"", &"", &"", &stamp.bottleneck]);
    t.print();

    let mut t = Table::new(
        "1b. Connection pooling, the lever (PgBouncer-style multiplexing, same inputs)",
        &["pooling factor", "tenants per stamp"],
    );
    for factor in [1.0, 2.0, 4.0, 8.0] {
        let pooled = tenants_per_stamp(&[db.clone().pooling(factor)], headroom)?;
        t.row(&[&format!("x{factor}"), &pooled.tenants]);
    }
    t.print();

    // Calculation 2: application servers.
    let peak = peak_load(stamp.tenants, RequestsPerSecond(inputs.rps_per_tenant))?;
    let servers = servers_needed(peak, RequestsPerSecond(inputs.rps_per_server), headroom)?;
    let mut t = Table::new("2. Application servers per stamp", &["figure", "value"]);
    t.row(&[&"tenants", &stamp.tenants])
        .row(&[&"peak per tenant", &rps(RequestsPerSecond(inputs.rps_per_tenant))])
        .row(&[&"total peak load", &rps(peak)])
        .row(&[&"capacity per server", &rps(RequestsPerSecond(inputs.rps_per_server))])
        .row(&[&"servers at 100% utilization", &servers.at_full_utilization])
        .row(&[
            &format!("servers with {} headroom", percent(inputs.headroom)),
            &servers.servers,
        ]);
    t.print();

    // Calculation 3: stamp cost.
    let cost = StampCost::new([
        LineItem::new("Application servers", servers.servers, Money::from_dollars(200)),
        LineItem::new("Database (primary + 2 replicas)", 3, Money::from_dollars(800)),
        LineItem::new("Cache cluster (3 nodes)", 3, Money::from_dollars(150)),
        LineItem::new("Load balancers", 2, Money::from_dollars(100)),
        LineItem::flat("Storage (1TB)", Money::from_dollars(100)),
        LineItem::flat("Networking", Money::from_dollars(300)),
    ])?;
    let mut t = Table::new("3. Monthly cost per stamp", &["line item", "qty", "unit", "total"]);
    for item in cost.items() {
        t.row(&[&item.label, &item.quantity, &item.unit_cost, &item.total()?]);
    }
    let per_tenant = cost.per_tenant(stamp.tenants)?;
    t.row(&[&"Total per stamp", &"", &"", &cost.total()]);
    t.row(&[&format!("Cost per tenant (/ {})", stamp.tenants), &"", &"", &per_tenant]);
    t.print();

    // Calculation 4: scaling decision point.
    let mut t = Table::new(
        "4. When to provision a new stamp",
        &["lead-time buffer", "trigger", "growth x buffer", "alert at"],
    );
    let two_days = Duration::from_secs(2 * 86_400);
    for (label, buffer) in [
        (
            format!("{} (stated lead time)", hours(inputs.lead_time)),
            inputs.lead_time,
        ),
        ("48.00 h (what the guide's \"5 x 2\" means)".to_string(), two_days),
    ] {
        let th = provisioning_thresholds(stamp.tenants, inputs.trigger_utilization, growth, buffer)?;
        t.row(&[
            &label,
            &th.trigger,
            &format!("{:.4} tenants", th.buffer_tenants),
            &th.alert,
        ]);
    }
    t.print();
    println!(
        "  trigger = floor({} x {}); alert = floor(trigger - {growth} x buffer), rounded down so the new stamp is ready in time",
        stamp.tenants, inputs.trigger_utilization
    );

    // Calculation 5: fleet size and geography.
    let fleet = stamps_needed(inputs.total_tenants, stamp.tenants)?;
    let global = apportion(fleet, &inputs.regions)?;
    let regional = regional_fleet(inputs.total_tenants, stamp.tenants, &inputs.regions)?;
    let mut t = Table::new(
        format!(
            "5. Fleet: {} tenants / {} per stamp = {} stamps",
            group(inputs.total_tenants),
            stamp.tenants,
            fleet
        ),
        &[
            "region",
            "share",
            "quota",
            "stamps (largest remainder)",
            "tenants",
            "stamps if tenants stay in region",
        ],
    );
    for ((region, stamps), r) in global.iter().zip(&regional) {
        t.row(&[
            region,
            &percent(r.share),
            &format!("{:.2}", fleet as f64 * r.share),
            stamps,
            &group(r.tenants),
            &r.stamps,
        ]);
    }
    t.row(&[
        &"Total",
        &"100.00%",
        &fleet,
        &global.iter().map(|g| g.1).sum::<u64>(),
        &group(regional.iter().map(|r| r.tenants).sum::<u64>()),
        &regional.iter().map(|r| r.stamps).sum::<u64>(),
    ]);
    t.print();

    // Economics.
    let guide = fleet_economics(
        fleet,
        cost.total(),
        inputs.total_tenants,
        RevenueTarget::CostShareOfRevenue(inputs.cost_share_of_revenue),
    )?;
    let margin = fleet_economics(
        fleet,
        cost.total(),
        inputs.total_tenants,
        RevenueTarget::GrossMargin(inputs.cost_share_of_revenue),
    )?;
    let share = percent(inputs.cost_share_of_revenue);
    let mut t = Table::new(
        "6. Economics (monthly)",
        &[
            "figure",
            &format!("infra = {share} of revenue (guide)"),
            &format!("true {share} gross margin"),
        ],
    );
    t.row(&[&"total infrastructure cost", &guide.total_cost, &margin.total_cost])
        .row(&[
            &"fleet cost per tenant",
            &guide.cost_per_tenant,
            &margin.cost_per_tenant,
        ])
        .row(&[&"revenue needed", &guide.revenue_needed, &margin.revenue_needed])
        .row(&[&"minimum ARPU per tenant", &guide.min_arpu, &margin.min_arpu]);
    t.print();

    // Sizing by bottleneck, blast radius and recovery time (the guide's answer to "What's the
    // right size for a deployment stamp?").
    let blast = min_stamps_for_blast_radius(inputs.blast_radius)?;
    let mut t = Table::new(
        "7a. Right-sizing a stamp: bottleneck and blast radius",
        &["figure", "value"],
    );
    t.row(&[
        &"tenants per stamp, no headroom (the guide's \"200\")",
        &stamp.per_resource.first().map_or(0, |f| f.tenants_without_headroom),
    ])
    .row(&[
        &format!("tenants per stamp, {} headroom", percent(inputs.headroom)),
        &stamp.tenants,
    ])
    .row(&[
        &format!("min stamps for a {} blast radius", percent(inputs.blast_radius)),
        &blast,
    ]);
    for failed in 1..=3 {
        t.row(&[
            &format!("tenants hit by {failed} of {fleet} stamps failing"),
            &percent(fraction_affected(fleet, failed)?),
        ]);
    }
    t.print();

    let restore = RestoreModel::new(
        inputs.data_per_tenant,
        BytesPerSecond::from_mib_per_sec(inputs.restore_mib_per_sec),
        inputs.restore_overhead,
    );
    let mut t = Table::new(
        format!(
            "7b. Largest stamp restorable within the RTO ({} GiB/tenant, {} MiB/s, {} setup)",
            inputs.data_per_tenant.get() >> 30,
            inputs.restore_mib_per_sec,
            hours(inputs.restore_overhead)
        ),
        &["RTO", "max tenants per stamp"],
    );
    for rto_hours in [1u64, 2] {
        let rto = Duration::from_secs(rto_hours * 3_600);
        t.row(&[&hours(rto), &restore.max_tenants(rto)?]);
    }
    t.print();
    println!(
        "  restoring one {}-tenant stamp takes {}",
        stamp.tenants,
        hours(restore.restore_time(stamp.tenants)?)
    );

    // Shuffle sharding.
    let shards = ShuffleSharding::new(inputs.sharding_stamps, inputs.shard_size)?;
    let mut t = Table::new(
        format!(
            "8. Shuffle sharding: {} stamps, {} per tenant",
            shards.stamps(),
            shards.shard_size()
        ),
        &["figure", "value"],
    );
    t.row(&[&"distinct shards C(n, k)", &shards.combinations()]).row(&[
        &"P(two tenants share all stamps)",
        &format!(
            "1/{} = {}",
            shards.combinations(),
            percent(shards.same_shard_probability())
        ),
    ]);
    for overlap in 0..=shards.shard_size() {
        t.row(&[
            &format!("P(two tenants share exactly {overlap})"),
            &percent(shards.overlap_probability(overlap)?),
        ]);
    }
    for failed in 1..=shards.shard_size().min(shards.stamps()) {
        t.row(&[
            &format!("P(tenant loses all stamps | {failed} fail)"),
            &percent(shards.tenant_outage_probability(failed)?),
        ])
        .row(&[
            &format!("P(tenant loses any stamp | {failed} fail)"),
            &percent(shards.tenant_impact_probability(failed)?),
        ]);
    }
    t.print();

    live_fleet_signals(inputs, &db, growth)
}

/// A small live fleet in an in-memory registry, read back as provisioning signals.
fn live_fleet_signals(inputs: &Inputs, db: &ResourceLimit, growth: TenantsPerDay) -> Result<(), Box<dyn Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let fleet = runtime.block_on(async {
        let registry = InMemoryRegistry::new();
        let capacity = Capacity::new([(Resource::Connections, db.capacity)], inputs.headroom)?;
        let demand = Demand::of([(Resource::Connections, db.per_tenant / db.pooling)])?;
        // (stamp, region, state, tenants)
        let layout = [
            (1, "us-east", StampState::Active, 105),
            (2, "us-east", StampState::Active, 40),
            (3, "eu-west", StampState::Active, 111),
            (4, "ap-south", StampState::Active, 112),
            (5, "ap-south", StampState::Draining, 90),
        ];
        for (id, region, state, tenants) in layout {
            let spec = StampSpec::new(
                StampId(id),
                format!("{region}-{id}"),
                Region::new(region)?,
                capacity.clone(),
            )?;
            registry.put_active_stamp(spec).await?;
            for i in 0..tenants {
                let tenant = TenantSpec::new(TenantId::new(&format!("s{id}-t{i}"))?).demand(demand.clone());
                registry.assign(&tenant, StampId(id)).await?;
            }
            if state != StampState::Active {
                registry.set_stamp_state(StampId(id), state).await?;
            }
        }
        registry.fleet().await
    })?;

    let policy = SignalPolicy::new(inputs.trigger_utilization, growth, inputs.lead_time);
    let report = provisioning_signals(&fleet, &policy)?;
    let mut t = Table::new(
        format!(
            "9. Live fleet signals (trigger {}, {growth} per region, lead time {})",
            percent(inputs.trigger_utilization),
            hours(inputs.lead_time)
        ),
        &[
            "stamp",
            "region",
            "state",
            "tenants",
            "bottleneck",
            "utilization",
            "room",
            "time to trigger",
        ],
    );
    for s in &report.stamps {
        t.row(&[
            &s.stamp,
            &s.region,
            &s.state,
            &s.tenants,
            &s.bottleneck.as_ref().map_or("-".to_string(), |r| r.to_string()),
            &percent(s.utilization),
            &s.room.map_or("-".to_string(), |r| r.to_string()),
            &s.time_to_trigger.map_or("never".to_string(), hours),
        ]);
    }
    t.print();
    let mut t = Table::new("9b. Recommendations", &["region", "action", "reason", "start by"]);
    for rec in &report.recommendations {
        let reason = match rec.reason {
            ProvisionReason::TriggerReached => "trigger reached".to_string(),
            ProvisionReason::AlertThresholdReached { room, runway } => {
                format!("{room} tenant(s) of room, full in {}", hours(runway))
            }
            ProvisionReason::NoAcceptingStamp => "no stamp takes tenants".to_string(),
            _ => "other".to_string(),
        };
        let start = rec.deadline.saturating_since(report.at);
        let start = if start.is_zero() {
            "now".to_string()
        } else {
            format!("in {}", hours(start))
        };
        t.row(&[&rec.region, &"ProvisionNewStamp", &reason, &start]);
    }
    if report.recommendations.is_empty() {
        t.row(&[&"-", &"none", &"", &""]);
    }
    t.print();
    Ok(())
}

fn main() -> ExitCode {
    let inputs = match parse_args(std::env::args().skip(1)) {
        Ok(Some(inputs)) => inputs,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("Capacity plan");
    println!("(inputs: Deployment Stamps for Availability: Multi-Region Guide, unless overridden by flags)");
    match plan(&inputs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
