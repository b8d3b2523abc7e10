//! The route hit path does not validate tenant text (only a valid id can equal a cached
//! one); these tests hold it to that: with every cached id, text that is not exactly that id
//! never routes, and invalid text gets the same typed error as `TenantId::validate`.

use proptest::prelude::*;
use stamps::router::{RouteError, Router};
use stamps::*;

/// Cached ids of every inline length (1 to 24 bytes) and a few longer ones.
fn cached_ids() -> Vec<String> {
    let mut ids: Vec<String> = (1..=26).map(|n| "a1-b2.c3_d4".repeat(3)[..n].to_string()).collect();
    ids.extend(
        [
            "acme",
            "z",
            "9",
            "tenant-000000042",
            "x".repeat(24).as_str(),
            "y".repeat(128).as_str(),
        ]
        .map(String::from),
    );
    ids.retain(|id| TenantId::validate(id).is_ok());
    ids.sort();
    ids.dedup();
    ids
}

fn router(ids: &[String]) -> Router<InMemoryRegistry> {
    let router = Router::builder(InMemoryRegistry::new())
        .config(stamps::RouterConfig::default().max_entries(1_000))
        .build()
        .expect("valid configuration");
    let routes = ids.iter().enumerate().map(|(i, id)| {
        (
            id.as_str(),
            StampId(i as u32 % 7),
            Epoch(i as u64 + 1),
            AssignmentMode::Serving,
        )
    });
    router.preload(routes).expect("valid ids");
    router
}

/// One router for all proptest cases.
fn shared() -> &'static (Vec<String>, Router<InMemoryRegistry>) {
    static SHARED: std::sync::OnceLock<(Vec<String>, Router<InMemoryRegistry>)> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let ids = cached_ids();
        let router = router(&ids);
        (ids, router)
    })
}

/// What `route` must answer for text that is not a cached id.
fn check_not_routed(router: &Router<InMemoryRegistry>, ids: &[String], text: &str) -> Result<(), String> {
    let got = router.route(text);
    if ids.iter().any(|id| id == text) {
        return match got {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{text:?} is cached but got {e:?}")),
        };
    }
    match (got, TenantId::validate(text)) {
        (Ok(r), _) => Err(format!("{text:?} is not a cached id but routed to {r:?}")),
        (Err(RouteError::InvalidTenant(e)), Err(want)) if e == want => Ok(()),
        (Err(RouteError::Miss), Ok(())) => Ok(()),
        (got, want) => Err(format!("{text:?}: got {got:?}, validate says {want:?}")),
    }
}

#[test]
fn every_cached_id_routes_to_its_own_entry() {
    let ids = cached_ids();
    let router = router(&ids);
    for (i, id) in ids.iter().enumerate() {
        let r = router.route(id).expect("cached");
        assert_eq!((r.stamp, r.epoch), (StampId(i as u32 % 7), Epoch(i as u64 + 1)), "{id}");
    }
}

/// Trailing, leading and inner NUL bytes, every other byte value in every position, case
/// changes, truncations and extensions of every cached id.
#[test]
fn near_misses_of_cached_ids_never_route() {
    let ids = cached_ids();
    let router = router(&ids);
    let mut checked = 0usize;
    for id in &ids {
        let mut variants: Vec<String> = Vec::new();
        for nuls in 1..=3 {
            variants.push(format!("{id}{}", "\0".repeat(nuls)));
            variants.push(format!("{}{id}", "\0".repeat(nuls)));
        }
        variants.push(id.to_uppercase());
        variants.push(format!("{id} "));
        variants.push(format!(" {id}"));
        variants.push(format!("{id}é"));
        for cut in 0..id.len() {
            variants.push(id[..cut].to_string());
            variants.push(id[cut..].to_string());
        }
        for pos in 0..id.len() {
            for b in 0u8..128 {
                let mut bytes = id.as_bytes().to_vec();
                bytes[pos] = b;
                variants.push(String::from_utf8(bytes).unwrap_or_default());
                let mut inserted = id.as_bytes().to_vec();
                inserted.insert(pos, b);
                variants.push(String::from_utf8(inserted).unwrap_or_default());
            }
        }
        for text in variants {
            if let Err(e) = check_not_routed(&router, &ids, &text) {
                panic!("{e}");
            }
            checked += 1;
        }
    }
    assert!(checked > 50_000, "{checked}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_000))]

    /// Arbitrary text (any Unicode, any length up to 40 chars, biased towards the id alphabet
    /// and NUL) routes only if it is a cached id, and otherwise fails like `validate`.
    #[test]
    fn arbitrary_text_routes_only_when_it_is_a_cached_id(
        text in prop_oneof![
            "[a-z0-9._\\-\\x00]{0,30}",
            "[a-z0-9]{1,24}\\x00{0,4}",
            any::<String>(),
        ],
    ) {
        let (ids, router) = shared();
        prop_assert_eq!(check_not_routed(router, ids, &text), Ok(()));
    }
}
