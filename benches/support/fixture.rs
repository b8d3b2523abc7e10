//! The router every hit-path bench measures: `keys` preloaded over 64 stamps with endpoints,
//! the table sized 10 % above the keys, a one-hour TTL.

use std::time::Duration;

use stamps::router::Router;
use stamps::{AssignmentMode, Epoch, InMemoryRegistry, StampId};

pub fn build_router(keys: &[String]) -> Router<InMemoryRegistry> {
    let n = keys.len();
    let router = Router::builder(InMemoryRegistry::new())
        .config(
            stamps::RouterConfig::default()
                .max_entries(n + n / 10)
                .ttl(Duration::from_secs(3600)),
        )
        .build()
        .unwrap();
    router
        .preload(
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_str(), StampId((i % 64) as u32), Epoch(1), AssignmentMode::Serving)),
        )
        .unwrap();
    for s in 0..64 {
        router.set_endpoint(StampId(s), Some(&format!("https://stamp-{s:03}.internal")));
    }
    router
}
