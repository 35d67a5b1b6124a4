use super::*;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    secret: String,
    body: String,
    body_signature: String,
    timestamp: String,
    timestamped_signature: String,
}

fn vectors() -> Vec<Case> {
    let text = include_str!("../../../tests/fixtures/signature-vectors.json");
    serde_json::from_str::<Vectors>(text).expect("fixture parses").cases
}

fn verifier(secret: &str, scheme: SignatureScheme) -> Verifier {
    Verifier::new(&[(SecretSlot::Current, SecretString::from(secret))], scheme, Duration::from_secs(300))
}

fn request(body: &str, signature: &str, timestamp: Option<&str>) -> UnverifiedEvent {
    UnverifiedEvent {
        body: Bytes::copy_from_slice(body.as_bytes()),
        signature: Some(Bytes::copy_from_slice(signature.as_bytes())),
        timestamp: timestamp.map(|t| Bytes::copy_from_slice(t.as_bytes())),
    }
}

fn now_of(case: &Case) -> i64 {
    case.timestamp.parse().unwrap()
}

#[test]
fn every_fixture_vector_verifies_under_its_scheme_and_under_auto() {
    for case in vectors() {
        let now = now_of(&case);
        for scheme in [SignatureScheme::Body, SignatureScheme::Auto] {
            let ok = verifier(&case.secret, scheme).verify(request(&case.body, &case.body_signature, None), now);
            assert_eq!(ok.map(|v| v.scheme()).ok(), Some(MatchedScheme::Body), "{} body/{scheme:?}", case.name);
        }
        for scheme in [SignatureScheme::Timestamped, SignatureScheme::Auto] {
            let req = request(&case.body, &case.timestamped_signature, Some(&case.timestamp));
            let ok = verifier(&case.secret, scheme).verify(req, now);
            assert_eq!(ok.map(|v| v.scheme()).ok(), Some(MatchedScheme::Timestamped), "{} ts/{scheme:?}", case.name);
        }
    }
}

#[test]
fn our_signer_reproduces_every_fixture_vector() {
    for case in vectors() {
        assert_eq!(sign(case.secret.as_bytes(), None, case.body.as_bytes()), case.body_signature);
        assert_eq!(
            sign(case.secret.as_bytes(), Some(&case.timestamp), case.body.as_bytes()),
            case.timestamped_signature
        );
    }
}

#[test]
fn a_flipped_byte_anywhere_fails() {
    for case in vectors() {
        let v = verifier(&case.secret, SignatureScheme::Auto);
        let now = now_of(&case);
        for i in 0..case.body.len() {
            let mut body = case.body.clone().into_bytes();
            body[i] ^= 0x01;
            let body = Bytes::from(body);
            for (sig, ts) in [(&case.body_signature, None), (&case.timestamped_signature, Some(&case.timestamp))] {
                let req = UnverifiedEvent {
                    body: body.clone(),
                    signature: Some(Bytes::copy_from_slice(sig.as_bytes())),
                    timestamp: ts.map(|t| Bytes::copy_from_slice(t.as_bytes())),
                };
                assert_eq!(v.verify(req, now).unwrap_err(), VerifyError::Mismatch, "{} byte {i}", case.name);
            }
        }
        for i in 0..64 {
            let mut sig = case.body_signature.clone().into_bytes();
            sig[i] = if sig[i] == b'0' { b'1' } else { b'0' };
            let sig = String::from_utf8(sig).unwrap();
            assert_eq!(v.verify(request(&case.body, &sig, None), now).unwrap_err(), VerifyError::Mismatch);
        }
        // Another timestamp still inside the tolerance: the signature no longer covers it.
        let shifted = (now + 1).to_string();
        let req = request(&case.body, &case.timestamped_signature, Some(&shifted));
        let err = verifier(&case.secret, SignatureScheme::Timestamped).verify(req, now).unwrap_err();
        assert_eq!(err, VerifyError::Mismatch, "{}", case.name);
    }
}

#[test]
fn a_wrong_secret_fails_and_the_previous_secret_is_accepted_and_reported() {
    let case = &vectors()[0];
    let wrong = verifier("not-the-secret", SignatureScheme::Auto);
    let req = request(&case.body, &case.body_signature, None);
    assert_eq!(wrong.verify(req, now_of(case)).unwrap_err(), VerifyError::Mismatch);

    let rotated = Verifier::new(
        &[
            (SecretSlot::Current, SecretString::from("the-new-secret")),
            (SecretSlot::Previous, SecretString::from(case.secret.as_str())),
        ],
        SignatureScheme::Auto,
        Duration::from_secs(300),
    );
    let req = request(&case.body, &case.timestamped_signature, Some(&case.timestamp));
    let verified = rotated.verify(req, now_of(case)).unwrap();
    assert_eq!(verified.secret(), SecretSlot::Previous);
}

#[test]
fn malformed_signatures_are_refused_before_any_hashing() {
    let case = &vectors()[0];
    let v = verifier(&case.secret, SignatureScheme::Auto);
    let sig = &case.body_signature;
    let now = now_of(case);
    for bad in [&sig[..63], &format!("{sig}0"), &format!("{}zz", &sig[..62]), "", &format!("sha256={sig}")] {
        assert_eq!(v.verify(request(&case.body, bad, None), now).unwrap_err(), VerifyError::MalformedSignature);
    }
    let missing = UnverifiedEvent { body: Bytes::from_static(b"{}"), signature: None, timestamp: None };
    assert_eq!(v.verify(missing, now).unwrap_err(), VerifyError::MissingSignature);
}

#[test]
fn uppercase_hex_is_accepted() {
    let case = &vectors()[0];
    let upper = case.body_signature.to_ascii_uppercase();
    let v = verifier(&case.secret, SignatureScheme::Body);
    assert!(v.verify(request(&case.body, &upper, None), now_of(case)).is_ok());
}

#[test]
fn stale_and_future_timestamps_are_refused_in_both_directions() {
    let case = &vectors()[0];
    let sent = now_of(case);
    for scheme in [SignatureScheme::Timestamped, SignatureScheme::Auto] {
        let v = verifier(&case.secret, scheme);
        for now in [sent + 301, sent - 301] {
            let req = request(&case.body, &case.timestamped_signature, Some(&case.timestamp));
            assert_eq!(v.verify(req, now).unwrap_err(), VerifyError::StaleTimestamp, "{scheme:?} now={now}");
        }
        for now in [sent + 300, sent - 300] {
            let req = request(&case.body, &case.timestamped_signature, Some(&case.timestamp));
            assert!(v.verify(req, now).is_ok(), "{scheme:?} at the edge");
        }
    }
}

#[test]
fn the_timestamped_scheme_needs_a_well_formed_timestamp_and_refuses_body_signatures() {
    let case = &vectors()[0];
    let v = verifier(&case.secret, SignatureScheme::Timestamped);
    let now = now_of(case);
    let no_ts = request(&case.body, &case.timestamped_signature, None);
    assert_eq!(v.verify(no_ts, now).unwrap_err(), VerifyError::MissingTimestamp);
    for bad in ["", "12ab", "-5", "1795000000.5"] {
        let req = request(&case.body, &case.timestamped_signature, Some(bad));
        assert_eq!(v.verify(req, now).unwrap_err(), VerifyError::MalformedTimestamp, "{bad:?}");
    }
    let body_form = request(&case.body, &case.body_signature, Some(&case.timestamp));
    assert_eq!(v.verify(body_form, now).unwrap_err(), VerifyError::Mismatch);
}

#[test]
fn the_body_scheme_refuses_timestamped_signatures() {
    let case = &vectors()[0];
    let v = verifier(&case.secret, SignatureScheme::Body);
    let req = request(&case.body, &case.timestamped_signature, Some(&case.timestamp));
    assert_eq!(v.verify(req, now_of(case)).unwrap_err(), VerifyError::Mismatch);
}

/// A timestamped delivery's signed message, `{timestamp}.{body}`, sent as a body of its own:
/// the body scheme would take it for a body signed so, with no timestamp to be stale.
#[test]
fn a_timestamped_deliverys_message_sent_as_a_body_is_not_a_body_signature() {
    for case in vectors() {
        let message = format!("{}.{}", case.timestamp, case.body);
        let a_year_on = now_of(&case) + 365 * 86_400;
        for scheme in [SignatureScheme::Auto, SignatureScheme::Body] {
            let v = verifier(&case.secret, scheme);
            let replay = request(&message, &case.timestamped_signature, None);
            assert_eq!(v.verify(replay, a_year_on).unwrap_err(), VerifyError::Mismatch, "{} {scheme:?}", case.name);
        }
    }
    // Any other body is checked as before, JSON or not (a signed body that is not JSON gets 400).
    let case = &vectors()[0];
    for body in [" \n{}", "not json", "1795000000", ".5", "12a.3"] {
        let signature = sign(case.secret.as_bytes(), None, body.as_bytes());
        let v = verifier(&case.secret, SignatureScheme::Body);
        assert!(v.verify(request(body, &signature, None), now_of(case)).is_ok(), "{body:?}");
    }
}

#[test]
fn debug_output_never_shows_a_secret() {
    let v = verifier("super-secret-value", SignatureScheme::Auto);
    let shown = format!("{v:?}");
    assert!(!shown.contains("super-secret-value"));
    assert!(shown.contains("current"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_property";
    const NOW: i64 = 1_795_000_000;

    fn signed(body: &[u8], ts: &str) -> UnverifiedEvent {
        let signature = sign(SECRET.as_bytes(), Some(ts), body);
        UnverifiedEvent {
            body: Bytes::copy_from_slice(body),
            signature: Some(Bytes::from(signature)),
            timestamp: Some(Bytes::copy_from_slice(ts.as_bytes())),
        }
    }

    proptest! {
        #[test]
        fn any_signed_body_verifies(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let v = verifier(SECRET, SignatureScheme::Auto);
            prop_assert!(v.verify(signed(&body, &NOW.to_string()), NOW).is_ok());
        }

        #[test]
        fn any_change_to_the_body_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut event = signed(&body, &NOW.to_string());
            let mut changed = body.clone();
            changed[index.index(body.len())] ^= flip;
            event.body = Bytes::from(changed);
            prop_assert_eq!(verifier(SECRET, SignatureScheme::Auto).verify(event, NOW).unwrap_err(), VerifyError::Mismatch);
        }

        #[test]
        fn any_change_to_the_timestamp_fails(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            shift in -300i64..=300,
        ) {
            prop_assume!(shift != 0);
            let mut event = signed(&body, &NOW.to_string());
            event.timestamp = Some(Bytes::from((NOW + shift).to_string()));
            let v = verifier(SECRET, SignatureScheme::Timestamped);
            prop_assert_eq!(v.verify(event, NOW).unwrap_err(), VerifyError::Mismatch);
        }

        #[test]
        fn any_change_to_the_signature_fails(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            index in 0usize..64,
            digit in "[0-9a-f]",
        ) {
            let mut event = signed(&body, &NOW.to_string());
            let mut signature = event.signature.take().unwrap().to_vec();
            prop_assume!(signature[index] != digit.as_bytes()[0]);
            signature[index] = digit.as_bytes()[0];
            event.signature = Some(Bytes::from(signature));
            prop_assert_eq!(verifier(SECRET, SignatureScheme::Auto).verify(event, NOW).unwrap_err(), VerifyError::Mismatch);
        }

        #[test]
        fn arbitrary_headers_never_panic_and_never_verify(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            signature in proptest::collection::vec(any::<u8>(), 0..80),
            timestamp in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let event = UnverifiedEvent {
                body: Bytes::from(body),
                signature: Some(Bytes::from(signature)),
                timestamp: Some(Bytes::from(timestamp)),
            };
            prop_assert!(verifier(SECRET, SignatureScheme::Auto).verify(event, NOW).is_err());
        }
    }
}
