//! Drives: a small versioned file store on two signed logs, and the gateway's
//! per-relay and profile-picture drives built on it.
//!
//! Contract:
//! - A [`Drive`] is a metadata log and a blobs log (both [`HyperLog`](crate::log::HyperLog)s) in one
//!   directory (`<dir>/meta/`, `<dir>/blobs/`). Block 0 of the metadata log
//!   names the blobs log; every later block is one put or delete
//!   ([`DriveEntry`], encoded by [`encode_meta_block`]). The drive's **version is the
//!   metadata log's length** (a new drive is at version 1: its header).
//! - The path → file map is the fold of the metadata log in log order, rebuilt
//!   on open and kept in memory: the same log always gives the same map. A
//!   metadata block that does not decode makes the open fail rather than
//!   silently dropping a change.
//! - A write appends the content to the blobs log in [`CHUNK_BYTES`] blocks
//!   (synced in batches) and *then* appends the metadata entry. A crash
//!   between the two leaves blobs no entry points at: the previous version of
//!   the file stays visible and no half file ever is. Those orphaned blocks
//!   are wasted space, never content.
//! - Reads stream block by block and check the content's length and SHA-256
//!   (see [`FileReader`]): a block damaged on disk is an error, never content.
//! - Paths are canonical (see [`validate_path`]); [`GatewayDrives`] turns untrusted
//!   relay identifiers and file names into such paths with the original
//!   gateway's sanitisation, and refuses names that sanitise to nothing or
//!   grow too long.
//! - Everything is runtime-neutral (hypercore's `async-std` storage), and a
//!   drive takes `&mut self` for every log access: a runtime that shares one
//!   across tasks puts it behind its own lock.

mod discovery;
mod format;
mod gateway;
mod path;
mod reader;
mod store;

use std::path::PathBuf;

use crate::log::LogError;

pub use discovery::discovery_key;
pub use format::{
    DriveEntry, FileEntry, MAX_FILE_BYTES, MAX_META_BLOCK_BYTES, META_FORMAT_VERSION, MetaBlock,
    MetaDecodeError, decode_meta_block, encode_meta_block,
};
pub use gateway::{GATEWAY_DRIVES_DIR, GLOBAL_PFP_OWNER, GatewayDrives};
pub use path::{
    MAX_PATH_BYTES, MAX_SEGMENT_BYTES, PathError, sanitize_segment, validate_path, validate_segment,
};
pub use reader::{FileCursor, FileReader};
pub use store::{BATCH_BLOCKS, CHUNK_BYTES, Drive, DriveChange, FileStat, WriteReceipt};

/// Why a drive operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    // --- the caller (or the client behind it) sent bad input ---
    /// A path or name is not acceptable.
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// The content is larger than [`MAX_FILE_BYTES`]; nothing became visible.
    #[error("file {path} exceeds the {MAX_FILE_BYTES}-byte limit")]
    FileTooLarge {
        /// The path being written.
        path: String,
    },
    /// The content source failed while being read; nothing became visible.
    #[error("reading the content for {path} failed: {source}")]
    Source {
        /// The path being written.
        path: String,
        /// The reader's error.
        #[source]
        source: std::io::Error,
    },
    /// A version later than the drive's own was asked for.
    #[error("version {requested} is ahead of the drive's version {current}")]
    UnknownVersion {
        /// The version asked for.
        requested: u64,
        /// The drive's version.
        current: u64,
    },
    /// A read was continued after it had failed.
    #[error("the read of {0} already failed")]
    ReadAbandoned(String),
    // --- the drive on disk is damaged ---
    /// A metadata block does not decode, or is not where its kind belongs.
    #[error("drive {drive}: metadata block {index} is corrupt: {source}")]
    CorruptMetadata {
        /// The drive's directory.
        drive: PathBuf,
        /// The block's index in the metadata log.
        index: u64,
        /// What is wrong with it.
        #[source]
        source: MetaDecodeError,
    },
    /// The blobs log is not the one the metadata header names.
    #[error("drive {drive}: blobs log has key {found}, the header names {expected}")]
    WrongBlobs {
        /// The drive's directory.
        drive: PathBuf,
        /// The key in the header (hex).
        expected: String,
        /// The key on disk (hex).
        found: String,
    },
    /// A block of the file's content is not in the blobs log.
    #[error("file {path}: content block {index} is missing")]
    MissingBlock {
        /// The file.
        path: String,
        /// The blobs-log index.
        index: u64,
    },
    /// The content read back does not match the file's entry.
    #[error("file {path}: {detail}")]
    ContentMismatch {
        /// The file.
        path: String,
        /// Which check failed.
        detail: &'static str,
    },
    // --- local storage ---
    /// One of the drive's logs failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A directory could not be created.
    #[error("drive directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
