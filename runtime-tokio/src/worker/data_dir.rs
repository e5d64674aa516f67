//! The worker's data directory: what `hypergate worker init` creates and `run` serves.
//!
//! ```text
//! <data dir>/                         0700
//!   identity.json                     0600  the worker's ed25519 identity (peer id = public key)
//!   relays/                           0700
//!     <relay key hex>/                      one relay
//!       keys/relay-keys.json          0600  every secret of the relay (see `worker_agent::keys`):
//!                                           the owner key (the relay key is its public key), the
//!                                           worker's own writer (`localWriter`), the gateway
//!                                           writer keys and their escrow deposits
//!       owner/                              the owner log (AddWriter / RemoveWriter)
//!       writers/<writer key hex>/           writer logs: the worker's own (events it accepted)
//!                                           and the gateway writer's (ingested at resync)
//!       index.redb                          the relay index, rebuilt from the logs at each start
//!       drive/meta/, drive/blobs/           the relay's drive (metadata + blobs logs): files at
//!                                           `/<sanitised identifier>/<sanitised file>`, the
//!                                           gateway drives' paths, imported at resync
//!       drive-import.json                   per gateway drive (by sanitised identifier) the
//!                                           version imported through; written after the files
//!     .creating-<pid>/                      a relay being created; never served
//! ```
//!
//! A relay is created in a staging directory and renamed into place once complete, so a crash
//! during `init` never leaves a half-made relay that `run` would try to serve. The relay is made
//! by [`worker_agent::create_relay_in`], the one place that creates relay keys; `run` and the
//! worker agent read the same `relay-keys.json`. The hypercore logs keep their secret keys in
//! their own files; the 0700 directories keep them private.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use hypergate_adapters::crypto::Identity;
use hypergate_core::ids::RelayKey;
use hypergate_core::relay::WriterKey;
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

use crate::worker_agent::{self, RelayKeys};

/// What `init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The new relay.
    pub relay: RelayKey,
    /// The worker's writer log of that relay.
    pub writer: WriterKey,
    /// The worker's identity.
    pub identity: Identity,
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The worker identity's key file.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.json")
    }

    /// Where relays live.
    pub fn relays_dir(&self) -> PathBuf {
        self.root.join("relays")
    }

    /// One relay's directory.
    pub fn relay_dir(&self, relay: &RelayKey) -> PathBuf {
        self.relays_dir().join(relay.to_hex())
    }

    /// The relays present, in key order (staging directories are skipped).
    pub fn relays(&self) -> anyhow::Result<Vec<RelayKey>> {
        let dir = self.relays_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        let mut relays = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            if let Some(key) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<RelayKey>().ok())
            {
                relays.push(key);
            }
        }
        relays.sort();
        Ok(relays)
    }

    /// The worker's own writer log of `relay`, from its keys file.
    pub fn local_writer(&self, relay: &RelayKey) -> anyhow::Result<WriterKey> {
        let dir = self.relay_dir(relay);
        let keys = RelayKeys::load(&dir)?;
        let Some(writer) = keys.local_writer else {
            bail!(
                "{} names no writer log of this worker (localWriter)",
                RelayKeys::path_in(&dir).display()
            );
        };
        Ok(WriterKey(writer))
    }

    /// Creates the identity (if absent) and a first relay with its owner log, the worker's
    /// writer log and a gateway writer (both recorded in the owner log with `AddWriter`) and its
    /// keys file. Refuses a directory that already holds a relay.
    pub async fn init(&self) -> anyhow::Result<Initialised> {
        create_private_dir(&self.root)?;
        let existing = self.relays()?;
        if let Some(relay) = existing.first() {
            bail!(
                "{} already holds relay {relay}; `hypergate worker run --data-dir {}` serves it",
                self.root.display(),
                self.root.display()
            );
        }
        let identity = Identity::load_or_create(&self.identity_path())
            .context("creating the worker identity")?;
        create_private_dir(&self.relays_dir())?;

        let staging = self
            .relays_dir()
            .join(format!(".creating-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("removing a stale {}", staging.display()))?;
        }
        create_private_dir(&staging)?;
        let owner = fresh_signing_key()?;
        let relay = RelayKey(owner.verifying_key().to_bytes());
        let writer = worker_agent::create_relay_in(&staging, owner)
            .await
            .context("creating the relay's logs and keys")?;
        let target = self.relay_dir(&relay);
        fs::rename(&staging, &target)
            .with_context(|| format!("moving the new relay to {}", target.display()))?;
        fs::File::open(self.relays_dir())
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", self.relays_dir().display()))?;
        Ok(Initialised {
            relay,
            writer,
            identity,
        })
    }
}

/// Creates `dir` (and parents) with mode 0700; an existing directory is kept as it is.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// A new ed25519 key from the operating system's randomness.
fn fresh_signing_key() -> anyhow::Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(seed.as_mut_slice())
        .context("reading operating-system randomness")?;
    Ok(SigningKey::from_bytes(&seed))
}
