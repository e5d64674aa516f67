//! The gateway's drives: one per relay identifier and one shared drive for
//! profile pictures, under `<data>/gateway-drives/`.
//!
//! Contract (the original `GatewayHyperdriveManager`'s layout):
//! - relay `<identifier>` has the drive `relay/<sanitised identifier>/`, and its
//!   file `<file>` lives at `/<sanitised identifier>/<sanitised file>`;
//! - the shared drive `pfp/` holds `<file>` of `<owner>` at
//!   `/<sanitised owner>/<sanitised file>`, or `/global/<sanitised file>` with
//!   no owner;
//! - sanitisation is [`sanitize_segment`]: a name that sanitises to nothing or
//!   grows past the segment limit is an error, and nothing is written.
//! - Drives are opened on first use and kept open. Reads never create a drive:
//!   reading from a relay that never had a file written is `Ok(None)`.
//!
//! Two identifiers that sanitise to the same string share a drive, as they did
//! in the original; relay identifiers (hex keys, `npub…:name`) sanitise to
//! themselves.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};

use futures_lite::io::AsyncRead;
use hypergate_core::time::UnixTime;

use super::DriveError;
use super::path::{join, sanitize_segment};
use super::store::{Drive, WriteReceipt};

/// The directory under the data directory that holds every gateway drive.
pub const GATEWAY_DRIVES_DIR: &str = "gateway-drives";
/// The owner segment of profile pictures written without an owner.
pub const GLOBAL_PFP_OWNER: &str = "global";

const RELAY_DIR: &str = "relay";
const PFP_DIR: &str = "pfp";

/// The gateway's relay and pfp drives; see the module docs.
#[derive(Debug)]
pub struct GatewayDrives {
    root: PathBuf,
    relays: BTreeMap<String, Drive>,
    pfp: Option<Drive>,
}

impl GatewayDrives {
    /// Manages the drives under `<data_dir>/gateway-drives/`, creating the
    /// directory if needed. Opens no drive yet.
    pub fn open(data_dir: &Path) -> Result<GatewayDrives, DriveError> {
        let root = data_dir.join(GATEWAY_DRIVES_DIR);
        std::fs::create_dir_all(&root).map_err(|source| DriveError::Io {
            dir: root.clone(),
            source,
        })?;
        Ok(GatewayDrives {
            root,
            relays: BTreeMap::new(),
            pfp: None,
        })
    }

    /// The `gateway-drives` directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The drive path of relay `identifier`'s `file`, and the sanitised identifier.
    pub fn relay_file_path(identifier: &str, file: &str) -> Result<(String, String), DriveError> {
        let identifier = sanitize_segment(identifier)?;
        let file = sanitize_segment(file)?;
        let path = join(&[&identifier, &file])?;
        Ok((identifier, path))
    }

    /// The pfp-drive path of `owner`'s (or the global) `file`.
    pub fn pfp_file_path(owner: Option<&str>, file: &str) -> Result<String, DriveError> {
        let owner = match owner {
            Some(owner) => sanitize_segment(owner)?,
            None => GLOBAL_PFP_OWNER.to_owned(),
        };
        let file = sanitize_segment(file)?;
        Ok(join(&[&owner, &file])?)
    }

    /// Relay `identifier`'s drive, created if it does not exist yet.
    pub async fn relay_drive(&mut self, identifier: &str) -> Result<&mut Drive, DriveError> {
        let identifier = sanitize_segment(identifier)?;
        self.relay_drive_sanitised(identifier).await
    }

    /// Relay `identifier`'s drive if one exists on disk; never creates one.
    pub async fn existing_relay_drive(
        &mut self,
        identifier: &str,
    ) -> Result<Option<&mut Drive>, DriveError> {
        let identifier = sanitize_segment(identifier)?;
        self.existing_relay_drive_sanitised(identifier).await
    }

    async fn relay_drive_sanitised(
        &mut self,
        identifier: String,
    ) -> Result<&mut Drive, DriveError> {
        let dir = self.root.join(RELAY_DIR).join(&identifier);
        match self.relays.entry(identifier) {
            Entry::Occupied(open) => Ok(open.into_mut()),
            Entry::Vacant(slot) => Ok(slot.insert(Drive::open_or_create(&dir).await?)),
        }
    }

    async fn existing_relay_drive_sanitised(
        &mut self,
        identifier: String,
    ) -> Result<Option<&mut Drive>, DriveError> {
        let dir = self.root.join(RELAY_DIR).join(&identifier);
        if !self.relays.contains_key(&identifier) && !Drive::exists(&dir) {
            return Ok(None);
        }
        self.relay_drive_sanitised(identifier).await.map(Some)
    }

    /// The shared pfp drive, created if it does not exist yet.
    pub async fn pfp_drive(&mut self) -> Result<&mut Drive, DriveError> {
        let drive = match self.pfp.take() {
            Some(drive) => drive,
            None => Drive::open_or_create(&self.root.join(PFP_DIR)).await?,
        };
        Ok(self.pfp.insert(drive))
    }

    /// The shared pfp drive if it exists on disk; never creates it.
    pub async fn existing_pfp_drive(&mut self) -> Result<Option<&mut Drive>, DriveError> {
        if self.pfp.is_none() && !Drive::exists(&self.root.join(PFP_DIR)) {
            return Ok(None);
        }
        self.pfp_drive().await.map(Some)
    }

    /// Stores `content` as relay `identifier`'s `file`.
    pub async fn write_relay_file(
        &mut self,
        identifier: &str,
        file: &str,
        content: &[u8],
        now: UnixTime,
    ) -> Result<WriteReceipt, DriveError> {
        self.write_relay_file_from(identifier, file, content, now)
            .await
    }

    /// Stores everything `content` yields as relay `identifier`'s `file`.
    pub async fn write_relay_file_from<R: AsyncRead + Unpin>(
        &mut self,
        identifier: &str,
        file: &str,
        content: R,
        now: UnixTime,
    ) -> Result<WriteReceipt, DriveError> {
        // Both names are checked before a drive is created for them.
        let (sanitised, path) = GatewayDrives::relay_file_path(identifier, file)?;
        let drive = self.relay_drive_sanitised(sanitised).await?;
        let mut receipt = drive.write_from(&path, content, now).await?;
        receipt.identifier = Some(identifier.to_owned());
        Ok(receipt)
    }

    /// The verified content of relay `identifier`'s `file`, if it exists.
    pub async fn read_relay_file(
        &mut self,
        identifier: &str,
        file: &str,
    ) -> Result<Option<Vec<u8>>, DriveError> {
        let (sanitised, path) = GatewayDrives::relay_file_path(identifier, file)?;
        match self.existing_relay_drive_sanitised(sanitised).await? {
            Some(drive) => drive.read_to_vec(&path).await,
            None => Ok(None),
        }
    }

    /// Stores `content` as `owner`'s (or, with `None`, the global) `file` in
    /// the pfp drive.
    pub async fn write_pfp_file(
        &mut self,
        owner: Option<&str>,
        file: &str,
        content: &[u8],
        now: UnixTime,
    ) -> Result<WriteReceipt, DriveError> {
        let path = GatewayDrives::pfp_file_path(owner, file)?;
        let drive = self.pfp_drive().await?;
        drive.write(&path, content, now).await
    }

    /// The verified content of `owner`'s (or the global) `file`, if it exists.
    pub async fn read_pfp_file(
        &mut self,
        owner: Option<&str>,
        file: &str,
    ) -> Result<Option<Vec<u8>>, DriveError> {
        let path = GatewayDrives::pfp_file_path(owner, file)?;
        match self.existing_pfp_drive().await? {
            Some(drive) => drive.read_to_vec(&path).await,
            None => Ok(None),
        }
    }
}
