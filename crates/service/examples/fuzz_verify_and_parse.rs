//! The untrusted path of a webhook: headers and raw body through verification, and any body
//! through event parsing. Must never panic, whatever the bytes.

#![no_main]

use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use polyai_relay::{
    event::Event,
    signature::{sign, SecretSlot, SignatureScheme, UnverifiedEvent, VerifiedEvent, Verifier},
};
use secrecy::SecretString;

const SECRET: &str = "whsec_fuzz";
const NOW: i64 = 1_795_000_000;

fuzz_target!(|data: &[u8]| {
    // Layout: [signature length][timestamp length][signature][timestamp][body]
    let (sig_len, ts_len) = match data {
        [a, b, ..] => (*a as usize % 80, *b as usize % 24),
        _ => return,
    };
    let rest = &data[2..];
    let sig_len = sig_len.min(rest.len());
    let (signature, rest) = rest.split_at(sig_len);
    let ts_len = ts_len.min(rest.len());
    let (timestamp, body) = rest.split_at(ts_len);

    let verifier = Verifier::new(
        &[(SecretSlot::Current, SecretString::from(SECRET))],
        SignatureScheme::Auto,
        Duration::from_secs(300),
    );
    let unverified = UnverifiedEvent {
        body: Bytes::copy_from_slice(body),
        signature: Some(Bytes::copy_from_slice(signature)),
        timestamp: Some(Bytes::copy_from_slice(timestamp)),
    };
    let _ = verifier.verify(unverified, NOW);

    // The same body, correctly signed, must verify and then parse (or be refused) without panicking.
    // Timestamped: the body scheme refuses a body shaped like a timestamped message (`1.x`).
    let now = NOW.to_string();
    let good = sign(SECRET.as_bytes(), Some(&now), body);
    let signed = UnverifiedEvent {
        body: Bytes::copy_from_slice(body),
        signature: Some(good.into()),
        timestamp: Some(Bytes::from(now.into_bytes())),
    };
    let verified = verifier.verify(signed, NOW).expect("a correct signature verifies");
    let _ = Event::parse(verified, std::str::from_utf8(timestamp).ok());

    let _ = Event::parse(VerifiedEvent::trusted(Bytes::copy_from_slice(body)), None);
});
