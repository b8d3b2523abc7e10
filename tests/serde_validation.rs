//! Generated JSON documents against the model's constructors: for every model type with
//! `serde`, whatever the constructors (and `validate`) refuse, deserialization refuses; what
//! deserialization accepts is exactly what the constructors build, round-trips, and passes
//! `validate`.
//!
//! Documents are biased to edge values: empty text, NUL, newline, `..`, reserved names,
//! `u64::MAX`, negative and fractional numbers, values just over the amount bound, duplicated
//! resources, mismatched ids. Each type runs `STAMPS_SERDE_CASES` cases (default 100,000).

#![cfg(feature = "serde")]

use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use stamps::*;

fn cases() -> u32 {
    std::env::var("STAMPS_SERDE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

// ---------------------------------------------------------------- generators

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["acme", "s1", "eu", "us", "eu-west", "gold", "t-001", "a.b_c"]).prop_map(String::from),
        3 => prop::sample::select(vec![
            "", "\0", "\n", "..", "../../x", "a\0b", "v\n1", "A", "-a", ".a", " ", "é", "rps", "tenants",
            "connections", "storage", "memory", "shared", "dedicated", "requests_per_second",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec![64usize, 65, 128, 129, 2048, 2049]).prop_map(|n| "a".repeat(n)),
        1 => "[a-z0-9.\\-\\n\\x00]{0,6}",
    ]
}

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..5_000).prop_map(Value::from),
        2 => prop::sample::select(vec![
            0u64, 1, 999, 1000, 999_999, 1_000_000, u64::from(u32::MAX), u64::from(u32::MAX) + 1,
            1_000_000_000_000_000, 1_000_000_000_000_001, 9_007_199_254_740_993, i64::MAX as u64,
            u64::MAX,
        ])
        .prop_map(Value::from),
        1 => prop::sample::select(vec![-1i64, i64::MIN]).prop_map(Value::from),
        1 => prop::sample::select(vec![json!(0.5), json!(-0.0), json!(1e300), json!("NaN"), Value::Null]),
    ]
}

fn small_id() -> impl Strategy<Value = Value> {
    prop_oneof![4 => (1u64..4).prop_map(Value::from), 1 => int()]
}

fn opt<S: Strategy<Value = Value>>(s: S) -> impl Strategy<Value = Value> {
    prop_oneof![1 => Just(Value::Null), 2 => s]
}

fn resource() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["tenants", "connections", "requests_per_second", "storage", "memory"])
            .prop_map(Value::from),
        2 => text().prop_map(|t| json!({ "custom": t })),
        1 => text().prop_map(Value::from),
    ]
}

fn amounts() -> impl Strategy<Value = Value> {
    prop::collection::vec((resource(), int()).prop_map(|(r, a)| json!([r, a])), 0..4).prop_map(Value::from)
}

fn capacity() -> impl Strategy<Value = Value> {
    let own = prop::collection::vec((resource(), int()).prop_map(|(r, h)| json!([r, h])), 0..3);
    (amounts(), int(), proptest::option::of(own)).prop_map(|(limits, headroom, own)| match own {
        Some(own) => json!({ "limits": limits, "headroom": headroom, "headroom_by_resource": own }),
        None => json!({ "limits": limits, "headroom": headroom }),
    })
}

fn tier() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["shared", "dedicated"]).prop_map(Value::from),
        2 => text().prop_map(|t| json!({ "custom": t })),
        1 => text().prop_map(Value::from),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), text(), 0..3).prop_map(|m| json!(m))
}

fn stamp_spec() -> impl Strategy<Value = Value> {
    (
        small_id(),
        text(),
        text(),
        opt(text().prop_map(Value::from)),
        tier(),
        labels(),
    )
        .prop_flat_map(|(id, name, region, residency, tier, labels)| {
            (
                opt(text().prop_map(Value::from)),
                opt(text().prop_map(Value::from)),
                capacity(),
                proptest::option::of(opt(int())),
            )
                .prop_map(move |(version, endpoint, capacity, expiry)| {
                    let mut doc = json!({
                        "id": id, "name": name, "region": region, "residency": residency, "tier": tier,
                        "labels": labels, "version": version, "endpoint": endpoint, "capacity": capacity,
                    });
                    // Absent (older documents), null, or a time.
                    if let (Some(e), Some(o)) = (expiry, doc.as_object_mut()) {
                        o.insert("expires_at".into(), e);
                    }
                    doc
                })
        })
}

fn stamp() -> impl Strategy<Value = Value> {
    (
        stamp_spec(),
        prop::sample::select(vec!["provisioning", "active", "draining", "decommissioned", "gone"]),
        int(),
        int(),
    )
        .prop_map(|(spec, state, c, u)| json!({ "spec": spec, "state": state, "created_at": c, "updated_at": u }))
}

fn tenant_spec() -> impl Strategy<Value = Value> {
    (
        text(),
        amounts(),
        opt(text().prop_map(Value::from)),
        opt(text().prop_map(Value::from)),
        tier(),
        opt(small_id()),
        labels(),
        proptest::option::of(prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!("yes"))]),
    )
        .prop_map(|(id, demand, region, residency, tier, pin, labels, ephemeral)| {
            let mut doc = json!({
                "id": id, "demand": demand, "region": region, "residency": residency, "tier": tier,
                "pin": pin, "labels": labels,
            });
            if let (Some(e), Some(o)) = (ephemeral, doc.as_object_mut()) {
                o.insert("ephemeral".into(), e);
            }
            doc
        })
}

fn mode() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => Just(json!("serving")),
        2 => small_id().prop_map(|s| json!({ "dual_write": { "shadow": s } })),
        1 => (opt(small_id()), int()).prop_map(|(s, u)| json!({ "frozen": { "shadow": s, "until": u } })),
        1 => text().prop_map(Value::from),
    ]
}

fn assignment() -> impl Strategy<Value = Value> {
    (tenant_spec(), small_id(), int(), mode(), int(), int()).prop_map(|(spec, stamp, epoch, mode, a, u)| {
        json!({ "spec": spec, "stamp": stamp, "epoch": epoch, "mode": mode, "assigned_at": a, "updated_at": u })
    })
}

/// An assignment change whose tenant is usually its assignment's (sometimes not, or none).
fn change() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![
        3 => (assignment(), prop::bool::weighted(0.7), text()).prop_map(|(a, same, other)| {
            let tenant = if same { a["spec"]["id"].clone() } else { Value::from(other) };
            json!({ "assignment": { "tenant": tenant, "assignment": a } })
        }),
        1 => text().prop_map(|t| json!({ "assignment": { "tenant": t, "assignment": null } })),
        2 => stamp().prop_map(|s| json!({ "stamp": s })),
    ];
    (small_id(), int(), kind).prop_map(|(v, at, kind)| json!({ "version": v, "at": at, "kind": kind }))
}

fn change_batch() -> impl Strategy<Value = Value> {
    (prop::collection::vec(change(), 0..2), small_id())
        .prop_map(|(changes, head)| json!({ "changes": changes, "head": head }))
}

fn assignment_change() -> impl Strategy<Value = Value> {
    let action = prop_oneof![
        2 => (small_id(), mode()).prop_map(|(to, mode)| json!({ "move": { "to": to, "mode": mode } })),
        1 => mode().prop_map(|m| json!({ "set_mode": m })),
        1 => amounts().prop_map(|d| json!({ "resize": d })),
    ];
    (action, opt(text().prop_map(Value::from))).prop_map(|(action, actor)| json!({ "action": action, "actor": actor }))
}

fn history_entry() -> impl Strategy<Value = Value> {
    let action = prop::sample::select(vec![
        "assigned",
        "moved",
        "mode_changed",
        "resized",
        "unassigned",
        "pinned",
        "unpinned",
        "repaired",
        "x",
    ]);
    (
        small_id(),
        int(),
        text(),
        action,
        opt(small_id()),
        opt(small_id()),
        int(),
        mode(),
        opt(text().prop_map(Value::from)),
        opt(text().prop_map(Value::from)),
    )
        .prop_map(|(version, at, tenant, action, from, to, epoch, mode, actor, reason)| {
            json!({
                "version": version, "at": at, "tenant": tenant, "action": action, "from": from, "to": to,
                "epoch": epoch, "mode": mode, "actor": actor, "reason": reason,
            })
        })
}

fn decision() -> impl Strategy<Value = Value> {
    (text(), text()).prop_map(|(actor, reason)| json!({ "actor": actor, "reason": reason }))
}

fn redirect() -> impl Strategy<Value = Value> {
    let when = prop::sample::select(vec!["always", "while_unhealthy", "sometimes"]);
    (small_id(), when).prop_map(|(to, when)| json!({ "to": to, "when": when }))
}

fn pin() -> impl Strategy<Value = Value> {
    (text(), opt(small_id()), decision(), int(), small_id()).prop_map(|(tenant, stamp, decision, at, version)| {
        json!({ "tenant": tenant, "stamp": stamp, "decision": decision, "at": at, "version": version })
    })
}

fn route_override() -> impl Strategy<Value = Value> {
    (small_id(), opt(redirect()), decision(), int(), small_id()).prop_map(|(stamp, redirect, decision, at, version)| {
        json!({ "stamp": stamp, "redirect": redirect, "decision": decision, "at": at, "version": version })
    })
}

fn migration_record() -> impl Strategy<Value = Value> {
    let state = prop::sample::select(vec!["planned", "dual_write", "cut_over", "completed", "failed", "nope"]);
    (
        small_id(),
        text(),
        small_id(),
        small_id(),
        state,
        int(),
        labels(),
        int(),
        int(),
    )
        .prop_map(|(id, tenant, source, destination, state, revision, data, c, u)| {
            json!({
                "id": id, "tenant": tenant, "source": source, "destination": destination, "state": state,
                "revision": revision, "data": data, "created_at": c, "updated_at": u,
            })
        })
}

fn text_value() -> impl Strategy<Value = Value> {
    text().prop_map(Value::from)
}

// ---------------------------------------------------------------- constructors (the oracle)
//
// Each function rebuilds a value from a document through the public constructors and
// `validate` only (never through serde); `None` when any of them refuses.

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn u32_of(v: &Value) -> Option<u32> {
    u32::try_from(v.as_u64()?).ok()
}

fn str_of(v: &Value) -> Option<&str> {
    v.as_str()
}

fn opt_of<'a, T>(v: &'a Value, f: impl Fn(&'a Value) -> Option<T>) -> Option<Option<T>> {
    if v.is_null() {
        Some(None)
    } else {
        f(v).map(Some)
    }
}

fn c_resource(v: &Value) -> Option<Resource> {
    if let Some(s) = v.as_str() {
        return Some(match s {
            "tenants" => Resource::Tenants,
            "connections" => Resource::Connections,
            "requests_per_second" => Resource::RequestsPerSecond,
            "storage" => Resource::Storage,
            "memory" => Resource::Memory,
            _ => return None,
        });
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    match Resource::parse(obj.get("custom")?.as_str()?).ok()? {
        r @ Resource::Custom(_) => Some(r),
        _ => None,
    }
}

/// `(resource, units)` pairs; each milli value must be exactly what `Amount::from_f64` makes.
fn c_pairs(v: &Value) -> Option<Vec<(Resource, f64)>> {
    v.as_array()?
        .iter()
        .map(|p| {
            let p = p.as_array()?;
            if p.len() != 2 {
                return None;
            }
            let milli = p.get(1)?.as_u64()?;
            let a = Amount::from_f64(milli as f64 / 1000.0).ok()?;
            (a.as_milli() == milli).then_some(())?;
            Some((c_resource(p.first()?)?, milli as f64 / 1000.0))
        })
        .collect()
}

fn c_demand(v: &Value) -> Option<Demand> {
    Demand::of(c_pairs(v)?).ok()
}

fn c_headroom(v: &Value) -> Option<Headroom> {
    let ppm = u32_of(v)?;
    let h = Headroom::from_fraction(f64::from(ppm) / 1e6).ok()?;
    (h.as_ppm() == ppm).then_some(h)
}

fn c_capacity(v: &Value) -> Option<Capacity> {
    let obj = v.as_object()?;
    let h = c_headroom(obj.get("headroom")?)?;
    let mut c = Capacity::new(c_pairs(obj.get("limits")?)?, h.as_fraction()).ok()?;
    if let Some(own) = obj.get("headroom_by_resource") {
        for pair in own.as_array()? {
            let pair = pair.as_array()?;
            if pair.len() != 2 {
                return None;
            }
            let r = c_resource(pair.first()?)?;
            let h = c_headroom(pair.get(1)?)?;
            c = c.headroom_on(r, h.as_fraction()).ok()?;
        }
    }
    Some(c)
}

fn c_tier(v: &Value) -> Option<Tier> {
    if let Some(s) = v.as_str() {
        return match s {
            "shared" => Some(Tier::Shared),
            "dedicated" => Some(Tier::Dedicated),
            _ => None,
        };
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    match Tier::parse(obj.get("custom")?.as_str()?).ok()? {
        t @ Tier::Custom(_) => Some(t),
        _ => None,
    }
}

fn c_labels(v: &Value) -> Option<Vec<(String, String)>> {
    v.as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

fn c_stamp_spec(v: &Value) -> Option<StampSpec> {
    let capacity = c_capacity(&v["capacity"])?;
    let mut spec = StampSpec::new(
        StampId(u32_of(&v["id"])?),
        str_of(&v["name"])?,
        Region::new(str_of(&v["region"])?).ok()?,
        capacity,
    )
    .ok()?
    .tier(c_tier(&v["tier"])?);
    if let Some(r) = opt_of(&v["residency"], |r| Residency::new(r.as_str()?).ok())? {
        spec = spec.residency(r);
    }
    for (k, l) in c_labels(&v["labels"])? {
        spec = spec.label(k, l);
    }
    if let Some(x) = opt_of(&v["version"], str_of)? {
        spec = spec.version(x);
    }
    if let Some(x) = opt_of(&v["endpoint"], str_of)? {
        spec = spec.endpoint(x);
    }
    if let Some(at) = opt_of(&v["expires_at"], c_time)? {
        spec = spec.expires_at(at);
    }
    spec.validate().ok()?;
    Some(spec)
}

fn c_time(v: &Value) -> Option<Timestamp> {
    u64_of(v).map(Timestamp::from_millis)
}

fn c_stamp(v: &Value) -> Option<Stamp> {
    let state = StampState::parse(str_of(&v["state"])?)?;
    let s = Stamp::new(
        c_stamp_spec(&v["spec"])?,
        state,
        c_time(&v["created_at"])?,
        c_time(&v["updated_at"])?,
    );
    s.validate().ok()?;
    Some(s)
}

fn c_tenant_spec(v: &Value) -> Option<TenantSpec> {
    let mut t = TenantSpec::new(TenantId::new(str_of(&v["id"])?).ok()?)
        .demand(c_demand(&v["demand"])?)
        .tier(c_tier(&v["tier"])?);
    if let Some(r) = opt_of(&v["region"], |r| Region::new(r.as_str()?).ok())? {
        t = t.region(r);
    }
    if let Some(r) = opt_of(&v["residency"], |r| Residency::new(r.as_str()?).ok())? {
        t = t.residency(r);
    }
    if let Some(p) = opt_of(&v["pin"], u32_of)? {
        t = t.pin(StampId(p));
    }
    for (k, l) in c_labels(&v["labels"])? {
        t = t.label(k, l);
    }
    match &v["ephemeral"] {
        Value::Null => {}
        e => {
            if e.as_bool()? {
                t = t.ephemeral();
            }
        }
    }
    t.validate().ok()?;
    Some(t)
}

fn c_mode(v: &Value) -> Option<AssignmentMode> {
    if v.as_str() == Some("serving") {
        return Some(AssignmentMode::Serving);
    }
    let obj = v.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    if let Some(d) = obj.get("dual_write") {
        return Some(AssignmentMode::DualWrite {
            shadow: StampId(u32_of(&d["shadow"])?),
        });
    }
    let f = obj.get("frozen")?;
    Some(AssignmentMode::Frozen {
        shadow: opt_of(&f["shadow"], u32_of)?.map(StampId),
        until: c_time(&f["until"])?,
    })
}

fn c_assignment(v: &Value) -> Option<Assignment> {
    let a = Assignment::new(
        c_tenant_spec(&v["spec"])?,
        StampId(u32_of(&v["stamp"])?),
        Epoch(u64_of(&v["epoch"])?),
        c_mode(&v["mode"])?,
        c_time(&v["assigned_at"])?,
        c_time(&v["updated_at"])?,
    );
    a.validate().ok()?;
    Some(a)
}

fn c_change(v: &Value) -> Option<Change> {
    let kind = &v["kind"];
    let kind = if let Some(a) = kind.get("assignment") {
        ChangeKind::Assignment {
            tenant: TenantId::new(str_of(&a["tenant"])?).ok()?,
            assignment: opt_of(&a["assignment"], c_assignment)?.map(std::sync::Arc::new),
        }
    } else {
        ChangeKind::Stamp(Box::new(c_stamp(kind.get("stamp")?)?))
    };
    let c = Change::new(Version(u64_of(&v["version"])?), c_time(&v["at"])?, kind);
    c.validate().ok()?;
    Some(c)
}

fn c_change_batch(v: &Value) -> Option<ChangeBatch> {
    let changes = v["changes"]
        .as_array()?
        .iter()
        .map(c_change)
        .collect::<Option<Vec<_>>>()?;
    let b = ChangeBatch::new(changes, Version(u64_of(&v["head"])?));
    b.validate().ok()?;
    Some(b)
}

fn c_assignment_change(v: &Value) -> Option<AssignmentChange> {
    let a = &v["action"];
    let mut c = if let Some(m) = a.get("move") {
        AssignmentChange::move_with_mode(StampId(u32_of(&m["to"])?), c_mode(&m["mode"])?)
    } else if let Some(m) = a.get("set_mode") {
        AssignmentChange::set_mode(c_mode(m)?)
    } else {
        AssignmentChange::resize(c_demand(a.get("resize")?)?)
    };
    if let Some(actor) = opt_of(&v["actor"], str_of)? {
        c = c.by(actor);
    }
    c.validate().ok()?;
    Some(c)
}

fn c_history_entry(v: &Value) -> Option<HistoryEntry> {
    let e = HistoryEntry::new(
        Version(u64_of(&v["version"])?),
        c_time(&v["at"])?,
        TenantId::new(str_of(&v["tenant"])?).ok()?,
        HistoryAction::parse(str_of(&v["action"])?)?,
        opt_of(&v["from"], u32_of)?.map(StampId),
        opt_of(&v["to"], u32_of)?.map(StampId),
        Epoch(u64_of(&v["epoch"])?),
        c_mode(&v["mode"])?,
        opt_of(&v["actor"], str_of)?.map(String::from),
    )
    .because(opt_of(&v["reason"], str_of)?.map(String::from));
    e.validate().ok()?;
    Some(e)
}

fn c_decision(v: &Value) -> Option<Decision> {
    Decision::new(str_of(&v["actor"])?, str_of(&v["reason"])?).ok()
}

fn c_redirect(v: &Value) -> Option<Redirect> {
    Some(Redirect::new(
        StampId(u32_of(&v["to"])?),
        RedirectWhen::parse(str_of(&v["when"])?)?,
    ))
}

fn c_pin(v: &Value) -> Option<Pin> {
    Some(Pin::new(
        TenantId::new(str_of(&v["tenant"])?).ok()?,
        opt_of(&v["stamp"], u32_of)?.map(StampId),
        c_decision(&v["decision"])?,
        c_time(&v["at"])?,
        Version(u64_of(&v["version"])?),
    ))
}

fn c_route_override(v: &Value) -> Option<RouteOverride> {
    let o = RouteOverride::new(
        StampId(u32_of(&v["stamp"])?),
        opt_of(&v["redirect"], c_redirect)?,
        c_decision(&v["decision"])?,
        c_time(&v["at"])?,
        Version(u64_of(&v["version"])?),
    );
    o.validate().ok()?;
    Some(o)
}

fn c_migration_record(v: &Value) -> Option<MigrationRecord> {
    let mut r = MigrationRecord::planned(
        TenantId::new(str_of(&v["tenant"])?).ok()?,
        StampId(u32_of(&v["source"])?),
        StampId(u32_of(&v["destination"])?),
    );
    r.id = MigrationId(u64_of(&v["id"])?);
    r.state = MigrationState::parse(str_of(&v["state"])?)?;
    r.revision = u64_of(&v["revision"])?;
    r.data = c_labels(&v["data"])?.into_iter().collect::<BTreeMap<_, _>>();
    r.created_at = c_time(&v["created_at"])?;
    r.updated_at = c_time(&v["updated_at"])?;
    r.validate().ok()?;
    Some(r)
}

// ---------------------------------------------------------------- the property

thread_local! {
    /// Documents accepted on this thread (each type runs on its own thread).
    static ACCEPTED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Serde accepts `doc` exactly when the constructors do, builds the same value, and what it
/// accepts round-trips.
fn agree<T>(doc: &Value, built: Option<T>) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let parsed = serde_json::from_value::<T>(doc.clone());
    match (parsed, built) {
        (Ok(p), Some(b)) => {
            ACCEPTED.with(|n| n.set(n.get() + 1));
            prop_assert_eq!(&p, &b, "serde and the constructors built different values from {}", doc);
            let again = serde_json::to_value(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = serde_json::from_value::<T>(again.clone());
            prop_assert!(
                back.is_ok(),
                "{} serialized as {} which does not deserialize: {:?}",
                doc,
                again,
                back
            );
            if let Ok(back) = back {
                prop_assert_eq!(back, p, "round trip changed the value of {}", doc);
            }
        }
        (Ok(p), None) => {
            prop_assert!(
                false,
                "serde accepted {} as {:?} although the constructors refuse it",
                doc,
                p
            )
        }
        (Err(e), Some(b)) => {
            prop_assert!(
                false,
                "serde refused {} ({}) although the constructors build {:?}",
                doc,
                e,
                b
            )
        }
        (Err(_), None) => {}
    }
    Ok(())
}

/// Runs `check` on `cases()` documents from `strategy()`, on a thread with a large stack (the
/// nested strategies run deep in unoptimized builds).
fn run<S: Strategy<Value = Value> + 'static>(strategy: fn() -> S, check: fn(&Value) -> Result<(), TestCaseError>) {
    let worker = std::thread::Builder::new().stack_size(256 << 20).spawn(move || {
        let config = ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        runner.run(&strategy(), |doc| check(&doc)).map_err(|e| e.to_string())?;
        // Both sides of the property are exercised: some documents are accepted.
        let accepted = ACCEPTED.with(|n| n.get());
        if std::env::var_os("STAMPS_SERDE_RATES").is_some() {
            eprintln!("accepted {accepted} of {} documents", cases());
        }
        if accepted < cases() / 200 {
            return Err(format!(
                "only {accepted} of {} generated documents were accepted",
                cases()
            ));
        }
        Ok(())
    });
    let outcome = worker.map_err(|e| e.to_string()).and_then(|h| {
        h.join()
            .unwrap_or_else(|_| Err("the generator thread panicked".to_string()))
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

macro_rules! agreement {
    ($name:ident, $ty:ty, $gen:expr, $oracle:expr) => {
        #[test]
        fn $name() {
            run($gen, |doc| agree::<$ty>(doc, $oracle(doc)));
        }
    };
}

agreement!(serde_agrees_for_amount, Amount, int, |v: &Value| {
    let m = v.as_u64()?;
    let a = Amount::from_f64(m as f64 / 1000.0).ok()?;
    (a.as_milli() == m).then_some(a)
});
agreement!(serde_agrees_for_resource, Resource, resource, c_resource);
agreement!(serde_agrees_for_region, Region, text_value, |v: &Value| Region::new(
    v.as_str()?
)
.ok());
agreement!(serde_agrees_for_residency, Residency, text_value, |v: &Value| {
    Residency::new(v.as_str()?).ok()
});
agreement!(serde_agrees_for_name, Name, text_value, |v: &Value| Name::new(
    v.as_str()?
)
.ok());
agreement!(serde_agrees_for_tenant_id, TenantId, text_value, |v: &Value| {
    TenantId::new(v.as_str()?).ok()
});
agreement!(serde_agrees_for_demand, Demand, amounts, c_demand);
agreement!(serde_agrees_for_headroom, Headroom, int, c_headroom);
agreement!(serde_agrees_for_capacity, Capacity, capacity, c_capacity);
agreement!(serde_agrees_for_tier, Tier, tier, c_tier);
agreement!(serde_agrees_for_stamp_spec, StampSpec, stamp_spec, c_stamp_spec);
agreement!(serde_agrees_for_stamp, Stamp, stamp, c_stamp);
agreement!(serde_agrees_for_tenant_spec, TenantSpec, tenant_spec, c_tenant_spec);
agreement!(serde_agrees_for_assignment_mode, AssignmentMode, mode, c_mode);
agreement!(serde_agrees_for_assignment, Assignment, assignment, c_assignment);
agreement!(serde_agrees_for_change, Change, change, c_change);
agreement!(serde_agrees_for_change_batch, ChangeBatch, change_batch, c_change_batch);
agreement!(
    serde_agrees_for_assignment_change,
    AssignmentChange,
    assignment_change,
    c_assignment_change
);
agreement!(
    serde_agrees_for_history_entry,
    HistoryEntry,
    history_entry,
    c_history_entry
);
agreement!(serde_agrees_for_decision, Decision, decision, c_decision);
agreement!(serde_agrees_for_pin, Pin, pin, c_pin);
agreement!(
    serde_agrees_for_route_override,
    RouteOverride,
    route_override,
    c_route_override
);
agreement!(
    serde_agrees_for_migration_record,
    MigrationRecord,
    migration_record,
    c_migration_record
);

/// The documents the issue reported as accepted although the constructors refuse them.
#[test]
fn the_reported_documents_are_refused() {
    assert!(serde_json::from_str::<Amount>("1000000000000001").is_err());
    assert!(serde_json::from_str::<Amount>("18446744073709551615").is_err());
    assert!(serde_json::from_str::<Demand>(r#"[["connections",18446744073709551615]]"#).is_err());
    assert!(serde_json::from_str::<Demand>(r#"[[{"custom":"tenants"},1000]]"#).is_err());
    let cap = r#"{"limits":[["connections",18446744073709551615]],"headroom":0}"#;
    assert!(serde_json::from_str::<Capacity>(cap).is_err());
    let spec = |name: &str, endpoint: &str, version: &str| {
        json!({
            "id": 1, "name": name, "region": "eu", "residency": null, "tier": "shared", "labels": {},
            "version": version, "endpoint": endpoint, "capacity": { "limits": [], "headroom": 0 },
        })
    };
    assert!(serde_json::from_value::<StampSpec>(spec("s1", "http://a", "v1")).is_ok());
    for bad in [
        spec("", "http://a", "v1"),
        spec("../../x", "http://a", "v1"),
        spec("s1", "\0", "v1"),
        spec("s1", "http://a", "\n"),
    ] {
        assert!(serde_json::from_value::<StampSpec>(bad.clone()).is_err(), "{bad}");
    }
    let a = Assignment::new(
        TenantSpec::new(TenantId::new("acme").unwrap()),
        StampId(1),
        Epoch(3),
        AssignmentMode::Serving,
        Timestamp::ZERO,
        Timestamp::ZERO,
    );
    let mut doc = serde_json::to_value(&a).unwrap();
    doc["mode"] = json!({ "dual_write": { "shadow": 1 } });
    assert!(serde_json::from_value::<Assignment>(doc).is_err());
    let change = Change::new(
        Version(3),
        Timestamp::ZERO,
        ChangeKind::Assignment {
            tenant: TenantId::new("other").unwrap(),
            assignment: Some(std::sync::Arc::new(a)),
        },
    );
    let doc = serde_json::to_value(&change).unwrap();
    assert!(serde_json::from_value::<Change>(doc).is_err());
}
