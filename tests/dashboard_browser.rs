//! The fleet dashboard in a real browser: starts the HTTP router example's system on loopback
//! (three stamps, the router, health probing, the library's admin API mounted at `/ops`),
//! takes one stamp down, leaves one migration in flight, then opens the dashboard and the
//! drill-down pages in headless Chromium (Debian's `chromium`) and checks what it rendered.
//! The screenshot is saved as `target/test-artifacts/dashboard.png`.
//!
//! Chromium is required, never skipped: `.ci/run` installs it; on a machine without it this
//! test installs it with `apt-get` when it runs as root, and otherwise fails saying how.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stamps::*;

#[path = "../examples/http_router/admin.rs"]
pub mod admin;
#[path = "../examples/http_router/proxy.rs"]
pub mod proxy;
#[path = "../examples/http_router/stamp.rs"]
pub mod stamp;
#[path = "../examples/http_router/system.rs"]
pub mod system;
#[path = "../examples/http_router/wire.rs"]
pub mod wire;
#[path = "../examples/http_router/write.rs"]
pub mod write;

/// The browser binary: Debian's `chromium` (or another Chromium or Chrome on the path).
fn browser() -> PathBuf {
    let find = || {
        ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
            .iter()
            .find_map(|name| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|dir| dir.join(name))
                        .find(|p| p.is_file())
                })
            })
    };
    if let Some(path) = find() {
        return path;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("installing chromium (apt-get install chromium)");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        if let Some(path) = find() {
            return path;
        }
    }
    panic!("the dashboard test needs Chromium: install Debian's `chromium` (apt-get install chromium) or run `bash .ci/run`");
}

/// Runs the browser headless on `args` (plus the flags every run needs), bounded to 90 s;
/// returns its standard output.
fn run_browser(args: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!("stamps-chromium-{}", std::process::id()));
    let mut cmd = Command::new(browser());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start chromium");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait for chromium") {
            Some(_) => break,
            None if started.elapsed() > Duration::from_secs(90) => {
                let _ = child.kill();
                panic!("chromium did not finish within 90 s: {args:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let out = child.wait_with_output().expect("chromium output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rendered DOM of `url`.
fn dom(url: &str) -> String {
    run_browser(&["--dump-dom".to_string(), url.to_string()])
}

/// The `<tr>` element whose opening tag contains `marker`.
fn row<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no row {marker} in the dashboard"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_in_a_real_browser() {
    let sys = system::start_system(9, Duration::from_millis(100))
        .await
        .expect("start the system");
    let base = format!("http://{}{}", sys.router_addr, system::ADMIN_PREFIX);

    // Stamp 3 goes down: its health endpoint fails until the monitor marks it unhealthy.
    sys.nodes[&StampId(3)].set_healthy(false);
    let started = Instant::now();
    while sys.gateway.monitor.table().get(StampId(3)).map(|h| h.status) != Some(HealthStatus::Unhealthy) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stamp 3 never became unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One migration in flight: started and stepped to dual-write, not driven further.
    let mut tenant = None;
    for t in &sys.tenants {
        if sys.home(t).await.expect("home").stamp == StampId(1) {
            tenant = Some(t.clone());
            break;
        }
    }
    let tenant = tenant.expect("a tenant on stamp 1");
    let migrator = &sys.gateway.migrator;
    let plan = migrator.plan(&tenant, StampId(2)).await.expect("plan");
    let mut m = migrator.start(&plan, "browser-test").await.expect("start");
    while m.state() != MigrationState::DualWrite {
        m.step().await.expect("step");
    }
    let id = m.id().0;

    let page = tokio::task::spawn_blocking({
        let base = base.clone();
        move || dom(&base)
    })
    .await
    .expect("browser task");
    assert!(page.contains("stamps example fleet"), "title missing: {page}");
    for s in 1..=3 {
        assert!(page.contains(&format!("data-stamp=\"{s}\"")), "stamp {s} row missing");
    }
    let down = row(&page, "data-stamp=\"3\"");
    assert!(
        down.contains("data-health=\"unhealthy\""),
        "stamp 3 not marked unhealthy: {down}"
    );
    assert!(row(&page, "data-stamp=\"1\"").contains("data-health=\"healthy\""));
    let moving = row(&page, &format!("data-migration=\"{id}\""));
    assert!(
        moving.contains(tenant.as_str()) && moving.contains("dual_write"),
        "migration row: {moving}"
    );
    assert!(page.contains("<svg class=\"bars\""), "utilisation bars missing");
    assert!(page.contains("<svg class=\"capacity\""), "capacity chart missing");
    assert!(page.contains("id=\"feed\""), "feed lag missing");

    // Drill down: the stamp page lists the tenant, the tenant page shows its route and history.
    let stamp_page = tokio::task::spawn_blocking({
        let url = format!("{base}/stamps/1");
        move || dom(&url)
    })
    .await
    .expect("browser task");
    assert!(stamp_page.contains(tenant.as_str()), "stamp page lacks {tenant}");
    let tenant_page = tokio::task::spawn_blocking({
        let url = format!("{base}/tenants/{tenant}");
        move || dom(&url)
    })
    .await
    .expect("browser task");
    assert!(tenant_page.contains("id=\"route\""), "tenant page lacks the route");
    assert!(tenant_page.contains("assigned"), "tenant page lacks the history");

    // The screenshot, kept as a test artifact.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    let shot = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let (shot, base) = (shot.clone(), base.clone());
        move || {
            run_browser(&[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,1400".to_string(),
                base,
            ])
        }
    })
    .await
    .expect("browser task");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "the screenshot {} is missing or empty ({size} bytes)",
        shot.display()
    );
}
