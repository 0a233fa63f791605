//! Signatures of webhooks, both ways: inbound payment webhooks are verified with them
//! (`http::payment_webhooks`), outbound deliveries are signed with them
//! (`jobs::webhook_delivery`).
//!
//! Header `Till-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over `"<t>.<raw
//! body>"` with the shared secret; `t` must be within the tolerance of now (replays of
//! old deliveries fail); several `v1` values (a secret rotation) pass when any matches.

use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "till-signature";
/// Longest signature header accepted, in bytes: a timestamp and [`MAX_SIGNATURES`]
/// signatures fit in a third of it.
pub const MAX_SIGNATURE_HEADER_BYTES: usize = 1024;
/// Most `v1` signatures one header may carry (two cover a secret rotation).
pub const MAX_SIGNATURES: usize = 5;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was refused (the message is sent to the caller).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is larger than [`MAX_SIGNATURE_HEADER_BYTES`].
    #[error("the Till-Signature header is longer than {MAX_SIGNATURE_HEADER_BYTES} bytes")]
    HeaderTooLong,
    /// More than [`MAX_SIGNATURES`] well-formed `v1` entries.
    #[error("the Till-Signature header has more than {MAX_SIGNATURES} v1 signatures")]
    TooManySignatures,
    /// No `t=` entry, or not a number.
    #[error("the signature has no timestamp")]
    NoTimestamp,
    /// `t` is too far from now.
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    /// No `v1` entry of 64 hex characters.
    #[error("the signature has no v1 entry of 64 hex characters")]
    NoSignature,
    /// No `v1` entry matches the body.
    #[error("the signature does not match")]
    Mismatch,
    /// The secret cannot key an HMAC (never for a configured secret).
    #[error("no webhook secret")]
    NoSecret,
}

/// A parsed `Till-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`: unix seconds.
    pub timestamp: i64,
    /// The well-formed `v1` signatures (at most [`MAX_SIGNATURES`]); entries of other
    /// schemes, and `v1` entries that are not 64 hex characters, are ignored.
    pub signatures: Vec<[u8; 32]>,
}

impl SignatureHeader {
    /// Parses `t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, refusing oversized headers and
    /// too many signatures before anything is computed.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        if header.len() > MAX_SIGNATURE_HEADER_BYTES {
            return Err(SignatureError::HeaderTooLong);
        }
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
                Some(("v1", v)) => {
                    let mut sig = [0u8; 32];
                    if hex::decode_to_slice(v, &mut sig).is_ok() {
                        if signatures.len() == MAX_SIGNATURES {
                            return Err(SignatureError::TooManySignatures);
                        }
                        signatures.push(sig);
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            timestamp: timestamp.ok_or(SignatureError::NoTimestamp)?,
            signatures,
        })
    }

    /// Checks the header against the expected MAC, which `expected` computes from the
    /// timestamp: once, and only for a fresh header with a signature to compare.
    /// Comparisons are constant-time.
    pub fn check(
        &self,
        now: i64,
        tolerance_s: i64,
        expected: impl FnOnce(i64) -> Option<CtOutput<HmacSha256>>,
    ) -> Result<(), SignatureError> {
        if now.abs_diff(self.timestamp) > tolerance_s.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        if self.signatures.is_empty() {
            return Err(SignatureError::NoSignature);
        }
        let expected = expected(self.timestamp).ok_or(SignatureError::NoSecret)?;
        // Every entry is compared, so the time taken does not tell which one matched.
        let matched = self.signatures.iter().fold(false, |matched, sig| {
            let candidate = CtOutput::<HmacSha256>::new((*sig).into());
            (candidate == expected) | matched
        });
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Computes the `v1` signature of a payload (also used by tests and the docs' recipe).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Checks a `t=..,v1=..` header against the body: the header's size and signature
/// count are bounded, the MAC is computed once, and compared in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    SignatureHeader::parse(header)?.check(now, tolerance_s, |t| {
        mac(secret, t, body).map(Mac::finalize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_bad_ones_do_not() {
        let secret = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(secret, 1000, body);
        let header = format!("t=1000,v1={sig}");
        assert!(verify(secret, &header, body, 1010, 300).is_ok());
        assert!(verify(secret, &header, body, 2000, 300).is_err(), "too old");
        assert!(verify(secret, &header, br#"{"id":"evt_2"}"#, 1010, 300).is_err());
        assert!(verify(b"other", &header, body, 1010, 300).is_err());
        assert!(verify(secret, &format!("v1={sig}"), body, 1010, 300).is_err());
        // Several v1 values (secret rotation): any match passes.
        assert!(verify(secret, &format!("t=1000,v1=00,v1={sig}"), body, 1010, 300).is_ok());
    }

    /// A header stuffed with signatures is refused whole: before, each `v1` entry cost
    /// an HMAC over the whole body, and one request held a core for seconds.
    #[test]
    fn stuffed_signature_headers_are_refused() {
        let secret = b"whsec_test_0123456789";
        let body = br#"{"id":"evt_1"}"#;
        let wrong = "ab".repeat(32);
        let huge = format!("t=1000{}", format!(",v1={wrong}").repeat(10_000));
        let refused = verify(secret, &huge, body, 1010, 300).map_err(|e| e.to_string());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("longer than")),
            "{refused:?}"
        );
        // Six well-formed entries fit in the size bound but are more than accepted.
        let six = format!("t=1000{}", format!(",v1={wrong}").repeat(6));
        let refused = verify(secret, &six, body, 1010, 300).map_err(|e| e.to_string());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("more than 5")),
            "{refused:?}"
        );
    }

    /// The MAC over the body is computed at most once per delivery, and not at all for
    /// a header refused by its size, signature count or timestamp.
    #[test]
    fn the_mac_is_computed_once_at_most() {
        let secret = b"whsec_test_0123456789";
        let body = br#"{"id":"evt_1"}"#;
        let computed = std::cell::Cell::new(0);
        let check = |header: &str, now: i64| {
            SignatureHeader::parse(header).and_then(|h| {
                h.check(now, 300, |t| {
                    computed.set(computed.get() + 1);
                    mac(secret, t, body).map(Mac::finalize)
                })
            })
        };
        let wrong = format!(",v1={}", "ab".repeat(32));
        let right = format!(",v1={}", sign(secret, 1000, body));
        let cases = [
            (
                format!("t=1000{}", wrong.repeat(200)),
                1010,
                SignatureError::HeaderTooLong,
                0,
            ),
            (
                format!("t=1000{}", wrong.repeat(6)),
                1010,
                SignatureError::TooManySignatures,
                0,
            ),
            (
                format!("t=1000{}", wrong.repeat(5)),
                5000,
                SignatureError::Stale,
                0,
            ),
            (
                "t=1000,v1=00,v0=abc".to_owned(),
                1010,
                SignatureError::NoSignature,
                0,
            ),
            (
                format!("t=1000{}", wrong.repeat(5)),
                1010,
                SignatureError::Mismatch,
                1,
            ),
        ];
        for (header, now, error, macs) in cases {
            computed.set(0);
            assert_eq!(check(&header, now), Err(error));
            assert_eq!(computed.get(), macs, "{error}");
        }
        computed.set(0);
        let rotated = format!("t=1000{}{right}", wrong.repeat(4));
        assert_eq!(check(&rotated, 1010), Ok(()));
        assert_eq!(computed.get(), 1);
    }
}
