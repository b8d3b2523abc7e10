//! Tenant extraction from hosts, headers and paths: every rejection is typed and maps to 400.

use proptest::prelude::*;
use stamps::integrations::{tenant_from_header, tenant_from_host, tenant_from_path, ExtractError, TenantSource};
use stamps::TenantIdError;

const BASE: &str = "app.example";

#[test]
fn hosts_under_the_base_domain() {
    for (host, want) in [
        ("acme.app.example", "acme"),
        ("acme.app.example:443", "acme"),
        ("acme.app.example.", "acme"),
        ("acme.app.example.:8080", "acme"),
        ("ACME.APP.EXAMPLE", "acme"),
        ("Acme-Corp.App.Example", "acme-corp"),
        ("xn--bcher-kva.app.example", "xn--bcher-kva"),
        ("t-001.app.example", "t-001"),
    ] {
        assert_eq!(
            tenant_from_host(host, BASE).map(|t| t.to_string()),
            Ok(want.to_string()),
            "{host}"
        );
    }
    assert_eq!(
        tenant_from_host("acme.app.example", "app.example.").unwrap().as_str(),
        "acme"
    );
}

#[test]
fn bad_hosts_are_typed_errors() {
    use ExtractError::*;
    for (host, want) in [
        ("", Missing),
        ("app.example", NoSubdomain),
        ("app.example.", NoSubdomain),
        (".app.example", NoSubdomain),
        ("a.b.app.example", NestedSubdomain),
        ("acme.other.example", ForeignHost),
        ("acmeapp.example", ForeignHost),
        ("example", ForeignHost),
        ("acme.app.example:", MalformedHost),
        ("acme.app.example:0", MalformedHost),
        ("acme.app.example:99999", MalformedHost),
        ("acme.app.example:http", MalformedHost),
        ("[::1]:80", MalformedHost),
        ("bücher.app.example", NonAsciiHost),
        (
            "a_b!.app.example",
            InvalidTenant(TenantIdError::InvalidByte { index: 3, byte: b'!' }),
        ),
        (
            "-x.app.example",
            InvalidTenant(TenantIdError::InvalidByte { index: 0, byte: b'-' }),
        ),
    ] {
        let got = tenant_from_host(host, BASE);
        assert_eq!(got, Err(want), "{host}");
        assert_eq!(want.http_status(), 400);
    }
}

#[test]
fn headers_and_paths() {
    assert_eq!(tenant_from_header(b"acme").unwrap().as_str(), "acme");
    assert_eq!(tenant_from_header(b"\tacme  ").unwrap().as_str(), "acme");
    assert_eq!(tenant_from_header(b"   "), Err(ExtractError::Missing));
    assert_eq!(
        tenant_from_header(b"ACME"),
        Err(ExtractError::InvalidTenant(TenantIdError::Uppercase { index: 0 }))
    );
    assert_eq!(
        tenant_from_header(b"a\x00b"),
        Err(ExtractError::InvalidTenant(TenantIdError::InvalidByte {
            index: 1,
            byte: 0
        }))
    );
    assert_eq!(
        tenant_from_header(&[0xc3, 0x28]),
        Err(ExtractError::InvalidTenant(TenantIdError::NotUtf8))
    );
    assert_eq!(tenant_from_path("/t/acme", "/t/").unwrap().as_str(), "acme");
    assert_eq!(tenant_from_path("/t/acme#frag", "/t/").unwrap().as_str(), "acme");
    assert_eq!(tenant_from_path("/t/", "/t/"), Err(ExtractError::Missing));
    assert_eq!(tenant_from_path("/t//x", "/t/"), Err(ExtractError::Missing));
    assert_eq!(tenant_from_path("/u/acme", "/t/"), Err(ExtractError::PathMismatch));
    assert!(matches!(
        tenant_from_path("/t/../etc", "/t/"),
        Err(ExtractError::InvalidTenant(_))
    ));
    let src = TenantSource::PathPrefix { prefix: "/t/".into() };
    assert_eq!(src.extract(None, None, "/t/globex/a").unwrap().as_str(), "globex");
    assert_eq!(TenantSource::header().header_name(), Some("x-tenant-id"));
    assert_eq!(
        TenantSource::header().extract(None, None, "/"),
        Err(ExtractError::Missing)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_hosts_never_panic_and_accepted_ones_are_single_labels(host in ".{0,80}") {
        if let Ok(t) = tenant_from_host(&host, BASE) {
            prop_assert!(!t.as_str().contains('.'));
            prop_assert!(host.to_ascii_lowercase().contains(BASE));
        }
    }

    #[test]
    fn arbitrary_header_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..160)) {
        let _ = tenant_from_header(&b);
    }

    #[test]
    fn arbitrary_paths_never_panic(p in ".{0,80}", prefix in "/[a-z]{0,3}/?") {
        let _ = tenant_from_path(&p, &prefix);
    }

    #[test]
    fn every_valid_label_round_trips(label in "[a-z0-9][a-z0-9-]{0,40}", port in proptest::option::of(1u16..)) {
        let host = match port { Some(p) => format!("{label}.{BASE}:{p}"), None => format!("{label}.{BASE}") };
        prop_assert_eq!(tenant_from_host(&host, BASE).map(|t| t.to_string()), Ok(label.clone()));
        prop_assert_eq!(tenant_from_host(&host.to_ascii_uppercase(), BASE).map(|t| t.to_string()), Ok(label));
    }
}
