//! The Noise XX handshake that authenticates both ends of a peer link by their ed25519
//! identities.
//!
//! Contract:
//! - Pattern `Noise_XX_25519_ChaChaPoly_BLAKE2b` with prologue [`LINK_PROTOCOL`]. Each side uses
//!   a fresh X25519 static key per connection and binds it to its long-term ed25519 identity
//!   with an [`IdentityProof`] carried in its encrypted handshake payload: an ed25519 signature
//!   over a domain label, its role, the handshake hash at the moment it writes the payload, and
//!   its Noise static key. The hash covers the other side's fresh ephemeral key, so a proof is
//!   valid for one handshake only; the role byte stops a proof being reflected; the static key
//!   ties the identity to the key Noise authenticated with `es` / `se`.
//! - The initiator (the worker) checks the responder's proof and its pinned key *before* it
//!   writes message 3, so a responder with any other key is refused
//!   ([`HandshakeError::UnexpectedRemote`]) without learning who the worker is.
//! - Message 1 carries [`LINK_PROTOCOL`] in the clear, so a peer speaking anything else is
//!   refused with a clear error at the first message.
//! - On the stream every handshake message is a 2-byte big-endian length then the Noise message,
//!   at most [`MAX_HANDSHAKE_MESSAGE_BYTES`]; a longer declared length is refused before its
//!   body is read. Nothing is read past message 3.
//! - [`Initiator`] and [`Responder`] are sans-IO (messages in, messages out); [`initiate`] and
//!   [`respond`] only move their messages over a stream. Any input is an error, never a panic.
//! - The result is a [`Session`]: the remote identity and the two transport keys (Noise's split,
//!   one per direction) as a [`Sealer`] and an [`Opener`].

use std::fmt;
use std::io;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hypergate_core::ids::PeerId;
use snow::HandshakeState;
use zeroize::Zeroize;

use super::record::{CloseCode, RecordError};
use super::sealed::{Opener, Sealer};
use crate::crypto::Identity;

/// Prologue of every handshake, and the cleartext payload of message 1.
pub const LINK_PROTOCOL: &[u8] = b"hypergate/peer-link/1";
/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2b";
/// Largest handshake message accepted on the stream, in bytes (ours are under 200).
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 1024;
/// Size of an encoded [`IdentityProof`]: version, ed25519 public key, signature.
pub const IDENTITY_PROOF_BYTES: usize = 1 + 32 + 64;
/// The identity proof format this build writes and accepts.
pub const IDENTITY_PROOF_VERSION: u8 = 1;

/// Domain label of the signed binding.
const PROOF_DOMAIN: &[u8] = b"hypergate/peer-link/1 identity proof\0";
/// Role bytes in the signed binding.
const ROLE_INITIATOR: u8 = b'I';
const ROLE_RESPONDER: u8 = b'R';
/// BLAKE2b handshake hash length.
const HASH_BYTES: usize = 64;

/// Why a handshake failed, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    // The peer broke the protocol, or is not who we accept. The connection is dropped.
    /// A handshake message declared more bytes than any handshake message has.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    MessageTooLong {
        /// The declared length.
        len: usize,
        /// [`MAX_HANDSHAKE_MESSAGE_BYTES`].
        max: usize,
    },
    /// A handshake message or payload has the wrong shape.
    #[error("malformed handshake: {detail}")]
    Malformed {
        /// What is wrong.
        detail: &'static str,
    },
    /// Noise rejected a handshake message (bad key, failed decryption, wrong length).
    #[error("handshake message rejected: {detail}")]
    Noise {
        /// Noise's reason.
        detail: String,
    },
    /// An identity proof's signature does not verify for its key and this handshake.
    #[error("identity proof of {peer} does not verify for this handshake")]
    BadSignature {
        /// The identity the proof claimed.
        peer: PeerId,
    },
    /// The responder proved an identity other than the pinned gateway key.
    #[error("gateway key mismatch: pinned {expected}, remote proved {got}")]
    UnexpectedRemote {
        /// The configured gateway identity.
        expected: PeerId,
        /// The identity the remote proved.
        got: PeerId,
    },
    /// Gateway side: the worker proved its identity but is not admitted.
    #[error("worker {peer} is not on this gateway's allow-list")]
    NotAllowed {
        /// The refused worker.
        peer: PeerId,
    },
    /// Worker side: the gateway closed the link instead of admitting it.
    #[error("gateway refused the link with {code}: {reason}")]
    Refused {
        /// The gateway's close code.
        code: CloseCode,
        /// The gateway's reason.
        reason: String,
    },
    /// The stream ended before the handshake completed.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// The gateway's first record was not a welcome or close, or did not open.
    #[error("invalid first record after the handshake: {0}")]
    Record(#[from] RecordError),
    /// The handshake did not complete in time.
    #[error("handshake did not complete within {after:?}")]
    TimedOut {
        /// The configured handshake timeout.
        after: Duration,
    },

    // This side failed.
    /// The stream failed.
    #[error("handshake i/o failed: {0}")]
    Io(#[source] io::Error),
    /// Noise could not be set up (no randomness, bad parameters).
    #[error("could not set up the Noise handshake: {detail}")]
    Setup {
        /// Noise's reason.
        detail: String,
    },
}

impl HandshakeError {
    /// Whether the peer is to blame (bad bytes, wrong or refused identity) rather than this
    /// side (I/O, set-up).
    #[must_use]
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, Self::Io(_) | Self::Setup { .. })
    }
}

impl From<io::Error> for HandshakeError {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            Self::Closed
        } else {
            Self::Io(error)
        }
    }
}

fn setup_error(error: snow::Error) -> HandshakeError {
    HandshakeError::Setup {
        detail: error.to_string(),
    }
}

fn noise_error(error: snow::Error) -> HandshakeError {
    HandshakeError::Noise {
        detail: error.to_string(),
    }
}

/// A decoded identity proof: who the sender claims to be, and its signature binding that to the
/// handshake. Decoding checks the shape and the key; the handshake then checks the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityProof {
    key: VerifyingKey,
    signature: Signature,
}

impl IdentityProof {
    /// The identity the proof claims.
    #[must_use]
    pub fn peer(&self) -> PeerId {
        PeerId(self.key.to_bytes())
    }

    fn sign(signing_key: &SigningKey, role: u8, hash: &[u8], noise_static: &[u8]) -> Vec<u8> {
        let signature = signing_key.sign(&binding(role, hash, noise_static));
        let mut out = Vec::with_capacity(IDENTITY_PROOF_BYTES);
        out.push(IDENTITY_PROOF_VERSION);
        out.extend_from_slice(signing_key.verifying_key().as_bytes());
        out.extend_from_slice(&signature.to_bytes());
        out
    }

    /// Checks the signature over this handshake's binding (strict ed25519: no weak keys, no
    /// malleable signatures).
    fn verify(&self, role: u8, hash: &[u8], noise_static: &[u8]) -> Result<(), HandshakeError> {
        self.key
            .verify_strict(&binding(role, hash, noise_static), &self.signature)
            .map_err(|_| HandshakeError::BadSignature { peer: self.peer() })
    }
}

/// The signed message: domain, role, handshake hash, Noise static key.
fn binding(role: u8, hash: &[u8], noise_static: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(PROOF_DOMAIN.len() + 1 + hash.len() + noise_static.len());
    message.extend_from_slice(PROOF_DOMAIN);
    message.push(role);
    message.extend_from_slice(hash);
    message.extend_from_slice(noise_static);
    message
}

/// Parses an identity proof (fuzz entry point for the handshake payload parser): exactly
/// [`IDENTITY_PROOF_BYTES`], version [`IDENTITY_PROOF_VERSION`], a valid ed25519 point.
pub fn decode_identity_proof(bytes: &[u8]) -> Result<IdentityProof, HandshakeError> {
    let Ok(bytes) = <&[u8; IDENTITY_PROOF_BYTES]>::try_from(bytes) else {
        return Err(HandshakeError::Malformed {
            detail: "identity proof is not 97 bytes",
        });
    };
    let (version, rest) = bytes.split_at(1);
    let (key, signature) = rest.split_at(32);
    if version != [IDENTITY_PROOF_VERSION] {
        return Err(HandshakeError::Malformed {
            detail: "unknown identity proof version",
        });
    }
    let key = <[u8; 32]>::try_from(key)
        .ok()
        .and_then(|key| VerifyingKey::from_bytes(&key).ok())
        .ok_or(HandshakeError::Malformed {
            detail: "identity key is not an ed25519 point",
        })?;
    let signature = Signature::from_slice(signature).map_err(|_| HandshakeError::Malformed {
        detail: "identity signature is not 64 bytes",
    })?;
    Ok(IdentityProof { key, signature })
}

/// A fresh Noise state with a fresh static key; returns the state and the static public key.
fn noise_state(initiator: bool) -> Result<(HandshakeState, [u8; 32]), HandshakeError> {
    let params = NOISE_PARAMS.parse().map_err(setup_error)?;
    let builder = snow::Builder::new(params);
    let mut keypair = builder.generate_keypair().map_err(setup_error)?;
    let built = builder
        .prologue(LINK_PROTOCOL)
        .and_then(|builder| builder.local_private_key(&keypair.private))
        .and_then(|builder| {
            if initiator {
                builder.build_initiator()
            } else {
                builder.build_responder()
            }
        });
    keypair.private.zeroize();
    let state = built.map_err(setup_error)?;
    let public =
        <[u8; 32]>::try_from(keypair.public.as_slice()).map_err(|_| HandshakeError::Setup {
            detail: "Noise static key is not 32 bytes".into(),
        })?;
    Ok((state, public))
}

fn hash_of(state: &HandshakeState) -> Result<[u8; HASH_BYTES], HandshakeError> {
    <[u8; HASH_BYTES]>::try_from(state.get_handshake_hash()).map_err(|_| HandshakeError::Setup {
        detail: "handshake hash is not 64 bytes".into(),
    })
}

fn write_noise(state: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    let mut message = vec![0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    let len = state
        .write_message(payload, &mut message)
        .map_err(setup_error)?;
    message.truncate(len);
    Ok(message)
}

fn read_noise(state: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
    if message.len() > MAX_HANDSHAKE_MESSAGE_BYTES {
        return Err(HandshakeError::MessageTooLong {
            len: message.len(),
            max: MAX_HANDSHAKE_MESSAGE_BYTES,
        });
    }
    let mut payload = vec![0u8; MAX_HANDSHAKE_MESSAGE_BYTES];
    let len = state
        .read_message(message, &mut payload)
        .map_err(noise_error)?;
    payload.truncate(len);
    Ok(payload)
}

fn remote_static(state: &HandshakeState) -> Result<Vec<u8>, HandshakeError> {
    state
        .get_remote_static()
        .map(<[u8]>::to_vec)
        .ok_or(HandshakeError::Malformed {
            detail: "handshake message carried no static key",
        })
}

/// Splits the finished handshake into this side's (sealer, opener).
fn split(state: &mut HandshakeState, initiator: bool) -> (Sealer, Opener) {
    let (initiator_to_responder, responder_to_initiator) = state.dangerously_get_raw_split();
    if initiator {
        (
            Sealer::new(initiator_to_responder),
            Opener::new(responder_to_initiator),
        )
    } else {
        (
            Sealer::new(responder_to_initiator),
            Opener::new(initiator_to_responder),
        )
    }
}

/// An authenticated handshake's result: who the remote is, and the keys of both directions.
pub struct Session {
    remote: PeerId,
    handshake_hash: [u8; HASH_BYTES],
    sealer: Sealer,
    opener: Opener,
}

impl Session {
    /// The identity the remote proved.
    #[must_use]
    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// The final handshake hash: the same on both sides, unique to this session.
    #[must_use]
    pub fn handshake_hash(&self) -> &[u8; HASH_BYTES] {
        &self.handshake_hash
    }

    /// The remote identity, this side's sealer and its opener.
    #[must_use]
    pub fn into_parts(self) -> (PeerId, Sealer, Opener) {
        (self.remote, self.sealer, self.opener)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// The worker's side of the handshake.
pub struct Initiator {
    noise: HandshakeState,
    signing_key: SigningKey,
    static_public: [u8; 32],
    expected: PeerId,
    hash_after_first: [u8; HASH_BYTES],
}

impl Initiator {
    /// Starts a handshake with the gateway whose identity is `expected_remote`; returns the
    /// initiator and message 1.
    pub fn start(
        identity: &Identity,
        expected_remote: PeerId,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let (mut noise, static_public) = noise_state(true)?;
        let first = write_noise(&mut noise, LINK_PROTOCOL)?;
        let hash_after_first = hash_of(&noise)?;
        let initiator = Self {
            noise,
            signing_key: identity.signing_key().clone(),
            static_public,
            expected: expected_remote,
            hash_after_first,
        };
        Ok((initiator, first))
    }

    /// Reads message 2, checks the gateway's proof and pinned identity, and returns the session
    /// and message 3.
    pub fn finish(mut self, second: &[u8]) -> Result<(Session, Vec<u8>), HandshakeError> {
        let payload = read_noise(&mut self.noise, second)?;
        let proof = decode_identity_proof(&payload)?;
        let responder_static = remote_static(&self.noise)?;
        proof.verify(ROLE_RESPONDER, &self.hash_after_first, &responder_static)?;
        if proof.peer() != self.expected {
            return Err(HandshakeError::UnexpectedRemote {
                expected: self.expected,
                got: proof.peer(),
            });
        }
        let own_proof = IdentityProof::sign(
            &self.signing_key,
            ROLE_INITIATOR,
            &hash_of(&self.noise)?,
            &self.static_public,
        );
        let third = write_noise(&mut self.noise, &own_proof)?;
        let handshake_hash = hash_of(&self.noise)?;
        let (sealer, opener) = split(&mut self.noise, true);
        let session = Session {
            remote: proof.peer(),
            handshake_hash,
            sealer,
            opener,
        };
        Ok((session, third))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// The gateway's side of the handshake, before message 1.
pub struct Responder {
    noise: HandshakeState,
    signing_key: SigningKey,
    static_public: [u8; 32],
}

impl Responder {
    /// A responder proving `identity`.
    pub fn new(identity: &Identity) -> Result<Self, HandshakeError> {
        let (noise, static_public) = noise_state(false)?;
        Ok(Self {
            noise,
            signing_key: identity.signing_key().clone(),
            static_public,
        })
    }

    /// Reads message 1 (fuzz entry point for the first handshake message) and returns message
    /// 2, which carries this side's identity proof.
    pub fn respond(
        mut self,
        first: &[u8],
    ) -> Result<(ResponderAwaitingFinal, Vec<u8>), HandshakeError> {
        let payload = read_noise(&mut self.noise, first)?;
        if payload != LINK_PROTOCOL {
            return Err(HandshakeError::Malformed {
                detail: "peer does not speak hypergate/peer-link/1",
            });
        }
        let proof = IdentityProof::sign(
            &self.signing_key,
            ROLE_RESPONDER,
            &hash_of(&self.noise)?,
            &self.static_public,
        );
        let second = write_noise(&mut self.noise, &proof)?;
        let hash_after_second = hash_of(&self.noise)?;
        let awaiting = ResponderAwaitingFinal {
            noise: self.noise,
            hash_after_second,
        };
        Ok((awaiting, second))
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

/// The gateway's side of the handshake, waiting for message 3.
pub struct ResponderAwaitingFinal {
    noise: HandshakeState,
    hash_after_second: [u8; HASH_BYTES],
}

impl ResponderAwaitingFinal {
    /// Reads message 3 and checks the worker's proof. Admission by policy is the caller's
    /// decision, on [`Session::remote`].
    pub fn finish(mut self, third: &[u8]) -> Result<Session, HandshakeError> {
        let payload = read_noise(&mut self.noise, third)?;
        let proof = decode_identity_proof(&payload)?;
        let initiator_static = remote_static(&self.noise)?;
        proof.verify(ROLE_INITIATOR, &self.hash_after_second, &initiator_static)?;
        let handshake_hash = hash_of(&self.noise)?;
        let (sealer, opener) = split(&mut self.noise, false);
        Ok(Session {
            remote: proof.peer(),
            handshake_hash,
            sealer,
            opener,
        })
    }
}

impl fmt::Debug for ResponderAwaitingFinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderAwaitingFinal")
            .finish_non_exhaustive()
    }
}

/// Writes one length-prefixed handshake message and flushes.
async fn write_message<S>(stream: &mut S, message: &[u8]) -> Result<(), HandshakeError>
where
    S: AsyncWrite + Unpin,
{
    let len = u16::try_from(message.len()).map_err(|_| HandshakeError::MessageTooLong {
        len: message.len(),
        max: MAX_HANDSHAKE_MESSAGE_BYTES,
    })?;
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one length-prefixed handshake message, refusing an oversized length before its body.
async fn read_message<S>(stream: &mut S) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_HANDSHAKE_MESSAGE_BYTES {
        return Err(HandshakeError::MessageTooLong {
            len,
            max: MAX_HANDSHAKE_MESSAGE_BYTES,
        });
    }
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Runs the worker's side over `stream`: message 1 out, message 2 in, message 3 out.
pub async fn initiate<S>(
    stream: &mut S,
    identity: &Identity,
    expected_remote: PeerId,
) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (initiator, first) = Initiator::start(identity, expected_remote)?;
    write_message(stream, &first).await?;
    let second = read_message(stream).await?;
    let (session, third) = initiator.finish(&second)?;
    write_message(stream, &third).await?;
    Ok(session)
}

/// Runs the gateway's side over `stream`: message 1 in, message 2 out, message 3 in.
pub async fn respond<S>(stream: &mut S, identity: &Identity) -> Result<Session, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let responder = Responder::new(identity)?;
    let first = read_message(stream).await?;
    let (awaiting, second) = responder.respond(&first)?;
    write_message(stream, &second).await?;
    let third = read_message(stream).await?;
    awaiting.finish(&third)
}

#[cfg(test)]
mod tests;
