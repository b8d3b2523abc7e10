//! With the `tracing` feature: every call through `Observed` runs in a `stamps.registry` span
//! (method, stamp, tenant, outcome) that never carries a decision's reason; router misses and
//! feed reads, and placement decisions, have their spans; a placement that finds no stamp logs
//! its explanation.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stamps::placement::policies;
use stamps::registry::{place_and_assign, Observed};
use stamps::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// A span or event: its name and every field, as text.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    fields: BTreeMap<String, String>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Mutex<BTreeMap<u64, Seen>>,
    events: Mutex<Vec<Seen>>,
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = Seen {
            name: span.metadata().name().to_string(),
            ..Seen::default()
        };
        span.record(&mut Fields(&mut seen.fields));
        self.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = Seen::default();
        event.record(&mut Fields(&mut seen.fields));
        seen.name = seen.fields.get("message").cloned().unwrap_or_default();
        self.events.lock().unwrap().push(seen);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn registry_router_and_placement_calls_are_traced() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::from(recorder.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let registry = Arc::new(Observed::new(InMemoryRegistry::new()));
            let cap = Capacity::new([(Resource::Tenants, 1.0)], 0.0).unwrap();
            let spec = StampSpec::new(StampId(1), "s1", Region::new("eu").unwrap(), cap).unwrap();
            registry.put_active_stamp(spec).await.unwrap();
            let policy = policies::least_loaded();
            let acme = TenantSpec::new(TenantId::new("acme").unwrap());
            place_and_assign(&*registry, &policy, &acme).await.unwrap();
            let globex = TenantSpec::new(TenantId::new("globex").unwrap());
            assert!(place_and_assign(&*registry, &policy, &globex).await.is_err());
            let decision = Decision::new("erin", "secret-ticket-text").unwrap();
            registry.set_pin(acme.id(), Some(StampId(1)), &decision).await.unwrap();
            assert!(registry.stamp(StampId(7)).await.unwrap().is_none());
            let router = Router::new(registry.clone());
            router.sync().await.unwrap();
            router.resolve("acme").await.unwrap();
        })
    });
    let spans: Vec<Seen> = recorder.spans.lock().unwrap().values().cloned().collect();
    let registry_spans: Vec<&Seen> = spans.iter().filter(|s| s.name == "stamps.registry").collect();
    let assign = registry_spans
        .iter()
        .find(|s| s.fields.get("method").map(String::as_str) == Some("assign"))
        .expect("an assign span");
    assert_eq!(assign.fields.get("stamp").map(String::as_str), Some("1"));
    assert_eq!(assign.fields.get("tenant").map(String::as_str), Some("acme"));
    assert_eq!(assign.fields.get("outcome").map(String::as_str), Some("ok"));
    for method in ["put_stamp", "fleet", "set_pin", "stamp", "changes_since", "assignment"] {
        assert!(
            registry_spans
                .iter()
                .any(|s| s.fields.get("method").map(String::as_str) == Some(method)),
            "no span for {method}"
        );
    }
    for s in &spans {
        for v in s.fields.values() {
            assert!(
                !v.contains("secret-ticket-text"),
                "a decision's reason leaked into {s:?}"
            );
        }
    }
    let placements: Vec<&Seen> = spans.iter().filter(|s| s.name == "stamps.placement").collect();
    let outcomes: Vec<&str> = placements
        .iter()
        .filter_map(|s| s.fields.get("outcome").map(String::as_str))
        .collect();
    assert_eq!(outcomes, ["placed", "no_fit"]);
    assert!(spans.iter().any(|s| s.name == "stamps.router.sync"));
    assert!(spans.iter().any(|s| s.name == "stamps.router.resolve"));
    let events = recorder.events.lock().unwrap();
    let no_fit = events
        .iter()
        .find(|e| e.name.contains("no stamp fits"))
        .expect("the no-fit explanation");
    assert!(
        no_fit
            .fields
            .get("explanation")
            .is_some_and(|x| x.contains("no stamp fits")),
        "{no_fit:?}"
    );
}
