//! The lease vault: the gateway's only store of leased writer secret keys.
//!
//! Contract:
//! - **Secrets never leave by value.** A key goes in with
//!   [`LeaseVault::insert`] and is used only inside [`LeaseVault::with_key`];
//!   nothing returns a copy. Keys are boxed `SigningKey`s (which zeroize on
//!   drop) so they stay at one heap address while the map around them
//!   changes.
//! - **One key per relay, newest epoch wins.** Inserting a lease wipes the
//!   key of any older lease of the same relay; inserting an older epoch than
//!   the one held is refused ([`VaultError::StaleLease`]) and the offered key
//!   is dropped (zeroized).
//! - **Wiped when the lease ends**: the runtime calls [`LeaseVault::wipe`]
//!   (or [`LeaseVault::wipe_relay`]) when the core reports the lease ended;
//!   [`LeaseVault::wipe_all`] on shutdown; and the last handle's drop wipes
//!   whatever is left.
//! - **Wiped on SIGINT/SIGTERM** once [`LeaseVault::install_signal_wipe`] is
//!   called (see there for how this interacts with the process's own
//!   shutdown handling).
//! - `Debug` shows lease ids and key digests (SHA-256 of the public key, the
//!   package's `writerHash`), never key bytes.
//!
//! The handle is cheap to clone (`Arc<Mutex<…>>` inside); the lock is held
//! only for map operations and the caller's `with_key` closure, which must
//! not call back into the vault.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;

use ed25519_dalek::SigningKey;
use hypergate_core::ids::RelayKey;
use hypergate_core::lease::LeaseId;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::crypto::sha256_hex;

/// Why the vault refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    // Caller misuse.
    /// A newer lease of the relay is already held; the offered key was wiped.
    #[error("vault holds {held}, refusing the older {offered}")]
    StaleLease {
        /// The lease held.
        held: LeaseId,
        /// The lease offered.
        offered: LeaseId,
    },
    // Local failures.
    /// The signal handler could not be installed.
    #[error("could not install the SIGINT/SIGTERM vault wipe: {0}")]
    SignalSetup(#[source] std::io::Error),
}

struct HeldKey {
    epoch: u64,
    key: Box<SigningKey>,
}

#[derive(Default)]
struct VaultKeys {
    by_relay: BTreeMap<RelayKey, HeldKey>,
}

impl VaultKeys {
    fn wipe_all(&mut self) -> usize {
        let count = self.by_relay.len();
        // Dropping each boxed SigningKey zeroizes it in place.
        self.by_relay.clear();
        count
    }
}

impl Drop for VaultKeys {
    fn drop(&mut self) {
        self.wipe_all();
    }
}

/// A cloneable handle to the gateway's leased writer keys.
#[derive(Clone, Default)]
pub struct LeaseVault {
    keys: Arc<Mutex<VaultKeys>>,
}

/// Locks the key map. A poisoned lock (a `with_key` closure panicked) still
/// guards a consistent map — every mutation is a single map call — and
/// wiping must work regardless, so poisoning is ignored.
fn lock(keys: &Mutex<VaultKeys>) -> MutexGuard<'_, VaultKeys> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LeaseVault {
    /// An empty vault.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `key` for `lease`, wiping the key of an older lease of the same
    /// relay (returned). Refuses an epoch older than the one held.
    pub fn insert(&self, lease: LeaseId, key: SigningKey) -> Result<Option<LeaseId>, VaultError> {
        // Box first so the key is moved to its final heap place once.
        let key = Box::new(key);
        let mut keys = lock(&self.keys);
        let held_epoch = keys.by_relay.get(&lease.relay).map(|held| held.epoch);
        if let Some(held_epoch) = held_epoch.filter(|&epoch| epoch > lease.epoch) {
            return Err(VaultError::StaleLease {
                held: LeaseId {
                    relay: lease.relay,
                    epoch: held_epoch,
                },
                offered: lease,
            });
        }
        let replaced = keys.by_relay.insert(
            lease.relay,
            HeldKey {
                epoch: lease.epoch,
                key,
            },
        );
        Ok(replaced.map(|old| LeaseId {
            relay: lease.relay,
            epoch: old.epoch,
        }))
    }

    /// Runs `use_key` with the key of `lease`, if held. The closure must not
    /// call back into the vault (the lock is held while it runs).
    pub fn with_key<R>(
        &self,
        lease: &LeaseId,
        use_key: impl FnOnce(&SigningKey) -> R,
    ) -> Option<R> {
        let keys = lock(&self.keys);
        let held = keys.by_relay.get(&lease.relay)?;
        (held.epoch == lease.epoch).then(|| use_key(&held.key))
    }

    /// Whether the key of `lease` is held.
    #[must_use]
    pub fn contains(&self, lease: &LeaseId) -> bool {
        lock(&self.keys)
            .by_relay
            .get(&lease.relay)
            .is_some_and(|held| held.epoch == lease.epoch)
    }

    /// Wipes the key of `lease`; `false` if it was not held.
    pub fn wipe(&self, lease: &LeaseId) -> bool {
        let mut keys = lock(&self.keys);
        if keys
            .by_relay
            .get(&lease.relay)
            .is_some_and(|held| held.epoch == lease.epoch)
        {
            keys.by_relay.remove(&lease.relay);
            return true;
        }
        false
    }

    /// Wipes whatever key is held for `relay`, returning its lease.
    pub fn wipe_relay(&self, relay: &RelayKey) -> Option<LeaseId> {
        lock(&self.keys).by_relay.remove(relay).map(|held| LeaseId {
            relay: *relay,
            epoch: held.epoch,
        })
    }

    /// Wipes every key; returns how many were held.
    pub fn wipe_all(&self) -> usize {
        lock(&self.keys).wipe_all()
    }

    /// The leases whose keys are held, in relay order.
    #[must_use]
    pub fn leases(&self) -> Vec<LeaseId> {
        lock(&self.keys)
            .by_relay
            .iter()
            .map(|(relay, held)| LeaseId {
                relay: *relay,
                epoch: held.epoch,
            })
            .collect()
    }

    /// How many keys are held.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.keys).by_relay.len()
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        lock(&self.keys).by_relay.is_empty()
    }

    /// Wipes every key when SIGINT or SIGTERM arrives, for as long as the
    /// returned guard lives; the process keeps running.
    ///
    /// Interplay with the process's own shutdown: the handler is registered
    /// through `signal-hook-registry`, which chains handlers instead of
    /// replacing them, so a runtime that listens for the same signals the
    /// same way (`tokio::signal`, `signal-hook` iterators) still sees them
    /// and runs its graceful shutdown. But registering *any* handler turns
    /// off the signal's default action (terminate): a process that installs
    /// this and has no shutdown handler of its own must use
    /// [`Self::install_signal_wipe_then_terminate`] instead. The wipe runs on
    /// a dedicated thread right after delivery, concurrently with the
    /// runtime's own handling; the runtime should still call
    /// [`Self::wipe_all`] (or drop the vault) as part of its shutdown, which
    /// is idempotent. The handler holds only a weak reference: it does not
    /// keep the vault alive. Dropping the guard stops the wipe, but (as with
    /// every `signal-hook` handler) the default action stays off for the
    /// rest of the process's life.
    pub fn install_signal_wipe(&self) -> Result<SignalWipeGuard, VaultError> {
        SignalWipeGuard::install(Arc::downgrade(&self.keys), AfterWipe::KeepRunning)
    }

    /// Like [`Self::install_signal_wipe`], but after wiping, the signal's
    /// default action runs (the process terminates by that signal). For
    /// processes without a shutdown handler of their own.
    pub fn install_signal_wipe_then_terminate(&self) -> Result<SignalWipeGuard, VaultError> {
        SignalWipeGuard::install(Arc::downgrade(&self.keys), AfterWipe::Terminate)
    }
}

impl fmt::Debug for LeaseVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = lock(&self.keys);
        let mut list = f.debug_list();
        for (relay, held) in &keys.by_relay {
            let lease = LeaseId {
                relay: *relay,
                epoch: held.epoch,
            };
            let digest = sha256_hex(held.key.verifying_key().as_bytes());
            list.entry(&format_args!("{lease} key-sha256:{}", &digest[..16]));
        }
        list.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterWipe {
    KeepRunning,
    Terminate,
}

/// Keeps the SIGINT/SIGTERM wipe installed; dropping it uninstalls it.
pub struct SignalWipeGuard {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalWipeGuard {
    fn install(keys: Weak<Mutex<VaultKeys>>, after: AfterWipe) -> Result<Self, VaultError> {
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(VaultError::SignalSetup)?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("vault-signal-wipe".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if let Some(keys) = keys.upgrade() {
                        let wiped = lock(&keys).wipe_all();
                        tracing::warn!(signal, wiped, "shutdown signal: lease vault wiped");
                    }
                    if after == AfterWipe::Terminate {
                        // Only returns if the signal is unknown to signal-hook,
                        // which SIGINT/SIGTERM are not; the loop goes on then.
                        let _ = signal_hook::low_level::emulate_default_handler(signal);
                    }
                }
            })
            .map_err(VaultError::SignalSetup)?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWipeGuard {
    fn drop(&mut self) {
        // Closing ends `forever()` and unregisters the handlers.
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl fmt::Debug for SignalWipeGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalWipeGuard")
            .field("installed", &!self.handle.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests;
