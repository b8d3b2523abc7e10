//! The figures of *Deployment Stamps for Availability: Multi-Region Guide* (its "Math &
//! Calculations" section and its answer to "What's the right size for a deployment stamp?"),
//! reproduced exactly, plus property tests of the capacity module's invariants and a no-panic
//! fuzz of every public function.

use std::time::Duration;

use proptest::prelude::*;
use stamps::capacity::*;
use stamps::Name;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

fn guide_headroom() -> Headroom {
    Headroom::from_fraction(0.25).expect("0.25 is a valid headroom")
}

fn guide_stamp_cost() -> StampCost {
    StampCost::new([
        LineItem::new("Application servers", 20, Money::from_dollars(200)),
        LineItem::new("Database (primary + 2 replicas)", 3, Money::from_dollars(800)),
        LineItem::new("Cache cluster (3 nodes)", 3, Money::from_dollars(150)),
        LineItem::new("Load balancers", 2, Money::from_dollars(100)),
        LineItem::flat("Storage (1TB)", Money::from_dollars(100)),
        LineItem::flat("Networking", Money::from_dollars(300)),
    ])
    .expect("the guide's cost items are valid")
}

const GUIDE_REGIONS: [(&str, f64); 4] = [
    ("North America", 0.50),
    ("Europe", 0.30),
    ("Asia-Pacific", 0.15),
    ("Other regions", 0.05),
];

/// Every figure of the guide's "Math & Calculations" section, in order.
#[test]
fn guide_math_and_calculations() -> Result<(), CapacityError> {
    // Calculation 1: database-limited capacity.
    let stamp = tenants_per_stamp(
        &[ResourceLimit::new(Resource::Connections, 5_000.0, 25.0)],
        guide_headroom(),
    )?;
    assert_eq!(stamp.per_resource[0].usable, 3_750.0);
    assert_eq!(stamp.tenants, 150);
    assert_eq!(stamp.bottleneck, Resource::Connections);

    // Calculation 2: application servers.
    let peak = peak_load(stamp.tenants, RequestsPerSecond(10.0))?;
    assert_eq!(peak, RequestsPerSecond(1_500.0));
    let servers = servers_needed(peak, RequestsPerSecond(100.0), guide_headroom())?;
    assert_eq!(servers.at_full_utilization, 15);
    assert_eq!(servers.servers, 20);

    // Calculation 3: stamp cost.
    let cost = guide_stamp_cost();
    let lines: Vec<String> = cost
        .items()
        .iter()
        .map(|item| item.total().map(|m| m.to_string()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        lines,
        ["$4,000.00", "$2,400.00", "$450.00", "$200.00", "$100.00", "$300.00"]
    );
    assert_eq!(cost.total(), Money::from_dollars(7_450));
    assert_eq!(cost.total().to_string(), "$7,450.00");
    let per_tenant = cost.per_tenant(stamp.tenants)?;
    assert_eq!(per_tenant, Money::from_cents(4_967));
    assert_eq!(per_tenant.to_string(), "$49.67");

    // Calculation 4: scaling decision point. The guide's 102 needs a 2-day buffer.
    let thresholds = provisioning_thresholds(stamp.tenants, 0.75, TenantsPerDay(5.0), 2 * DAY)?;
    assert_eq!(thresholds.trigger, 112);
    assert_eq!(thresholds.buffer_tenants, 10.0);
    assert_eq!(thresholds.alert, 102);

    // Calculation 5: geographic distribution and economics.
    let fleet = stamps_needed(10_000, stamp.tenants)?;
    assert_eq!(fleet, 67);
    let regions = apportion(fleet, &GUIDE_REGIONS)?;
    assert_eq!(
        regions,
        [
            ("North America", 34),
            ("Europe", 20),
            ("Asia-Pacific", 10),
            ("Other regions", 3)
        ]
    );
    let economics = fleet_economics(fleet, cost.total(), 10_000, RevenueTarget::CostShareOfRevenue(0.40))?;
    assert_eq!(economics.total_cost, Money::from_dollars(499_150));
    assert_eq!(economics.total_cost.to_string(), "$499,150.00");
    assert_eq!(economics.revenue_needed, Money::from_dollars(1_247_875));
    assert_eq!(economics.revenue_needed.to_string(), "$1,247,875.00");
    assert_eq!(economics.min_arpu, Money::from_cents(12_479));
    assert_eq!(economics.min_arpu.to_string(), "$124.79");
    Ok(())
}

/// The guide's calculation 4 says "5 × 2" with a lead time of 2 hours; the correct figure
/// for 2 hours.
#[test]
fn alert_threshold_with_a_two_hour_lead_time() -> Result<(), CapacityError> {
    let t = provisioning_thresholds(150, 0.75, TenantsPerDay(5.0), 2 * HOUR)?;
    assert_eq!(t.trigger, 112);
    // 5 tenants/day × 2/24 day = 0.41667 tenants; 112 − 0.41667 = 111.58, rounded down.
    assert!((t.buffer_tenants - 5.0 / 12.0).abs() < 1e-12);
    assert_eq!(t.alert, 111);
    // Starting at the alert leaves at least the lead time; one tenant later does not.
    let slack = time_until(t.alert, t.trigger, TenantsPerDay(5.0))?;
    assert!(slack.is_some_and(|d| d >= 2 * HOUR));
    let late = time_until(t.alert + 1, t.trigger, TenantsPerDay(5.0))?;
    assert_eq!(late, Some(Duration::ZERO));
    Ok(())
}

/// The guide's answer to "What's the right size for a deployment stamp?": 5,000 connections
/// / 25 each is 200 tenants only with *no* headroom; a 5% blast radius needs 20 stamps. Plus
/// shuffle sharding (not in the guide): 8 stamps in shards of 2 give 28 combinations.
#[test]
fn guide_stamp_sizing_answer() -> Result<(), CapacityError> {
    let db = [ResourceLimit::new(Resource::Connections, 5_000.0, 25.0)];
    assert_eq!(tenants_per_stamp(&db, Headroom::NONE)?.tenants, 200);
    let with_headroom = tenants_per_stamp(&db, guide_headroom())?;
    assert_eq!(with_headroom.tenants, 150);
    assert_eq!(with_headroom.per_resource[0].tenants_without_headroom, 200);

    assert_eq!(min_stamps_for_blast_radius(0.05)?, 20);
    assert_eq!(fraction_affected(20, 1)?, 0.05);

    let shards = ShuffleSharding::new(8, 2)?;
    assert_eq!(shards.combinations(), 28);
    assert!((shards.same_shard_probability() - 1.0 / 28.0).abs() < 1e-15);
    assert_eq!(binomial(8, 2)?, 28);

    // Restore within 1 to 2 hours (the guide's rule of thumb) at 1 GiB/s, 10 GiB per tenant
    // and 15 minutes of provisioning before data flows.
    let restore = RestoreModel::new(
        Bytes::from_gib(10),
        BytesPerSecond::from_mib_per_sec(1_024.0),
        Duration::from_secs(15 * 60),
    );
    assert_eq!(restore.max_tenants(HOUR)?, 270);
    assert_eq!(restore.max_tenants(2 * HOUR)?, 630);
    assert_eq!(restore.restore_time(150)?, Duration::from_secs(900 + 1_500));
    Ok(())
}

/// Where the guide's arithmetic needs care, beyond the alert threshold.
#[test]
fn guide_arithmetic_notes() -> Result<(), CapacityError> {
    // A true 40% gross margin, versus the guide's cost / 0.40.
    let e = fleet_economics(67, Money::from_dollars(7_450), 10_000, RevenueTarget::GrossMargin(0.40))?;
    assert_eq!(e.revenue_needed.to_string(), "$831,916.67");
    assert_eq!(e.min_arpu.to_string(), "$83.20");
    // The fleet's cost per tenant is above a full stamp's, as 67 stamps hold 10,050.
    assert_eq!(e.cost_per_tenant.to_string(), "$49.92");

    // Rounding each region on its own can miss the total; largest remainder cannot.
    let naive: u64 = GUIDE_REGIONS
        .iter()
        .map(|(_, share)| (65.0 * share).round() as u64)
        .sum();
    assert_eq!(naive, 66);
    let parts = apportion(65, &GUIDE_REGIONS)?;
    assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), 65);

    // Region-bound tenants: "Other regions" has 500 tenants, which 3 stamps of 150 cannot hold.
    let plan = regional_fleet(10_000, 150, &GUIDE_REGIONS)?;
    let stamps: Vec<u64> = plan.iter().map(|r| r.stamps).collect();
    assert_eq!(stamps, [34, 20, 10, 4]);
    assert_eq!(plan.iter().map(|r| r.tenants).sum::<u64>(), 10_000);

    // Rounding servers twice (at full load, then for headroom) can need one more than rounding once.
    let s = servers_needed(RequestsPerSecond(1_010.0), RequestsPerSecond(100.0), guide_headroom())?;
    assert_eq!((s.at_full_utilization, s.servers), (11, 14));

    // Connection pooling, the lever the guide names: 4 clients per server connection.
    let pooled = tenants_per_stamp(
        &[ResourceLimit::new(Resource::Connections, 5_000.0, 25.0).pooling(4.0)],
        guide_headroom(),
    )?;
    assert_eq!(pooled.tenants, 600);
    Ok(())
}

#[test]
fn bad_input_names_the_argument() {
    let arg = |r: Result<u64, CapacityError>| r.map_err(|e| e.argument());
    // Headroom is the model's type, refused at construction and named in the message.
    for bad in [1.0, 1.5, -0.01, f64::NAN, f64::INFINITY] {
        let err = Headroom::from_fraction(bad).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("headroom"), "{err}");
    }
    let h = Headroom::NONE;
    let limit = |c, p| ResourceLimit::new(Resource::Memory, c, p);
    assert_eq!(tenants_per_stamp(&[], h).map_err(|e| e.argument()), Err("limits"));
    assert!(matches!(
        tenants_per_stamp(&[limit(f64::INFINITY, 1.0)], h),
        Err(CapacityError::NotFinite {
            argument: "limits[].capacity",
            ..
        })
    ));
    assert!(matches!(
        tenants_per_stamp(&[limit(-1.0, 1.0)], h),
        Err(CapacityError::Negative {
            argument: "limits[].capacity",
            ..
        })
    ));
    assert!(matches!(
        tenants_per_stamp(&[limit(1.0, 0.0)], h),
        Err(CapacityError::Zero {
            argument: "limits[].per_tenant"
        })
    ));
    assert!(matches!(
        tenants_per_stamp(&[limit(1.0, 1.0).pooling(0.5)], h),
        Err(CapacityError::OutOfRange {
            argument: "limits[].pooling",
            ..
        })
    ));
    assert!(matches!(
        servers_needed(RequestsPerSecond(1.0), RequestsPerSecond(0.0), h),
        Err(CapacityError::Zero { argument: "per_server" })
    ));
    assert!(matches!(
        servers_needed(RequestsPerSecond(f64::NAN), RequestsPerSecond(1.0), h),
        Err(CapacityError::NotFinite { argument: "peak", .. })
    ));
    assert_eq!(arg(stamps_needed(1, 0)), Err("tenants_per_stamp"));
    assert!(matches!(
        apportion(10, &[("a", 0.5), ("b", 0.4)]),
        Err(CapacityError::SharesDoNotSumToOne { argument: "shares", .. })
    ));
    assert!(matches!(
        apportion(10, &[("a", 1.5), ("b", -0.5)]),
        Err(CapacityError::Negative { argument: "shares", .. })
    ));
    assert!(matches!(
        apportion::<&str>(10, &[]),
        Err(CapacityError::Empty { argument: "shares" })
    ));
    // Within the documented tolerance is accepted.
    assert!(apportion(10, &[("a", 1.0 / 3.0), ("b", 0.333_333), ("c", 0.333_333)]).is_ok());
    assert!(matches!(
        provisioning_thresholds(150, 1.5, TenantsPerDay(5.0), HOUR),
        Err(CapacityError::OutOfRange {
            argument: "trigger_utilization",
            ..
        })
    ));
    assert!(matches!(
        provisioning_thresholds(150, 0.75, TenantsPerDay(-5.0), HOUR),
        Err(CapacityError::Negative { argument: "growth", .. })
    ));
    assert!(matches!(
        provisioning_thresholds(150, 0.75, TenantsPerDay(f64::MAX), Duration::MAX),
        Err(CapacityError::Overflow { argument: "growth", .. })
    ));
    let cost = Money::from_dollars(1);
    let econ = |target| fleet_economics(1, cost, 1, target).map_err(|e| e.argument());
    assert_eq!(econ(RevenueTarget::CostShareOfRevenue(0.0)), Err("cost_share"));
    assert_eq!(econ(RevenueTarget::GrossMargin(1.0)), Err("gross_margin"));
    assert_eq!(econ(RevenueTarget::GrossMargin(f64::NEG_INFINITY)), Err("gross_margin"));
    assert_eq!(
        fleet_economics(1, cost, 0, RevenueTarget::GrossMargin(0.4)).map_err(|e| e.argument()),
        Err("tenants")
    );
    assert_eq!(
        fleet_economics(u64::MAX, cost, 1, RevenueTarget::CostShareOfRevenue(1.0)).map_err(|e| e.argument()),
        Err("stamps")
    );
    assert_eq!(
        fleet_economics(
            1,
            Money::from_cents(u64::MAX),
            1,
            RevenueTarget::CostShareOfRevenue(0.5)
        )
        .map_err(|e| e.argument()),
        Err("cost_per_stamp")
    );
    assert_eq!(arg(min_stamps_for_blast_radius(0.0)), Err("max_fraction"));
    assert_eq!(arg(min_stamps_for_blast_radius(1e-300)), Err("max_fraction"));
    assert_eq!(fraction_affected(0, 0).map_err(|e| e.argument()), Err("stamps"));
    assert_eq!(fraction_affected(2, 3).map_err(|e| e.argument()), Err("failed"));
    assert_eq!(binomial(1_000, 500).map_err(|e| e.argument()), Err("n"));
    assert_eq!(ShuffleSharding::new(3, 0).map_err(|e| e.argument()), Err("shard_size"));
    assert_eq!(ShuffleSharding::new(3, 4).map_err(|e| e.argument()), Err("shard_size"));
    assert_eq!(
        ShuffleSharding::new(1_000, 500).map_err(|e| e.argument()),
        Err("stamps")
    );
    let restore = RestoreModel::new(Bytes(0), BytesPerSecond(1.0), Duration::ZERO);
    assert_eq!(arg(restore.max_tenants(HOUR)), Err("data_per_tenant"));
    let restore = RestoreModel::new(Bytes(1), BytesPerSecond(0.0), Duration::ZERO);
    assert_eq!(arg(restore.max_tenants(HOUR)), Err("throughput"));
    let restore = RestoreModel::new(Bytes(u64::MAX), BytesPerSecond(1e-300), Duration::ZERO);
    assert_eq!(restore.restore_time(u64::MAX).map_err(|e| e.argument()), Err("tenants"));
    // Messages say what to do.
    let message = min_stamps_for_blast_radius(2.0).map(|_| ()).unwrap_err().to_string();
    assert!(message.contains("`max_fraction`") && message.contains("0.05"));
}

#[test]
fn binomials_are_exact_at_the_edge_of_u128() -> Result<(), CapacityError> {
    assert_eq!(binomial(0, 0)?, 1);
    assert_eq!(binomial(u64::MAX, 0)?, 1);
    assert_eq!(binomial(u64::MAX, 1)?, u128::from(u64::MAX));
    assert_eq!(binomial(u64::MAX, u64::MAX)?, 1);
    // C(130, 65) = 95067625827960698145584333020095113100 fits; C(132, 66) does not.
    assert_eq!(binomial(130, 65)?, 95_067_625_827_960_698_145_584_333_020_095_113_100);
    assert!(binomial(132, 66).is_err());
    Ok(())
}

#[test]
fn money_display() {
    assert_eq!(Money::ZERO.to_string(), "$0.00");
    assert_eq!(Money::from_cents(5).to_string(), "$0.05");
    assert_eq!(Money::from_cents(99_999).to_string(), "$999.99");
    assert_eq!(Money::from_cents(100_000).to_string(), "$1,000.00");
    assert_eq!(Money::from_cents(u64::MAX).to_string(), "$184,467,440,737,095,516.15");
    assert_eq!(format!("{:>12}", Money::from_dollars(7_450)), "   $7,450.00");
}

// ---------------------------------------------------------------------------------------
// Properties.

fn finite_non_negative() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..1e3, 0.0..1e9, 0.0..1e15]
}

fn headroom() -> impl Strategy<Value = Headroom> {
    (0.0..1.0f64).prop_map(|h| Headroom::from_fraction(h).expect("in range"))
}

/// Any f64, weighted toward the awkward ones.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(1.0 - f64::EPSILON),
        any::<f64>(),
        -2.0..2.0f64,
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), 0..200u64, any::<u64>()]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| Duration::new(s, n)),
        (0..1_000_000u64).prop_map(Duration::from_secs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn more_capacity_never_yields_fewer_tenants(
        a in finite_non_negative(),
        b in finite_non_negative(),
        per_tenant in 1e-3..1e6f64,
        pooling in 1.0..100.0f64,
        h in headroom(),
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let fit = |c| tenants_per_stamp(
            &[ResourceLimit::new(Resource::Connections, c, per_tenant).pooling(pooling)],
            h,
        );
        if let (Ok(l), Ok(hi)) = (fit(low), fit(high)) {
            prop_assert!(l.tenants <= hi.tenants);
        }
    }

    #[test]
    fn more_headroom_never_yields_more_tenants(
        capacity in finite_non_negative(),
        per_tenant in 1e-3..1e6f64,
        a in 0.0..1.0f64,
        b in 0.0..1.0f64,
        extra in finite_non_negative(),
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let limits = [
            ResourceLimit::new(Resource::Storage, capacity, per_tenant),
            ResourceLimit::new(Resource::Custom(Name::new("other").expect("valid name")), extra, 1.0),
        ];
        let at = |h| tenants_per_stamp(&limits, Headroom::from_fraction(h).expect("in range"));
        if let (Ok(less), Ok(more)) = (at(low), at(high)) {
            prop_assert!(more.tenants <= less.tenants);
        }
        // More headroom never means fewer servers.
        let servers = |h| servers_needed(RequestsPerSecond(capacity), RequestsPerSecond(per_tenant), Headroom::from_fraction(h).expect("in range"));
        if let (Ok(less), Ok(more)) = (servers(low), servers(high)) {
            prop_assert!(more.servers >= less.servers);
            prop_assert!(less.servers >= less.at_full_utilization);
        }
    }

    #[test]
    fn the_bottleneck_is_the_smallest_fit(
        limits in prop::collection::vec((finite_non_negative(), 1e-3..1e6f64), 1..6),
        h in headroom(),
    ) {
        let limits: Vec<ResourceLimit> = limits
            .into_iter()
            .enumerate()
            .map(|(i, (c, p))| ResourceLimit::new(Resource::Custom(Name::new(&format!("r{i}")).expect("valid name")), c, p))
            .collect();
        if let Ok(plan) = tenants_per_stamp(&limits, h) {
            let min = plan.per_resource.iter().map(|f| f.tenants).min();
            prop_assert_eq!(Some(plan.tenants), min);
            let first = plan.per_resource.iter().find(|f| f.tenants == plan.tenants).map(|f| f.resource.clone());
            prop_assert_eq!(Some(plan.bottleneck), first);
            for fit in &plan.per_resource {
                prop_assert!(fit.tenants <= fit.tenants_without_headroom);
            }
        }
    }

    #[test]
    fn apportionment_sums_to_the_total_and_stays_within_one_of_the_quota(
        total in prop_oneof![0..1_000u64, 0..(1u64 << 40)],
        weights in prop::collection::vec(0..1_000u32, 1..12),
    ) {
        let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        prop_assume!(sum > 0);
        let shares: Vec<(usize, f64)> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| (i, f64::from(*w) / sum as f64))
            .collect();
        let parts = apportion(total, &shares).expect("shares sum to 1");
        prop_assert_eq!(parts.len(), shares.len());
        prop_assert_eq!(parts.iter().map(|p| p.1).sum::<u64>(), total);
        for ((key, part), (i, w)) in parts.iter().zip(weights.iter().enumerate()) {
            prop_assert_eq!(*key, i);
            // The exact quota, in integers: total × w / sum.
            let exact_num = u128::from(total) * u128::from(*w);
            let den = u128::from(sum);
            let floor = exact_num / den;
            let ceil = floor + u128::from(exact_num % den != 0);
            prop_assert!(u128::from(*part) >= floor && u128::from(*part) <= ceil.max(floor + 1),
                "part {} for quota {}/{}", part, exact_num, den);
            if *w == 0 {
                prop_assert_eq!(*part, 0);
            }
        }
    }

    #[test]
    fn regional_fleets_cover_every_regions_tenants(
        tenants in 0..1_000_000u64,
        per_stamp in 1..1_000u64,
        weights in prop::collection::vec(1..100u32, 1..8),
    ) {
        let sum: u32 = weights.iter().sum();
        let shares: Vec<(usize, f64)> = weights.iter().enumerate().map(|(i, w)| (i, f64::from(*w) / f64::from(sum))).collect();
        let plan = regional_fleet(tenants, per_stamp, &shares).expect("valid");
        prop_assert_eq!(plan.iter().map(|r| r.tenants).sum::<u64>(), tenants);
        for region in &plan {
            prop_assert!(region.stamps * per_stamp >= region.tenants);
            prop_assert!(region.stamps == 0 || (region.stamps - 1) * per_stamp < region.tenants);
        }
        let global = stamps_needed(tenants, per_stamp).expect("valid");
        prop_assert!(plan.iter().map(|r| r.stamps).sum::<u64>() >= global);
    }

    #[test]
    fn the_alert_leaves_at_least_the_lead_time(
        capacity in 1..100_000u64,
        utilization in 0.05..=1.0f64,
        growth in 0.01..1_000.0f64,
        lead_secs in 0..(30 * 86_400u64),
    ) {
        let lead = Duration::from_secs(lead_secs);
        let t = provisioning_thresholds(capacity, utilization, TenantsPerDay(growth), lead).expect("valid");
        prop_assert!(t.alert <= t.trigger && t.trigger <= capacity);
        if t.alert > 0 {
            // Starting at the alert, growth reaches the trigger no sooner than the lead time,
            // and one tenant later would be too late; both to float precision and to the
            // documented whole-number slack (at most 1e-6 tenant, i.e. 1e-6 / growth days).
            let tolerance = lead.as_secs_f64() * 1e-12 + 1e-6 / growth * 86_400.0 + 1e-6;
            let slack = time_until(t.alert, t.trigger, TenantsPerDay(growth)).expect("valid").expect("growth > 0");
            prop_assert!(slack.as_secs_f64() >= lead.as_secs_f64() - tolerance);
            let later = time_until(t.alert + 1, t.trigger, TenantsPerDay(growth)).expect("valid").expect("growth > 0");
            prop_assert!(later.as_secs_f64() <= lead.as_secs_f64() + tolerance);
        }
    }

    #[test]
    fn money_is_exact_and_rounding_brackets_the_quotient(cents in any::<u64>(), divisor in 1..u64::MAX) {
        let m = Money::from_cents(cents);
        let down = m.checked_div_rounded(divisor, Rounding::Down).expect("divisor > 0").cents();
        let half = m.checked_div_rounded(divisor, Rounding::HalfUp).expect("divisor > 0").cents();
        let up = m.checked_div_rounded(divisor, Rounding::Up).expect("divisor > 0").cents();
        prop_assert!(down <= half && half <= up && up - down <= 1);
        prop_assert_eq!(u128::from(down) * u128::from(divisor) <= u128::from(cents), true);
        prop_assert_eq!(u128::from(up) * u128::from(divisor) >= u128::from(cents), true);
    }

    #[test]
    fn economics_revenue_covers_the_cost_share(
        stamps in 0..10_000u64,
        dollars in 0..100_000u32,
        tenants in 1..10_000_000u64,
        share in 0.01..=1.0f64,
    ) {
        let e = fleet_economics(stamps, Money::from_dollars(dollars), tenants, RevenueTarget::CostShareOfRevenue(share)).expect("valid");
        prop_assert_eq!(e.total_cost.cents(), u64::from(dollars) * 100 * stamps);
        prop_assert!(e.revenue_needed >= e.total_cost);
        // ARPU × tenants covers the revenue to within rounding of the share to a millionth.
        let collected = u128::from(e.min_arpu.cents()) * u128::from(tenants);
        prop_assert!(collected as f64 >= e.revenue_needed.cents() as f64 * (1.0 - 1e-6) - 1.0);
        let margin = fleet_economics(stamps, Money::from_dollars(dollars), tenants, RevenueTarget::GrossMargin(1.0 - share)).expect("valid");
        // The same target read two ways agrees to the millionth the share is resolved to.
        let (a, b) = (margin.revenue_needed.cents() as f64, e.revenue_needed.cents() as f64);
        prop_assert!((a - b).abs() <= 1.0 + b * 2e-6);
    }

    #[test]
    fn binomials_follow_pascal_and_symmetry(n in 1..140u64, k in 0..140u64) {
        if let (Ok(c), Ok(a), Ok(b)) = (binomial(n, k), binomial(n - 1, k.wrapping_sub(1)), binomial(n - 1, k)) {
            let a = if k == 0 { 0 } else { a };
            prop_assert_eq!(Some(c), a.checked_add(b));
        }
        if k <= n {
            prop_assert_eq!(binomial(n, k).ok(), binomial(n, n - k).ok());
        }
    }

    #[test]
    fn shuffle_sharding_probabilities_are_distributions(
        (n, k, failed) in (1..60u64).prop_flat_map(|n| (Just(n), 1..=n, 0..=n)),
    ) {
        let s = ShuffleSharding::new(n, k).expect("fits");
        let total: f64 = (0..=k).map(|j| s.overlap_probability(j).expect("j <= k")).sum();
        prop_assert!((total - 1.0).abs() < 1e-9);
        let outage = s.tenant_outage_probability(failed).expect("failed <= n");
        let impact = s.tenant_impact_probability(failed).expect("failed <= n");
        prop_assert!((0.0..=1.0).contains(&outage) && outage <= impact + 1e-12 && impact <= 1.0 + 1e-12);
        if k == 1 {
            prop_assert!((outage - fraction_affected(n, failed).expect("valid")).abs() < 1e-12);
        }
    }

    #[test]
    fn restoring_the_largest_stamp_fits_the_rto(
        gib in 1..1_000u32,
        mib_per_sec in 1.0..10_000.0f64,
        overhead in 0..7_200u64,
        rto in 0..86_400u64,
    ) {
        let model = RestoreModel::new(Bytes::from_gib(gib), BytesPerSecond::from_mib_per_sec(mib_per_sec), Duration::from_secs(overhead));
        let rto = Duration::from_secs(rto);
        let tenants = model.max_tenants(rto).expect("valid");
        let time = model.restore_time(tenants).expect("fits");
        prop_assert!(tenants == 0 || time.as_secs_f64() <= rto.as_secs_f64() * (1.0 + 1e-9));
        let one_more = model.restore_time(tenants + 1).expect("fits");
        prop_assert!(one_more.as_secs_f64() >= rto.as_secs_f64() * (1.0 - 1e-9));
    }

    /// Arbitrary floats and integers into every public function: errors, never panics.
    #[test]
    fn no_public_function_panics(
        f in prop::collection::vec(any_f64(), 8),
        n in prop::collection::vec(any_u64(), 6),
        d in prop::collection::vec(any_duration(), 2),
    ) {
        let (f0, f1, f2, f3) = (f[0], f[1], f[2], f[3]);
        let (n0, n1, n2) = (n[0], n[1], n[2]);
        let h = Headroom::from_fraction(f0).unwrap_or(Headroom::NONE);
        let _ = Headroom::from_fraction(f1).map(|h| h.as_fraction());
        let _ = tenants_per_stamp(&[ResourceLimit::new(Resource::Connections, f1, f2).pooling(f3)], h);
        let _ = tenants_per_stamp(&[ResourceLimit::new(Resource::Custom(Name::new("x").expect("valid name")), f[4], f[5])], h);
        let _ = peak_load(n0, RequestsPerSecond(f1));
        let _ = servers_needed(RequestsPerSecond(f1), RequestsPerSecond(f2), h);
        let m = Money::from_cents(n0);
        let _ = m.to_string();
        let _ = m.checked_add(Money::from_cents(n1));
        let _ = m.checked_mul(n1);
        for r in [Rounding::Down, Rounding::HalfUp, Rounding::Up] {
            let _ = m.checked_div_rounded(n1, r);
        }
        let item = LineItem::new("x", n1, m);
        let _ = item.total();
        if let Ok(cost) = StampCost::new([item, LineItem::flat("y", Money::from_cents(n2))]) {
            let _ = cost.per_tenant(n2);
        }
        let _ = provisioning_thresholds(n0, f1, TenantsPerDay(f2), d[0]);
        let _ = time_until(n0, n1, TenantsPerDay(f2));
        let _ = TenantsPerDay(f1).tenants_in(d[1]);
        let _ = stamps_needed(n0, n1);
        let shares = [("a", f1), ("b", f2), ("c", f3)];
        let _ = apportion(n0, &shares);
        let _ = apportion(n0, &[("a", f1)]);
        let _ = regional_fleet(n0, n1, &shares);
        let _ = regional_fleet(n0, n1, &[("a", 1.0), ("b", -0.0)]);
        let _ = fleet_economics(n0, m, n2, RevenueTarget::CostShareOfRevenue(f1));
        let _ = fleet_economics(n0, m, n2, RevenueTarget::GrossMargin(f1));
        let _ = min_stamps_for_blast_radius(f1);
        let _ = fraction_affected(n0, n1);
        let restore = RestoreModel::new(Bytes(n0), BytesPerSecond(f1), d[0]);
        let _ = restore.max_tenants(d[1]);
        let _ = restore.restore_time(n1);
        let _ = BytesPerSecond::from_mib_per_sec(f2);
        let small = n[3] % 300;
        let _ = binomial(n0, n1);
        let _ = binomial(small, n[4] % 300);
        if let Ok(s) = ShuffleSharding::new(small, n[4] % 300) {
            let _ = s.same_shard_probability();
            let _ = s.overlap_probability(n[5] % 300);
            let _ = s.tenant_outage_probability(n[5] % 300);
            let _ = s.tenant_impact_probability(n[5] % 300);
        }
        let _ = ShuffleSharding::new(n0, n1);
    }
}

// ---------------------------------------------------------------------------------------
// Provisioning signals from a live fleet.

mod signals {
    use super::*;
    use stamps::{
        Capacity, Demand, FakeClock, InMemoryRegistry, Region, Registry, RegistryExt, StampId, StampSpec, StampState,
        TenantId, TenantSpec, Timestamp,
    };

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn registry() -> InMemoryRegistry {
        InMemoryRegistry::builder()
            .clock(FakeClock::starting_at(Timestamp::from_millis(1_000_000)))
            .build()
    }

    async fn stamp(
        registry: &InMemoryRegistry,
        id: u32,
        region: &str,
        capacity: Capacity,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new(region)?, capacity)?;
        registry.put_active_stamp(spec).await?;
        Ok(())
    }

    async fn fill(registry: &InMemoryRegistry, id: u32, from: u64, to: u64, demand: &Demand) -> TestResult {
        for i in from..to {
            let tenant = TenantSpec::new(TenantId::new(&format!("s{id}-t{i}"))?).demand(demand.clone());
            registry.assign(&tenant, StampId(id)).await?;
        }
        Ok(())
    }

    /// The guide's example stamp: the signal appears exactly at the alert threshold of calculation 4,
    /// for the 2-hour lead time (111) and for the 2-day buffer (102).
    #[tokio::test]
    async fn the_signal_fires_at_the_guide_alert_threshold() -> TestResult {
        for (lead, alert) in [(2 * HOUR, 111u64), (2 * DAY, 102)] {
            let registry = registry();
            stamp(
                &registry,
                1,
                "us-east",
                Capacity::new([(Resource::Tenants, 200.0)], 0.25)?,
            )
            .await?;
            let policy = SignalPolicy::new(0.75, TenantsPerDay(5.0), lead);
            for n in 0..=150u64 {
                let fleet = registry.fleet().await?;
                let report = provisioning_signals(&fleet, &policy)?;
                assert_eq!(report.stamps[0].tenants, n);
                assert_eq!(report.stamps[0].room, Some(112u64.saturating_sub(n)));
                assert_eq!(!report.recommendations.is_empty(), n >= alert, "n = {n}, lead {lead:?}");
                if let Some(rec) = report.recommendations.first() {
                    let expected = if n >= 112 {
                        ProvisionReason::TriggerReached
                    } else {
                        ProvisionReason::AlertThresholdReached {
                            room: 112 - n,
                            runway: Duration::from_secs_f64((112 - n) as f64 / 5.0 * 86_400.0),
                        }
                    };
                    assert_eq!(rec.reason, expected);
                    assert!(rec.deadline >= fleet.at);
                }
                fill(&registry, 1, n, n + 1, &Demand::default()).await?;
            }
        }
        Ok(())
    }

    #[tokio::test]
    async fn bottleneck_room_and_regions() -> TestResult {
        let registry = registry();
        let db = |limit| Capacity::new([(Resource::Connections, limit), (Resource::Tenants, 1_000.0)], 0.25);
        // us-east: two stamps; the second has plenty of room, so the region needs nothing.
        stamp(&registry, 1, "us-east", db(5_000.0)?).await?;
        stamp(&registry, 2, "us-east", db(5_000.0)?).await?;
        // eu-west: one stamp close to its trigger, one draining (its room does not count).
        stamp(&registry, 3, "eu-west", db(5_000.0)?).await?;
        stamp(&registry, 4, "eu-west", db(50_000.0)?).await?;
        // ap-south: only a draining stamp.
        stamp(&registry, 5, "ap-south", db(5_000.0)?).await?;
        let demand = Demand::of([(Resource::Connections, 25.0)])?;
        fill(&registry, 1, 0, 100, &demand).await?;
        fill(&registry, 3, 0, 110, &demand).await?;
        registry.set_stamp_state(StampId(4), StampState::Draining).await?;
        registry.set_stamp_state(StampId(5), StampState::Draining).await?;

        let policy = SignalPolicy::new(0.75, TenantsPerDay(5.0), 2 * DAY);
        let fleet = registry.fleet().await?;
        let report = provisioning_signals(&fleet, &policy)?;
        let s1 = &report.stamps[0];
        assert_eq!(s1.bottleneck, Some(Resource::Connections));
        // 2,500 of 3,750 usable connections.
        assert!((s1.utilization - 2_500.0 / 3_750.0).abs() < 1e-12);
        // Trigger at 0.75 × 3,750 = 2,812.5 connections = 112.5 tenants of 25: room 12.
        assert_eq!(s1.room, Some(12));
        assert_eq!(s1.time_to_trigger, Some(Duration::from_secs_f64(12.0 / 5.0 * 86_400.0)));
        // An empty stamp takes the fleet's 25 connections per tenant: 150 tenants, trigger 112.
        assert_eq!(report.stamps[1].room, Some(112));
        assert_eq!(report.stamps[1].bottleneck, Some(Resource::Connections));
        assert_eq!(report.stamps[1].utilization, 0.0);
        let regions: Vec<(&str, ProvisionReason)> = report
            .recommendations
            .iter()
            .map(|r| (r.region.as_str(), r.reason))
            .collect();
        assert_eq!(
            regions,
            [
                ("ap-south", ProvisionReason::NoAcceptingStamp),
                (
                    "eu-west",
                    ProvisionReason::AlertThresholdReached {
                        room: 2,
                        runway: Duration::from_secs_f64(2.0 / 5.0 * 86_400.0)
                    }
                ),
            ]
        );
        // eu-west: 2 tenants of room at 5 a day is 9.6 hours, less than the 2-day lead time:
        // the deadline is now.
        assert_eq!(report.recommendations[1].deadline, fleet.at);

        // Zero growth in a region silences it; a provisioning stamp counts as room.
        let quiet = policy
            .clone()
            .region_growth(Region::new("ap-south")?, TenantsPerDay(0.0));
        let spec = StampSpec::new(StampId(6), "s6", Region::new("eu-west")?, db(5_000.0)?)?;
        registry.put_stamp(spec).await?;
        let report = provisioning_signals(&registry.fleet().await?, &quiet)?;
        assert!(report.recommendations.is_empty(), "{:?}", report.recommendations);
        Ok(())
    }

    #[tokio::test]
    async fn bad_policy_input_names_the_argument() -> TestResult {
        let registry = registry();
        stamp(
            &registry,
            1,
            "us-east",
            Capacity::new([(Resource::Tenants, 10.0)], 0.0)?,
        )
        .await?;
        let fleet = registry.fleet().await?;
        let arg = |p: SignalPolicy| provisioning_signals(&fleet, &p).map(|_| ()).map_err(|e| e.argument());
        assert_eq!(
            arg(SignalPolicy::new(0.0, TenantsPerDay(1.0), HOUR)),
            Err("trigger_utilization")
        );
        assert_eq!(
            arg(SignalPolicy::new(f64::NAN, TenantsPerDay(1.0), HOUR)),
            Err("trigger_utilization")
        );
        assert_eq!(
            arg(SignalPolicy::new(0.75, TenantsPerDay(-1.0), HOUR)),
            Err("default_growth")
        );
        assert_eq!(
            arg(SignalPolicy::new(0.75, TenantsPerDay(1.0), HOUR)
                .region_growth(Region::new("eu")?, TenantsPerDay(f64::INFINITY))),
            Err("region_growth")
        );
        // An empty fleet is fine.
        let empty = stamps::Fleet::default();
        let report = provisioning_signals(&empty, &SignalPolicy::new(0.75, TenantsPerDay(1.0), HOUR))?;
        assert!(report.stamps.is_empty() && report.recommendations.is_empty());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// For any single stamp, the signal appears exactly when the tenant count reaches
        /// `provisioning_thresholds`' alert threshold.
        #[test]
        fn signals_agree_with_the_alert_threshold(
            limit in 1..250u32,
            headroom_pct in 0..60u32,
            trigger in 0.05..=1.0f64,
            growth in 0.1..50.0f64,
            lead_minutes in 0..(5 * 24 * 60u64),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            runtime.block_on(async {
                let registry = registry();
                let capacity = Capacity::new([(Resource::Tenants, f64::from(limit))], f64::from(headroom_pct) / 100.0)
                    .expect("valid");
                stamp(&registry, 1, "us-east", capacity.clone()).await.expect("stamp");
                let usable = capacity.soft_limit(&Resource::Tenants).map_or(0, |a| a.as_milli() / 1000);
                let lead = Duration::from_secs(lead_minutes * 60);
                let policy = SignalPolicy::new(trigger, TenantsPerDay(growth), lead);
                let t = provisioning_thresholds(usable, trigger, TenantsPerDay(growth), lead).expect("valid");
                for n in 0..=usable {
                    let report = provisioning_signals(&registry.fleet().await.expect("fleet"), &policy).expect("valid");
                    prop_assert_eq!(!report.recommendations.is_empty(), n >= t.alert, "n = {}, {:?}", n, t);
                    if n < usable {
                        fill(&registry, 1, n, n + 1, &Demand::default()).await.expect("fill");
                    }
                }
                Ok(())
            })?;
        }

        #[test]
        fn provisioning_signals_never_panic(trigger in any_f64(), growth in any_f64(), regional in any_f64(), lead in any_duration()) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let fleet = runtime.block_on(async {
                let registry = registry();
                stamp(&registry, 1, "us-east", Capacity::new([(Resource::Tenants, 5.0), (Resource::Memory, 1.0)], 0.5).expect("valid"))
                    .await.expect("stamp");
                stamp(&registry, 2, "eu", Capacity::new([(Resource::Tenants, 0.001)], 0.999).expect("valid"))
                    .await.expect("stamp");
                fill(&registry, 1, 0, 3, &Demand::of([(Resource::Memory, 0.3)]).expect("valid")).await.expect("fill");
                registry.fleet().await.expect("fleet")
            });
            let policy = SignalPolicy::new(trigger, TenantsPerDay(growth), lead)
                .region_growth(Region::new("eu").expect("valid"), TenantsPerDay(regional));
            let _ = provisioning_signals(&fleet, &policy);
        }
    }
}
