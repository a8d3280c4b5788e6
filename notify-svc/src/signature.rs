//! The webhook signature: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` in the
//! `X-Orderflow-Signature` header. Signing the timestamp with the body lets a receiver refuse
//! replays of an old delivery; the receiver recomputes it with the shared secret. Public so a
//! Rust receiver (and the integration tests) can verify deliveries with the same code.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The value of `X-Orderflow-Signature` for a delivery of `body` at `timestamp` (unix seconds,
/// the value of `X-Orderflow-Timestamp`).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` (the received `X-Orderflow-Signature`) signs `body` at `timestamp` with
/// `secret`. Compares in constant time.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .strip_prefix("sha256=")
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first): this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc_4231_vector() {
        // RFC 4231, test case 7 (HMAC-SHA-256): a 131-byte key of 0xaa and a text with a '.',
        // split at that '.' as timestamp and body.
        let key = [0xaa_u8; 131];
        let text = "This is a test using a larger than block-size key and a larger than \
                    block-size data. The key needs to be hashed before being used by the HMAC \
                    algorithm.";
        let (timestamp, body) = text.split_once('.').unwrap();
        assert_eq!(
            sign(&key, timestamp, body.as_bytes()),
            "sha256=9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"
        );
    }

    #[test]
    fn verifies_its_own_signatures_only() {
        let header = sign(b"s3cret", "1700000000", b"body");
        assert!(verify(b"s3cret", "1700000000", b"body", &header));
        assert!(!verify(b"other", "1700000000", b"body", &header));
        assert!(!verify(b"s3cret", "1700000001", b"body", &header));
        assert!(!verify(b"s3cret", "1700000000", b"bodY", &header));
        assert!(!verify(b"s3cret", "1700000000", b"body", "sha256=zz"));
        assert!(!verify(
            b"s3cret",
            "1700000000",
            b"body",
            header.trim_start_matches("sha256=")
        ));
    }
}
