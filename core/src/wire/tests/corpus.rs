//! The seed corpus of the `wire_decode` fuzz target (`fuzz/corpus/wire_decode/`).
//!
//! Files named `valid_*` decode (the `*_stream` ones through [`FrameDecoder`], the others through
//! [`decode`]); files named `invalid_*` are refused by both. Regenerate after a wire change with
//! `WRITE_CORPUS=1 cargo test -p hypergate-core write_fuzz_corpus -- --ignored`.

use std::path::PathBuf;

use super::{sample_frames, varint};
use crate::wire::*;

/// Every seed file: name and contents.
fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let frames = sample_frames();
    let mut files: Vec<(String, Vec<u8>)> = frames
        .iter()
        .map(|frame| {
            (
                format!("valid_{}.bin", frame.message.kind()),
                encode(frame).unwrap(),
            )
        })
        .collect();

    let mut stream = Vec::new();
    for frame in frames.iter().take(4) {
        stream.extend(encode_length_prefixed(frame).unwrap());
    }
    files.push(("valid_four_frames_stream.bin".to_owned(), stream));

    let hello = encode(&frames[0]).unwrap();
    let mut trailing = hello.clone();
    trailing.push(0);
    let mut next_version = hello.clone();
    next_version[..2].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
    let mut too_many_cores = vec![0x00, 0x02, 0x00, 8];
    too_many_cores.extend(varint(MAX_CORE_ADVERTS as u64 + 1));
    too_many_cores.extend(vec![0; 64]);
    let mut reversed_range = vec![0x00, 0x02, 0x00, 9];
    reversed_range.extend([0x44; 32]);
    reversed_range.extend([5, 4]);
    let mut oversize_prefix = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes().to_vec();
    oversize_prefix.extend(&hello);

    files.extend([
        ("invalid_empty.bin".to_owned(), Vec::new()),
        ("invalid_one_byte.bin".to_owned(), vec![0x00]),
        (
            "invalid_truncated_hello.bin".to_owned(),
            hello[..hello.len() / 2].to_vec(),
        ),
        ("invalid_trailing_byte.bin".to_owned(), trailing),
        ("invalid_unknown_version.bin".to_owned(), next_version),
        (
            "invalid_unknown_tag.bin".to_owned(),
            vec![0x00, 0x02, 0x00, 17, 0, 0],
        ),
        (
            "invalid_bad_utf8.bin".to_owned(),
            vec![0x00, 0x02, 0x00, 14, 4, 2, 0xff, 0xfe],
        ),
        ("invalid_too_many_cores.bin".to_owned(), too_many_cores),
        ("invalid_reversed_range.bin".to_owned(), reversed_range),
        (
            "invalid_oversize_length_prefix.bin".to_owned(),
            oversize_prefix,
        ),
        (
            "invalid_garbage.bin".to_owned(),
            b"\xde\xad\xbe\xef not a frame \x00\xff".to_vec(),
        ),
    ]);
    files
}

fn decodes_via_stream(bytes: &[u8]) -> bool {
    let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    decoder.push(bytes);
    let mut frames = 0;
    while let Ok(Some(_)) = decoder.next_frame() {
        frames += 1;
    }
    frames > 0 && decoder.error().is_none() && decoder.buffered_len() == 0
}

#[test]
fn corpus_seeds_decode_as_their_names_say() {
    for (name, bytes) in corpus_files() {
        let decodes = if name.ends_with("_stream.bin") {
            decodes_via_stream(&bytes)
        } else {
            decode(&bytes).is_ok()
        };
        assert_eq!(decodes, name.starts_with("valid_"), "{name}");
        if name.starts_with("invalid_") {
            assert!(
                !decodes_via_stream(&bytes),
                "{name} must not decode as a stream either"
            );
        }
    }
}

#[test]
fn committed_corpus_matches_the_generator() {
    // The fuzz crate lives outside the workspace; skip quietly if the corpus is not there yet.
    let dir = corpus_dir();
    if !dir.is_dir() {
        return;
    }
    for (name, bytes) in corpus_files() {
        let committed = std::fs::read(dir.join(&name));
        assert_eq!(
            committed.ok().as_ref(),
            Some(&bytes),
            "{name} is stale: regenerate the corpus"
        );
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_decode")
}

#[test]
#[ignore = "writes files; run with WRITE_CORPUS=1 to regenerate the fuzz corpus"]
fn write_fuzz_corpus() {
    if std::env::var_os("WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in corpus_files() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
