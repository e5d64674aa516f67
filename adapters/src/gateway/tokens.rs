//! Client tokens for the gateway's write routes (`PUT /drive`, join and auth callbacks), in
//! the original's format: `base64url(stableStringify(payload)) + "." + hex(HMAC-SHA256(secret,
//! thatJSON))`, payload `{relayKey, pubkey?, scope: "relay-access", expiresAt (ms), sequence}`.
//!
//! Contract:
//! - Operators issue tokens (`POST /api/relay-tokens/issue`); the secret never leaves the
//!   gateway (the original served it at a well-known URL).
//! - A token is accepted only with a valid MAC (constant-time comparison), for the relay it
//!   names, with scope `relay-access`, before `expiresAt`. Each failure has its own reason.

use crate::escrow_wire::stable_stringify;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hypergate_core::ids::RelayKey;
use serde_json::{Value, json};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The one scope tokens carry.
const SCOPE: &str = "relay-access";

/// Why a token was refused (the HTTP answer is 403 `invalid-token` with this detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TokenError {
    /// Not `<payload>.<mac>`, or the payload is not base64url JSON.
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match.
    #[error("bad signature")]
    BadSignature,
    /// Issued for another relay.
    #[error("token is for another relay")]
    WrongRelay,
    /// Not a relay-access token.
    #[error("wrong scope")]
    WrongScope,
    /// Past `expiresAt`.
    #[error("token expired")]
    Expired,
}

/// Issues and checks tokens with one secret.
pub(crate) struct TokenKeys {
    secret: Zeroizing<Vec<u8>>,
}

impl TokenKeys {
    pub(crate) fn new(secret: Zeroizing<Vec<u8>>) -> TokenKeys {
        TokenKeys { secret }
    }

    fn mac(&self, text: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(text.as_bytes());
        mac
    }

    /// A token for `relay` valid until `expires_at_ms`.
    pub(crate) fn issue(
        &self,
        relay: RelayKey,
        pubkey: Option<&str>,
        expires_at_ms: u64,
        sequence: u64,
    ) -> String {
        let mut payload = json!({
            "relayKey": relay.to_hex(),
            "scope": SCOPE,
            "expiresAt": expires_at_ms,
            "sequence": sequence,
        });
        if let Some(pubkey) = pubkey {
            payload["pubkey"] = Value::String(pubkey.to_owned());
        }
        let text = stable_stringify(&payload);
        let mac = hex::encode(self.mac(&text).finalize().into_bytes());
        format!(
            "{}.{mac}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.as_bytes())
        )
    }

    /// Checks `token` for `relay` at `now_ms`; the payload when it is valid.
    pub(crate) fn verify(
        &self,
        token: &str,
        relay: RelayKey,
        now_ms: u64,
    ) -> Result<Value, TokenError> {
        let (encoded, mac_hex) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| TokenError::Malformed)?;
        let text = String::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
        let mac = hex::decode(mac_hex).map_err(|_| TokenError::Malformed)?;
        self.mac(&text)
            .verify_slice(&mac)
            .map_err(|_| TokenError::BadSignature)?;
        let payload: Value = serde_json::from_str(&text).map_err(|_| TokenError::Malformed)?;
        if payload["relayKey"].as_str() != Some(relay.to_hex().as_str()) {
            return Err(TokenError::WrongRelay);
        }
        if payload["scope"].as_str() != Some(SCOPE) {
            return Err(TokenError::WrongScope);
        }
        match payload["expiresAt"].as_u64() {
            Some(expires) if expires > now_ms => Ok(payload),
            Some(_) => Err(TokenError::Expired),
            None => Err(TokenError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(Zeroizing::new(b"token secret".to_vec()))
    }

    #[test]
    fn an_issued_token_verifies_for_its_relay_until_it_expires() {
        let relay = RelayKey([1; 32]);
        let token = keys().issue(relay, Some("ab"), 2_000, 1);
        assert!(keys().verify(&token, relay, 1_999).is_ok());
        assert_eq!(
            keys().verify(&token, relay, 2_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys().verify(&token, RelayKey([2; 32]), 1_000),
            Err(TokenError::WrongRelay)
        );
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let relay = RelayKey([1; 32]);
        let token = keys().issue(relay, None, 2_000, 1);
        let (payload, mac) = token.split_once('.').unwrap();
        let mut flipped = mac.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let tampered = format!("{payload}.{}", String::from_utf8(flipped).unwrap());
        assert_eq!(
            keys().verify(&tampered, relay, 1_000),
            Err(TokenError::BadSignature)
        );
        let other = TokenKeys::new(Zeroizing::new(b"another".to_vec()));
        assert_eq!(
            other.verify(&token, relay, 1_000),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", ".", "abc", "not-base64!.00", "e30.zz"] {
            assert!(keys().verify(garbage, relay, 1_000).is_err(), "{garbage}");
        }
    }
}
