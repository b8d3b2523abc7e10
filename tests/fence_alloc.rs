//! `FenceToken::for_route` allocates nothing: proved with a counting global allocator (this
//! test binary holds only this test, so nothing else allocates while it counts).

use stamps::migration::{Fence, FenceToken};
use stamps::router::Route;
use stamps::{AssignmentMode, Epoch, StampId, TenantId, Timestamp};

#[path = "support/alloc.rs"]
mod alloc;

use alloc::count;

#[test]
fn fence_tokens_from_a_route_allocate_nothing() {
    let tenant = TenantId::new("a-tenant-id-that-is-longer-than-twenty-four-bytes").unwrap();
    let serving = Route::new(StampId(1), Epoch(8));
    let mut dual = Route::new(StampId(1), Epoch(8));
    dual.mode = AssignmentMode::DualWrite { shadow: StampId(2) };
    let mut frozen = Route::new(StampId(1), Epoch(8));
    frozen.mode = AssignmentMode::Frozen {
        shadow: Some(StampId(2)),
        until: Timestamp::from_millis(5),
    };
    // During the freeze, and once it expired (writes flow as in dual-write).
    let (during, after) = (Timestamp::from_millis(4), Timestamp::from_millis(5));
    // The stamps' fences, warmed with the tenant so admitting a token does not insert.
    let mut fences = [Fence::new(StampId(1)), Fence::new(StampId(2))];
    for f in &mut fences {
        f.raise(&tenant, Epoch(8), true);
    }
    let ((tokens, admitted), allocs, bytes) = count(|| {
        let (mut tokens, mut admitted) = (0usize, 0usize);
        for _ in 0..1_000 {
            for (route, now) in [(&serving, during), (&dual, during), (&frozen, during), (&frozen, after)] {
                for token in FenceToken::for_route(&tenant, route, now) {
                    tokens += 1;
                    let fence = &mut fences[(token.stamp.0 - 1) as usize];
                    if fence.admit(&token).is_ok() {
                        admitted += 1;
                    }
                }
            }
        }
        (tokens, admitted)
    });
    // Serving: 1 token, dual-write: 2, frozen: none (the write waits), the expired freeze: 2.
    assert_eq!((tokens, admitted), (5_000, 5_000));
    assert_eq!(
        (allocs, bytes),
        (0, 0),
        "for_route allocated {allocs} times ({bytes} bytes) for {tokens} tokens"
    );
}
