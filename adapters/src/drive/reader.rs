//! Streaming a file's content out of the blobs log, checked against its entry.
//!
//! Contract:
//! - Content comes out one blobs-log block (one chunk) at a time, in order.
//! - The content's length and SHA-256 are checked as the chunks pass; the
//!   *last* chunk is handed out only after the whole file has verified. A
//!   mismatch (a block changed on disk, a missing block, a wrong length) is
//!   [`DriveError::ContentMismatch`] or [`DriveError::MissingBlock`] instead of
//!   that last chunk, so a consumer that stops at the first error never sees a
//!   complete-looking file with bad content, and a file of one chunk (most
//!   files) never yields a byte of bad content at all.
//! - After an error the cursor stays failed: every further call is an error,
//!   never a silent end of file.
//! - A [`FileCursor`] borrows nothing: a caller that shares a drive behind a
//!   lock can hold the cursor across awaits and take the lock per chunk with
//!   [`Drive::read_chunk`](super::Drive::read_chunk). Blocks of an append-only
//!   log never change, so a later write to the same path does not disturb a
//!   read in progress. [`FileReader`] is the convenience form that holds the
//!   drive's blobs log for the whole read.

use sha2::{Digest, Sha256};

use super::DriveError;
use super::format::FileEntry;
use crate::log::HyperLog;

/// Most bytes [`FileReader::read_to_end`] reserves before reading.
const READ_TO_END_RESERVE_BYTES: u64 = 64 << 20;

/// A position in one file's content; see the module docs.
#[derive(Debug, Clone)]
pub struct FileCursor {
    entry: FileEntry,
    version: u64,
    next_block: u64,
    bytes_read: u64,
    hasher: Sha256,
    state: CursorState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorState {
    Reading,
    Done,
    Failed,
}

impl FileCursor {
    pub(crate) fn new(entry: FileEntry, version: u64) -> FileCursor {
        FileCursor {
            entry,
            version,
            next_block: 0,
            bytes_read: 0,
            hasher: Sha256::new(),
            state: CursorState::Reading,
        }
    }

    /// The entry being read.
    pub fn entry(&self) -> &FileEntry {
        &self.entry
    }

    /// The drive version that wrote the entry being read.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Content bytes handed out so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next chunk from `blobs`, `Ok(None)` once the whole file has been
    /// returned and verified.
    pub(crate) async fn next_chunk(
        &mut self,
        blobs: &mut HyperLog,
    ) -> Result<Option<Vec<u8>>, DriveError> {
        match self.state {
            CursorState::Done => return Ok(None),
            CursorState::Failed => return Err(DriveError::ReadAbandoned(self.entry.path.clone())),
            CursorState::Reading => {}
        }
        let outcome = self.step(blobs).await;
        match &outcome {
            Ok(None) => self.state = CursorState::Done,
            Ok(Some(_)) if self.next_block == self.entry.blob_blocks => {
                self.state = CursorState::Done;
            }
            Ok(Some(_)) => {}
            Err(_) => self.state = CursorState::Failed,
        }
        outcome
    }

    async fn step(&mut self, blobs: &mut HyperLog) -> Result<Option<Vec<u8>>, DriveError> {
        if self.next_block == self.entry.blob_blocks {
            // Only an empty file has no block at all.
            self.verify()?;
            return Ok(None);
        }
        // The decoder proved `blob_start + blob_blocks` does not overflow.
        let index = self.entry.blob_start + self.next_block;
        let Some(block) = blobs.get(index).await? else {
            return Err(DriveError::MissingBlock {
                path: self.entry.path.clone(),
                index,
            });
        };
        self.bytes_read = self.bytes_read.saturating_add(block.len() as u64);
        if self.bytes_read > self.entry.size {
            return Err(self.mismatch("content is longer than its entry says"));
        }
        self.hasher.update(&block);
        self.next_block += 1;
        if self.next_block == self.entry.blob_blocks {
            self.verify()?;
        }
        Ok(Some(block))
    }

    fn verify(&self) -> Result<(), DriveError> {
        if self.bytes_read != self.entry.size {
            return Err(self.mismatch("content is shorter than its entry says"));
        }
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        if digest != self.entry.sha256 {
            return Err(self.mismatch("content does not match its SHA-256"));
        }
        Ok(())
    }

    fn mismatch(&self, detail: &'static str) -> DriveError {
        DriveError::ContentMismatch {
            path: self.entry.path.clone(),
            detail,
        }
    }
}

/// A file being read; holds the drive's blobs log until dropped.
#[derive(Debug)]
pub struct FileReader<'a> {
    blobs: &'a mut HyperLog,
    cursor: FileCursor,
}

impl<'a> FileReader<'a> {
    pub(crate) fn new(blobs: &'a mut HyperLog, cursor: FileCursor) -> FileReader<'a> {
        FileReader { blobs, cursor }
    }

    /// The entry being read (size, SHA-256, when it was written).
    pub fn entry(&self) -> &FileEntry {
        self.cursor.entry()
    }

    /// The next chunk, `Ok(None)` once the whole file has been returned and
    /// verified (see the module docs for when errors come instead).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, DriveError> {
        self.cursor.next_chunk(self.blobs).await
    }

    /// Reads the rest of the file into one buffer, verified.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, DriveError> {
        let remaining = self
            .cursor
            .entry()
            .size
            .saturating_sub(self.cursor.bytes_read());
        // The size comes from the metadata log; cap the up-front reservation so
        // a damaged entry cannot make this allocate a gigabyte before any check.
        let reserve = remaining.min(READ_TO_END_RESERVE_BYTES);
        let mut out = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
