//! `X-PolyAI-Signature` verification over the raw body, before anything parses it.
//!
//! An [`UnverifiedEvent`] becomes a [`VerifiedEvent`] only through [`Verifier::verify`], so code
//! that reads an event's content cannot be handed bytes nobody checked.

use std::{fmt, time::Duration};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which signed message the receiver checks. The docs disagree (see design §7), hence `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Accept either form; metrics and logs record which one matched so an operator can pin it.
    Auto,
    /// `HMAC(secret, "{X-PolyAI-Timestamp}.{body}")` with a freshness check (the Webhooks reference).
    Timestamped,
    /// `HMAC(secret, body)` (the API quickstart).
    Body,
}

/// The form that actually matched a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedScheme {
    Timestamped,
    Body,
}

impl MatchedScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timestamped => "timestamped",
            Self::Body => "body",
        }
    }
}

/// Which configured secret matched, so an operator can tell when a rotation is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSlot {
    Current,
    Previous,
}

impl SecretSlot {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }
}

/// Why a request was refused. The variants are reasons for metrics and logs; the response is a bare 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no X-PolyAI-Signature header")]
    MissingSignature,
    #[error("X-PolyAI-Signature is not 64 hex digits")]
    MalformedSignature,
    #[error("no X-PolyAI-Timestamp header, which the timestamped scheme needs")]
    MissingTimestamp,
    #[error("X-PolyAI-Timestamp is not a Unix time in seconds")]
    MalformedTimestamp,
    #[error("X-PolyAI-Timestamp is outside the allowed tolerance")]
    StaleTimestamp,
    #[error("signature does not match")]
    Mismatch,
}

impl VerifyError {
    /// Stable label for the `reason` of the verify-failure metric.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::MissingTimestamp => "missing_timestamp",
            Self::MalformedTimestamp => "malformed_timestamp",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Mismatch => "mismatch",
        }
    }
}

/// A request as it arrived: raw bytes and the two headers that sign it.
pub struct UnverifiedEvent {
    pub body: Bytes,
    pub signature: Option<Bytes>,
    pub timestamp: Option<Bytes>,
}

/// A request whose signature matched one of the configured secrets. Its fields are private:
/// only [`Verifier::verify`] makes one (and, for the fuzz target, [`VerifiedEvent::trusted`]).
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    body: Bytes,
    /// The `X-PolyAI-Timestamp` value when the signature covered it (kept as text: it is forwarded
    /// as a header). Under the body scheme the header is unsigned, so it is `None`: anyone could
    /// have written it, and forwarding it would present it as verified.
    timestamp: Option<String>,
    scheme: MatchedScheme,
    secret: SecretSlot,
}

impl VerifiedEvent {
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn into_body(self) -> Bytes {
        self.body
    }

    pub fn timestamp(&self) -> Option<&str> {
        self.timestamp.as_deref()
    }

    pub fn scheme(&self) -> MatchedScheme {
        self.scheme
    }

    pub fn secret(&self) -> SecretSlot {
        self.secret
    }

    /// A body taken as verified without a signature: for tests and the fuzz target only, which
    /// reach the parser directly.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn trusted(body: Bytes) -> Self {
        Self { body, timestamp: None, scheme: MatchedScheme::Body, secret: SecretSlot::Current }
    }
}

/// Verifies signatures with HMAC states keyed once at start-up, so each request only hashes its body.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<(SecretSlot, HmacSha256)>,
    scheme: SignatureScheme,
    tolerance: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots: Vec<_> = self.keys.iter().map(|(slot, _)| slot.as_str()).collect();
        f.debug_struct("Verifier")
            .field("secrets", &slots)
            .field("scheme", &self.scheme)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    pub fn new(secrets: &[(SecretSlot, SecretString)], scheme: SignatureScheme, tolerance: Duration) -> Self {
        let keys = secrets
            .iter()
            .map(|(slot, secret)| {
                let mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
                    .expect("HMAC accepts keys of any length");
                (*slot, mac)
            })
            .collect();
        Self { keys, scheme, tolerance }
    }

    /// Checks `event` against every secret and the allowed schemes, `now` in Unix seconds.
    pub fn verify(&self, event: UnverifiedEvent, now: i64) -> Result<VerifiedEvent, VerifyError> {
        let signature = decode_signature(event.signature.as_deref().ok_or(VerifyError::MissingSignature)?)?;
        let timestamp = event.timestamp.as_deref();
        let (scheme, secret) = match self.scheme {
            SignatureScheme::Timestamped => {
                let raw = timestamp.ok_or(VerifyError::MissingTimestamp)?;
                self.check_fresh(parse_timestamp(raw)?, now)?;
                let slot = self.match_timestamped(raw, &event.body, &signature).ok_or(VerifyError::Mismatch)?;
                (MatchedScheme::Timestamped, slot)
            }
            SignatureScheme::Body => {
                (MatchedScheme::Body, self.match_body(&event.body, &signature).ok_or(VerifyError::Mismatch)?)
            }
            SignatureScheme::Auto => self.match_auto(timestamp, &event.body, &signature, now)?,
        };
        Ok(VerifiedEvent {
            body: event.body,
            timestamp: timestamp
                .filter(|_| scheme == MatchedScheme::Timestamped)
                .and_then(|t| std::str::from_utf8(t).ok())
                .map(str::to_owned),
            scheme,
            secret,
        })
    }

    fn match_auto(
        &self,
        timestamp: Option<&[u8]>,
        body: &[u8],
        signature: &[u8; 32],
        now: i64,
    ) -> Result<(MatchedScheme, SecretSlot), VerifyError> {
        // The timestamped form binds the timestamp, so its freshness is enforced once it matches.
        // The body form does not: its timestamp header is unsigned and proves nothing either way.
        if let Some(raw) = timestamp {
            if let Some(slot) = self.match_timestamped(raw, body, signature) {
                self.check_fresh(parse_timestamp(raw)?, now)?;
                return Ok((MatchedScheme::Timestamped, slot));
            }
        }
        self.match_body(body, signature).map(|slot| (MatchedScheme::Body, slot)).ok_or(VerifyError::Mismatch)
    }

    fn check_fresh(&self, sent: i64, now: i64) -> Result<(), VerifyError> {
        let skew = now.abs_diff(sent);
        if skew > self.tolerance.as_secs() {
            return Err(VerifyError::StaleTimestamp);
        }
        Ok(())
    }

    fn match_timestamped(&self, timestamp: &[u8], body: &[u8], signature: &[u8; 32]) -> Option<SecretSlot> {
        self.first_match(signature, |mac| {
            mac.update(timestamp);
            mac.update(b".");
            mac.update(body);
        })
    }

    /// Never for a body that reads as the message a timestamped delivery signs,
    /// `{timestamp}.{body}`: sent as the body with that delivery's signature it would match here,
    /// a replay taken for a verified event whatever its age. No event reads so (it is JSON).
    fn match_body(&self, body: &[u8], signature: &[u8; 32]) -> Option<SecretSlot> {
        let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && body.get(digits) == Some(&b'.') {
            return None;
        }
        self.first_match(signature, |mac| mac.update(body))
    }

    /// Tries each secret; `verify_slice` compares in constant time.
    fn first_match(&self, signature: &[u8; 32], feed: impl Fn(&mut HmacSha256)) -> Option<SecretSlot> {
        self.keys.iter().find_map(|(slot, keyed)| {
            let mut mac = keyed.clone();
            feed(&mut mac);
            mac.verify_slice(signature).ok().map(|()| *slot)
        })
    }
}

/// Lowercase or uppercase hex of exactly 32 bytes; anything else is malformed.
fn decode_signature(raw: &[u8]) -> Result<[u8; 32], VerifyError> {
    let mut out = [0u8; 32];
    if raw.len() != 64 {
        return Err(VerifyError::MalformedSignature);
    }
    hex::decode_to_slice(raw, &mut out).map_err(|_| VerifyError::MalformedSignature)?;
    Ok(out)
}

fn parse_timestamp(raw: &[u8]) -> Result<i64, VerifyError> {
    let text = std::str::from_utf8(raw).map_err(|_| VerifyError::MalformedTimestamp)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::MalformedTimestamp);
    }
    text.parse().map_err(|_| VerifyError::MalformedTimestamp)
}

/// Signs the way PolyAI does: for the sender, the mock API and tests.
pub fn sign(secret: &[u8], timestamp: Option<&str>, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
#[path = "signature_tests.rs"]
mod tests;
