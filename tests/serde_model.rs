//! Deserializing the model checks what its constructors check (invariant 8: bad input is an
//! error): a host that reads stamp or tenant specs from an admin API or a config file must not
//! get a capacity, headroom or demand that the constructors would have refused.

#![cfg(feature = "serde")]

use stamps::*;

/// A serialized tenant spec whose demand is `demand` (JSON).
fn spec_with_demand(demand: &str) -> String {
    let mut v = serde_json::to_value(TenantSpec::new(TenantId::new("acme").unwrap())).unwrap();
    v["demand"] = serde_json::from_str(demand).unwrap();
    v.to_string()
}

#[test]
fn the_model_round_trips() {
    let cap = Capacity::new([(Resource::Connections, 5000.0), (Resource::Tenants, 200.0)], 0.25).unwrap();
    let json = serde_json::to_string(&cap).unwrap();
    assert_eq!(serde_json::from_str::<Capacity>(&json).unwrap(), cap);

    let t =
        TenantSpec::new(TenantId::new("acme").unwrap()).demand(Demand::of([(Resource::Connections, 25.0)]).unwrap());
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<TenantSpec>(&json).unwrap(), t);
}

#[test]
fn a_headroom_of_one_or_more_is_refused() {
    assert_eq!(serde_json::from_str::<Headroom>("250000").unwrap().as_ppm(), 250_000);
    for bad in ["1000000", "4294967295"] {
        assert!(serde_json::from_str::<Headroom>(bad).is_err(), "{bad}");
    }
    let bad = r#"{"limits":[["tenants",10000]],"headroom":4294967295}"#;
    assert!(serde_json::from_str::<Capacity>(bad).is_err());
}

#[test]
fn a_zero_or_repeated_limit_is_refused_and_order_does_not_matter() {
    let zero = r#"{"limits":[["tenants",0]],"headroom":0}"#;
    assert!(serde_json::from_str::<Capacity>(zero).is_err());
    let twice = r#"{"limits":[["tenants",1000],["tenants",5000]],"headroom":0}"#;
    assert!(serde_json::from_str::<Capacity>(twice).is_err());

    let unsorted = r#"{"limits":[["tenants",2000],["connections",5000000]],"headroom":0}"#;
    let cap = serde_json::from_str::<Capacity>(unsorted).unwrap();
    assert_eq!(cap.limit(&Resource::Tenants), Some(Amount::units(2)));
    assert_eq!(cap.limit(&Resource::Connections), Some(Amount::units(5000)));
    assert_eq!(
        cap,
        Capacity::new([(Resource::Tenants, 2.0), (Resource::Connections, 5000.0)], 0.0).unwrap()
    );
}

#[test]
fn a_demand_naming_the_tenants_resource_is_refused() {
    assert!(serde_json::from_str::<Demand>(r#"[["tenants",5000]]"#).is_err());
    assert!(serde_json::from_str::<TenantSpec>(&spec_with_demand(r#"[["tenants",5000]]"#)).is_err());
    let ok = serde_json::from_str::<TenantSpec>(&spec_with_demand(r#"[["connections",25000]]"#)).unwrap();
    assert_eq!(ok.demand.get(&Resource::Connections), Amount::units(25));
}

/// The overbooking a deserialized demand could cause before: admission counts one tenant slot
/// per tenant, so a demand naming more tenant slots was charged but never checked.
#[tokio::test]
async fn a_deserialized_tenant_cannot_overbook_a_stamp() {
    let registry = InMemoryRegistry::new();
    let cap = Capacity::new([(Resource::Tenants, 2.0)], 0.0).unwrap();
    registry
        .put_active_stamp(StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap())
        .await
        .unwrap();
    if let Ok(t) = serde_json::from_str::<TenantSpec>(&spec_with_demand(r#"[["tenants",5000]]"#)) {
        registry.assign(&t, StampId(1)).await.unwrap();
    }
    let fleet = registry.fleet().await.unwrap();
    let load = fleet.stamps.first().unwrap();
    assert!(
        load.usage.get(&Resource::Tenants) <= Amount::units(2),
        "{:?}",
        load.usage
    );
}
