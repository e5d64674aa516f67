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
