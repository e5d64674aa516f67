//! One drive: round trips, versions, history, listing, receipts.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::io::AsyncRead;
use hypergate_adapters::drive::{
    BATCH_BLOCKS, CHUNK_BYTES, Drive, DriveEntry, DriveError, PathError, WriteReceipt,
    discovery_key,
};
use hypergate_core::time::UnixTime;
use sha2::{Digest, Sha256};

const T0: UnixTime = UnixTime(1_700_000_000_000);

/// Incompressible, reproducible content.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn fresh(dir: &Path) -> Drive {
    Drive::open_or_create(&dir.join("drive")).await.unwrap()
}

async fn stream_all(drive: &mut Drive, path: &str) -> Vec<Vec<u8>> {
    let mut reader = drive.open_file(path).unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.unwrap() {
        chunks.push(chunk);
    }
    // A finished reader stays finished.
    assert_eq!(reader.next_chunk().await.unwrap(), None);
    chunks
}

#[test]
fn a_new_drive_is_at_version_one_with_only_its_header() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        assert_eq!(drive.version(), 1);
        assert!(drive.list("/").unwrap().is_empty());
        assert!(drive.entries_since(0).await.unwrap().is_empty());
        assert_ne!(drive.key(), drive.blobs_key());
    });
}

#[test]
fn an_empty_file_round_trips_with_zero_blocks() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let receipt = drive.write("/empty", b"", T0).await.unwrap();
        assert_eq!(receipt.bytes_written, 0);
        assert_eq!(receipt.version, 2);
        assert_eq!(receipt.blob_length, 0);
        let stat = drive.stat("/empty").unwrap();
        assert_eq!(stat.entry.blob_blocks, 0);
        assert_eq!(stat.entry.sha256, <[u8; 32]>::from(Sha256::digest(b"")));
        assert!(stream_all(&mut drive, "/empty").await.is_empty());
        assert_eq!(drive.read_to_vec("/empty").await.unwrap(), Some(Vec::new()));
    });
}

#[test]
fn a_small_file_round_trips_and_the_receipt_describes_the_write() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let bytes = b"hello drive".to_vec();
        let receipt = drive.write("/relay/hello.txt", &bytes, T0).await.unwrap();
        assert_eq!(receipt.path, "/relay/hello.txt");
        assert_eq!(receipt.bytes_written, bytes.len() as u64);
        assert_eq!(receipt.version, drive.version());
        assert_eq!(receipt.core_length, drive.version());
        assert_eq!(receipt.core_contiguous_length, drive.version());
        assert_eq!(receipt.blob_length, 1);
        assert_eq!(receipt.blob_contiguous_length, 1);
        assert_eq!(receipt.key, hex::encode(drive.key()));
        assert_eq!(
            receipt.discovery_key,
            hex::encode(discovery_key(&drive.key()))
        );
        assert_eq!(receipt.sha256, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(receipt.identifier, None);
        assert_eq!(
            stream_all(&mut drive, "/relay/hello.txt").await,
            vec![bytes.clone()]
        );
        let stat = drive.stat("/relay/hello.txt").unwrap();
        assert_eq!(stat.entry.written_at, T0);
        assert_eq!(stat.version, receipt.version);
        assert_eq!(drive.read_to_vec("/relay/missing").await.unwrap(), None);
        assert!(drive.open_file("/relay/missing").is_none());
    });
}

#[test]
fn a_five_mib_file_is_chunked_and_streams_back_verified() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let bytes = content(5 << 20, 5);
        let receipt = drive.write("/big.bin", &bytes, T0).await.unwrap();
        let blocks = (5 << 20) / CHUNK_BYTES as u64;
        assert_eq!(receipt.blob_length, blocks);
        assert_eq!(drive.stat("/big.bin").unwrap().entry.blob_blocks, blocks);

        let chunks = stream_all(&mut drive, "/big.bin").await;
        assert_eq!(chunks.len() as u64, blocks);
        assert!(chunks.iter().all(|c| c.len() == CHUNK_BYTES));
        let joined: Vec<u8> = chunks.concat();
        assert_eq!(
            Sha256::digest(&joined),
            Sha256::digest(&bytes),
            "streamed content differs"
        );
        assert_eq!(joined, bytes);
    });
}

/// Yields its bytes a few at a time, as a network body does.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
        let at = self.at;
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

#[test]
fn a_write_from_a_reader_with_short_reads_stores_full_chunks() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let bytes = content(3 * CHUNK_BYTES + 17, 9);
        let reader = Trickle {
            bytes: bytes.clone(),
            at: 0,
            step: 1000,
        };
        drive.write_from("/trickle", reader, T0).await.unwrap();
        let chunks = stream_all(&mut drive, "/trickle").await;
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![CHUNK_BYTES, CHUNK_BYTES, CHUNK_BYTES, 17]);
        assert_eq!(chunks.concat(), bytes);
    });
}

#[test]
fn overwriting_bumps_the_version_and_the_latest_content_wins() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let first = drive.write("/f", b"first", T0).await.unwrap();
        let second = drive
            .write("/f", b"second, longer", UnixTime(T0.0 + 1))
            .await
            .unwrap();
        assert_eq!(second.version, first.version + 1);
        assert_eq!(drive.version(), second.version);
        assert_eq!(
            drive.read_to_vec("/f").await.unwrap().unwrap(),
            b"second, longer"
        );
        let stat = drive.stat("/f").unwrap();
        assert_eq!(stat.version, second.version);
        assert_eq!(stat.entry.written_at, UnixTime(T0.0 + 1));
        assert_eq!(drive.list("/").unwrap().len(), 1);
    });
}

#[test]
fn deleting_hides_the_file_and_bumps_the_version_once() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        drive.write("/keep", b"k", T0).await.unwrap();
        drive.write("/gone", b"g", T0).await.unwrap();
        let before = drive.version();
        assert_eq!(drive.delete("/gone").await.unwrap(), Some(before + 1));
        assert_eq!(drive.stat("/gone"), None);
        assert_eq!(drive.read_to_vec("/gone").await.unwrap(), None);
        // Deleting what is not there changes nothing.
        assert_eq!(drive.delete("/gone").await.unwrap(), None);
        assert_eq!(drive.delete("/never").await.unwrap(), None);
        assert_eq!(drive.version(), before + 1);
        assert_eq!(drive.read_to_vec("/keep").await.unwrap().unwrap(), b"k");
        // A deleted path can be written again.
        drive.write("/gone", b"back", T0).await.unwrap();
        assert_eq!(drive.read_to_vec("/gone").await.unwrap().unwrap(), b"back");
    });
}

#[test]
fn reopening_rebuilds_the_same_files_keys_and_version() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        let big = content(CHUNK_BYTES * BATCH_BLOCKS + 5, 1);
        drive.write("/a/one", b"1", T0).await.unwrap();
        drive.write("/a/two", &big, T0).await.unwrap();
        drive.write("/b", b"b", T0).await.unwrap();
        drive.write("/a/one", b"1 again", T0).await.unwrap();
        drive.delete("/b").await.unwrap();
        let (key, blobs_key, version) = (drive.key(), drive.blobs_key(), drive.version());
        let listing = drive.list("/").unwrap();
        drop(drive);

        let mut drive = Drive::open(&dir).await.unwrap();
        assert_eq!(drive.key(), key);
        assert_eq!(drive.blobs_key(), blobs_key);
        assert_eq!(drive.version(), version);
        assert_eq!(drive.list("/").unwrap(), listing);
        assert_eq!(
            drive.read_to_vec("/a/one").await.unwrap().unwrap(),
            b"1 again"
        );
        assert_eq!(drive.read_to_vec("/a/two").await.unwrap().unwrap(), big);
        assert_eq!(drive.stat("/b"), None);
        // Writing continues where the logs left off.
        let receipt = drive.write("/c", b"c", T0).await.unwrap();
        assert_eq!(receipt.version, version + 1);
        drop(drive);
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        assert_eq!(drive.read_to_vec("/c").await.unwrap().unwrap(), b"c");
    });
}

#[test]
fn opening_a_missing_drive_is_an_error_and_creates_nothing() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nothing");
        assert!(matches!(Drive::open(&dir).await, Err(DriveError::Log(_))));
        assert!(!Drive::exists(&dir));
    });
}

#[test]
fn entries_since_returns_the_changes_after_a_version_in_order() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let v1 = drive.version();
        drive.write("/x", b"x1", T0).await.unwrap();
        let v2 = drive.version();
        drive.write("/y", b"y", T0).await.unwrap();
        drive.write("/x", b"x2", T0).await.unwrap();
        drive.delete("/y").await.unwrap();

        let all = drive.entries_since(0).await.unwrap();
        assert_eq!(all, drive.entries_since(v1).await.unwrap());
        let summary: Vec<(u64, &str, bool)> = all
            .iter()
            .map(|c| {
                let put = matches!(c.entry, DriveEntry::Put(_));
                (c.version, c.entry.path(), put)
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (v1 + 1, "/x", true),
                (v1 + 2, "/y", true),
                (v1 + 3, "/x", true),
                (v1 + 4, "/y", false),
            ]
        );
        let since_v2 = drive.entries_since(v2).await.unwrap();
        assert_eq!(since_v2, all[1..].to_vec());
        assert!(
            drive
                .entries_since(drive.version())
                .await
                .unwrap()
                .is_empty()
        );
        let ahead = drive.version() + 1;
        assert!(matches!(
            drive.entries_since(ahead).await,
            Err(DriveError::UnknownVersion { requested, .. }) if requested == ahead
        ));
        // The last put of "/x" in the history is what the drive serves.
        let DriveEntry::Put(last_x) = &all[2].entry else {
            panic!("expected a put");
        };
        assert_eq!(&drive.stat("/x").unwrap().entry, last_x);
    });
}

#[test]
fn list_matches_whole_segments_under_a_prefix() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        for path in ["/a", "/a/x", "/a/y/z", "/a-b", "/ab", "/b"] {
            drive.write(path, path.as_bytes(), T0).await.unwrap();
        }
        let paths = |prefix: &str| -> Vec<String> {
            drive
                .list(prefix)
                .unwrap()
                .into_iter()
                .map(|s| s.entry.path)
                .collect()
        };
        assert_eq!(paths("/a"), ["/a", "/a/x", "/a/y/z"]);
        assert_eq!(paths("/a/"), ["/a", "/a/x", "/a/y/z"]);
        assert_eq!(paths("/a/y"), ["/a/y/z"]);
        assert_eq!(paths("/"), ["/a", "/a-b", "/a/x", "/a/y/z", "/ab", "/b"]);
        assert_eq!(paths(""), paths("/"));
        assert!(paths("/c").is_empty());
        assert!(matches!(
            drive.list("no-slash"),
            Err(DriveError::InvalidPath(_))
        ));
    });
}

#[test]
fn invalid_paths_are_refused_before_anything_is_written() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let long = format!("/{}", "a".repeat(300));
        for bad in [
            "",
            "/",
            "relative",
            "/a//b",
            "/a/",
            "/./a",
            "/a/../b",
            "/a\\b",
            "/nul\0",
            long.as_str(),
        ] {
            let outcome = drive.write(bad, b"x", T0).await;
            assert!(
                matches!(outcome, Err(DriveError::InvalidPath(_))),
                "{bad:?} was accepted: {outcome:?}"
            );
        }
        assert!(matches!(
            drive.write(long.as_str(), b"x", T0).await,
            Err(DriveError::InvalidPath(PathError::NameTooLong {
                found: 300
            }))
        ));
        assert_eq!(drive.version(), 1);
        assert_eq!(drive.blob_length(), 0);
        // Unicode inside a segment is a valid drive path.
        drive.write("/ünï/😀", b"ok", T0).await.unwrap();
        assert_eq!(drive.read_to_vec("/ünï/😀").await.unwrap().unwrap(), b"ok");
    });
}

#[test]
fn a_cursor_keeps_reading_the_old_content_across_an_overwrite() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let old = content(3 * CHUNK_BYTES, 2);
        drive.write("/f", &old, T0).await.unwrap();
        let mut cursor = drive.cursor("/f").unwrap();
        let mut read = drive.read_chunk(&mut cursor).await.unwrap().unwrap();
        drive.write("/f", b"new", T0).await.unwrap();
        while let Some(chunk) = drive.read_chunk(&mut cursor).await.unwrap() {
            read.extend(chunk);
        }
        assert_eq!(read, old);
        assert_eq!(drive.read_to_vec("/f").await.unwrap().unwrap(), b"new");
    });
}

#[test]
fn the_receipt_serialises_with_the_original_camel_case_names() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        let receipt = drive.write("/r", b"abc", T0).await.unwrap();
        let json = serde_json::to_value(&receipt).unwrap();
        for name in [
            "key",
            "discoveryKey",
            "version",
            "bytesWritten",
            "path",
            "coreLength",
            "coreContiguousLength",
            "blobLength",
            "blobContiguousLength",
        ] {
            assert!(json.get(name).is_some(), "missing {name} in {json}");
        }
        assert_eq!(json["bytesWritten"], 3);
        assert_eq!(json["path"], "/r");
        assert!(json.get("identifier").is_none());
        let back: WriteReceipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, receipt);
    });
}

#[test]
fn the_discovery_key_is_hypercores_keyed_blake2b_of_the_word_hypercore() {
    // Expected values from Python's hashlib (an independent BLAKE2b):
    // blake2b(b"hypercore", key=key, digest_size=32).
    let counting: [u8; 32] = std::array::from_fn(|i| i as u8);
    assert_eq!(
        hex::encode(discovery_key(&counting)),
        "b74b6d642892501cca569ff03d3bd21d9db9768a3c12a5516a4a80a7bebad901"
    );
    assert_eq!(
        hex::encode(discovery_key(&[0xab; 32])),
        "215b1a6f0b236ee6b85acda78a132f748f9ed68cdafbbd7a04d8bde2f6335e0f"
    );
}

#[test]
fn a_drive_can_move_between_threads() {
    fn assert_send<T: Send>(_: &T) {}
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        assert_send(&drive);
        assert_send(&drive.cursor("/none"));
        let handle = std::thread::spawn(move || {
            smol::block_on(async {
                drive.write("/t", b"from a thread", T0).await.unwrap();
                drive
            })
        });
        let mut drive = handle.join().unwrap();
        assert_eq!(
            drive.read_to_vec("/t").await.unwrap().unwrap(),
            b"from a thread"
        );
    });
}

/// Throughput figures for the report; run with
/// `cargo test -p hypergate-adapters --test drive_store -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a regression test"]
fn measure_write_and_read_throughput() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut drive = fresh(tmp.path()).await;
        for mib in [5usize, 64] {
            let bytes = content(mib << 20, mib as u64);
            let path = format!("/m{mib}");
            let start = Instant::now();
            drive.write(&path, &bytes, T0).await.unwrap();
            let write = start.elapsed();
            let start = Instant::now();
            let back = drive.read_to_vec(&path).await.unwrap().unwrap();
            let read = start.elapsed();
            assert_eq!(back, bytes);
            println!(
                "{mib} MiB: write {:.1} MiB/s ({write:?}), read {:.1} MiB/s ({read:?})",
                mib as f64 / write.as_secs_f64(),
                mib as f64 / read.as_secs_f64()
            );
        }
        let start = Instant::now();
        for i in 0..200 {
            drive
                .write(&format!("/small/{i}"), &content(2048, i), T0)
                .await
                .unwrap();
        }
        let small = start.elapsed();
        println!(
            "200 x 2 KiB writes: {:.1} writes/s ({small:?})",
            200.0 / small.as_secs_f64()
        );
    });
}
