//! A drive under damage: crashes between blobs and metadata, failing content
//! sources, bytes flipped on disk.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::AsyncRead;
use hypergate_adapters::drive::{BATCH_BLOCKS, CHUNK_BYTES, Drive, DriveError, MetaDecodeError};
use hypergate_core::time::UnixTime;

const T0: UnixTime = UnixTime(1_700_000_000_000);
/// Set in the child process of the crash test: the drive directory to write into.
const CRASH_CHILD_DIR: &str = "HYPERGATE_DRIVE_CRASH_CHILD_DIR";
/// Chunks the child's write gets through before it stalls: two full batches
/// are then durable in the blobs log, and no metadata entry is.
const CHUNKS_BEFORE_STALL: usize = 2 * BATCH_BLOCKS;

/// A content source of `len` bytes of `fill` that, once it has handed out
/// `stall_after` bytes, either fails or (in the crash child) reports that and
/// blocks for ever.
struct Source {
    fill: u8,
    len: usize,
    at: usize,
    stall_after: usize,
    on_stall: Stall,
}

enum Stall {
    Fail,
    SignalAndHang(PathBuf),
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.at >= self.stall_after {
            match &self.on_stall {
                Stall::Fail => {
                    return Poll::Ready(Err(std::io::Error::other("client went away")));
                }
                Stall::SignalAndHang(marker) => {
                    std::fs::write(marker, b"blobs appended").unwrap();
                    loop {
                        std::thread::sleep(Duration::from_secs(60));
                    }
                }
            }
        }
        let n = buf
            .len()
            .min(self.len - self.at)
            .min(self.stall_after - self.at);
        let fill = self.fill;
        buf[..n].fill(fill);
        self.at += n;
        Poll::Ready(Ok(n))
    }
}

fn flip_byte(file: &Path, offset: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut byte = [0u8];
    f.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&byte).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_crash_between_blobs_and_metadata_leaves_the_old_file_and_no_half_file() {
    if let Ok(dir) = std::env::var(CRASH_CHILD_DIR) {
        crash_child(Path::new(&dir));
        return;
    }
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        drive.write("/file", b"old content", T0).await.unwrap();
        let (version, blobs_before) = (drive.version(), drive.blob_length());
        drop(drive);

        // A real process writes a large new version of /file and is killed
        // (SIGKILL) after its blobs are durable but before its metadata entry.
        let marker = tmp.path().join("stalled");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_crash_between_blobs_and_metadata_leaves_the_old_file_and_no_half_file",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_CHILD_DIR, &dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !marker.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("crash child exited early: {status}");
            }
            assert!(Instant::now() < deadline, "crash child never stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let mut drive = Drive::open(&dir).await.unwrap();
        assert!(
            drive.blob_length() >= blobs_before + CHUNKS_BEFORE_STALL as u64,
            "the child's blobs should be on disk (blob length {})",
            drive.blob_length()
        );
        assert_eq!(drive.version(), version, "no metadata entry may exist");
        assert_eq!(
            drive.read_to_vec("/file").await.unwrap().unwrap(),
            b"old content"
        );
        assert_eq!(drive.list("/").unwrap().len(), 1);

        // The drive keeps working past the orphaned blocks.
        let orphans_end = drive.blob_length();
        let receipt = drive.write("/file", b"after the crash", T0).await.unwrap();
        assert_eq!(receipt.version, version + 1);
        assert_eq!(drive.stat("/file").unwrap().entry.blob_start, orphans_end);
        assert_eq!(
            drive.read_to_vec("/file").await.unwrap().unwrap(),
            b"after the crash"
        );
    });
}

fn crash_child(dir: &Path) {
    smol::block_on(async {
        let mut drive = Drive::open(dir).await.unwrap();
        let marker = dir.parent().unwrap().join("stalled");
        let source = Source {
            fill: b'n',
            len: 10 * CHUNK_BYTES * BATCH_BLOCKS,
            at: 0,
            stall_after: CHUNKS_BEFORE_STALL * CHUNK_BYTES,
            on_stall: Stall::SignalAndHang(marker),
        };
        // Never returns: the source hangs once the blobs are durable.
        let _ = drive.write_from("/file", source, T0).await;
    });
}

#[test]
fn a_failing_content_source_leaves_the_old_file_visible_before_and_after_reopen() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        drive.write("/file", b"old", T0).await.unwrap();
        let version = drive.version();
        let source = Source {
            fill: b'n',
            len: 4 * CHUNK_BYTES * BATCH_BLOCKS,
            at: 0,
            stall_after: (BATCH_BLOCKS + 3) * CHUNK_BYTES,
            on_stall: Stall::Fail,
        };
        assert!(matches!(
            drive.write_from("/file", source, T0).await,
            Err(DriveError::Source { .. })
        ));
        assert!(drive.blob_length() > BATCH_BLOCKS as u64);
        assert_eq!(drive.version(), version);
        assert_eq!(drive.read_to_vec("/file").await.unwrap().unwrap(), b"old");
        drop(drive);
        let mut drive = Drive::open(&dir).await.unwrap();
        assert_eq!(drive.version(), version);
        assert_eq!(drive.read_to_vec("/file").await.unwrap().unwrap(), b"old");
    });
}

#[test]
fn a_flipped_byte_in_a_single_chunk_file_is_an_error_and_no_content() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        drive.write("/small", b"precious bytes", T0).await.unwrap();
        drop(drive);
        // The blobs log's data file holds block bytes back to back: /small is first.
        flip_byte(&dir.join("blobs").join("data"), 3);

        let mut drive = Drive::open(&dir).await.unwrap();
        let mut reader = drive.open_file("/small").unwrap();
        assert!(matches!(
            reader.next_chunk().await,
            Err(DriveError::ContentMismatch { .. })
        ));
        // The failed reader never pretends the file ended.
        assert!(matches!(
            reader.next_chunk().await,
            Err(DriveError::ReadAbandoned(_))
        ));
        assert!(matches!(
            drive.read_to_vec("/small").await,
            Err(DriveError::ContentMismatch { .. })
        ));
    });
}

#[test]
fn a_flipped_byte_in_a_large_file_fails_the_stream_before_its_last_chunk() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        drive.write("/first", b"unrelated", T0).await.unwrap();
        let big = vec![7u8; 4 * CHUNK_BYTES];
        drive.write("/big", &big, T0).await.unwrap();
        drop(drive);
        // Inside the second chunk of /big, after the 9 bytes of /first.
        flip_byte(
            &dir.join("blobs").join("data"),
            9 + CHUNK_BYTES as u64 + 100,
        );

        let mut drive = Drive::open(&dir).await.unwrap();
        let mut reader = drive.open_file("/big").unwrap();
        let mut chunks = 0;
        let outcome = loop {
            match reader.next_chunk().await {
                Ok(Some(_)) => chunks += 1,
                other => break other,
            }
        };
        assert!(
            matches!(outcome, Err(DriveError::ContentMismatch { .. })),
            "{outcome:?}"
        );
        assert_eq!(chunks, 3, "the last chunk must be withheld");
        assert_eq!(
            drive.read_to_vec("/first").await.unwrap().unwrap(),
            b"unrelated"
        );
    });
}

#[test]
fn a_metadata_block_that_no_longer_decodes_makes_open_fail() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("drive");
        let mut drive = Drive::open_or_create(&dir).await.unwrap();
        drive.write("/f", b"f", T0).await.unwrap();
        drop(drive);
        // Block 0 (the header) is 1 version byte + 1 tag + 32 key bytes; the
        // next byte is block 1's format version.
        flip_byte(&dir.join("meta").join("data"), 34);
        match Drive::open(&dir).await {
            Err(DriveError::CorruptMetadata {
                index: 1,
                source: MetaDecodeError::UnsupportedVersion(_),
                ..
            }) => {}
            other => panic!("expected corrupt metadata, got {other:?}"),
        }
    });
}

#[test]
fn a_drive_whose_blobs_log_was_swapped_refuses_to_open() {
    smol::block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let one = tmp.path().join("one");
        let two = tmp.path().join("two");
        Drive::open_or_create(&one).await.unwrap();
        Drive::open_or_create(&two).await.unwrap();
        std::fs::remove_dir_all(one.join("blobs")).unwrap();
        std::fs::rename(two.join("blobs"), one.join("blobs")).unwrap();
        assert!(matches!(
            Drive::open(&one).await,
            Err(DriveError::WrongBlobs { .. })
        ));
    });
}
