use crypto_box::aead::OsRng;
use crypto_box::aead::rand_core::{CryptoRng, RngCore};
use proptest::prelude::*;

use super::*;

/// An "RNG" replaying fixed bytes, to reproduce an envelope exactly.
struct ScriptedRng {
    bytes: Vec<u8>,
    at: usize,
}

impl RngCore for ScriptedRng {
    fn next_u32(&mut self) -> u32 {
        let mut word = [0u8; 4];
        self.fill_bytes(&mut word);
        u32::from_le_bytes(word)
    }
    fn next_u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        self.fill_bytes(&mut word);
        u64::from_le_bytes(word)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let end = self.at + dest.len();
        dest.copy_from_slice(&self.bytes[self.at..end]);
        self.at = end;
    }
    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> Result<(), crypto_box::aead::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for ScriptedRng {}

fn counting(len: usize, start: u8) -> Vec<u8> {
    (0..len).map(|i| start.wrapping_add(i as u8)).collect()
}

/// Produced by tweetnacl 1.0.3 (`nacl.box`), the original's library:
/// recipient secret 01..20, sender secret 40..5f, nonce 80..97.
const TWEETNACL_ENVELOPE: &str = r#"{"cipherText":"PTXNBHuMsIUL9ys73b7KkqtKN6DP+uPFPJgfejpMSm1p7Ep/eJFXrldoVVFn2BdD57YNr1cPp6spzlAdRQ==","nonce":"gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaX","publicKey":"eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo="}"#;
const TWEETNACL_MESSAGE: &[u8] = br#"hypergate tweetnacl vector: {"relayKey":"ab"}"#;

fn tweetnacl_recipient() -> SecretKey {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&counting(32, 1));
    SecretKey::from_bytes(bytes)
}

#[test]
fn opens_an_envelope_sealed_by_tweetnacl() {
    let envelope = SealedEnvelope::from_json(TWEETNACL_ENVELOPE.as_bytes()).unwrap();
    let plaintext = open_with(&tweetnacl_recipient(), &envelope).unwrap();
    assert_eq!(plaintext.as_slice(), TWEETNACL_MESSAGE);
}

#[test]
fn seals_byte_for_byte_what_tweetnacl_seals() {
    // seal_to draws the ephemeral secret, then the nonce.
    let mut script = counting(32, 0x40);
    script.extend(counting(24, 0x80));
    let mut rng = ScriptedRng {
        bytes: script,
        at: 0,
    };
    let recipient = tweetnacl_recipient().public_key();
    let envelope = seal_to(&recipient, TWEETNACL_MESSAGE, &mut rng).unwrap();
    assert_eq!(envelope.to_json(), TWEETNACL_ENVELOPE);
    assert_eq!(
        serde_json::to_string(&envelope).unwrap(),
        TWEETNACL_ENVELOPE
    );
}

#[test]
fn deposit_round_trips_through_json_with_a_fresh_sender_each_time() {
    let escrow = SecretKey::generate(&mut OsRng);
    let first = seal_to(&escrow.public_key(), b"package", &mut OsRng).unwrap();
    let second = seal_to(&escrow.public_key(), b"package", &mut OsRng).unwrap();
    assert_ne!(first.sender_public_key(), second.sender_public_key());
    assert_ne!(first.nonce(), second.nonce());
    let parsed = SealedEnvelope::from_json(first.to_json().as_bytes()).unwrap();
    assert_eq!(parsed, first);
    assert_eq!(open_with(&escrow, &parsed).unwrap().as_slice(), b"package");
}

#[test]
fn lease_envelope_names_the_escrow_and_opens_only_with_the_session_key() {
    let escrow = SecretKey::generate(&mut OsRng);
    let session = SecretKey::generate(&mut OsRng);
    let envelope = seal_lease(&escrow, &session.public_key(), b"lease", &mut OsRng).unwrap();
    assert_eq!(envelope.sender_public_key(), escrow.public_key());
    let opened = open_lease(&session, &escrow.public_key(), &envelope).unwrap();
    assert_eq!(opened.as_slice(), b"lease");
    let stranger = SecretKey::generate(&mut OsRng);
    assert_eq!(
        open_lease(&stranger, &escrow.public_key(), &envelope),
        Err(SealError::AuthenticationFailed)
    );
}

#[test]
fn lease_from_another_sender_is_refused_even_if_it_authenticates() {
    let impostor = SecretKey::generate(&mut OsRng);
    let escrow = SecretKey::generate(&mut OsRng);
    let session = SecretKey::generate(&mut OsRng);
    let envelope = seal_lease(&impostor, &session.public_key(), b"lease", &mut OsRng).unwrap();
    // It is a valid box for the session key...
    assert!(open_with(&session, &envelope).is_ok());
    // ...but not from the escrow.
    assert_eq!(
        open_lease(&session, &escrow.public_key(), &envelope),
        Err(SealError::UnexpectedSender)
    );
}

#[test]
fn tampered_ciphertext_nonce_or_sender_fails_authentication() {
    let escrow = SecretKey::generate(&mut OsRng);
    let envelope = seal_to(&escrow.public_key(), b"package", &mut OsRng).unwrap();
    let mut flipped = envelope.clone();
    flipped.cipher_text[20] ^= 1;
    assert_eq!(
        open_with(&escrow, &flipped),
        Err(SealError::AuthenticationFailed)
    );
    let mut flipped = envelope.clone();
    flipped.nonce[0] ^= 1;
    assert_eq!(
        open_with(&escrow, &flipped),
        Err(SealError::AuthenticationFailed)
    );
    let mut flipped = envelope;
    flipped.public_key[0] ^= 1;
    assert_eq!(
        open_with(&escrow, &flipped),
        Err(SealError::AuthenticationFailed)
    );
}

fn envelope_json(cipher_text: &str, nonce: &str, public_key: &str) -> String {
    format!(r#"{{"cipherText":"{cipher_text}","nonce":"{nonce}","publicKey":"{public_key}"}}"#)
}

#[test]
fn decoding_errors_are_distinct() {
    let ct = BASE64.encode([7u8; 40]);
    let nonce = BASE64.encode([1u8; 24]);
    let key = BASE64.encode([2u8; 32]);
    assert!(SealedEnvelope::from_json(envelope_json(&ct, &nonce, &key).as_bytes()).is_ok());

    let decode = |json: String| SealedEnvelope::from_json(json.as_bytes()).unwrap_err();
    assert!(matches!(
        decode("{\"cipherText\":".into()),
        SealError::MalformedJson { .. }
    ));
    assert!(matches!(
        decode(format!("{}x", envelope_json(&ct, &nonce, &key))),
        SealError::MalformedJson { .. }
    ));
    // Unknown and missing fields.
    assert!(matches!(
        decode(format!(
            r#"{{"cipherText":"{ct}","nonce":"{nonce}","publicKey":"{key}","extra":1}}"#
        )),
        SealError::MalformedJson { .. }
    ));
    assert!(matches!(
        decode(format!(r#"{{"cipherText":"{ct}","nonce":"{nonce}"}}"#)),
        SealError::MalformedJson { .. }
    ));
    assert_eq!(
        decode(envelope_json("!!!!", &nonce, &key)),
        SealError::BadBase64 {
            field: "cipherText"
        }
    );
    // Hex where base64 is expected (the original's lenient decoder misread this).
    assert_eq!(
        decode(envelope_json(&ct, &nonce, &hex::encode([2u8; 32]))),
        SealError::WrongLength {
            field: "publicKey",
            expected: 32,
            actual: base64::decoded_len_estimate(64),
        }
    );
    // Unpadded base64 is not canonical.
    assert_eq!(
        decode(envelope_json(&ct, &nonce, key.trim_end_matches('='))),
        SealError::BadBase64 { field: "publicKey" }
    );
    // Non-zero trailing bits are not canonical either ("AQ==" is the 0x01 byte, "AR==" is not).
    assert_eq!(
        decode(envelope_json("AAAAAAAAAAAAAAAAAAAAAR==", &nonce, &key)),
        SealError::BadBase64 {
            field: "cipherText"
        }
    );
    assert_eq!(
        decode(envelope_json(&ct, &BASE64.encode([1u8; 23]), &key)),
        SealError::WrongLength {
            field: "nonce",
            expected: 24,
            actual: 23
        }
    );
    assert_eq!(
        decode(envelope_json(&ct, &nonce, &BASE64.encode([2u8; 31]))),
        SealError::WrongLength {
            field: "publicKey",
            expected: 32,
            actual: 31
        }
    );
    assert_eq!(
        decode(envelope_json(&BASE64.encode([7u8; 15]), &nonce, &key)),
        SealError::CipherTextTooShort { actual: 15 }
    );
    let huge = BASE64.encode(vec![0u8; MAX_PLAINTEXT_BYTES + TAG_BYTES + 3]);
    assert!(matches!(
        decode(envelope_json(&huge, &nonce, &key)),
        SealError::TooLarge { .. }
    ));
}

#[test]
fn oversized_plaintext_is_refused_before_sealing() {
    let escrow = SecretKey::generate(&mut OsRng);
    let big = vec![0u8; MAX_PLAINTEXT_BYTES + 1];
    assert!(matches!(
        seal_to(&escrow.public_key(), &big, &mut OsRng),
        Err(SealError::TooLarge { .. })
    ));
    let largest = vec![0u8; MAX_PLAINTEXT_BYTES];
    let envelope = seal_to(&escrow.public_key(), &largest, &mut OsRng).unwrap();
    let parsed = SealedEnvelope::from_json(envelope.to_json().as_bytes()).unwrap();
    assert_eq!(
        open_with(&escrow, &parsed).unwrap().len(),
        MAX_PLAINTEXT_BYTES
    );
}

#[test]
fn debug_shows_no_ciphertext_or_key_bytes() {
    let escrow = SecretKey::generate(&mut OsRng);
    let envelope = seal_to(&escrow.public_key(), b"package", &mut OsRng).unwrap();
    let debug = format!("{envelope:?}");
    assert!(
        !debug.contains(&BASE64.encode(envelope.cipher_text())),
        "{debug}"
    );
    assert!(debug.contains("cipher_text_len"));
}

proptest! {
    #[test]
    fn from_json_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SealedEnvelope::from_json(&bytes);
    }

    #[test]
    fn from_json_never_panics_on_envelope_shaped_input(
        cipher_text in "[A-Za-z0-9+/=]{0,80}",
        nonce in "[A-Za-z0-9+/=]{0,40}",
        public_key in "[A-Za-z0-9+/=]{0,50}",
    ) {
        let json = envelope_json(&cipher_text, &nonce, &public_key);
        if let Ok(envelope) = SealedEnvelope::from_json(json.as_bytes()) {
            // Whatever decodes re-encodes to the same canonical JSON.
            prop_assert_eq!(envelope.to_json(), json);
        }
    }
}
