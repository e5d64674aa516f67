//! Nostr events: their JSON form, their id, their signature and their replacement rules.
//!
//! Contract:
//! - [`Event::parse_json`] checks shape only (field types, hex lengths, integer ranges). An
//!   event is trustworthy only after [`Event::verify`] has checked that its id is the SHA-256 of
//!   its NIP-01 canonical serialisation and that its signature is a valid BIP-340 signature of
//!   that id by its `pubkey`. Every gateway write path calls `verify`.
//! - [`Event::compute_id`] hashes `[0,<pubkey>,<created_at>,<kind>,<tags>,<content>]` as compact
//!   JSON that escapes only `"`, `\` and control characters (`\n \r \t \b \f` in short form, the
//!   rest as `\u00xx`) and writes `/` and non-ASCII as they are. serde_json's compact writer does
//!   exactly this; the tests pin it character by character and against the `nostr` crate.
//! - Rejections render as NIP-01 `OK` messages through [`EventError::to_ok_message`].

use std::fmt;

use secp256k1::{Secp256k1, VerifyOnly, XOnlyPublicKey, schnorr};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{EventId, Kind, Limits, MachineReadablePrefix, PublicKey, Signature};

/// Why an event was rejected. Every variant renders as an `invalid:` `OK` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    // The sender is at fault: the text is not a NIP-01 event.
    /// The JSON is not an event object (missing field, wrong type, bad hex, out-of-range kind).
    #[error("malformed event: {0}")]
    Malformed(String),

    // The author is at fault (or someone tampered with the event): integrity checks failed.
    /// The `id` is not the hash of the event's canonical serialisation.
    #[error("event id does not match")]
    IdMismatch,
    /// The `pubkey` is not the x coordinate of a secp256k1 point, so nothing can verify under it.
    #[error("pubkey is not a valid public key")]
    InvalidPublicKey,
    /// The `sig` is not a valid BIP-340 signature of the `id` by the `pubkey`.
    #[error("bad signature")]
    BadSignature,

    // A local limit is exceeded: the event is valid but larger than this gateway accepts.
    /// More tags than [`Limits::max_tags`].
    #[error("too many tags ({count} > {max})")]
    TooManyTags {
        /// Tags on the event.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Longer `content` than [`Limits::max_content_bytes`].
    #[error("content too long ({len} bytes > {max})")]
    ContentTooLarge {
        /// Bytes of content.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl EventError {
    /// The machine-readable prefix of the rejection; `invalid` for every current variant.
    #[must_use]
    pub fn prefix(&self) -> MachineReadablePrefix {
        MachineReadablePrefix::Invalid
    }

    /// The message of the `["OK", <id>, false, <message>]` reply, e.g.
    /// `"invalid: event id does not match"`.
    #[must_use]
    pub fn to_ok_message(&self) -> String {
        self.prefix().message(&self.to_string())
    }
}

/// One tag: a non-validated list of strings whose first element names it (`["e", <id>, …]`).
///
/// NIP-01 gives tags no fixed shape, so any list of strings is accepted, even an empty one; it is
/// part of the signed data and must be kept byte for byte.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tag(pub Vec<String>);

impl Tag {
    /// A tag from its elements.
    pub fn new<I, S>(elements: I) -> Tag
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Tag(elements.into_iter().map(Into::into).collect())
    }

    /// The first element, e.g. `"e"`, `"p"`, `"d"`.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// The second element, the tag's main value.
    #[must_use]
    pub fn value(&self) -> Option<&str> {
        self.0.get(1).map(String::as_str)
    }

    /// All elements.
    #[must_use]
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// A NIP-01 event. Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// SHA-256 of the canonical serialisation; see [`Event::compute_id`].
    pub id: EventId,
    /// The author.
    pub pubkey: PublicKey,
    /// Unix seconds claimed by the author; untrusted.
    pub created_at: u64,
    /// What the event is.
    pub kind: Kind,
    /// Tags, in order.
    pub tags: Vec<Tag>,
    /// Arbitrary text.
    pub content: String,
    /// BIP-340 signature of `id` by `pubkey`.
    pub sig: Signature,
}

/// What a replaceable or addressable event replaces: events with equal keys compete and only the
/// one that [supersedes](Event::supersedes) the others is kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplacementKey {
    /// The author.
    pub pubkey: PublicKey,
    /// The kind.
    pub kind: Kind,
    /// `None` for replaceable kinds; for addressable kinds the value of the first `d` tag, or
    /// `""` when there is none (NIP-01).
    pub identifier: Option<String>,
}

impl Event {
    /// Parses an event object. Checks shape only: see [`Event::verify`].
    pub fn parse_json(text: &str) -> Result<Event, EventError> {
        serde_json::from_str(text).map_err(|error| EventError::Malformed(super::detail(&error)))
    }

    /// The event as compact NIP-01 JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }

    /// The exact bytes the id is the hash of: `[0,<pubkey>,<created_at>,<kind>,<tags>,<content>]`.
    #[must_use]
    pub fn canonical_json(&self) -> String {
        super::to_json(&self.canonical_fields())
    }

    /// The id this event must have: SHA-256 of [`Event::canonical_json`].
    #[must_use]
    pub fn compute_id(&self) -> EventId {
        let mut hasher = Sha256::new();
        // Streamed into the hasher: no copy of a content that may be 64 KiB.
        super::write_json(&mut hasher, &self.canonical_fields());
        EventId(hasher.finalize().into())
    }

    fn canonical_fields(&self) -> impl Serialize + '_ {
        (
            0u8,
            &self.pubkey,
            self.created_at,
            self.kind,
            &self.tags,
            &self.content,
        )
    }

    /// Checks that `id` is the hash of the event; cheaper than a signature check.
    pub fn verify_id(&self) -> Result<(), EventError> {
        if self.compute_id() == self.id {
            Ok(())
        } else {
            Err(EventError::IdMismatch)
        }
    }

    /// Checks the id, then the signature. Only a verified event may be stored or forwarded as
    /// written by its `pubkey`.
    pub fn verify(&self, verifier: &SignatureVerifier) -> Result<(), EventError> {
        self.verify_id()?;
        verifier.verify_schnorr(&self.pubkey, &self.id, &self.sig)
    }

    /// Checks the size limits a gateway applies to events it accepts.
    pub fn check_limits(&self, limits: &Limits) -> Result<(), EventError> {
        if self.tags.len() > limits.max_tags {
            return Err(EventError::TooManyTags {
                count: self.tags.len(),
                max: limits.max_tags,
            });
        }
        if self.content.len() > limits.max_content_bytes {
            return Err(EventError::ContentTooLarge {
                len: self.content.len(),
                max: limits.max_content_bytes,
            });
        }
        Ok(())
    }

    /// The value of the first `d` tag (`""` for a bare `["d"]`), if the event has one.
    #[must_use]
    pub fn d_tag(&self) -> Option<&str> {
        self.tags
            .iter()
            .find(|tag| tag.name() == Some("d"))
            .map(|tag| tag.value().unwrap_or(""))
    }

    /// What this event replaces, or `None` for regular and ephemeral kinds.
    #[must_use]
    pub fn replacement_key(&self) -> Option<ReplacementKey> {
        let identifier = if self.kind.is_replaceable() {
            None
        } else if self.kind.is_addressable() {
            Some(self.d_tag().unwrap_or("").to_owned())
        } else {
            return None;
        };
        Some(ReplacementKey {
            pubkey: self.pubkey,
            kind: self.kind,
            identifier,
        })
    }

    /// Whether this event replaces `other`: both have the same [`ReplacementKey`] and this one is
    /// newer, or as old with the lower id (NIP-01's tie-break, so that every relay keeps the same
    /// event whatever order they arrived in). An event never supersedes itself.
    #[must_use]
    pub fn supersedes(&self, other: &Event) -> bool {
        let same_key = match (self.replacement_key(), other.replacement_key()) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => false,
        };
        same_key && (self.created_at, other.id) > (other.created_at, self.id)
    }
}

/// Verifies BIP-340 Schnorr signatures.
///
/// Holds a verification-only secp256k1 context: building it costs more than a verification, so
/// build one per machine and lend it by reference. It is `Send`, so a runtime may move it into a
/// task.
#[derive(Clone)]
pub struct SignatureVerifier {
    secp: Secp256k1<VerifyOnly>,
}

impl SignatureVerifier {
    /// Builds the verification context.
    #[must_use]
    pub fn new() -> SignatureVerifier {
        SignatureVerifier {
            secp: Secp256k1::verification_only(),
        }
    }

    /// Checks that `sig` is `pubkey`'s BIP-340 signature of the 32-byte `id`.
    pub fn verify_schnorr(
        &self,
        pubkey: &PublicKey,
        id: &EventId,
        sig: &Signature,
    ) -> Result<(), EventError> {
        let key =
            XOnlyPublicKey::from_byte_array(&pubkey.0).map_err(|_| EventError::InvalidPublicKey)?;
        let sig = schnorr::Signature::from_byte_array(sig.0);
        self.secp
            .verify_schnorr(&sig, &id.0, &key)
            .map_err(|_| EventError::BadSignature)
    }
}

impl Default for SignatureVerifier {
    fn default() -> Self {
        SignatureVerifier::new()
    }
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignatureVerifier")
    }
}

/// Test helpers: deterministic keys and signatures. Compiled for the core's own tests and, behind
/// the `test-support` feature, for other crates' tests; never part of a binary.
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    use secp256k1::{Keypair, Secp256k1};

    use super::*;

    /// An event by the key `[secret; 32]`, with a correct id and a deterministic signature.
    ///
    /// # Panics
    /// Never for `secret` in `1..=255` (a valid secp256k1 secret key); `0` panics.
    #[allow(clippy::unwrap_used)] // Test support: a bad constant secret should fail loudly.
    #[must_use]
    pub fn signed_event(
        secret: u8,
        created_at: u64,
        kind: u16,
        tags: Vec<Tag>,
        content: &str,
    ) -> Event {
        let secp = Secp256k1::signing_only();
        let keypair = Keypair::from_seckey_slice(&secp, &[secret; 32]).unwrap();
        let mut event = Event {
            id: EventId([0; 32]),
            pubkey: PublicKey(keypair.x_only_public_key().0.serialize()),
            created_at,
            kind: Kind(kind),
            tags,
            content: content.to_owned(),
            sig: Signature([0; 64]),
        };
        event.id = event.compute_id();
        event.sig = Signature(
            *secp
                .sign_schnorr_no_aux_rand(&event.id.0, &keypair)
                .as_ref(),
        );
        event
    }
}

#[cfg(test)]
mod tests {
    use super::testing::signed_event;
    use super::*;

    fn unsigned(created_at: u64, kind: u16, tags: Vec<Tag>, id_byte: u8) -> Event {
        Event {
            id: EventId([id_byte; 32]),
            pubkey: PublicKey([7; 32]),
            created_at,
            kind: Kind(kind),
            tags,
            content: String::new(),
            sig: Signature([0; 64]),
        }
    }

    #[test]
    fn canonical_json_escapes_only_quote_backslash_and_control_characters() {
        let mut event = unsigned(1_700_000_000, 1, vec![Tag::new(["t", "a/b\u{7f}"])], 0);
        event.content = "q\"b\\n\nr\rt\tb\u{8}f\u{c}z\u{0}u\u{1f}/é😀\u{2028}".to_owned();
        let pubkey = "07".repeat(32);
        let expected = format!(
            "[0,\"{pubkey}\",1700000000,1,[[\"t\",\"a/b\u{7f}\"]],\
             \"q\\\"b\\\\n\\nr\\rt\\tb\\bf\\fz\\u0000u\\u001f/é😀\u{2028}\"]"
        );
        assert_eq!(event.canonical_json(), expected);
    }

    #[test]
    fn compute_id_is_sha256_of_canonical_json() {
        let event = unsigned(5, 1, vec![Tag::new(["e", "x"]), Tag::default()], 0);
        let expected: [u8; 32] = Sha256::digest(event.canonical_json().as_bytes()).into();
        assert_eq!(event.compute_id(), EventId(expected));
    }

    #[test]
    fn signed_event_verifies_and_survives_json_round_trip() {
        let event = signed_event(1, 1_700_000_000, 1, vec![Tag::new(["p", "x"])], "hi\n");
        let verifier = SignatureVerifier::new();
        assert_eq!(event.verify(&verifier), Ok(()));
        let parsed = Event::parse_json(&event.to_json()).unwrap();
        assert_eq!(parsed, event);
        assert_eq!(parsed.verify(&verifier), Ok(()));
    }

    #[test]
    fn tampered_content_fails_id_check_before_signature() {
        let mut event = signed_event(1, 1, 1, vec![], "hello");
        event.content.push('!');
        assert_eq!(event.verify_id(), Err(EventError::IdMismatch));
        assert_eq!(
            event.verify(&SignatureVerifier::new()),
            Err(EventError::IdMismatch)
        );
    }

    #[test]
    fn signature_from_another_key_is_a_bad_signature() {
        let mut event = signed_event(1, 1, 1, vec![], "hello");
        let other = signed_event(2, 1, 1, vec![], "hello");
        event.pubkey = other.pubkey;
        event.id = event.compute_id();
        assert_eq!(
            event.verify(&SignatureVerifier::new()),
            Err(EventError::BadSignature)
        );
    }

    #[test]
    fn pubkey_off_the_curve_is_reported_as_invalid_public_key() {
        let mut event = signed_event(1, 1, 1, vec![], "hello");
        // x = p + 1 exceeds the field prime, so it is no curve point.
        event.pubkey = PublicKey([0xff; 32]);
        event.id = event.compute_id();
        assert_eq!(
            event.verify(&SignatureVerifier::new()),
            Err(EventError::InvalidPublicKey)
        );
    }

    #[test]
    fn errors_render_as_nip01_ok_messages() {
        assert_eq!(
            EventError::IdMismatch.to_ok_message(),
            "invalid: event id does not match"
        );
        assert_eq!(
            EventError::BadSignature.to_ok_message(),
            "invalid: bad signature"
        );
        assert_eq!(
            EventError::TooManyTags { count: 3, max: 2 }.to_ok_message(),
            "invalid: too many tags (3 > 2)"
        );
    }

    #[test]
    fn parse_rejects_wrong_shapes() {
        let good = signed_event(1, 1, 1, vec![], "x").to_json();
        assert!(Event::parse_json(&good).is_ok());
        let bad = [
            good.replace("\"kind\":1", "\"kind\":70000"),
            good.replace("\"kind\":1", "\"kind\":-1"),
            good.replace("\"created_at\":1", "\"created_at\":1.5"),
            good.replace("\"created_at\":1", "\"created_at\":\"1\""),
            good.replace("\"tags\":[]", "\"tags\":[[1]]"),
            good.replace("\"tags\":[]", "\"tags\":[\"e\"]"),
            good.replace("\"content\":\"x\"", "\"content\":null"),
            good.replace("\"id\":\"", "\"id\":\"A"),
            good.replace("\"sig\":\"", "\"sig\":\"00"),
            good.replace(",\"content\":\"x\"", ""),
            format!("{good}x"),
            "[]".to_owned(),
        ];
        for text in bad {
            assert!(
                matches!(Event::parse_json(&text), Err(EventError::Malformed(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn parse_ignores_unknown_fields_and_accepts_empty_tags() {
        let event = unsigned(1, 1, vec![Tag::default()], 3);
        let json = event
            .to_json()
            .replace("{\"id\"", "{\"extra\":[1,{}],\"id\"");
        assert_eq!(Event::parse_json(&json).unwrap(), event);
    }

    #[test]
    fn check_limits_counts_tags_and_content_bytes() {
        let limits = Limits {
            max_tags: 1,
            max_content_bytes: 4,
            ..Limits::default()
        };
        let mut event = unsigned(1, 1, vec![Tag::new(["a"])], 0);
        event.content = "éé".to_owned();
        assert_eq!(event.check_limits(&limits), Ok(()));
        event.content.push('a');
        assert_eq!(
            event.check_limits(&limits),
            Err(EventError::ContentTooLarge { len: 5, max: 4 })
        );
        event.content.clear();
        event.tags.push(Tag::new(["b"]));
        assert_eq!(
            event.check_limits(&limits),
            Err(EventError::TooManyTags { count: 2, max: 1 })
        );
    }

    #[test]
    fn replacement_key_uses_d_tag_only_for_addressable_kinds() {
        let d = vec![
            Tag::new(["x", "1"]),
            Tag::new(["d", "a"]),
            Tag::new(["d", "b"]),
        ];
        let key = |kind, tags| unsigned(1, kind, tags, 0).replacement_key();
        assert_eq!(key(1, d.clone()), None);
        assert_eq!(key(20001, d.clone()), None);
        assert_eq!(key(0, d.clone()).unwrap().identifier, None);
        assert_eq!(key(10002, d.clone()).unwrap().identifier, None);
        assert_eq!(key(30023, d).unwrap().identifier.as_deref(), Some("a"));
        assert_eq!(
            key(30023, vec![Tag::new(["d"])])
                .unwrap()
                .identifier
                .as_deref(),
            Some("")
        );
        assert_eq!(key(30023, vec![]).unwrap().identifier.as_deref(), Some(""));
    }

    #[test]
    fn newer_replaceable_event_supersedes_older() {
        let old = unsigned(10, 0, vec![], 1);
        let new = unsigned(11, 0, vec![], 9);
        assert!(new.supersedes(&old));
        assert!(!old.supersedes(&new));
    }

    #[test]
    fn on_equal_created_at_the_lower_id_supersedes() {
        let low = unsigned(10, 3, vec![], 1);
        let high = unsigned(10, 3, vec![], 2);
        assert!(low.supersedes(&high));
        assert!(!high.supersedes(&low));
        assert!(!low.supersedes(&low.clone()));
    }

    #[test]
    fn events_with_different_keys_never_supersede() {
        let a = unsigned(10, 30000, vec![Tag::new(["d", "a"])], 1);
        let b = unsigned(5, 30000, vec![Tag::new(["d", "b"])], 2);
        assert!(!a.supersedes(&b));
        let mut other_author = unsigned(5, 30000, vec![Tag::new(["d", "a"])], 2);
        other_author.pubkey = PublicKey([8; 32]);
        assert!(!a.supersedes(&other_author));
        let regular_new = unsigned(10, 1, vec![], 1);
        let regular_old = unsigned(5, 1, vec![], 2);
        assert!(!regular_new.supersedes(&regular_old));
        assert!(!unsigned(10, 0, vec![], 1).supersedes(&unsigned(5, 3, vec![], 2)));
    }

    #[test]
    fn signature_verifier_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SignatureVerifier>();
        assert_send::<Event>();
    }
}
