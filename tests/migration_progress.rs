//! The engine's typed progress record (`stamps::migration::Progress`) and its stored format:
//! records written before the format marker existed (format 1) still load, typed, and a
//! migration saved in that format mid-flight resumes and completes, on both registries; a
//! newer format or an unreadable field is refused (`Error::Corrupt`) and nothing is written;
//! every progress value survives a write and a read; reading never panics.
//!
//! The PostgreSQL variants need the test server (`DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`); an unreachable server fails, never skips.

#[path = "support/pg.rs"]
mod pg;

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use stamps::migration::progress::{
    CommandKind, Failure, Lease, Paused, PendingCommand, ResolutionProgress, Validation,
};
use stamps::migration::reference::ReferenceDataPlane;
use stamps::migration::{MigrationConfig, Migrator, Progress, StepOutcome};
use stamps::registry::postgres::{PgConfig, PgRegistry};
use stamps::*;

fn record(data: &[(&str, &str)]) -> MigrationRecord {
    let mut rec = MigrationRecord::planned(TenantId::new("acme").unwrap(), StampId(1), StampId(2));
    rec.data = data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    rec
}

/// What the engine wrote in format 1 while soaking after a cutover, key for key.
const SOAKING_V1: &[(&str, &str)] = &[
    ("initiated_by", "carol (OPS-1234)"),
    ("planned_epoch", "1"),
    ("lease.generation", "7"),
    ("snapshot.id", "snap-acme-3"),
    ("snapshot.rows", "42"),
    ("validation.passed", "true"),
    ("validation.at", "1000900"),
    ("validation.summary", "kv: 42 rows, checksum 9f0c on both"),
    ("soak.started_at", "1001000"),
    ("soak.last_check", "1061000"),
    ("cutover.epoch", "5"),
];

#[test]
fn format_1_records_read_typed() {
    let p = Progress::read(&record(SOAKING_V1)).unwrap();
    assert_eq!(p.initiated_by.as_deref(), Some("carol (OPS-1234)"));
    assert_eq!((p.planned_epoch, p.generation, p.attempt), (Some(Epoch(1)), 7, 0));
    assert_eq!(p.snapshot, Some(("snap-acme-3".to_string(), 42)));
    assert_eq!(
        p.validation,
        Some(Validation {
            passed: true,
            at: Timestamp::from_millis(1_000_900),
            summary: "kv: 42 rows, checksum 9f0c on both".into()
        })
    );
    assert_eq!(p.soak_started_at, Some(Timestamp::from_millis(1_001_000)));
    assert_eq!(p.soak_last_check, Some(Timestamp::from_millis(1_061_000)));
    assert_eq!(p.cutover_epoch, Some(Epoch(5)));
    assert!(p.lease.is_none() && p.command.is_none() && p.paused.is_none() && p.failure.is_none());

    // Mid-step in the cutover, with a lease and a retry; a queued command; a pause; a
    // rollback after a failure.
    let busy = Progress::read(&record(&[
        ("attempt", "2"),
        ("last_error", "driver: stamp 2 unreachable"),
        ("lease.owner", "worker-a#3"),
        ("lease.until", "1030000"),
        ("lease.generation", "9"),
        ("command", "rollback"),
        ("command.by", "oncall"),
        ("command.reason", "error budget"),
        ("command.at", "1020000"),
        ("paused.by", "gina"),
        ("paused.reason", "change freeze"),
        ("rollback.from", "soaking"),
        ("rollback.outcome", "rolled_back"),
        ("rollback.reason", "failure in soaking: boom"),
        ("failure.state", "soaking"),
        ("failure.error", "boom"),
        ("cutover.refused", "the freeze would overrun its bound of 5s"),
        ("command.rejected", "cancel by bob: invalid transition"),
    ]))
    .unwrap();
    assert_eq!(
        (busy.attempt, busy.last_error.as_deref()),
        (2, Some("driver: stamp 2 unreachable"))
    );
    assert_eq!(
        busy.lease,
        Some(Lease {
            owner: "worker-a#3".into(),
            until: Timestamp::from_millis(1_030_000)
        })
    );
    assert_eq!(
        busy.command,
        Some(PendingCommand {
            kind: CommandKind::Rollback,
            by: "oncall".into(),
            reason: "error budget".into(),
            at: Timestamp::from_millis(1_020_000)
        })
    );
    assert_eq!(
        busy.paused,
        Some(Paused {
            by: "gina".into(),
            reason: "change freeze".into()
        })
    );
    assert_eq!(
        (busy.rollback_from, busy.rollback_outcome),
        (Some(MigrationState::Soaking), Some(MigrationState::RolledBack))
    );
    assert_eq!(
        busy.failure,
        Some(Failure {
            state: MigrationState::Soaking,
            error: "boom".into()
        })
    );
    assert!(busy.cutover_refused.is_some() && busy.command_rejected.is_some());
}

#[test]
fn unreadable_fields_and_newer_formats_are_refused_by_name() {
    for (data, key) in [
        (vec![("attempt", "two")], "attempt"),
        (vec![("lease.owner", "w"), ("lease.until", "soon")], "lease.until"),
        (vec![("lease.owner", "w")], "lease.until"),
        (
            vec![("validation.passed", "yes"), ("validation.at", "1")],
            "validation.passed",
        ),
        (vec![("rollback.from", "sideways")], "rollback.from"),
        (vec![("command", "explode")], "command"),
        (vec![("snapshot.id", "s")], "snapshot.rows"),
        (vec![("progress.format", "3")], "progress.format"),
        (vec![("progress.format", "two")], "progress.format"),
    ] {
        match Progress::read(&record(&data)) {
            Err(Error::Corrupt { what, reason }) => {
                assert!(what.ends_with(&format!("field {key}")), "{data:?}: {what} / {reason}");
                assert!(what.contains("migration-0"), "{what}");
            }
            other => panic!("{data:?} must be refused, got {other:?}"),
        }
    }
    // Keys the engine does not own are left alone, both ways.
    let mut rec = record(&[("host.note", "moved for the EU launch")]);
    let p = Progress::read(&rec).unwrap();
    p.write(&mut rec);
    assert_eq!(rec.data["host.note"], "moved for the EU launch");
    assert_eq!(rec.data["progress.format"], "2");
}

type Keep = Option<Box<dyn Any + Send>>;

async fn memory(clock: FakeClock) -> (Arc<DynRegistry>, Keep) {
    (Arc::new(InMemoryRegistry::builder().clock(clock).build()), None)
}

async fn postgres(clock: FakeClock, hint: &str) -> (Arc<DynRegistry>, Keep) {
    let schema = pg::unique_schema(&format!("progress_{hint}"));
    let guard = pg::SchemaGuard(schema.clone());
    let config = PgConfig::from_url(pg::database_url())
        .unwrap()
        .schema(&schema)
        .unwrap()
        .pool_size(4)
        .clock(clock);
    let registry = PgRegistry::connect(config).await.unwrap();
    registry.migrate().await.unwrap();
    (Arc::new(registry), Some(Box::new(guard)))
}

/// Rewrites the stored record as format 1 would have it: no marker (the field keys are the
/// ones format 1 used).
async fn downgrade(registry: &DynRegistry, id: MigrationId, extra: &[(&str, String)]) {
    let mut rec = registry.migration(id).await.unwrap().unwrap();
    assert_eq!(rec.data.remove("progress.format").as_deref(), Some("2"));
    for (k, v) in extra {
        rec.data.insert(k.to_string(), v.clone());
    }
    registry.save_migration(&rec).await.unwrap();
}

/// A migration saved in format 1 in the middle of the soak, with a dead worker's lease and a
/// queued rollback, and another one mid-cutover: both resume with this build.
async fn format_1_migrations_resume((registry, _keep): (Arc<DynRegistry>, Keep), clock: FakeClock) {
    for id in [1, 2] {
        let cap = Capacity::new([(Resource::Tenants, 10.0)], 0.0).unwrap();
        let spec = StampSpec::new(StampId(id), format!("s{id}"), Region::new("eu").unwrap(), cap).unwrap();
        registry.put_active_stamp(spec).await.unwrap();
    }
    let plane = ReferenceDataPlane::new([StampId(1), StampId(2)]).clock(clock.clone());
    let config = MigrationConfig::default().soak_window(Duration::from_secs(3_600));
    let migrator = Migrator::new(registry.clone(), Arc::new(plane.clone()))
        .clock(clock.clone())
        .config(config)
        .unwrap();

    // 1. Soaking, then "an older build" saved it: a dead worker's lease and a queued rollback.
    let acme = TenantId::new("acme").unwrap();
    registry
        .assign(&TenantSpec::new(acme.clone()), StampId(1))
        .await
        .unwrap();
    plane.write_via(&*registry, &acme, "k", "v").await.unwrap();
    let mut m = migrator
        .start(&migrator.plan(&acme, StampId(2)).await.unwrap(), "op")
        .await
        .unwrap();
    while m.state() != MigrationState::Soaking {
        m.step().await.unwrap();
        clock.advance(Duration::from_millis(10));
    }
    let lease_until = clock.now() + Duration::from_secs(30);
    downgrade(
        &*registry,
        m.id(),
        &[
            ("lease.owner", "old-build#1".to_string()),
            ("lease.until", lease_until.as_millis().to_string()),
            ("command", "rollback".to_string()),
            ("command.by", "oncall".to_string()),
            ("command.reason", "latency".to_string()),
            ("command.at", clock.now().as_millis().to_string()),
        ],
    )
    .await;
    let mut resumed = migrator.load(m.id()).await.unwrap();
    assert_eq!(
        resumed.progress().lease.as_ref().map(|l| l.owner.as_str()),
        Some("old-build#1")
    );
    assert!(
        matches!(resumed.step().await, Err(Error::LeaseHeld { .. })),
        "the old lease is honoured"
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        resumed.step().await.unwrap(),
        StepOutcome::Advanced {
            from: MigrationState::Soaking,
            to: MigrationState::RollingBack
        },
        "the old build's queued command is honoured"
    );
    while !resumed.state().is_terminal() {
        resumed.step().await.unwrap();
    }
    assert_eq!(resumed.state(), MigrationState::RolledBack);
    assert_eq!(resumed.progress().rollback_by.as_deref(), Some("oncall"));
    let stored = registry.migration(m.id()).await.unwrap().unwrap();
    assert_eq!(
        stored.data.get("progress.format").map(String::as_str),
        Some("2"),
        "rewritten in format 2"
    );
    assert_eq!(plane.get(StampId(1), &acme, "k").as_deref(), Some("v"));

    // 2. Validated and in the cutover state when the older build stopped: it completes.
    let globex = TenantId::new("globex").unwrap();
    registry
        .assign(&TenantSpec::new(globex.clone()), StampId(1))
        .await
        .unwrap();
    plane.write_via(&*registry, &globex, "k", "v").await.unwrap();
    let mut m = migrator
        .start(&migrator.plan(&globex, StampId(2)).await.unwrap(), "op")
        .await
        .unwrap();
    while m.state() != MigrationState::CutOver {
        m.step().await.unwrap();
    }
    downgrade(&*registry, m.id(), &[]).await;
    let mut resumed = migrator.load(m.id()).await.unwrap();
    assert!(resumed.last_validation().is_some_and(|(passed, _, _)| passed));
    while resumed.state() != MigrationState::Soaking {
        resumed.step().await.unwrap();
    }
    clock.advance(Duration::from_secs(3_601));
    while !resumed.state().is_terminal() {
        resumed.step().await.unwrap();
    }
    assert_eq!(resumed.state(), MigrationState::Completed);
    assert_eq!(plane.get(StampId(2), &globex, "k").as_deref(), Some("v"));

    // 3. A record from a newer build: refused, and nothing is written.
    let initech = TenantId::new("initech").unwrap();
    registry
        .assign(&TenantSpec::new(initech.clone()), StampId(1))
        .await
        .unwrap();
    let m = migrator
        .start(&migrator.plan(&initech, StampId(2)).await.unwrap(), "op")
        .await
        .unwrap();
    let mut rec = registry.migration(m.id()).await.unwrap().unwrap();
    rec.data.insert("progress.format".into(), "3".into());
    let rec = registry.save_migration(&rec).await.unwrap();
    assert!(matches!(migrator.load(m.id()).await, Err(Error::Corrupt { .. })));
    let mut old = m;
    assert!(matches!(
        old.step().await,
        Err(Error::Corrupt { .. }) | Err(Error::Conflict(_))
    ));
    assert_eq!(
        registry.migration(rec.id).await.unwrap().unwrap(),
        rec,
        "nothing was written"
    );
}

#[tokio::test]
async fn memory_format_1_migrations_resume() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    format_1_migrations_resume(memory(clock.clone()).await, clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_format_1_migrations_resume() {
    let clock = FakeClock::starting_at(Timestamp::from_millis(1_000_000));
    format_1_migrations_resume(postgres(clock.clone(), "resume").await, clock).await;
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn state() -> impl Strategy<Value = MigrationState> {
    proptest::sample::select(MigrationState::ALL.to_vec())
}

fn time() -> impl Strategy<Value = Timestamp> {
    (0u64..u64::MAX).prop_map(Timestamp::from_millis)
}

prop_compose! {
    fn progress()(
        initiated_by in proptest::option::of(text()),
        planned in proptest::option::of(any::<u64>()),
        attempt in any::<u32>(),
        last_error in proptest::option::of(text()),
        lease in proptest::option::of((text(), time())),
        generation in any::<u64>(),
        snapshot in proptest::option::of((text(), any::<u64>())),
        validation in proptest::option::of((any::<bool>(), time(), text())),
        refused in proptest::option::of(text()),
        soak in (proptest::option::of(time()), proptest::option::of(time())),
        rollback in (proptest::option::of(state()), proptest::option::of(state()), proptest::option::of(text()), proptest::option::of(text())),
        failure in proptest::option::of((state(), text())),
        command in proptest::option::of((any::<bool>(), text(), text(), time())),
        paused in proptest::option::of((text(), text())),
        resolution in proptest::option::of((any::<u32>(), text(), text(), proptest::option::of(any::<u64>()), proptest::option::of(time()))),
    ) -> Progress {
        let mut p = Progress::default();
        p.initiated_by = initiated_by;
        p.planned_epoch = planned.map(Epoch);
        p.attempt = attempt;
        p.last_error = last_error;
        p.lease = lease.map(|(owner, until)| Lease { owner, until });
        p.generation = generation;
        p.snapshot = snapshot;
        p.validation = validation.map(|(passed, at, summary)| Validation { passed, at, summary });
        p.cutover_refused = refused;
        p.cutover_epoch = planned.map(|e| Epoch(e / 2));
        (p.soak_started_at, p.soak_last_check) = soak;
        (p.rollback_from, p.rollback_outcome, p.rollback_reason, p.rollback_by) = rollback;
        p.failure = failure.map(|(state, error)| Failure { state, error });
        p.command = command.map(|(cancel, by, reason, at)| PendingCommand {
            kind: if cancel { CommandKind::Cancel } else { CommandKind::Rollback },
            by,
            reason,
            at,
        });
        p.paused = paused.map(|(by, reason)| Paused { by, reason });
        p.resolution = resolution.map(|(kept, by, reason, epoch, at)| ResolutionProgress {
            kept: StampId(kept),
            by,
            reason,
            epoch: epoch.map(Epoch),
            at,
        });
        p
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every progress value reads back as written, next to whatever else the data holds.
    #[test]
    fn a_written_progress_reads_back(p in progress(), other in proptest::collection::btree_map("x\\.[a-z]{1,6}", text(), 0..3)) {
        let mut rec = record(&[]);
        rec.data = other.clone();
        p.write(&mut rec);
        prop_assert_eq!(Progress::read(&rec).unwrap(), p);
        for (k, v) in &other {
            prop_assert_eq!(rec.data.get(k), Some(v));
        }
    }

    /// Reading arbitrary maps over the engine's keys never panics: a value or a `Corrupt`.
    #[test]
    fn reading_any_map_never_panics(data in proptest::collection::btree_map(
        proptest::sample::select(vec![
            "progress.format", "attempt", "lease.owner", "lease.until", "lease.generation", "snapshot.id",
            "snapshot.rows", "validation.passed", "validation.at", "rollback.from", "failure.state",
            "failure.error", "command", "command.at", "paused.by", "resolution.kept", "resolution.epoch",
        ]),
        prop_oneof![text(), any::<u64>().prop_map(|n| n.to_string()), Just("true".to_string())],
        0..10,
    )) {
        let mut rec = record(&[]);
        rec.data = data.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>();
        match Progress::read(&rec) {
            Ok(_) | Err(Error::Corrupt { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}
