//! Reconciling the registry with what each stamp holds.
//!
//! Three stamps on the reference data plane. Tenant `acme` is migrated from stamp 1 to stamp
//! 2 and completes, but a crashed cleanup "restored" a copy of it on stamp 1 afterwards (a
//! leftover shadow); `initech` was offboarded from the registry but its rows stayed on stamp 3
//! (an orphan); `globex` is assigned to stamp 2 but its rows were lost there (missing). The
//! report names each one with the repair to make; nothing is repaired automatically. An
//! operator then applies the orphan's repair explicitly (`apply_repair`), which re-checks the
//! finding, deletes the copy and records who and why in initech's history.
//!
//! Run with `cargo run --example reconcile --features tokio`.

use std::sync::Arc;
use std::time::Duration;

use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationConfig, Migrator};
use stamps::reconcile::{apply_repair, reconcile, ReconcileOptions, ReferenceInventory, StampInventory};
use stamps::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Arc::new(InMemoryRegistry::new());
    let ids = [StampId(1), StampId(2), StampId(3)];
    for id in ids {
        let cap = Capacity::new([(Resource::Tenants, 100.0)], 0.0)?;
        registry
            .put_active_stamp(StampSpec::new(id, format!("s{}", id.0), Region::new("eu")?, cap)?)
            .await?;
    }
    let plane = ReferenceDataPlane::new(ids);

    // Healthy tenants, with a few rows each.
    for (name, stamp) in [
        ("acme", 1),
        ("globex", 2),
        ("hooli", 3),
        ("initech", 3),
        ("umbrella", 1),
    ] {
        let t = TenantId::new(name)?;
        registry.assign(&TenantSpec::new(t.clone()), StampId(stamp)).await?;
        for k in 0..3 {
            plane.write_via(registry.as_ref(), &t, &format!("row-{k}"), "v").await?;
        }
    }

    // acme moves to stamp 2 (soak shortened for the example) and completes.
    let acme = TenantId::new("acme")?;
    let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
        .config(MigrationConfig::default().soak_window(Duration::ZERO))?;
    let mut m = migrator
        .start(&migrator.plan(&acme, StampId(2)).await?, "example")
        .await?;
    m.run().await?;
    println!("migration {}: {}", m.id(), m.state());

    // What went wrong afterwards, behind the registry's back.
    plane.corrupt(StampId(1), &acme, "row-0", "restored from last night's backup");
    let initech = registry.require_assignment(&TenantId::new("initech")?).await?;
    registry.unassign(initech.tenant(), initech.epoch).await?; // offboarded; rows stay on stamp 3
    plane.lose(StampId(2), &TenantId::new("globex")?); // a disk lost globex's rows

    let inventories: Vec<(StampId, Arc<dyn StampInventory>)> = ids
        .iter()
        .map(|id| {
            (
                *id,
                Arc::new(ReferenceInventory::new(plane.clone(), *id)) as Arc<dyn StampInventory>,
            )
        })
        .collect();
    let report = reconcile(registry.as_ref(), &inventories, &ReconcileOptions::default()).await?;
    print!("{report}");
    let kinds: Vec<&str> = report.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["leftover_shadow", "missing", "orphan"], "{report}");

    // An operator deletes the orphan copy, explicitly, with a reason.
    let orphan = report.of_kind("orphan").next().ok_or("no orphan")?;
    let initech = TenantId::new(&orphan.tenant)?;
    let decision = Decision::new("dana", "initech offboarded 2026-10-01, ticket PRIV-88")?;
    let entry = apply_repair(registry.as_ref(), orphan, &decision, || async {
        plane.lose(orphan.stamp, &initech); // the reference plane's delete
        Ok::<(), String>(())
    })
    .await?;
    println!(
        "recorded in {}'s history: {} on {} by {}: {}",
        entry.tenant,
        entry.action.as_str(),
        entry.to.map_or_else(String::new, |s| s.to_string()),
        entry.actor.as_deref().unwrap_or("?"),
        entry.reason.as_deref().unwrap_or("")
    );
    let after = reconcile(registry.as_ref(), &inventories, &ReconcileOptions::default()).await?;
    print!("after the repair: {after}");
    let kinds: Vec<&str> = after.findings.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, ["leftover_shadow", "missing"], "{after}");
    Ok(())
}
