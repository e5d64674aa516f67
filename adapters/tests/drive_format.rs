//! The metadata block format: round trips, bounds, and no panic on any input.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use hypergate_adapters::drive::{
    DriveEntry, FileEntry, MAX_FILE_BYTES, MAX_META_BLOCK_BYTES, META_FORMAT_VERSION, MetaBlock,
    MetaDecodeError, decode_meta_block, encode_meta_block, validate_path,
};
use hypergate_adapters::log::MAX_BLOCK_BYTES;
use hypergate_core::time::UnixTime;
use proptest::prelude::*;

fn put(path: &str, blob_start: u64, blob_blocks: u64, size: u64) -> MetaBlock {
    MetaBlock::Entry(DriveEntry::Put(FileEntry {
        path: path.to_owned(),
        blob_start,
        blob_blocks,
        size,
        sha256: [9; 32],
        written_at: UnixTime(42),
    }))
}

/// Every invariant a decoded block promises to its users.
fn assert_within_bounds(block: &MetaBlock) {
    match block {
        MetaBlock::Header { .. } => {}
        MetaBlock::Entry(DriveEntry::Delete { path }) => validate_path(path).unwrap(),
        MetaBlock::Entry(DriveEntry::Put(file)) => {
            validate_path(&file.path).unwrap();
            assert!(file.size <= MAX_FILE_BYTES);
            assert!(file.blob_start.checked_add(file.blob_blocks).is_some());
            assert!(file.blob_blocks <= file.size);
            assert!(file.size <= file.blob_blocks * MAX_BLOCK_BYTES as u64);
        }
        other => panic!("unexpected block kind {other:?}"),
    }
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._:-]{1,40}".prop_filter("not a dot segment", |s| s != "." && s != "..")
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 1..5)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn entry() -> impl Strategy<Value = MetaBlock> {
    prop_oneof![
        any::<[u8; 32]>().prop_map(|blobs_key| MetaBlock::Header { blobs_key }),
        path().prop_map(|path| MetaBlock::Entry(DriveEntry::Delete { path })),
        (
            path(),
            any::<u64>(),
            0..=MAX_FILE_BYTES,
            any::<[u8; 32]>(),
            any::<u64>()
        )
            .prop_map(|(path, start, size, sha256, written_at)| {
                let blocks = size.div_ceil(64 * 1024);
                MetaBlock::Entry(DriveEntry::Put(FileEntry {
                    path,
                    blob_start: start.min(u64::MAX - blocks),
                    blob_blocks: blocks,
                    size,
                    sha256,
                    written_at: UnixTime(written_at),
                }))
            }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_a_bounded_block_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        if let Ok(block) = decode_meta_block(&bytes) {
            assert_within_bounds(&block);
        }
        // Behind the right version byte the decoder reaches the body.
        let mut versioned = vec![META_FORMAT_VERSION];
        versioned.extend(&bytes);
        if let Ok(block) = decode_meta_block(&versioned) {
            assert_within_bounds(&block);
        }
    }

    #[test]
    fn arbitrary_puts_decode_only_when_their_fields_fit_together(
        path in "/[a-z./]{0,12}",
        blob_start in any::<u64>(),
        blob_blocks in any::<u64>(),
        size in any::<u64>(),
    ) {
        let bytes = encode_meta_block(&put(&path, blob_start, blob_blocks, size));
        if let Ok(block) = decode_meta_block(&bytes) {
            assert_within_bounds(&block);
        }
    }

    #[test]
    fn every_valid_block_round_trips_through_the_encoder(block in entry()) {
        let bytes = encode_meta_block(&block);
        prop_assert!(bytes.len() <= MAX_META_BLOCK_BYTES);
        prop_assert_eq!(decode_meta_block(&bytes).unwrap(), block);
    }
}

#[test]
fn decoding_rejects_each_kind_of_bad_block() {
    let good = encode_meta_block(&put("/a", 0, 1, 10));
    assert!(decode_meta_block(&good).is_ok());

    assert_eq!(decode_meta_block(&[]), Err(MetaDecodeError::Empty));
    let mut other_version = good.clone();
    other_version[0] = 2;
    assert_eq!(
        decode_meta_block(&other_version),
        Err(MetaDecodeError::UnsupportedVersion(2))
    );
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        decode_meta_block(&trailing),
        Err(MetaDecodeError::Malformed(_))
    ));
    assert!(matches!(
        decode_meta_block(&good[..good.len() - 1]),
        Err(MetaDecodeError::Malformed(_))
    ));
    assert_eq!(
        decode_meta_block(&vec![META_FORMAT_VERSION; MAX_META_BLOCK_BYTES + 1]),
        Err(MetaDecodeError::TooLarge(MAX_META_BLOCK_BYTES + 1))
    );
    for bad_path in ["", "a", "/../x", "/a//b", "/a/"] {
        assert!(
            matches!(
                decode_meta_block(&encode_meta_block(&put(bad_path, 0, 1, 1))),
                Err(MetaDecodeError::BadPath(_))
            ),
            "{bad_path:?}"
        );
    }
    let inconsistent = [
        put("/a", 0, 0, 1),                          // bytes but no block
        put("/a", 0, 2, 1),                          // an empty block
        put("/a", 0, 1, MAX_BLOCK_BYTES as u64 + 1), // a block over the limit
        put("/a", u64::MAX, 1, 1),                   // range overflows
        put("/a", 0, 2048, MAX_FILE_BYTES + 1),      // too large a file
    ];
    for block in inconsistent {
        assert!(
            matches!(
                decode_meta_block(&encode_meta_block(&block)),
                Err(MetaDecodeError::Inconsistent(_))
            ),
            "{block:?}"
        );
    }
}
