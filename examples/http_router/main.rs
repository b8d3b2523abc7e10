//! A real HTTP stamp router: an axum front end that routes each request by tenant to one of
//! three in-process stamp servers, with health probing, fencing, live migrations and a
//! scatter-gather admin endpoint. Everything listens on loopback.
//!
//! ```text
//!   client ──HTTP──▶ router (axum)                  ──hyper──▶ stamp 1 (axum, its key-value data)
//!                    · tenant: x-tenant-id, or the   ──hyper──▶ stamp 2
//!                      Host subdomain copied into it ──hyper──▶ stamp 3
//!                    · RouteLayer (stamps::router::Router)  ▲
//!                    · HealthMonitor + HttpHealthSource ────┘ GET /healthz
//!                    · POST /admin/migrations (Migrator; the stamps' data plane is the driver)
//!                    · GET /admin/tenants (scatter-gather over healthy stamps)
//!                    · GET /metrics (Prometheus), /ops (the library's admin API and dashboard)
//! ```
//!
//! * The stamps' data is the library's reference data plane ([`ReferenceDataPlane`]), each
//!   stamp server reading and writing only its own share: a per-tenant key-value store (UTF-8
//!   values) whose rows carry a version `(epoch, sequence)` and merge last-writer-wins by
//!   version, and a [`Fence`] under the same lock. Every write carries the epoch of the route
//!   it was sent by (`x-stamp-epoch`), and the stamp admits it through the fence before
//!   applying it, so a router with a stale route cannot write after a cutover: it gets 409,
//!   refreshes the route and retries.
//! * [`RouteLayer`] resolves each request's route (400 bad tenant, 404 unknown tenant, 503 with
//!   `Retry-After` for an unhealthy stamp or a write during a cutover freeze); the handlers
//!   proxy with hyper. In dual-write the router writes the serving stamp first, then the shadow
//!   (with the same row version), and acknowledges only when both applied.
//! * The data plane implements [`MigrationDriver`], so `POST /admin/migrations` runs the
//!   library's migration engine against the live stamps while traffic flows.
//!
//! [`ReferenceDataPlane`]: stamps::migration::reference::ReferenceDataPlane
//! [`Fence`]: stamps::migration::Fence
//! [`RouteLayer`]: stamps::integrations::tower::RouteLayer
//! [`MigrationDriver`]: stamps::migration::MigrationDriver
//!
//! Run it: `cargo run --example http_router --features tokio,tower,http-health,admin,metrics` (prints URLs and
//! curl commands; Ctrl-C stops it), or add `-- --demo`: it sends one request of each kind
//! (a write, a read by Host, a migration through the admin endpoint, scatter-gather), prints
//! the answers and exits, 0 if each was the expected one (within 30 s). `tests/http_router.rs`
//! runs it end to end: it starts
//! everything, sends traffic, migrates a tenant under load through the admin endpoint, takes a
//! stamp out through its health endpoint, and checks that only that stamp's tenants get 503 and
//! that every acknowledged write is readable (within an overall 45 s timeout).

pub mod admin;
pub mod demo;
pub mod proxy;
pub mod stamp;
pub mod system;
pub mod wire;
pub mod write;

use std::process::ExitCode;
use std::time::Duration;

use system::start_system;
use wire::BASE_DOMAIN;

async fn serve_forever() -> Result<(), Box<dyn std::error::Error>> {
    let sys = start_system(6, Duration::from_secs(1)).await?;
    let r = sys.router_addr;
    println!("router:  http://{r}");
    for (id, e) in &sys.endpoints {
        println!("{id}: {e}");
    }
    let t = sys.tenants.first().map(|t| t.to_string()).unwrap_or_default();
    println!(
        "\ntenants: {}",
        sys.tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    );
    println!("\ntry:");
    println!("  curl -X PUT -H 'x-tenant-id: {t}' --data hello http://{r}/kv/greeting");
    println!("  curl -H 'Host: {t}.{BASE_DOMAIN}' http://{r}/kv/greeting");
    println!("  curl -X POST -H 'content-type: application/json' --data '{{\"tenant\":\"{t}\",\"to\":2}}' http://{r}/admin/migrations");
    println!("  curl http://{r}/admin/migrations/1");
    println!("  curl http://{r}/admin/tenants");
    println!(
        "\nthe fleet dashboard: http://{r}{}  (JSON under {}/api/)",
        system::ADMIN_PREFIX,
        system::ADMIN_PREFIX
    );
    println!("metrics (Prometheus text): http://{r}/metrics");
    println!(
        "operator commands need 'Authorization: Bearer {}', e.g.\n  curl -X POST -H 'Authorization: Bearer {}' -H 'content-type: application/json' --data '{{\"reason\":\"hold\"}}' http://{r}{}/api/migrations/1/pause",
        system::operator_token(),
        system::operator_token(),
        system::ADMIN_PREFIX
    );
    println!("\nCtrl-C stops (the default SIGINT action ends the process).");
    std::future::pending::<()>().await;
    Ok(())
}

fn main() -> ExitCode {
    let demo = std::env::args().any(|a| a == "--demo");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        if demo {
            match tokio::time::timeout(Duration::from_secs(30), demo::demo()).await {
                Ok(Ok(true)) => ExitCode::SUCCESS,
                Ok(Ok(false)) => ExitCode::FAILURE,
                Ok(Err(e)) => {
                    eprintln!("demo error: {e}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    eprintln!("demo timed out after 30 s");
                    ExitCode::FAILURE
                }
            }
        } else {
            match serve_forever().await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}
