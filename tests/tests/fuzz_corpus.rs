//! Replays every committed fuzz input through the calls its target makes.

use hypergate_core::nostr::{ClientMessage, Limits, RelayMessage};
use hypergate_core::wire::{FrameDecoder, MAX_FRAME_BYTES, decode, encode};
use hypergate_tests::corpus::corpus_files;

#[test]
fn wire_decode_corpus_replays_without_panics_and_round_trips() {
    let files = corpus_files("wire_decode").expect("fuzz/corpus/wire_decode exists");
    assert!(files.len() >= 10, "the seed corpus is committed");
    let mut decoded = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if let Ok(frame) = decode(&data) {
            decoded += 1;
            let again = encode(&frame).expect("a decoded frame re-encodes");
            assert_eq!(decode(&again).ok(), Some(frame), "{}", path.display());
        }
        let mut stream = FrameDecoder::new(MAX_FRAME_BYTES);
        stream.push(&data);
        while let Ok(Some(_)) = stream.next_frame() {}
    }
    assert!(
        decoded > 0,
        "the corpus holds valid frames, not only garbage"
    );
}

#[test]
fn nostr_frame_corpus_replays_without_panics() {
    let files = corpus_files("nostr_frame").expect("fuzz/corpus/nostr_frame exists");
    assert!(files.len() >= 10, "the seed corpus is committed");
    let mut parsed = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if let Ok(text) = std::str::from_utf8(&data) {
            if ClientMessage::parse(text, &Limits::default()).is_ok() {
                parsed += 1;
            }
            let _ = RelayMessage::parse(text);
        }
    }
    assert!(
        parsed > 0,
        "the corpus holds valid frames, not only garbage"
    );
}

#[test]
fn simulation_corpus_replays_with_every_invariant_holding() {
    use hypergate_tests::sim::{SimConfig, run_with_steps};
    let files = corpus_files("simulation").expect("fuzz/corpus/simulation exists");
    assert!(!files.is_empty());
    let start = std::time::Instant::now();
    for path in files {
        let data = std::fs::read(&path).unwrap();
        let Some((seed, choices)) = data.split_first_chunk::<8>() else {
            continue;
        };
        let choices = &choices[..choices.len().min(400)];
        if let Err(violation) = run_with_steps(
            u64::from_le_bytes(*seed),
            &SimConfig::default(),
            start,
            choices,
        ) {
            panic!("{}: {violation}", path.display());
        }
    }
}

#[test]
fn storage_decode_corpus_replays_without_panics_and_round_trips() {
    use hypergate_tests::decoders::{StorageDecoder, check_storage_input};
    let files = corpus_files("storage_decode").expect("fuzz/corpus/storage_decode exists");
    let mut accepted_by = [0usize; StorageDecoder::ALL.len()];
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if check_storage_input(&data)
            && let Some(&selector) = data.first()
        {
            accepted_by[usize::from(selector) % StorageDecoder::ALL.len()] += 1;
        }
    }
    assert!(
        accepted_by.iter().all(|&n| n > 0),
        "every decoder has valid inputs in the corpus, not only garbage: {accepted_by:?}"
    );
}

/// Writes valid seed inputs for every storage decoder. Run by hand when a format
/// changes: `cargo test -p hypergate-tests --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_storage_decode_seeds() {
    use hypergate_adapters::drive::{DriveEntry, FileEntry, MetaBlock, encode_meta_block};
    use hypergate_adapters::log::{HyperLog, encode_proof};
    use hypergate_core::relay::{RelayOp, WriterKey};
    use hypergate_tests::corpus::corpus_dir;
    use hypergate_tests::decoders::StorageDecoder;

    let dir = corpus_dir("storage_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(StorageDecoder, Vec<u8>)> = Vec::new();
    let event_json = r#"{"id":"0000000000000000000000000000000000000000000000000000000000000000","pubkey":"0101010101010101010101010101010101010101010101010101010101010101","created_at":1,"kind":1,"tags":[["e","abc"]],"content":"hi","sig":"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"}"#;
    let event = hypergate_core::nostr::Event::parse_json(event_json).unwrap();
    seeds.push((
        StorageDecoder::RelayOp,
        RelayOp::event(&event).unwrap().encode(),
    ));
    seeds.push((
        StorageDecoder::RelayOp,
        RelayOp::AddWriter {
            key: WriterKey([3; 32]),
        }
        .encode(),
    ));
    seeds.push((
        StorageDecoder::RelayOp,
        RelayOp::RemoveWriter {
            key: WriterKey([4; 32]),
            final_length: 9,
        }
        .encode(),
    ));
    let proofs = smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = HyperLog::create(&tmp.path().join("log"), None)
            .await
            .unwrap();
        log.append_batch(&[b"one".as_slice(), b"two", b"three"])
            .await
            .unwrap();
        log.export_range(1, 1..3).await.unwrap()
    });
    for proof in &proofs {
        seeds.push((StorageDecoder::Proof, encode_proof(proof)));
    }
    seeds.push((
        StorageDecoder::SealedEnvelope,
        br#"{"cipherText":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","publicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#.to_vec(),
    ));
    seeds.push((
        StorageDecoder::DriveMeta,
        encode_meta_block(&MetaBlock::Header { blobs_key: [5; 32] }),
    ));
    seeds.push((
        StorageDecoder::DriveMeta,
        encode_meta_block(&MetaBlock::Entry(DriveEntry::Put(FileEntry {
            path: "/relay/avatar.png".to_owned(),
            blob_start: 0,
            blob_blocks: 1,
            size: 10,
            sha256: [6; 32],
            written_at: hypergate_core::time::UnixTime(1_700_000_000_000),
        }))),
    ));
    seeds.push((
        StorageDecoder::DriveMeta,
        encode_meta_block(&MetaBlock::Entry(DriveEntry::Delete {
            path: "/relay/old.txt".to_owned(),
        })),
    ));
    seeds.push((
        StorageDecoder::IndexRecord,
        hypergate_adapters::index::codec::encode(&event).unwrap(),
    ));
    for (n, (decoder, input)) in seeds.into_iter().enumerate() {
        let mut data = vec![decoder.selector()];
        data.extend(input);
        assert!(
            hypergate_tests::decoders::check_storage_input(&data),
            "seed {n} ({decoder:?}) must decode"
        );
        std::fs::write(dir.join(format!("seed-{n:02}-{decoder:?}")), data).unwrap();
    }
}

#[test]
fn service_decode_corpus_replays_without_panics() {
    use hypergate_tests::decoders::check_service_input;
    let files = corpus_files("service_decode").expect("fuzz/corpus/service_decode exists");
    let mut accepted = [0usize; 9];
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if check_service_input(&data)
            && let Some(&selector) = data.first()
        {
            accepted[usize::from(selector) % 9] += 1;
        }
    }
    // Deposits need a fresh owner signature and handshakes a live peer, so the
    // committed valid inputs cover the other parsers.
    for parser in [1, 2, 3, 4, 7] {
        assert!(
            accepted[parser] > 0,
            "parser {parser} has valid inputs: {accepted:?}"
        );
    }
}

/// Writes valid seed inputs for the service decoders. Run by hand when a format
/// changes: `cargo test -p hypergate-tests --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_service_decode_seeds() {
    use hypergate_adapters::peer_link::record::encode_frame_record;
    use hypergate_core::wire::{Frame, Heartbeat, Message};
    use hypergate_tests::corpus::corpus_dir;
    use hypergate_tests::decoders::check_service_input;

    let dir = corpus_dir("service_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let relay = "11".repeat(32);
    let peer = "22".repeat(32);
    let lease = format!("lease-{relay}-3");
    let mut seeds: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            format!(
                r#"{{"relayKey":"{relay}","ownerPeerKey":"{peer}","encryptedPackage":{{"cipherText":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB","nonce":"AgICAgICAgICAgICAgICAgICAgICAgIC","publicKey":"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="}},"policyVersion":"v1","metadata":{{"identifier":"npub1x:relay"}},"permittedRequesters":["{peer}"],"expiresAt":1700086400000,"createdAt":1700000000000,"ownerSignature":"{}"}}"#,
                "00".repeat(64)
            )
            .into_bytes(),
        ),
        (
            1,
            format!(
                r#"{{"relayKey":"{relay}","requesterId":"{peer}","sessionPublicKey":"CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=","evidence":{{"registration":{{"escrowEnabled":true}},"peerHealth":{{"healthyCount":0}}}}}}"#
            )
            .into_bytes(),
        ),
        (2, format!(r#"{{"relayKey":"{relay}","actor":"ops","reason":"rotation"}}"#).into_bytes()),
        (2, format!(r#"{{"ownerPeerKey":"{peer}"}}"#).into_bytes()),
        (3, format!(r#"{{"leaseId":"{lease}"}}"#).into_bytes()),
        (4, format!(r#"{{"leaseId":"{lease}","reason":"peer-healthy"}}"#).into_bytes()),
    ];
    let mut records = Vec::new();
    encode_frame_record(
        &Frame::new(
            7,
            Message::Heartbeat(Heartbeat {
                seq: 1,
                sent_at: hypergate_core::time::UnixTime(1_700_000_000_000),
            }),
        ),
        &mut records,
    )
    .unwrap();
    seeds.push((7, records));
    for (n, (selector, input)) in seeds.into_iter().enumerate() {
        let mut data = vec![selector];
        data.extend(input);
        if selector != 0 {
            assert!(check_service_input(&data), "seed {n} must be accepted");
        }
        std::fs::write(dir.join(format!("seed-{n:02}-{selector}")), data).unwrap();
    }
}
