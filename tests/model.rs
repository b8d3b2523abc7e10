//! Validation of the domain model: every kind of bad input gets a typed error, never a panic.

use proptest::prelude::*;
use stamps::*;

#[test]
fn invalid_tenant_ids_get_typed_errors() {
    assert_eq!(TenantId::new(""), Err(TenantIdError::Empty));
    assert_eq!(
        TenantId::new(&"a".repeat(129)),
        Err(TenantIdError::TooLong { len: 129 })
    );
    assert!(TenantId::new(&"a".repeat(128)).is_ok());
    assert_eq!(
        TenantId::new("ac\u{7}me"),
        Err(TenantIdError::InvalidByte { index: 2, byte: 7 })
    );
    assert_eq!(
        TenantId::new("a\nb"),
        Err(TenantIdError::InvalidByte { index: 1, byte: b'\n' })
    );
    assert_eq!(
        TenantId::new("../x"),
        Err(TenantIdError::InvalidByte { index: 0, byte: b'.' })
    );
    assert_eq!(
        TenantId::new("a/b"),
        Err(TenantIdError::InvalidByte { index: 1, byte: b'/' })
    );
    assert_eq!(
        TenantId::new("-flag"),
        Err(TenantIdError::InvalidByte { index: 0, byte: b'-' })
    );
    assert_eq!(TenantId::new("Acme"), Err(TenantIdError::Uppercase { index: 0 }));
    assert_eq!(
        TenantId::new("acmé").map(|_| ()),
        Err(TenantIdError::InvalidByte { index: 3, byte: 0xc3 })
    );
    assert_eq!(TenantId::from_bytes(&[b'a', 0xff, 0xfe]), Err(TenantIdError::NotUtf8));
    assert_eq!(
        TenantId::from_bytes(b"acme").map(|t| t.to_string()),
        Ok("acme".to_string())
    );
    assert_eq!(
        TenantId::normalized("ACME.Corp").map(|t| t.to_string()),
        Ok("acme.corp".to_string())
    );
    // The error converts into the crate error.
    let e: Error = TenantId::new("").unwrap_err().into();
    assert!(matches!(e, Error::InvalidTenantId(TenantIdError::Empty)));
    assert!(e.to_string().contains("empty"));
}

#[test]
fn nonsense_capacities_and_demands_get_typed_errors() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 0.0, -0.0, 1e300] {
        let err = Capacity::new([(Resource::Connections, bad)], 0.25).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref i) if i.field == "capacity"),
            "{bad}: {err:?}"
        );
    }
    for bad in [f64::NAN, -0.001, 1.0, 1.5, -0.5, f64::INFINITY] {
        let err = Capacity::new([(Resource::Connections, 10.0)], bad).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(ref i) if i.field == "headroom"),
            "{bad}: {err:?}"
        );
    }
    let dup = Capacity::new([(Resource::Connections, 1.0), (Resource::Connections, 2.0)], 0.0);
    assert!(matches!(dup, Err(Error::InvalidInput(_))));
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        assert!(matches!(
            Demand::of([(Resource::RequestsPerSecond, bad)]),
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(
        Demand::of([(Resource::RequestsPerSecond, 0.0)]).is_ok(),
        "zero demand is fine"
    );
    assert!(matches!(
        Demand::of([(Resource::Tenants, 2.0)]),
        Err(Error::InvalidInput(_))
    ));
    assert!(Name::new("GPU").is_err());
    assert!(Region::new("").is_err());
    assert!(Residency::new(&"e".repeat(65)).is_err());
    assert!(StampSpec::new(StampId(1), "Bad Name", Region::new("us").unwrap(), cap()).is_err());
}

fn cap() -> Capacity {
    Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap()
}

#[test]
fn illegal_lifecycle_transitions_are_typed_errors() {
    use StampState::*;
    let legal = [
        (Provisioning, Active),
        (Provisioning, Decommissioned),
        (Active, Draining),
        (Draining, Active),
        (Draining, Decommissioned),
    ];
    for from in StampState::ALL {
        for to in StampState::ALL {
            let expect = from == to || legal.contains(&(from, to));
            assert_eq!(from.can_become(to), expect, "{from} -> {to}");
            match from.transition(to) {
                Ok(s) => assert!(expect && s == to),
                Err(Error::InvalidTransition { what, from: f, to: t }) => {
                    assert!(!expect);
                    assert_eq!((what, f, t), ("stamp state", from.as_str(), to.as_str()));
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn guide_capacity_example_soft_limit() {
    // Calculation 1 of "Deployment Stamps for Availability: Multi-Region Guide": 5,000
    // connections, 25% headroom → 3,750 usable, 150 tenants at 25 each.
    let c = Capacity::new([(Resource::Connections, 5000.0)], 0.25).unwrap();
    assert_eq!(c.soft_limit(&Resource::Connections), Some(Amount::units(3750)));
    assert_eq!(
        c.soft_limit(&Resource::Connections).unwrap().as_milli() / Amount::units(25).as_milli(),
        150
    );
}

#[test]
fn names_round_trip_through_text() {
    for r in [
        Resource::Tenants,
        Resource::Connections,
        Resource::RequestsPerSecond,
        Resource::Storage,
        Resource::Memory,
        Resource::Custom(Name::new("gpu").unwrap()),
    ] {
        assert_eq!(Resource::parse(r.name()).unwrap(), r);
    }
    for s in StampState::ALL {
        assert_eq!(StampState::parse(s.as_str()), Some(s));
    }
    for s in MigrationState::ALL {
        assert_eq!(MigrationState::parse(s.as_str()), Some(s));
    }
    for t in [Tier::Shared, Tier::Dedicated, Tier::Custom(Name::new("gold").unwrap())] {
        assert_eq!(Tier::parse(t.as_str()).unwrap(), t);
    }
}

fn rule_holds(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn tenant_id_accepts_exactly_the_documented_rule(s in ".{0,140}") {
        let r = TenantId::new(&s);
        prop_assert_eq!(r.is_ok(), rule_holds(&s));
        if let Ok(id) = r { prop_assert_eq!(id.as_str(), s.as_str()); }
    }

    #[test]
    fn tenant_id_from_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let r = TenantId::from_bytes(&b);
        if let Ok(id) = r { prop_assert!(rule_holds(id.as_str())); }
    }

    #[test]
    fn valid_tenant_ids_are_accepted(s in "[a-z0-9][a-z0-9._-]{0,127}") {
        prop_assert!(TenantId::new(&s).is_ok());
    }

    /// Ids are stored inline up to 22 bytes and shared above; equality, order, hashing and
    /// `&str` lookups agree with the text's on both sides of the boundary.
    #[test]
    fn tenant_ids_compare_and_hash_as_their_text(
        a in "[a-z0-9][a-z0-9._-]{0,30}",
        b in "[a-z0-9][a-z0-9._-]{0,30}",
    ) {
        use std::collections::{BTreeMap, HashMap};
        use std::hash::{BuildHasher, RandomState};
        let (x, y) = (TenantId::new(&a).unwrap(), TenantId::new(&b).unwrap());
        prop_assert_eq!(x.as_str(), a.as_str());
        let copy = x.clone();
        prop_assert_eq!(copy.as_str(), a.as_str());
        prop_assert_eq!(x == y, a == b);
        prop_assert_eq!(x.cmp(&y), a.as_bytes().cmp(b.as_bytes()));
        let h = RandomState::new();
        prop_assert_eq!(h.hash_one(&x), h.hash_one(a.as_str()));
        let f = foldhash::fast::RandomState::default();
        prop_assert_eq!(f.hash_one(&x), f.hash_one(a.as_str()));
        let map: HashMap<TenantId, u8> = [(x.clone(), 1)].into();
        prop_assert_eq!(map.get(a.as_str()), Some(&1));
        let tree: BTreeMap<TenantId, u8> = [(y.clone(), 2)].into();
        prop_assert_eq!(tree.get(b.as_str()), Some(&2));
        prop_assert_eq!(format!("{x}"), a.clone());
        prop_assert_eq!(format!("{x:?}"), format!("TenantId({a:?})"));
    }

    /// Ids sharing a long prefix reach the inline order's later words, and one id a prefix of
    /// the other around the 22-byte inline boundary: the order is still the text's.
    #[test]
    fn tenant_ids_with_a_common_prefix_order_as_their_text(
        stem in "[a-z0-9][a-z0-9._-]{0,25}",
        x in "[a-z0-9._-]{0,3}",
        y in "[a-z0-9._-]{0,3}",
    ) {
        let (a, b) = (format!("{stem}{x}"), format!("{stem}{y}"));
        let (ia, ib) = (TenantId::new(&a).unwrap(), TenantId::new(&b).unwrap());
        prop_assert_eq!(ia.cmp(&ib), a.as_bytes().cmp(b.as_bytes()));
        prop_assert_eq!(ia == ib, a == b);
        prop_assert_eq!(ib.cmp(&ia), b.as_bytes().cmp(a.as_bytes()));
    }

    #[test]
    fn amounts_and_capacities_never_panic(x in any::<f64>(), h in any::<f64>()) {
        let _ = Amount::from_f64(x);
        let _ = Headroom::from_fraction(h);
        if let Ok(c) = Capacity::new([(Resource::Storage, x)], h) {
            prop_assert!(x.is_finite() && x > 0.0 && (0.0..1.0).contains(&h));
            let soft = c.soft_limit(&Resource::Storage).unwrap();
            prop_assert!(soft <= c.limit(&Resource::Storage).unwrap());
        }
    }

    #[test]
    fn more_headroom_never_raises_the_soft_limit(limit in 1u32..10_000_000, a in 0.0f64..0.999, b in 0.0f64..0.999) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let l = Amount::units(limit);
        prop_assert!(Headroom::from_fraction(hi).unwrap().soft_limit(l) <= Headroom::from_fraction(lo).unwrap().soft_limit(l));
    }
}
