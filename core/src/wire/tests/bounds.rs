//! Every bound, at its limit and one past it, as a peer would send it.
//!
//! A bounded value cannot be built over its bound, so the over-long bytes are made the way a peer
//! with a larger bound would make them: encode the field at its limit, then grow that field's
//! encoding (length varint and contents) by one unit.

use super::{relay, varint};
use crate::ids::{PeerId, RelayKey};
use crate::time::UnixTime;
use crate::wire::*;

/// The filler of strings and byte strings; appears nowhere else in the frames below.
const MARK: u8 = b'~';

fn full_text<const MAX: usize>() -> BoundedString<MAX> {
    BoundedString::new(char::from(MARK).to_string().repeat(MAX)).unwrap()
}

fn full_bytes<const MAX: usize>() -> BoundedBytes<MAX> {
    BoundedBytes::new(vec![MARK; MAX]).unwrap()
}

fn full_list<T: Clone, const MAX: usize>(item: T) -> BoundedVec<T, MAX> {
    BoundedVec::new(vec![item; MAX]).unwrap()
}

fn empty<const MAX: usize>() -> BoundedString<MAX> {
    BoundedString::default()
}

fn one<T>(item: T) -> BoundedVec<T, 1024> {
    BoundedVec::new(vec![item]).unwrap()
}

/// A field at its bound inside `frame`, and what one more unit of it looks like on the wire.
struct Case {
    field: &'static str,
    what: &'static str,
    max: usize,
    /// Encoding of one character, byte or element of the field.
    unit: Vec<u8>,
    frame: Frame,
}

impl Case {
    fn text(field: &'static str, max: usize, message: Message) -> Case {
        Case {
            field,
            what: "string",
            max,
            unit: vec![MARK],
            frame: Frame::new(1, message),
        }
    }

    fn bytes(field: &'static str, max: usize, message: Message) -> Case {
        Case {
            field,
            what: "bytes",
            max,
            unit: vec![MARK],
            frame: Frame::new(1, message),
        }
    }

    fn list(field: &'static str, max: usize, unit: Vec<u8>, message: Message) -> Case {
        Case {
            field,
            what: "list",
            max,
            unit,
            frame: Frame::new(1, message),
        }
    }

    /// The frame's encoding with this field grown from `max` to `max + 1` units.
    fn grown_by_one(&self) -> Vec<u8> {
        let encoded = encode(&self.frame).unwrap();
        let mut at_limit = varint(self.max as u64);
        at_limit.extend(self.unit.repeat(self.max));
        let at = encoded
            .windows(at_limit.len())
            .position(|window| window == at_limit.as_slice())
            .unwrap_or_else(|| panic!("{}: field at its limit not found", self.field));
        let mut grown = encoded[..at].to_vec();
        grown.extend(varint(self.max as u64 + 1));
        grown.extend(self.unit.repeat(self.max + 1));
        grown.extend(&encoded[at + at_limit.len()..]);
        grown
    }
}

fn registration() -> RelayRegistration {
    RelayRegistration {
        relay_key: relay(),
        identifiers: BoundedVec::empty(),
        metadata: RelayMetadata::default(),
        requires_auth: false,
        escrow: None,
    }
}

fn escrow() -> EscrowRegistration {
    EscrowRegistration {
        escrow_id: BoundedString::default(),
        policy_version: BoundedString::default(),
        permitted_gateways: BoundedVec::empty(),
        expires_at: UnixTime(1),
    }
}

fn register(registration: RelayRegistration) -> Message {
    Message::RegisterRelays(RegisterRelays {
        relays: one(registration),
    })
}

fn http(path: BoundedString<MAX_HTTP_PATH_BYTES>, headers: HttpHeaders, body: HttpBody) -> Message {
    Message::HttpRequest(HttpRequest {
        method: HttpMethod::Put,
        path,
        headers,
        body,
    })
}

fn header(
    name: BoundedString<MAX_HEADER_NAME_BYTES>,
    value: BoundedString<MAX_HEADER_VALUE_BYTES>,
) -> Header {
    Header { name, value }
}

fn mirror(
    blocks: BoundedVec<MirrorBlock, MAX_MIRROR_BLOCKS_PER_RANGE>,
    proof: BoundedBytes<MAX_MIRROR_PROOF_BYTES>,
) -> Message {
    Message::MirrorRangeResponse(MirrorRangeResponse {
        core_key: [1; 32],
        start: 0,
        blocks,
        proof,
    })
}

fn push(
    reason: BoundedString<MAX_PENDING_REASON_BYTES>,
    types: BoundedVec<PendingType, MAX_PENDING_TYPES>,
    drive_identifier: Option<BoundedString<MAX_DRIVE_IDENTIFIER_BYTES>>,
) -> Message {
    Message::PendingWritePush(PendingWritePush {
        push_id: 1,
        relay_key: relay(),
        state: PendingState::Pending,
        reason,
        types,
        drive_identifier,
        drive_version: None,
        pending_since: UnixTime(1),
        updated_at: UnixTime(2),
        lease_version: None,
        lease_active: false,
        cleared_at: None,
    })
}

fn cases() -> Vec<Case> {
    let marked_key = [MARK; 32];
    let hello = |agent, capabilities| {
        Message::Hello(Hello {
            peer_id: PeerId([1; 32]),
            role: PeerRole::Worker,
            agent,
            capabilities,
        })
    };
    let with_metadata = |metadata| {
        register(RelayRegistration {
            metadata,
            ..registration()
        })
    };
    let with_escrow = |escrow| {
        register(RelayRegistration {
            escrow: Some(escrow),
            ..registration()
        })
    };
    vec![
        Case::text(
            "hello.agent",
            MAX_AGENT_BYTES,
            hello(full_text(), BoundedVec::empty()),
        ),
        Case::list(
            "hello.capabilities",
            MAX_CAPABILITIES,
            vec![2],
            hello(empty(), full_list(Capability::Mirror)),
        ),
        Case::list(
            "register_relays.relays",
            MAX_RELAYS_PER_REGISTRATION,
            [marked_key.as_slice(), &[0; 8]].concat(),
            Message::RegisterRelays(RegisterRelays {
                relays: full_list(RelayRegistration {
                    relay_key: RelayKey(marked_key),
                    ..registration()
                }),
            }),
        ),
        Case::list(
            "registration.identifiers",
            MAX_RELAY_IDENTIFIERS,
            vec![1, MARK],
            register(RelayRegistration {
                identifiers: full_list(BoundedString::new("~").unwrap()),
                ..registration()
            }),
        ),
        Case::text(
            "registration.identifier",
            MAX_IDENTIFIER_BYTES,
            register(RelayRegistration {
                identifiers: BoundedVec::new(vec![full_text()]).unwrap(),
                ..registration()
            }),
        ),
        Case::text(
            "metadata.name",
            MAX_RELAY_NAME_BYTES,
            with_metadata(RelayMetadata {
                name: Some(full_text()),
                ..Default::default()
            }),
        ),
        Case::text(
            "metadata.description",
            MAX_RELAY_DESCRIPTION_BYTES,
            with_metadata(RelayMetadata {
                description: Some(full_text()),
                ..Default::default()
            }),
        ),
        Case::text(
            "metadata.avatar_url",
            MAX_URL_BYTES,
            with_metadata(RelayMetadata {
                avatar_url: Some(full_text()),
                ..Default::default()
            }),
        ),
        Case::text(
            "escrow.escrow_id",
            MAX_ESCROW_ID_BYTES,
            with_escrow(EscrowRegistration {
                escrow_id: full_text(),
                ..escrow()
            }),
        ),
        Case::text(
            "escrow.policy_version",
            MAX_POLICY_VERSION_BYTES,
            with_escrow(EscrowRegistration {
                policy_version: full_text(),
                ..escrow()
            }),
        ),
        Case::list(
            "escrow.permitted_gateways",
            MAX_PERMITTED_GATEWAYS,
            marked_key.to_vec(),
            with_escrow(EscrowRegistration {
                permitted_gateways: full_list(PeerId(marked_key)),
                ..escrow()
            }),
        ),
        Case::list(
            "register_ack.accepted",
            MAX_RELAYS_PER_REGISTRATION,
            marked_key.to_vec(),
            Message::RegisterAck(RegisterAck {
                accepted: full_list(RelayKey(marked_key)),
                rejected: BoundedVec::empty(),
                lease_epochs: BoundedVec::empty(),
            }),
        ),
        Case::list(
            "register_ack.rejected",
            MAX_RELAYS_PER_REGISTRATION,
            [marked_key.as_slice(), &[0]].concat(),
            Message::RegisterAck(RegisterAck {
                accepted: BoundedVec::empty(),
                rejected: full_list(RejectedRelay {
                    relay_key: RelayKey(marked_key),
                    reason: empty(),
                }),
                lease_epochs: BoundedVec::empty(),
            }),
        ),
        Case::list(
            "register_ack.lease_epochs",
            MAX_RELAYS_PER_REGISTRATION,
            [marked_key.as_slice(), &[0]].concat(),
            Message::RegisterAck(RegisterAck {
                accepted: BoundedVec::empty(),
                rejected: BoundedVec::empty(),
                lease_epochs: full_list(RelayLeaseEpoch {
                    relay_key: RelayKey(marked_key),
                    epoch: 0,
                }),
            }),
        ),
        Case::list(
            "mirror_proof_request.blocks",
            MAX_MIRROR_BLOCKS_PER_RANGE,
            vec![0, 0],
            Message::MirrorProofRequest(MirrorProofRequest {
                core_key: marked_key,
                signed_length: 0,
                blocks: full_list((0, 0)),
            }),
        ),
        Case::text(
            "rejected_relay.reason",
            MAX_REJECT_REASON_BYTES,
            Message::RegisterAck(RegisterAck {
                accepted: BoundedVec::empty(),
                rejected: one(RejectedRelay {
                    relay_key: relay(),
                    reason: full_text(),
                }),
                lease_epochs: BoundedVec::empty(),
            }),
        ),
        Case::text(
            "nostr_frame.frame",
            MAX_NOSTR_FRAME_BYTES,
            Message::NostrFrame(NostrFrame {
                relay_key: relay(),
                session: 1,
                frame: full_text(),
            }),
        ),
        Case::text(
            "http_request.path",
            MAX_HTTP_PATH_BYTES,
            http(full_text(), BoundedVec::empty(), HttpBody::default()),
        ),
        Case::list(
            "http.headers",
            MAX_HTTP_HEADERS,
            vec![1, MARK, 1, MARK],
            http(
                empty(),
                full_list(header(
                    BoundedString::new("~").unwrap(),
                    BoundedString::new("~").unwrap(),
                )),
                HttpBody::default(),
            ),
        ),
        Case::text(
            "header.name",
            MAX_HEADER_NAME_BYTES,
            http(
                empty(),
                BoundedVec::new(vec![header(full_text(), empty())]).unwrap(),
                HttpBody::default(),
            ),
        ),
        Case::text(
            "header.value",
            MAX_HEADER_VALUE_BYTES,
            http(
                empty(),
                BoundedVec::new(vec![header(empty(), full_text())]).unwrap(),
                HttpBody::default(),
            ),
        ),
        Case::bytes(
            "http.body",
            MAX_HTTP_BODY_BYTES,
            http(empty(), BoundedVec::empty(), full_bytes()),
        ),
        Case::list(
            "mirror_advertise.cores",
            MAX_CORE_ADVERTS,
            [marked_key.as_slice(), marked_key.as_slice(), &[0, 0, 0, 0]].concat(),
            Message::MirrorAdvertise(MirrorAdvertise {
                cores: full_list(CoreAdvert {
                    core_key: marked_key,
                    relay_key: RelayKey(marked_key),
                    role: CoreRole::Owner,
                    length: 0,
                    announce: false,
                    priority: 0,
                }),
            }),
        ),
        Case::list(
            "mirror_range_response.blocks",
            MAX_MIRROR_BLOCKS_PER_RANGE,
            vec![0],
            mirror(full_list(MirrorBlock::default()), BoundedBytes::default()),
        ),
        Case::bytes(
            "mirror_range_response.block",
            MAX_MIRROR_BLOCK_BYTES,
            mirror(
                BoundedVec::new(vec![full_bytes()]).unwrap(),
                BoundedBytes::default(),
            ),
        ),
        Case::bytes(
            "mirror_range_response.proof",
            MAX_MIRROR_PROOF_BYTES,
            mirror(BoundedVec::empty(), full_bytes()),
        ),
        Case::text(
            "pending_write_push.reason",
            MAX_PENDING_REASON_BYTES,
            push(full_text(), BoundedVec::empty(), None),
        ),
        Case::list(
            "pending_write_push.types",
            MAX_PENDING_TYPES,
            vec![1],
            push(empty(), full_list(PendingType::Drive), None),
        ),
        Case::text(
            "pending_write_push.drive_identifier",
            MAX_DRIVE_IDENTIFIER_BYTES,
            push(empty(), BoundedVec::empty(), Some(full_text())),
        ),
        Case::text(
            "error.message",
            MAX_ERROR_MESSAGE_BYTES,
            Message::Error(ErrorMessage {
                code: ErrorCode::Internal,
                message: full_text(),
            }),
        ),
    ]
}

#[test]
fn every_bound_accepts_its_limit_and_rejects_one_more_at_decode() {
    for case in cases() {
        let at_limit = encode(&case.frame).unwrap();
        assert_eq!(
            decode(&at_limit).as_ref(),
            Ok(&case.frame),
            "{}: limit accepted",
            case.field
        );
        assert_eq!(
            decode(&case.grown_by_one()),
            Err(WireError::TooLong {
                what: case.what,
                max: case.max,
                got: case.max + 1
            }),
            "{}: one past the limit rejected",
            case.field
        );
    }
}

#[test]
fn every_message_but_a_mirror_response_fits_a_frame_with_all_fields_at_their_limits() {
    // The messages with variable-length fields, every string and list full (a mirror response
    // is the one whose sender must split it).
    let full_registration = RelayRegistration {
        relay_key: relay(),
        identifiers: full_list(full_text()),
        metadata: RelayMetadata {
            name: Some(full_text()),
            description: Some(full_text()),
            avatar_url: Some(full_text()),
            is_public: Some(true),
            metadata_updated_at: Some(UnixTime(u64::MAX)),
        },
        requires_auth: true,
        escrow: Some(EscrowRegistration {
            escrow_id: full_text(),
            policy_version: full_text(),
            permitted_gateways: full_list(PeerId([9; 32])),
            expires_at: UnixTime(u64::MAX),
        }),
    };
    let registration = Message::RegisterRelays(RegisterRelays {
        relays: full_list(full_registration),
    });
    let request = http(
        full_text(),
        full_list(header(full_text(), full_text())),
        full_bytes(),
    );
    let ack = Message::RegisterAck(RegisterAck {
        accepted: full_list(relay()),
        rejected: full_list(RejectedRelay {
            relay_key: relay(),
            reason: full_text(),
        }),
        lease_epochs: full_list(RelayLeaseEpoch {
            relay_key: relay(),
            epoch: u64::MAX,
        }),
    });
    let proof_request = Message::MirrorProofRequest(MirrorProofRequest {
        core_key: [9; 32],
        signed_length: u64::MAX,
        blocks: full_list((u64::MAX, u64::MAX)),
    });
    let advertise = Message::MirrorAdvertise(MirrorAdvertise {
        cores: full_list(CoreAdvert {
            core_key: [9; 32],
            relay_key: relay(),
            role: CoreRole::DriveBlobs,
            length: u64::MAX,
            announce: true,
            priority: u8::MAX,
        }),
    });
    let pending = push(
        full_text(),
        full_list(PendingType::HttpArtifact),
        Some(full_text()),
    );
    for message in [
        registration,
        request,
        ack,
        advertise,
        pending,
        proof_request,
    ] {
        let kind = message.kind();
        assert!(
            encode(&Frame::new(u64::MAX, message)).is_ok(),
            "{kind} fits"
        );
    }
}
