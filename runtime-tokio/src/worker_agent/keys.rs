//! `RelayKeys`: the secrets a worker keeps beside each relay, in `<relay>/keys/relay-keys.json`.
//!
//! Contract:
//! - The file is written with mode 0600 (owner read/write only) through a temporary file and a
//!   rename, so a crash leaves the old or the new file, never half of one.
//! - It holds the relay owner key (which signs owner-log ops and escrow deposits), every gateway
//!   writer key the worker generated and has not retired (a generated key is never thrown away
//!   before its rotation completes), which one is current, its escrow deposit id, when that
//!   deposit expires, and the lease epoch the last completed rotation answered.
//! - Nothing else coordinates through this file: the relay's logs are the `RelayLogs` beside it.
//!
//! Format (JSON, hex keys): `{"version":1,"owner":"<hex secret>","writers":{"<hex public>":
//! "<hex secret>"},"current":"<hex public>","escrowId":…,"depositExpiresAt":…,"rotatedEpoch":…}`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::AgentError;

/// The file's name inside `<relay>/keys/`.
pub const RELAY_KEYS_FILE: &str = "relay-keys.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnDisk {
    version: u32,
    owner: String,
    writers: BTreeMap<String, String>,
    current: String,
    escrow_id: Option<String>,
    deposit_expires_at: Option<u64>,
    rotated_epoch: u64,
    #[serde(default)]
    local_writer: Option<String>,
    #[serde(default)]
    policy_version: Option<String>,
}

/// The secrets of one relay. See the module docs.
pub struct RelayKeys {
    path: PathBuf,
    owner: SigningKey,
    writers: BTreeMap<[u8; 32], SigningKey>,
    /// The current gateway writer's public key.
    pub current: [u8; 32],
    /// The current writer's escrow deposit.
    pub escrow_id: Option<String>,
    /// When that deposit expires (escrow clock, ms).
    pub deposit_expires_at: Option<u64>,
    /// The lease epoch the last completed rotation answered.
    pub rotated_epoch: u64,
    /// The worker's own writer log (local events), if it has one.
    pub local_writer: Option<[u8; 32]>,
    /// The escrow policy version the current deposit was accepted under.
    pub policy_version: Option<String>,
}

impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayKeys")
            .field("path", &self.path)
            .field("current", &hex::encode(self.current))
            .field("escrow_id", &self.escrow_id)
            .finish_non_exhaustive()
    }
}

impl RelayKeys {
    /// The path of the keys file of the relay in `relay_dir`.
    #[must_use]
    pub fn path_in(relay_dir: &Path) -> PathBuf {
        relay_dir.join("keys").join(RELAY_KEYS_FILE)
    }

    /// New keys for a relay: its owner key and a first gateway writer. Not yet saved.
    #[must_use]
    pub fn new(relay_dir: &Path, owner: SigningKey, writer: SigningKey) -> Self {
        let current = writer.verifying_key().to_bytes();
        Self {
            path: Self::path_in(relay_dir),
            owner,
            writers: BTreeMap::from([(current, writer)]),
            current,
            escrow_id: None,
            deposit_expires_at: None,
            rotated_epoch: 0,
            local_writer: None,
            policy_version: None,
        }
    }

    /// Loads the keys of the relay in `relay_dir`.
    pub fn load(relay_dir: &Path) -> Result<Self, AgentError> {
        let path = Self::path_in(relay_dir);
        let bad = |detail: String| AgentError::KeysFile {
            path: path.clone(),
            detail,
        };
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(|e| bad(e.to_string()))?);
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if disk.version != FORMAT_VERSION {
            return Err(bad(format!("unsupported version {}", disk.version)));
        }
        let owner = parse_secret(&disk.owner).map_err(&bad)?;
        let mut writers = BTreeMap::new();
        for (public, secret) in &disk.writers {
            let key = parse_secret(secret).map_err(&bad)?;
            if hex::encode(key.verifying_key().to_bytes()) != *public {
                return Err(bad(format!("writer {public} does not match its secret")));
            }
            writers.insert(key.verifying_key().to_bytes(), key);
        }
        let current = parse_public(&disk.current).map_err(&bad)?;
        if !writers.contains_key(&current) {
            return Err(bad("the current writer's secret is missing".into()));
        }
        Ok(Self {
            path: path.clone(),
            owner,
            writers,
            current,
            escrow_id: disk.escrow_id,
            deposit_expires_at: disk.deposit_expires_at,
            rotated_epoch: disk.rotated_epoch,
            local_writer: disk
                .local_writer
                .as_deref()
                .map(parse_public)
                .transpose()
                .map_err(&bad)?,
            policy_version: disk.policy_version,
        })
    }

    /// Writes the file (0600, atomically).
    pub fn save(&self) -> Result<(), AgentError> {
        let bad = |e: std::io::Error| AgentError::KeysFile {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let disk = OnDisk {
            version: FORMAT_VERSION,
            owner: hex::encode(self.owner.to_bytes()),
            writers: self
                .writers
                .iter()
                .map(|(public, key)| (hex::encode(public), hex::encode(key.to_bytes())))
                .collect(),
            current: hex::encode(self.current),
            escrow_id: self.escrow_id.clone(),
            deposit_expires_at: self.deposit_expires_at,
            rotated_epoch: self.rotated_epoch,
            local_writer: self.local_writer.map(hex::encode),
            policy_version: self.policy_version.clone(),
        };
        let json =
            Zeroizing::new(
                serde_json::to_vec_pretty(&disk).map_err(|e| AgentError::KeysFile {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?,
            );
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(bad)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(bad)?;
        file.write_all(&json).map_err(bad)?;
        file.sync_all().map_err(bad)?;
        std::fs::rename(&tmp, &self.path).map_err(bad)
    }

    /// The relay owner key.
    #[must_use]
    pub fn owner(&self) -> &SigningKey {
        &self.owner
    }

    /// The secret of a writer this worker generated.
    #[must_use]
    pub fn writer(&self, public: &[u8; 32]) -> Option<&SigningKey> {
        self.writers.get(public)
    }

    /// Keeps a newly generated writer key (saved with the next [`RelayKeys::save`]).
    pub fn add_writer(&mut self, key: SigningKey) -> [u8; 32] {
        let public = key.verifying_key().to_bytes();
        self.writers.insert(public, key);
        public
    }

    /// Forgets every writer secret except the current one (after a completed rotation).
    pub fn retire_old_writers(&mut self) {
        let current = self.current;
        self.writers.retain(|public, _| *public == current);
    }
}

fn parse_secret(text: &str) -> Result<SigningKey, String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text, bytes.as_mut_slice()).map_err(|e| format!("bad secret: {e}"))?;
    Ok(SigningKey::from_bytes(&bytes))
}

fn parse_public(text: &str) -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|e| format!("bad public key: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_round_trip_through_a_file_only_the_owner_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let owner = SigningKey::from_bytes(&[1; 32]);
        let writer = SigningKey::from_bytes(&[2; 32]);
        let mut keys = RelayKeys::new(dir.path(), owner, writer);
        let next = keys.add_writer(SigningKey::from_bytes(&[3; 32]));
        keys.escrow_id = Some("escrow_1".into());
        keys.rotated_epoch = 4;
        keys.save().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(RelayKeys::path_in(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = RelayKeys::load(dir.path()).unwrap();
        assert_eq!(loaded.current, keys.current);
        assert!(loaded.writer(&next).is_some());
        assert_eq!(loaded.escrow_id.as_deref(), Some("escrow_1"));
        assert_eq!(loaded.rotated_epoch, 4);
        assert_eq!(loaded.owner().to_bytes(), [1; 32]);
    }

    #[test]
    fn a_keys_file_whose_writer_does_not_match_its_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = RelayKeys::new(
            dir.path(),
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        keys.save().unwrap();
        let path = RelayKeys::path_in(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let wrong = hex::encode([9u8; 32]);
        let tampered = text.replace(&hex::encode([2u8; 32]), &wrong);
        std::fs::write(&path, tampered).unwrap();
        assert!(matches!(
            RelayKeys::load(dir.path()),
            Err(AgentError::KeysFile { .. })
        ));
    }
}
