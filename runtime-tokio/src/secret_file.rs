//! Secret files: created once with fresh randomness, mode 0600, never overwritten.

use std::path::Path;

use anyhow::Context as _;
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

/// Writes `bytes` to a new file of mode 0600 (fails if it exists) and syncs it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// The secret in `path` (surrounding whitespace trimmed), created as 32 random bytes in hex
/// if the file does not exist.
pub(crate) fn load_or_create_secret(path: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    if !path.exists() {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let text = Zeroizing::new(hex::encode(bytes.as_slice()));
        write_private(path, text.as_bytes())?;
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let secret = Zeroizing::new(text.trim().as_bytes().to_vec());
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    Ok(secret)
}
