//! proptest strategies for every wire type. Sizes stay small (a few elements, short strings) so
//! that hundreds of cases run in well under a second; the bounds themselves are tested at their
//! limits in `bounds.rs`.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;
use crate::wire::*;

/// Longest list a strategy generates.
const LIST: usize = 3;

pub(super) fn text<const MAX: usize>() -> impl Strategy<Value = BoundedString<MAX>> {
    // Any chars, including multi-byte ones, cut to the byte bound at a char boundary.
    vec(any::<char>(), 0..12)
        .prop_map(|chars| BoundedString::truncating(&chars.into_iter().collect::<String>()))
}

pub(super) fn blob<const MAX: usize>() -> impl Strategy<Value = BoundedBytes<MAX>> {
    vec(any::<u8>(), 0..24).prop_map(|mut bytes| {
        bytes.truncate(MAX);
        BoundedBytes::new(bytes).unwrap()
    })
}

pub(super) fn list<S: Strategy, const MAX: usize>(
    element: S,
) -> impl Strategy<Value = BoundedVec<S::Value, MAX>> {
    vec(element, 0..=LIST.min(MAX)).prop_map(|items| BoundedVec::new(items).unwrap())
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    key().prop_map(PeerId)
}

fn relay_key() -> impl Strategy<Value = RelayKey> {
    key().prop_map(RelayKey)
}

fn time() -> impl Strategy<Value = UnixTime> {
    any::<u64>().prop_map(UnixTime)
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        peer_id(),
        select(PeerRole::ALL),
        text(),
        list(select(Capability::ALL)),
    )
        .prop_map(|(peer_id, role, agent, capabilities)| Hello {
            peer_id,
            role,
            agent,
            capabilities,
        })
}

fn relay_metadata() -> impl Strategy<Value = RelayMetadata> {
    (
        option::of(text()),
        option::of(text()),
        option::of(text()),
        option::of(any::<bool>()),
        option::of(time()),
    )
        .prop_map(
            |(name, description, avatar_url, is_public, metadata_updated_at)| RelayMetadata {
                name,
                description,
                avatar_url,
                is_public,
                metadata_updated_at,
            },
        )
}

fn escrow_registration() -> impl Strategy<Value = EscrowRegistration> {
    (text(), text(), list(peer_id()), time()).prop_map(
        |(escrow_id, policy_version, permitted_gateways, expires_at)| EscrowRegistration {
            escrow_id,
            policy_version,
            permitted_gateways,
            expires_at,
        },
    )
}

fn relay_registration() -> impl Strategy<Value = RelayRegistration> {
    (
        relay_key(),
        list(text()),
        relay_metadata(),
        any::<bool>(),
        option::of(escrow_registration()),
    )
        .prop_map(
            |(relay_key, identifiers, metadata, requires_auth, escrow)| RelayRegistration {
                relay_key,
                identifiers,
                metadata,
                requires_auth,
                escrow,
            },
        )
}

fn register_ack() -> impl Strategy<Value = RegisterAck> {
    let rejected =
        (relay_key(), text()).prop_map(|(relay_key, reason)| RejectedRelay { relay_key, reason });
    let lease = (relay_key(), any::<u64>())
        .prop_map(|(relay_key, epoch)| RelayLeaseEpoch { relay_key, epoch });
    (list(relay_key()), list(rejected), list(lease)).prop_map(
        |(accepted, rejected, lease_epochs)| RegisterAck {
            accepted,
            rejected,
            lease_epochs,
        },
    )
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (any::<u64>(), time()).prop_map(|(seq, sent_at)| Heartbeat { seq, sent_at })
}

fn nostr_frame() -> impl Strategy<Value = NostrFrame> {
    (relay_key(), any::<u64>(), text()).prop_map(|(relay_key, session, frame)| NostrFrame {
        relay_key,
        session,
        frame,
    })
}

fn headers() -> impl Strategy<Value = HttpHeaders> {
    list((text(), text()).prop_map(|(name, value)| Header { name, value }))
}

fn http_request() -> impl Strategy<Value = HttpRequest> {
    (select(HttpMethod::ALL), text(), headers(), blob()).prop_map(
        |(method, path, headers, body)| HttpRequest {
            method,
            path,
            headers,
            body,
        },
    )
}

fn http_response() -> impl Strategy<Value = HttpResponse> {
    (any::<u16>(), headers(), blob()).prop_map(|(status, headers, body)| HttpResponse {
        status,
        headers,
        body,
    })
}

fn core_advert() -> impl Strategy<Value = CoreAdvert> {
    (
        key(),
        relay_key(),
        select(CoreRole::ALL),
        any::<u64>(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(
            |(core_key, relay_key, role, length, announce, priority)| CoreAdvert {
                core_key,
                relay_key,
                role,
                length,
                announce,
                priority,
            },
        )
}

fn mirror_range_request() -> impl Strategy<Value = MirrorRangeRequest> {
    let max_span = MAX_MIRROR_BLOCKS_PER_RANGE as u64;
    (key(), any::<u64>(), 0..=max_span).prop_map(|(core_key, start, span)| {
        let start = start.min(u64::MAX - span);
        MirrorRangeRequest::new(core_key, start, start + span).unwrap()
    })
}

fn mirror_range_response() -> impl Strategy<Value = MirrorRangeResponse> {
    (key(), any::<u64>(), list(blob()), blob()).prop_map(|(core_key, start, blocks, proof)| {
        MirrorRangeResponse {
            core_key,
            start,
            blocks,
            proof,
        }
    })
}

fn pending_write_push() -> impl Strategy<Value = PendingWritePush> {
    let what = (
        any::<u64>(),
        relay_key(),
        select(PendingState::ALL),
        text(),
        list(select(PendingType::ALL)),
        option::of(text()),
        option::of(any::<u64>()),
    );
    let when = (
        time(),
        time(),
        option::of(any::<u64>()),
        any::<bool>(),
        option::of(time()),
    );
    (what, when).prop_map(
        |(
            (push_id, relay_key, state, reason, types, drive_identifier, drive_version),
            (pending_since, updated_at, lease_version, lease_active, cleared_at),
        )| PendingWritePush {
            push_id,
            relay_key,
            state,
            reason,
            types,
            drive_identifier,
            drive_version,
            pending_since,
            updated_at,
            lease_version,
            lease_active,
            cleared_at,
        },
    )
}

fn push_ack() -> impl Strategy<Value = PushAck> {
    (any::<u64>(), relay_key(), time(), select(AckStatus::ALL)).prop_map(
        |(push_id, relay_key, updated_at, status)| PushAck {
            push_id,
            relay_key,
            updated_at,
            status,
        },
    )
}

fn resync_complete() -> impl Strategy<Value = ResyncComplete> {
    (relay_key(), time(), any::<u64>()).prop_map(
        |(relay_key, resynced_through, gateway_writer_length)| ResyncComplete {
            relay_key,
            resynced_through,
            gateway_writer_length,
        },
    )
}

fn mirror_proof_request() -> impl Strategy<Value = MirrorProofRequest> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        list((any::<u64>(), any::<u64>())),
    )
        .prop_map(|(core_key, signed_length, blocks)| MirrorProofRequest {
            core_key,
            signed_length,
            blocks,
        })
}

fn resync_ack() -> impl Strategy<Value = ResyncAck> {
    (relay_key(), time(), select(ResyncStatus::ALL)).prop_map(
        |(relay_key, resynced_through, status)| ResyncAck {
            relay_key,
            resynced_through,
            status,
        },
    )
}

fn error_message() -> impl Strategy<Value = ErrorMessage> {
    (select(ErrorCode::ALL), text()).prop_map(|(code, message)| ErrorMessage { code, message })
}

/// Any message, every kind equally likely.
pub(super) fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        list(relay_registration())
            .prop_map(|relays| Message::RegisterRelays(RegisterRelays { relays })),
        register_ack().prop_map(Message::RegisterAck),
        heartbeat().prop_map(Message::Heartbeat),
        heartbeat().prop_map(Message::HeartbeatAck),
        nostr_frame().prop_map(Message::NostrFrame),
        http_request().prop_map(Message::HttpRequest),
        http_response().prop_map(Message::HttpResponse),
        list(core_advert()).prop_map(|cores| Message::MirrorAdvertise(MirrorAdvertise { cores })),
        mirror_range_request().prop_map(Message::MirrorRangeRequest),
        mirror_range_response().prop_map(Message::MirrorRangeResponse),
        pending_write_push().prop_map(Message::PendingWritePush),
        push_ack().prop_map(Message::PushAck),
        resync_complete().prop_map(Message::ResyncComplete),
        error_message().prop_map(Message::Error),
        resync_ack().prop_map(Message::ResyncAck),
        mirror_proof_request().prop_map(Message::MirrorProofRequest),
    ]
}

/// Any frame.
pub(super) fn frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), message()).prop_map(|(request_id, message)| Frame {
        request_id,
        message,
    })
}
