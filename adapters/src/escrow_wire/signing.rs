//! The escrow API's request signature, shared by the escrow service (which verifies it) and
//! the escrow client (which makes it).
//!
//! Contract:
//! - A signed request carries [`CLIENT_ID_HEADER`], [`TIMESTAMP_HEADER`] (milliseconds since
//!   the epoch, decimal), [`NONCE_HEADER`] and [`SIGNATURE_HEADER`]: lowercase hex of
//!   `HMAC-SHA256(secret, "<timestamp>:<clientId>:<nonce>:<body>")` ([`signing_bytes`],
//!   [`sign`]). The body is the exact request body; an empty body (a GET) signs `{}`.
//! - [`signature_matches`] compares MACs in constant time.
//!
//! What a server accepts beyond the MAC (clock window, nonce form, replay, allow-list) is
//! the server's policy, not part of this format.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The client id header.
pub const CLIENT_ID_HEADER: &str = "x-escrow-client-id";
/// The timestamp header (milliseconds since the epoch).
pub const TIMESTAMP_HEADER: &str = "x-escrow-timestamp";
/// The nonce header (new: the original had none).
pub const NONCE_HEADER: &str = "x-escrow-nonce";
/// The signature header (lowercase hex HMAC-SHA256).
pub const SIGNATURE_HEADER: &str = "x-escrow-signature";

type HmacSha256 = Hmac<Sha256>;

/// The bytes a request's MAC covers.
#[must_use]
pub fn signing_bytes(timestamp: u64, client_id: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    let mut bytes = format!("{timestamp}:{client_id}:{nonce}:").into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The `x-escrow-signature` value for a request.
#[must_use]
pub fn sign(secret: &[u8], timestamp: u64, client_id: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = new_mac(secret);
    mac.update(&signing_bytes(timestamp, client_id, nonce, body));
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` (raw MAC bytes) is the MAC of `signed` under `secret`; constant-time.
#[must_use]
pub fn signature_matches(secret: &[u8], signed: &[u8], signature: &[u8]) -> bool {
    let mut mac = new_mac(secret);
    mac.update(signed);
    mac.verify_slice(signature).is_ok()
}

fn new_mac(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length; the error type exists only for the trait.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_string_is_timestamp_client_nonce_body_and_get_signs_empty_object() {
        assert_eq!(
            signing_bytes(12, "gw", "n0nce-0000000000", b"{\"a\":1}"),
            b"12:gw:n0nce-0000000000:{\"a\":1}".to_vec()
        );
        assert_eq!(
            signing_bytes(12, "gw", "n0nce-0000000000", b""),
            b"12:gw:n0nce-0000000000:{}".to_vec()
        );
        // A known HMAC-SHA256 vector (RFC 4231 test case 2) through `sign`'s primitive.
        let mut mac = new_mac(b"Jefe");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_signature_matches_only_its_own_secret_and_bytes() {
        let signature = sign(b"secret one", 12, "gw", "n0nce-0000000000", b"{}");
        let raw = hex::decode(signature).unwrap();
        let signed = signing_bytes(12, "gw", "n0nce-0000000000", b"");
        assert!(signature_matches(b"secret one", &signed, &raw));
        assert!(!signature_matches(b"secret two", &signed, &raw));
        let other = signing_bytes(13, "gw", "n0nce-0000000000", b"");
        assert!(!signature_matches(b"secret one", &other, &raw));
    }
}
