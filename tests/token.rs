//! Signed routing tokens: expiry, tampering of every field, wrong and rotated keys, stale
//! epochs, and arbitrary bytes.
#![cfg(feature = "token")]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use proptest::prelude::*;
use stamps::integrations::token::{KeyId, RoutingTokens, TokenError, TokenKeys};
use stamps::{Epoch, FakeClock, StampId, TenantId};

fn tokens(clock: &FakeClock) -> RoutingTokens {
    RoutingTokens::new(TokenKeys::new(KeyId(1), vec![0x11; 32]).unwrap(), clock.clone())
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

#[test]
fn round_trip_and_expiry() {
    let clock = FakeClock::new();
    let t = tokens(&clock);
    let tok = t
        .issue(&acme(), StampId(7), Epoch(99), Duration::from_secs(60))
        .unwrap();
    assert!(tok.len() <= 250, "compact: {} bytes", tok.len());
    let c = t.verify(tok.as_bytes()).unwrap();
    assert_eq!(
        (c.tenant, c.stamp, c.epoch, c.key_id),
        (acme(), StampId(7), Epoch(99), KeyId(1))
    );
    clock.advance(Duration::from_millis(59_999));
    assert!(t.verify(tok.as_bytes()).is_ok());
    clock.advance(Duration::from_millis(1));
    assert_eq!(t.verify(tok.as_bytes()), Err(TokenError::Expired { at: c.expires_at }));
    assert_eq!(TokenError::Expired { at: c.expires_at }.http_status(), 401);
}

#[test]
fn tampering_with_any_byte_of_any_field_is_detected() {
    let clock = FakeClock::new();
    let t = tokens(&clock);
    let tok = t
        .issue(&acme(), StampId(7), Epoch(99), Duration::from_secs(60))
        .unwrap();
    let (p, s) = tok.split_once('.').unwrap();
    let payload = URL_SAFE_NO_PAD.decode(p).unwrap();
    let tag = URL_SAFE_NO_PAD.decode(s).unwrap();
    // Every payload byte: version(0), key id(1..5), stamp(5..9), epoch(9..17), expiry(17..25),
    // tenant length(25), tenant(26..).
    for i in 0..payload.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = payload.clone();
            bad[i] ^= flip;
            let forged = format!("{}.{}", URL_SAFE_NO_PAD.encode(&bad), s);
            let err = t.verify(forged.as_bytes()).unwrap_err();
            let expected_kind = match i {
                0 => matches!(err, TokenError::UnsupportedVersion(_)),
                1..=4 => matches!(err, TokenError::UnknownKey(_)),
                25 => matches!(err, TokenError::Malformed),
                _ => matches!(err, TokenError::BadSignature),
            };
            assert!(expected_kind, "byte {i} flip {flip:#x}: {err:?}");
        }
    }
    for i in 0..tag.len() {
        let mut bad = tag.clone();
        bad[i] ^= 1;
        let forged = format!("{p}.{}", URL_SAFE_NO_PAD.encode(&bad));
        assert_eq!(
            t.verify(forged.as_bytes()),
            Err(TokenError::BadSignature),
            "tag byte {i}"
        );
    }
    // Truncated or extended.
    assert_eq!(t.verify(&tok.as_bytes()[..tok.len() - 1]), Err(TokenError::Malformed));
    assert_eq!(t.verify(format!("{tok}A").as_bytes()), Err(TokenError::Malformed));
    assert_eq!(t.verify(p.as_bytes()), Err(TokenError::Malformed));
}

#[test]
fn wrong_key_and_rotation() {
    let clock = FakeClock::new();
    let old = tokens(&clock);
    let tok_old = old
        .issue(&acme(), StampId(1), Epoch(1), Duration::from_secs(60))
        .unwrap();

    // Same key id, different secret: a forgery.
    let impostor = RoutingTokens::new(TokenKeys::new(KeyId(1), vec![0x22; 32]).unwrap(), clock.clone());
    assert_eq!(impostor.verify(tok_old.as_bytes()), Err(TokenError::BadSignature));
    // A key id the verifier does not hold.
    let other = RoutingTokens::new(TokenKeys::new(KeyId(9), vec![0x11; 32]).unwrap(), clock.clone());
    assert_eq!(other.verify(tok_old.as_bytes()), Err(TokenError::UnknownKey(KeyId(1))));

    // Rotation: add key 2, sign with it; both verify; retire key 1.
    let mut keys = old.keys().clone();
    keys.add(KeyId(2), vec![0x33; 32]).unwrap();
    keys.sign_with(KeyId(2)).unwrap();
    let rotated = RoutingTokens::new(keys.clone(), clock.clone());
    let tok_new = rotated
        .issue(&acme(), StampId(1), Epoch(1), Duration::from_secs(60))
        .unwrap();
    assert_eq!(rotated.verify(tok_new.as_bytes()).unwrap().key_id, KeyId(2));
    assert_eq!(rotated.verify(tok_old.as_bytes()).unwrap().key_id, KeyId(1));
    assert!(!keys.remove(KeyId(2)), "the signing key cannot be removed");
    assert!(keys.remove(KeyId(1)));
    let retired = RoutingTokens::new(keys, clock.clone());
    assert_eq!(
        retired.verify(tok_old.as_bytes()),
        Err(TokenError::UnknownKey(KeyId(1)))
    );
    assert!(retired.verify(tok_new.as_bytes()).is_ok());
}

#[test]
fn stale_epoch_is_not_current() {
    let clock = FakeClock::new();
    let t = tokens(&clock);
    let tok = t
        .issue(&acme(), StampId(1), Epoch(10), Duration::from_secs(60))
        .unwrap();
    let c = t.verify(tok.as_bytes()).unwrap();
    assert!(c.is_current(Some(Epoch(10))));
    assert!(c.is_current(Some(Epoch(3))));
    assert!(
        !c.is_current(Some(Epoch(11))),
        "after a migration the token must fall back to a lookup"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    /// 100,000 arbitrary inputs: the parser never panics and never accepts a forgery.
    #[test]
    fn arbitrary_bytes_never_panic_or_verify(b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let clock = FakeClock::new();
        let t = tokens(&clock);
        prop_assert!(t.verify(&b).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn structured_garbage_never_verifies(payload in proptest::collection::vec(any::<u8>(), 0..200), tag in proptest::collection::vec(any::<u8>(), 0..40)) {
        let clock = FakeClock::new();
        let t = tokens(&clock);
        let s = format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(&tag));
        prop_assert!(t.verify(s.as_bytes()).is_err());
    }

    #[test]
    fn issued_tokens_verify(name in "[a-z0-9][a-z0-9._-]{0,127}", stamp in any::<u32>(), epoch in any::<u64>(), ttl in 1u64..10_000_000) {
        let clock = FakeClock::new();
        let t = tokens(&clock);
        let id = TenantId::new(&name).unwrap();
        let tok = t.issue(&id, StampId(stamp), Epoch(epoch), Duration::from_millis(ttl)).unwrap();
        let c = t.verify(tok.as_bytes()).unwrap();
        prop_assert_eq!((c.tenant, c.stamp, c.epoch), (id, StampId(stamp), Epoch(epoch)));
    }
}
