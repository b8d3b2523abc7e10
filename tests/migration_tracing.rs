//! With the `tracing` feature, every transition of a migration emits an event inside a
//! `migration_step` span.
#![cfg(all(feature = "tracing", feature = "test-util"))]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use stamps::MigrationState as S;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records event messages and counts `migration_step` spans.
#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    steps: AtomicU64,
    messages: Mutex<Vec<String>>,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        if span.metadata().name() == "migration_step" {
            self.steps.fetch_add(1, Ordering::SeqCst);
        }
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.messages.lock().unwrap().push(m.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn every_transition_is_traced() {
    let recorder = Arc::new(Recorder::default());
    let dispatch = tracing::Dispatch::from(recorder.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (steps, transitions) = tracing::dispatcher::with_default(&dispatch, || {
        rt.block_on(async {
            let world = World::new("traced").await;
            let mut m = world.start().await;
            let mut steps = 0u64;
            let mut transitions = 0u64;
            while !m.state().is_terminal() {
                let before = m.state();
                if let stamps::StepOutcome::Waiting { .. } = m.step().await.unwrap() {
                    world.clock.advance(std::time::Duration::from_secs(3600));
                }
                steps += 1;
                if m.state() != before {
                    transitions += 1;
                }
            }
            assert_eq!(m.state(), S::Completed);
            (steps, transitions)
        })
    });
    let messages = recorder.messages.lock().unwrap();
    let traced = messages.iter().filter(|m| m.as_str() == "migration transition").count() as u64;
    assert_eq!(traced, transitions);
    assert_eq!(recorder.steps.load(Ordering::SeqCst), steps);
    assert!(messages.iter().any(|m| m == "writes frozen"));
    assert!(messages.iter().filter(|m| m.as_str() == "assignment changed").count() >= 3);
}
