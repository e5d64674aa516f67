//! The messages of the peer link, and the bound of every variable-length field.
//!
//! Contract: every type here derives `Serialize`/`Deserialize` and is encoded by position, so the
//! order of fields and variants *is* the wire format: append, never reorder (see the module docs
//! of [`wire`](super)). Every variable-length field is bounded by one of the `MAX_*` constants
//! below, chosen so that each message except [`MirrorRangeResponse`] always fits in
//! [`MAX_FRAME_BYTES`](super::MAX_FRAME_BYTES); a mirror response must be split by its sender
//! (`encode` refuses one that does not fit).
//!
//! Timestamps ([`UnixTime`]) in these messages come from the peer's clock: the receiver treats
//! them as untrusted ([`UnixTime::clamp_untrusted`]).

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::violation::{self, Violation};
use super::{BoundedBytes, BoundedString, BoundedVec, WireError};
use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;

// --- bounds ----------------------------------------------------------------------------------

/// Longest [`Hello::agent`] string (software name and version), in bytes.
pub const MAX_AGENT_BYTES: usize = 64;
/// Most capabilities a [`Hello`] may list.
pub const MAX_CAPABILITIES: usize = 16;
/// Most relays in one [`RegisterRelays`] (and entries in each list of a [`RegisterAck`]).
pub const MAX_RELAYS_PER_REGISTRATION: usize = 1024;
/// Most identifiers (aliases such as `npub…:name`) per relay.
pub const MAX_RELAY_IDENTIFIERS: usize = 16;
/// Longest relay identifier, in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 256;
/// Longest relay name, in bytes.
pub const MAX_RELAY_NAME_BYTES: usize = 256;
/// Longest relay description, in bytes.
pub const MAX_RELAY_DESCRIPTION_BYTES: usize = 4096;
/// Longest URL (relay avatar), in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest escrow deposit id, in bytes.
pub const MAX_ESCROW_ID_BYTES: usize = 128;
/// Longest escrow policy version, in bytes.
pub const MAX_POLICY_VERSION_BYTES: usize = 128;
/// Most gateways an escrow deposit may permit.
pub const MAX_PERMITTED_GATEWAYS: usize = 32;
/// Longest reason for rejecting a relay registration, in bytes.
pub const MAX_REJECT_REASON_BYTES: usize = 256;
/// Longest forwarded NIP-01 text frame, in bytes (256 KiB): well above what public relays accept
/// for one event, well below the frame limit.
pub const MAX_NOSTR_FRAME_BYTES: usize = 256 * 1024;
/// Longest HTTP path including the query, in bytes.
pub const MAX_HTTP_PATH_BYTES: usize = 4096;
/// Most HTTP headers per request or response.
pub const MAX_HTTP_HEADERS: usize = 64;
/// Longest HTTP header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 128;
/// Longest HTTP header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;
/// Largest HTTP body carried in one message, in bytes (8 MiB): a drive file or avatar upload.
pub const MAX_HTTP_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most cores in one [`MirrorAdvertise`].
pub const MAX_CORE_ADVERTS: usize = 4096;
/// Most blocks one [`MirrorRangeRequest`] may span, one [`MirrorProofRequest`] may list and one
/// [`MirrorRangeResponse`] may carry.
pub const MAX_MIRROR_BLOCKS_PER_RANGE: usize = 1024;
/// Largest single hypercore block, in bytes (1 MiB).
pub const MAX_MIRROR_BLOCK_BYTES: usize = 1024 * 1024;
/// Largest hypercore proof attached to a range, in bytes (1 MiB).
pub const MAX_MIRROR_PROOF_BYTES: usize = 1024 * 1024;
/// Longest pending-write reason, in bytes (the original's reasons are short slugs).
pub const MAX_PENDING_REASON_BYTES: usize = 64;
/// Most pending-write types in one push (there are three; duplicates tolerated).
pub const MAX_PENDING_TYPES: usize = 8;
/// Longest drive identifier in a pending-write push, in bytes.
pub const MAX_DRIVE_IDENTIFIER_BYTES: usize = 256;
/// Longest human-readable text of an [`ErrorMessage`], in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// HTTP headers of a forwarded request or response.
pub type HttpHeaders = BoundedVec<Header, MAX_HTTP_HEADERS>;
/// HTTP body of a forwarded request or response.
pub type HttpBody = BoundedBytes<MAX_HTTP_BODY_BYTES>;
/// One hypercore block.
pub type MirrorBlock = BoundedBytes<MAX_MIRROR_BLOCK_BYTES>;

// --- small enums -----------------------------------------------------------------------------

/// A fieldless enum with a stable text name per variant: `as_str`, `Display` and `FromStr` use
/// it, and so do self-describing serde formats (JSON); postcard uses the variant's position.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every variant, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text name, for logs, metrics labels and JSON.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = WireError;

            fn from_str(text: &str) -> Result<Self, WireError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(WireError::UnknownName { what: $what, got: text.to_owned() }),
                }
            }
        }
    };
}

named_enum! {
    /// Which side of the link a peer is.
    pub enum PeerRole as "peer role" {
        /// The public gateway.
        Gateway = "gateway",
        /// A worker that hosts relays.
        Worker = "worker",
    }
}

named_enum! {
    /// A feature a peer offers on this link; messages of a feature the other side did not
    /// announce are answered with [`ErrorCode::Unsupported`].
    pub enum Capability as "capability" {
        /// Forwarded NIP-01 frames ([`NostrFrame`]).
        Nostr = "nostr",
        /// Forwarded HTTP requests ([`HttpRequest`] / [`HttpResponse`]).
        Http = "http",
        /// Mirror replication ([`MirrorAdvertise`], [`MirrorRangeRequest`],
        /// [`MirrorProofRequest`]).
        Mirror = "mirror",
        /// Pending-write push and resync ([`PendingWritePush`], [`ResyncComplete`]).
        PendingWrites = "pending-writes",
    }
}

named_enum! {
    /// HTTP method of a forwarded request: the ones the worker REST surface uses.
    pub enum HttpMethod as "HTTP method" {
        /// `GET`
        Get = "GET",
        /// `PUT`
        Put = "PUT",
        /// `POST`
        Post = "POST",
        /// `DELETE`
        Delete = "DELETE",
        /// `HEAD`
        Head = "HEAD",
    }
}

named_enum! {
    /// What a mirrored core holds for its relay.
    pub enum CoreRole as "core role" {
        /// The owner log (membership ops).
        Owner = "owner",
        /// A member's writer log.
        Writer = "writer",
        /// The writer log the gateway appends to under a lease.
        GatewayWriter = "gateway-writer",
        /// A drive's metadata core.
        DriveMeta = "drive-meta",
        /// A drive's blob core.
        DriveBlobs = "drive-blobs",
    }
}

named_enum! {
    /// Whether a relay has gateway writes waiting for a worker.
    pub enum PendingState as "pending state" {
        /// The gateway holds writes a worker has not resynced yet.
        Pending = "pending",
        /// No gateway writes are waiting any more.
        Cleared = "cleared",
    }
}

named_enum! {
    /// What kind of data the gateway wrote for a relay while its workers were away. Ordered, so
    /// a set of them iterates deterministically.
    pub enum PendingType as "pending type" {
        /// Nostr events appended to the gateway writer log.
        Event = "event",
        /// Files written to the gateway drive.
        Drive = "drive",
        /// HTTP artifacts (join requests, auth callbacks) stored for the worker.
        HttpArtifact = "http-artifact",
    }
}

named_enum! {
    /// How a worker took a [`PendingWritePush`].
    pub enum AckStatus as "ack status" {
        /// The push was new: the worker queued a resync.
        Accepted = "accepted",
        /// The worker already had this state (a retry): nothing new was queued.
        Noop = "noop",
    }
}

named_enum! {
    /// How the gateway took a [`ResyncComplete`].
    pub enum ResyncStatus as "resync status" {
        /// It covered the latest gateway write: flags cleared, lease released.
        Cleared = "cleared",
        /// A gateway write landed after `resynced_through`: a newer push follows.
        StillPending = "still-pending",
        /// The sender does not serve the relay, or nothing was pending.
        Refused = "refused",
    }
}

named_enum! {
    /// Class of an [`ErrorMessage`], so the receiver can react without parsing text.
    pub enum ErrorCode as "error code" {
        /// The request is malformed or violates the protocol's rules.
        BadRequest = "bad-request",
        /// The sender may not ask for this (e.g. a relay it does not serve).
        Unauthorized = "unauthorized",
        /// The relay, core or session named does not exist here.
        NotFound = "not-found",
        /// Temporarily unable to answer; retrying later may work.
        Unavailable = "unavailable",
        /// A fault on the answering side.
        Internal = "internal",
        /// The message needs a capability this side did not announce.
        Unsupported = "unsupported",
    }
}

// --- messages --------------------------------------------------------------------------------

/// The first message each side sends after the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's identity. Informational: the handshake identity is what authenticates, and a
    /// mismatch is a reason to close the link.
    pub peer_id: PeerId,
    /// Gateway or worker.
    pub role: PeerRole,
    /// Software name and version, for logs.
    pub agent: BoundedString<MAX_AGENT_BYTES>,
    /// Features the sender offers on this link.
    pub capabilities: BoundedVec<Capability, MAX_CAPABILITIES>,
}

/// A worker announces (or re-announces) the relays it serves. Registrations merge on the
/// gateway; they never clear gateway-owned state such as pending-write flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRelays {
    /// The relays, each at most once.
    pub relays: BoundedVec<RelayRegistration, MAX_RELAYS_PER_REGISTRATION>,
}

/// One relay in a [`RegisterRelays`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRegistration {
    /// The relay.
    pub relay_key: RelayKey,
    /// Aliases under which clients may address it (e.g. `npub…:name`).
    pub identifiers: BoundedVec<BoundedString<MAX_IDENTIFIER_BYTES>, MAX_RELAY_IDENTIFIERS>,
    /// Public metadata; absent fields leave the gateway's copy alone.
    pub metadata: RelayMetadata,
    /// Whether clients must authenticate (NIP-42) to use the relay.
    pub requires_auth: bool,
    /// The relay's escrow deposit, if its owner enabled offline writes.
    pub escrow: Option<EscrowRegistration>,
}

/// Public metadata of a relay. Every field is optional so a registration can update some and
/// leave the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMetadata {
    /// Display name.
    pub name: Option<BoundedString<MAX_RELAY_NAME_BYTES>>,
    /// Description.
    pub description: Option<BoundedString<MAX_RELAY_DESCRIPTION_BYTES>>,
    /// Avatar URL.
    pub avatar_url: Option<BoundedString<MAX_URL_BYTES>>,
    /// Whether the relay is listed publicly.
    pub is_public: Option<bool>,
    /// When the owner last changed the metadata (sender's clock); older updates lose.
    pub metadata_updated_at: Option<UnixTime>,
}

/// What a relay's owner deposited with the escrow service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowRegistration {
    /// The escrow service's id of the deposit.
    pub escrow_id: BoundedString<MAX_ESCROW_ID_BYTES>,
    /// The escrow policy version the deposit was made under.
    pub policy_version: BoundedString<MAX_POLICY_VERSION_BYTES>,
    /// Gateways the deposit allows to request a lease.
    pub permitted_gateways: BoundedVec<PeerId, MAX_PERMITTED_GATEWAYS>,
    /// When the deposit stops being valid (sender's clock).
    pub expires_at: UnixTime,
}

/// The gateway's answer to a [`RegisterRelays`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAck {
    /// Relays now served through this worker.
    pub accepted: BoundedVec<RelayKey, MAX_RELAYS_PER_REGISTRATION>,
    /// Relays refused, with why.
    pub rejected: BoundedVec<RejectedRelay, MAX_RELAYS_PER_REGISTRATION>,
    /// The gateway's current lease epoch of each accepted relay it ever leased (protocol
    /// version 2): a worker that was away when a lease was issued learns it here and rotates
    /// its gateway writer, even though no push reached it.
    pub lease_epochs: BoundedVec<RelayLeaseEpoch, MAX_RELAYS_PER_REGISTRATION>,
}

/// A relay's highest gateway lease epoch (0 is never sent: never leased).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLeaseEpoch {
    /// The relay.
    pub relay_key: RelayKey,
    /// The highest lease epoch the gateway issued or saw for it.
    pub epoch: u64,
}

/// A relay the gateway refused to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRelay {
    /// The relay.
    pub relay_key: RelayKey,
    /// Why, as a short slug or sentence.
    pub reason: BoundedString<MAX_REJECT_REASON_BYTES>,
}

/// A liveness probe, and (echoing `seq`) its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's sequence number; the ack echoes it.
    pub seq: u64,
    /// When it was sent (sender's clock): for skew estimates, not for liveness.
    pub sent_at: UnixTime,
}

/// A NIP-01 JSON text frame forwarded for one client session, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NostrFrame {
    /// The relay the session is connected to.
    pub relay_key: RelayKey,
    /// The gateway's id of the client session.
    pub session: u64,
    /// The frame's JSON text, unparsed.
    pub frame: BoundedString<MAX_NOSTR_FRAME_BYTES>,
}

/// One HTTP header. Names are compared case-insensitively by the HTTP layers, not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name.
    pub name: BoundedString<MAX_HEADER_NAME_BYTES>,
    /// Header value (text: non-UTF-8 values are not forwarded).
    pub value: BoundedString<MAX_HEADER_VALUE_BYTES>,
}

/// An HTTP request forwarded by the gateway to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Method.
    pub method: HttpMethod,
    /// Path and query, as the client sent them.
    pub path: BoundedString<MAX_HTTP_PATH_BYTES>,
    /// Headers the gateway chose to forward.
    pub headers: HttpHeaders,
    /// Body.
    pub body: HttpBody,
}

/// A worker's answer to an [`HttpRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers.
    pub headers: HttpHeaders,
    /// Body.
    pub body: HttpBody,
}

/// A worker lists the cores the gateway should mirror, with their current lengths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorAdvertise {
    /// The cores.
    pub cores: BoundedVec<CoreAdvert, MAX_CORE_ADVERTS>,
}

/// One core offered for mirroring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreAdvert {
    /// The core's public key.
    pub core_key: [u8; 32],
    /// The relay it belongs to.
    pub relay_key: RelayKey,
    /// What it holds.
    pub role: CoreRole,
    /// Its length in blocks, as the worker sees it.
    pub length: u64,
    /// Whether the mirror should announce it to the swarm.
    pub announce: bool,
    /// Replication priority; higher first.
    pub priority: u8,
}

/// Asks for blocks `start..end` (end exclusive) of a core.
///
/// Fields are private so that every value, built or decoded, has `start <= end` and spans at
/// most [`MAX_MIRROR_BLOCKS_PER_RANGE`] blocks. An empty range (`start == end`) is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorRangeRequest {
    core_key: [u8; 32],
    start: u64,
    end: u64,
}

impl MirrorRangeRequest {
    /// A request for blocks `start..end`, or [`WireError::InvalidRange`] if `end < start` or the
    /// span exceeds [`MAX_MIRROR_BLOCKS_PER_RANGE`].
    pub fn new(core_key: [u8; 32], start: u64, end: u64) -> Result<Self, WireError> {
        if !range_is_valid(start, end) {
            return Err(WireError::InvalidRange { start, end });
        }
        Ok(Self {
            core_key,
            start,
            end,
        })
    }

    /// The core's public key.
    #[must_use]
    pub fn core_key(&self) -> &[u8; 32] {
        &self.core_key
    }

    /// First block requested.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// One past the last block requested.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The requested block indices.
    #[must_use]
    pub fn blocks(&self) -> Range<u64> {
        self.start..self.end
    }

    /// How many blocks are requested (at most [`MAX_MIRROR_BLOCKS_PER_RANGE`]).
    #[must_use]
    pub fn block_count(&self) -> u64 {
        // `start <= end` holds for every value; saturating keeps that a non-panicking fact.
        self.end.saturating_sub(self.start)
    }
}

fn range_is_valid(start: u64, end: u64) -> bool {
    end.checked_sub(start)
        .is_some_and(|span| span <= MAX_MIRROR_BLOCKS_PER_RANGE as u64)
}

impl<'de> Deserialize<'de> for MirrorRangeRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The same fields in the same order, unchecked.
        #[derive(Deserialize)]
        #[serde(rename = "MirrorRangeRequest")]
        struct Unchecked {
            core_key: [u8; 32],
            start: u64,
            end: u64,
        }
        let Unchecked {
            core_key,
            start,
            end,
        } = Unchecked::deserialize(deserializer)?;
        if !range_is_valid(start, end) {
            return Err(violation::reject(Violation::BadRange { start, end }));
        }
        Ok(Self {
            core_key,
            start,
            end,
        })
    }
}

/// Asks for blocks of a core by what the asking copy already holds, so that the answer verifies
/// from any state an interrupted transfer left the copy in (its signed tree may cover blocks it
/// does not hold; decisions D62). Answered with a [`MirrorRangeResponse`].
///
/// Built from `HyperLog::request_range` / `MirrorStore::request_range` and answered with
/// `HyperLog::answer_request`. The holder refuses a request for blocks past its length or from a
/// signed length longer than its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorProofRequest {
    /// The core's public key.
    pub core_key: [u8; 32],
    /// How many blocks the asking copy's signed tree covers; the answer upgrades from here.
    pub signed_length: u64,
    /// `(block index, tree nodes the copy already holds on that block's path)`, in the order the
    /// proofs should come back.
    pub blocks: BoundedVec<(u64, u64), MAX_MIRROR_BLOCKS_PER_RANGE>,
}

/// Blocks of a core starting at `start`, with the proof that verifies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorRangeResponse {
    /// The core's public key.
    pub core_key: [u8; 32],
    /// Index of the first block in `blocks`.
    pub start: u64,
    /// Consecutive blocks from `start`; fewer than requested if the core is shorter or the
    /// response would not fit in one frame.
    pub blocks: BoundedVec<MirrorBlock, MAX_MIRROR_BLOCKS_PER_RANGE>,
    /// Opaque hypercore proof bytes, verified by the storage adapter.
    pub proof: BoundedBytes<MAX_MIRROR_PROOF_BYTES>,
}

/// The gateway tells a worker that a relay has (or no longer has) gateway writes to resync.
/// Pushed with retries until a [`PushAck`] with the same `push_id` arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWritePush {
    /// Id of this push attempt; the ack echoes it.
    pub push_id: u64,
    /// The relay.
    pub relay_key: RelayKey,
    /// Pending or cleared.
    pub state: PendingState,
    /// Why the writes were made (short slug, e.g. `"replica-write"`).
    pub reason: BoundedString<MAX_PENDING_REASON_BYTES>,
    /// What kinds of data are waiting.
    pub types: BoundedVec<PendingType, MAX_PENDING_TYPES>,
    /// The drive written, for drive writes.
    pub drive_identifier: Option<BoundedString<MAX_DRIVE_IDENTIFIER_BYTES>>,
    /// The drive's version after the gateway's writes.
    pub drive_version: Option<u64>,
    /// When the first still-pending write happened (gateway clock).
    pub pending_since: UnixTime,
    /// When this state was last changed (gateway clock); the ack echoes it.
    pub updated_at: UnixTime,
    /// Generation of the lease the writes were made under.
    pub lease_version: Option<u64>,
    /// Whether that lease is still active.
    pub lease_active: bool,
    /// When the state became cleared, for `Cleared` pushes.
    pub cleared_at: Option<UnixTime>,
}

/// A worker acknowledges a [`PendingWritePush`]; this stops the gateway's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// The push being acknowledged.
    pub push_id: u64,
    /// Its relay.
    pub relay_key: RelayKey,
    /// The push's `updated_at`, so a stale ack cannot acknowledge a newer state.
    pub updated_at: UnixTime,
    /// Whether the push was new to the worker.
    pub status: AckStatus,
}

/// A worker has copied the gateway's writes for a relay into its own logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncComplete {
    /// The relay.
    pub relay_key: RelayKey,
    /// Gateway writes up to this time are resynced (worker clock).
    pub resynced_through: UnixTime,
    /// Length of the gateway writer log the worker resynced up to.
    pub gateway_writer_length: u64,
}

/// Gateway → worker: answer to [`ResyncComplete`], so the worker knows its
/// report arrived (and retries it if no answer comes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncAck {
    /// The relay.
    pub relay_key: RelayKey,
    /// The `resynced_through` being answered.
    pub resynced_through: UnixTime,
    /// What the gateway did with it.
    pub status: ResyncStatus,
}

/// A request failed on the answering side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Class of the failure.
    pub code: ErrorCode,
    /// Human-readable detail, for logs (use [`BoundedString::truncating`] to build it).
    pub message: BoundedString<MAX_ERROR_MESSAGE_BYTES>,
}

/// Every message of the peer link. The variant order is the wire tag: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Introduces the sender (first message in each direction).
    Hello(Hello),
    /// Worker → gateway: the relays it serves.
    RegisterRelays(RegisterRelays),
    /// Gateway → worker: answer to [`Message::RegisterRelays`].
    RegisterAck(RegisterAck),
    /// Liveness probe.
    Heartbeat(Heartbeat),
    /// Answer to [`Message::Heartbeat`], echoing its `seq`.
    HeartbeatAck(Heartbeat),
    /// A NIP-01 frame for one client session.
    NostrFrame(NostrFrame),
    /// Gateway → worker: a forwarded HTTP request.
    HttpRequest(HttpRequest),
    /// Worker → gateway: answer to [`Message::HttpRequest`].
    HttpResponse(HttpResponse),
    /// Worker → gateway: cores to mirror.
    MirrorAdvertise(MirrorAdvertise),
    /// Gateway → worker: blocks wanted.
    MirrorRangeRequest(MirrorRangeRequest),
    /// Worker → gateway: blocks and proof.
    MirrorRangeResponse(MirrorRangeResponse),
    /// Gateway → worker: gateway writes are pending (or cleared).
    PendingWritePush(PendingWritePush),
    /// Worker → gateway: answer to [`Message::PendingWritePush`].
    PushAck(PushAck),
    /// Worker → gateway: the gateway's writes are resynced.
    ResyncComplete(ResyncComplete),
    /// A request failed.
    Error(ErrorMessage),
    /// Gateway → worker: answer to [`Message::ResyncComplete`].
    ResyncAck(ResyncAck),
    /// Either side: blocks wanted, described by what the asking copy holds; answered with
    /// [`Message::MirrorRangeResponse`].
    MirrorProofRequest(MirrorProofRequest),
}

impl Message {
    /// Snake-case name of the variant, for logs and metrics labels.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::RegisterRelays(_) => "register_relays",
            Message::RegisterAck(_) => "register_ack",
            Message::Heartbeat(_) => "heartbeat",
            Message::HeartbeatAck(_) => "heartbeat_ack",
            Message::NostrFrame(_) => "nostr_frame",
            Message::HttpRequest(_) => "http_request",
            Message::HttpResponse(_) => "http_response",
            Message::MirrorAdvertise(_) => "mirror_advertise",
            Message::MirrorRangeRequest(_) => "mirror_range_request",
            Message::MirrorRangeResponse(_) => "mirror_range_response",
            Message::PendingWritePush(_) => "pending_write_push",
            Message::PushAck(_) => "push_ack",
            Message::ResyncComplete(_) => "resync_complete",
            Message::Error(_) => "error",
            Message::ResyncAck(_) => "resync_ack",
            Message::MirrorProofRequest(_) => "mirror_proof_request",
        }
    }
}

/// What travels on the link: a message and the id of the exchange it belongs to.
///
/// The side that starts an exchange picks a `request_id` that is not outstanding among its own
/// requests; the answer (or [`Message::Error`]) carries the same id, which is how many concurrent
/// requests share one link. Ids are scoped per initiating side: a peer matches an answer only
/// against requests it sent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Id of the exchange.
    pub request_id: u64,
    /// The payload.
    pub message: Message,
}

impl Frame {
    /// A frame carrying `message` for exchange `request_id`.
    #[must_use]
    pub fn new(request_id: u64, message: Message) -> Self {
        Self {
            request_id,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_type_names_match_the_original_vocabulary() {
        let names: Vec<&str> = PendingType::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(names, ["event", "drive", "http-artifact"]);
        for kind in PendingType::ALL {
            assert_eq!(kind.as_str().parse::<PendingType>(), Ok(*kind));
        }
    }

    #[test]
    fn unknown_pending_type_name_is_an_error_not_a_default() {
        assert_eq!(
            "http-join".parse::<PendingType>(),
            Err(WireError::UnknownName {
                what: "pending type",
                got: "http-join".to_owned()
            })
        );
    }

    #[test]
    fn pending_types_serialise_to_json_by_their_names() {
        let json = serde_json::to_string(&[PendingType::Event, PendingType::HttpArtifact]).unwrap();
        assert_eq!(json, r#"["event","http-artifact"]"#);
    }

    #[test]
    fn pending_types_order_as_declared_for_deterministic_sets() {
        let set: std::collections::BTreeSet<_> = [
            PendingType::HttpArtifact,
            PendingType::Event,
            PendingType::Drive,
        ]
        .into();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), PendingType::ALL);
    }

    #[test]
    fn every_named_enum_round_trips_through_its_name() {
        fn check<T: Copy + fmt::Debug + PartialEq + FromStr + fmt::Display>(all: &[T]) {
            for value in all {
                let parsed = value.to_string().parse::<T>();
                assert!(parsed.is_ok_and(|parsed| parsed == *value), "{value:?}");
            }
        }
        check(PeerRole::ALL);
        check(Capability::ALL);
        check(HttpMethod::ALL);
        check(CoreRole::ALL);
        check(PendingState::ALL);
        check(AckStatus::ALL);
        check(ResyncStatus::ALL);
        check(ErrorCode::ALL);
    }

    #[test]
    fn mirror_range_request_new_checks_order_and_span() {
        let key = [1; 32];
        assert!(MirrorRangeRequest::new(key, 5, 5).is_ok(), "empty range");
        let max = MAX_MIRROR_BLOCKS_PER_RANGE as u64;
        let full = MirrorRangeRequest::new(key, 10, 10 + max).unwrap();
        assert_eq!(full.block_count(), max);
        assert_eq!(full.blocks(), 10..10 + max);
        assert_eq!(
            MirrorRangeRequest::new(key, 10, 11 + max),
            Err(WireError::InvalidRange {
                start: 10,
                end: 11 + max
            })
        );
        assert_eq!(
            MirrorRangeRequest::new(key, 6, 5),
            Err(WireError::InvalidRange { start: 6, end: 5 })
        );
        assert!(MirrorRangeRequest::new(key, u64::MAX - 1, u64::MAX).is_ok());
    }

    #[test]
    fn bound_constants_have_their_documented_values() {
        assert_eq!(MAX_AGENT_BYTES, 64);
        assert_eq!(MAX_CAPABILITIES, 16);
        assert_eq!(MAX_RELAYS_PER_REGISTRATION, 1024);
        assert_eq!(MAX_RELAY_IDENTIFIERS, 16);
        assert_eq!(MAX_IDENTIFIER_BYTES, 256);
        assert_eq!(MAX_RELAY_NAME_BYTES, 256);
        assert_eq!(MAX_RELAY_DESCRIPTION_BYTES, 4096);
        assert_eq!(MAX_URL_BYTES, 2048);
        assert_eq!(MAX_ESCROW_ID_BYTES, 128);
        assert_eq!(MAX_POLICY_VERSION_BYTES, 128);
        assert_eq!(MAX_PERMITTED_GATEWAYS, 32);
        assert_eq!(MAX_REJECT_REASON_BYTES, 256);
        assert_eq!(MAX_NOSTR_FRAME_BYTES, 256 * 1024);
        assert_eq!(MAX_HTTP_PATH_BYTES, 4096);
        assert_eq!(MAX_HTTP_HEADERS, 64);
        assert_eq!(MAX_HEADER_NAME_BYTES, 128);
        assert_eq!(MAX_HEADER_VALUE_BYTES, 8192);
        assert_eq!(MAX_HTTP_BODY_BYTES, 8 * 1024 * 1024);
        assert_eq!(MAX_CORE_ADVERTS, 4096);
        assert_eq!(MAX_MIRROR_BLOCKS_PER_RANGE, 1024);
        assert_eq!(MAX_MIRROR_BLOCK_BYTES, 1024 * 1024);
        assert_eq!(MAX_MIRROR_PROOF_BYTES, 1024 * 1024);
        assert_eq!(MAX_PENDING_REASON_BYTES, 64);
        assert_eq!(MAX_PENDING_TYPES, 8);
        assert_eq!(MAX_DRIVE_IDENTIFIER_BYTES, 256);
        assert_eq!(MAX_ERROR_MESSAGE_BYTES, 1024);
    }
}
