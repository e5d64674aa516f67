//! The byte form of a drive's metadata blocks.
//!
//! Contract:
//! - Every metadata block is one format-version byte followed by a postcard
//!   encoded [`MetaBlock`]. Block 0 of a metadata log is the
//!   [`MetaBlock::Header`] (it names the blobs log, so whoever holds the
//!   metadata key can find the content); every later block is one
//!   [`DriveEntry`] (a put or a delete).
//! - [`decode_meta_block`] never panics and bounds everything: the input is at
//!   most [`MAX_META_BLOCK_BYTES`], a path is canonical (see
//!   [`validate_path`](super::validate_path)), a file is at most
//!   [`MAX_FILE_BYTES`], its blob range does not overflow, and its block count
//!   is consistent with its size (no block is empty, none exceeds
//!   [`MAX_BLOCK_BYTES`]). Trailing bytes are an error. The decoder is public so
//!   a fuzz target can drive it.
//! - Decoding checks *shape* only; whether the content behind a put is intact is
//!   decided on read, against the entry's SHA-256.

use hypergate_core::time::UnixTime;
use serde::{Deserialize, Serialize};

use super::path::{PathError, validate_path};
use crate::log::MAX_BLOCK_BYTES;

/// The metadata format version this build writes and reads.
pub const META_FORMAT_VERSION: u8 = 1;
/// Largest metadata block (a put with a maximal path is about 1.1 KiB).
pub const MAX_META_BLOCK_BYTES: usize = 4096;
/// Largest file a drive stores (1 GiB): far above the 64 MB the HTTP route
/// accepts, small enough that sizes and block counts cannot overflow.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// One block of a drive's metadata log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaBlock {
    /// Block 0: which blobs log holds this drive's content.
    Header {
        /// Public key of the blobs log.
        blobs_key: [u8; 32],
    },
    /// Every later block: one change.
    Entry(DriveEntry),
}

/// One change to a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriveEntry {
    /// `path` now holds the content described by the entry.
    Put(FileEntry),
    /// `path` no longer exists.
    Delete {
        /// The deleted path.
        path: String,
    },
}

impl DriveEntry {
    /// The path this change is about.
    pub fn path(&self) -> &str {
        match self {
            DriveEntry::Put(file) => &file.path,
            DriveEntry::Delete { path } => path,
        }
    }
}

/// Where a file's content lives and how to check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Canonical drive path.
    pub path: String,
    /// Index of the first blobs-log block of the content.
    pub blob_start: u64,
    /// Number of blobs-log blocks of the content (0 for an empty file).
    pub blob_blocks: u64,
    /// Content length in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// When the write was made (the writer's wall clock).
    pub written_at: UnixTime,
}

/// Why bytes are not a metadata block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetaDecodeError {
    /// The input is empty.
    #[error("empty metadata block")]
    Empty,
    /// The input is larger than [`MAX_META_BLOCK_BYTES`].
    #[error("metadata block of {0} bytes exceeds the {MAX_META_BLOCK_BYTES}-byte limit")]
    TooLarge(usize),
    /// The format version is not one this build reads.
    #[error("unsupported metadata format version {0}")]
    UnsupportedVersion(u8),
    /// The bytes are not a well-formed block.
    #[error("malformed metadata block: {0}")]
    Malformed(String),
    /// The entry's path is not a canonical drive path.
    #[error("metadata entry has a bad path: {0}")]
    BadPath(#[from] PathError),
    /// Size, block count and blob range do not fit together or exceed the limits.
    #[error("metadata entry is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// The wire mirror of [`MetaBlock`]; variant order is part of the format.
#[derive(Serialize, Deserialize)]
enum WireBlock {
    Header {
        blobs_key: [u8; 32],
    },
    Put {
        path: String,
        blob_start: u64,
        blob_blocks: u64,
        size: u64,
        sha256: [u8; 32],
        written_at: u64,
    },
    Delete {
        path: String,
    },
}

/// Encodes `block` for the metadata log.
pub fn encode_meta_block(block: &MetaBlock) -> Vec<u8> {
    let wire = match block {
        MetaBlock::Header { blobs_key } => WireBlock::Header {
            blobs_key: *blobs_key,
        },
        MetaBlock::Entry(DriveEntry::Put(file)) => WireBlock::Put {
            path: file.path.clone(),
            blob_start: file.blob_start,
            blob_blocks: file.blob_blocks,
            size: file.size,
            sha256: file.sha256,
            written_at: file.written_at.as_millis(),
        },
        MetaBlock::Entry(DriveEntry::Delete { path }) => WireBlock::Delete { path: path.clone() },
    };
    let mut out = vec![META_FORMAT_VERSION];
    // Serialising a plain enum of strings, integers and arrays into a Vec cannot fail.
    out.extend(postcard::to_allocvec(&wire).unwrap_or_default());
    out
}

/// Decodes a metadata block written by [`encode_meta_block`], checking every bound.
pub fn decode_meta_block(bytes: &[u8]) -> Result<MetaBlock, MetaDecodeError> {
    if bytes.len() > MAX_META_BLOCK_BYTES {
        return Err(MetaDecodeError::TooLarge(bytes.len()));
    }
    let (&version, body) = bytes.split_first().ok_or(MetaDecodeError::Empty)?;
    if version != META_FORMAT_VERSION {
        return Err(MetaDecodeError::UnsupportedVersion(version));
    }
    let (wire, rest): (WireBlock, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| MetaDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MetaDecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    match wire {
        WireBlock::Header { blobs_key } => Ok(MetaBlock::Header { blobs_key }),
        WireBlock::Delete { path } => {
            validate_path(&path)?;
            Ok(MetaBlock::Entry(DriveEntry::Delete { path }))
        }
        WireBlock::Put {
            path,
            blob_start,
            blob_blocks,
            size,
            sha256,
            written_at,
        } => {
            validate_path(&path)?;
            check_extent(blob_start, blob_blocks, size)?;
            Ok(MetaBlock::Entry(DriveEntry::Put(FileEntry {
                path,
                blob_start,
                blob_blocks,
                size,
                sha256,
                written_at: UnixTime(written_at),
            })))
        }
    }
}

/// Size and block count fit together: every block holds 1..=MAX_BLOCK_BYTES bytes.
fn check_extent(blob_start: u64, blob_blocks: u64, size: u64) -> Result<(), MetaDecodeError> {
    if size > MAX_FILE_BYTES {
        return Err(MetaDecodeError::Inconsistent("file larger than the limit"));
    }
    if blob_start.checked_add(blob_blocks).is_none() {
        return Err(MetaDecodeError::Inconsistent("blob range overflows"));
    }
    if blob_blocks > size {
        return Err(MetaDecodeError::Inconsistent("more blocks than bytes"));
    }
    // `blob_blocks <= size <= 2^30`, so the product fits in a u64.
    if size > blob_blocks.saturating_mul(MAX_BLOCK_BYTES as u64) {
        return Err(MetaDecodeError::Inconsistent("too few blocks for the size"));
    }
    Ok(())
}
