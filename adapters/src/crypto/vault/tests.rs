use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;

fn lease(relay: u8, epoch: u64) -> LeaseId {
    LeaseId {
        relay: RelayKey([relay; 32]),
        epoch,
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public_of(seed: u8) -> [u8; 32] {
    key(seed).verifying_key().to_bytes()
}

#[test]
fn key_is_usable_only_inside_with_key_for_the_exact_lease() {
    let vault = LeaseVault::new();
    assert_eq!(vault.insert(lease(1, 3), key(7)).unwrap(), None);
    let public = vault.with_key(&lease(1, 3), |key| key.verifying_key().to_bytes());
    assert_eq!(public, Some(public_of(7)));
    assert!(vault.contains(&lease(1, 3)));
    assert!(!vault.contains(&lease(1, 2)));
    assert_eq!(vault.with_key(&lease(1, 4), |_| ()), None);
    assert_eq!(vault.with_key(&lease(2, 3), |_| ()), None);
}

#[test]
fn wipe_removes_only_the_named_lease() {
    let vault = LeaseVault::new();
    vault.insert(lease(1, 1), key(1)).unwrap();
    vault.insert(lease(2, 1), key(2)).unwrap();
    assert!(!vault.wipe(&lease(1, 2)), "another epoch is not this lease");
    assert!(vault.wipe(&lease(1, 1)));
    assert!(!vault.contains(&lease(1, 1)));
    assert_eq!(vault.with_key(&lease(1, 1), |_| ()), None);
    assert!(!vault.wipe(&lease(1, 1)));
    assert_eq!(vault.leases(), vec![lease(2, 1)]);
}

#[test]
fn wipe_relay_and_wipe_all_remove_keys_for_every_handle() {
    let vault = LeaseVault::new();
    let other_handle = vault.clone();
    vault.insert(lease(1, 1), key(1)).unwrap();
    vault.insert(lease(2, 5), key(2)).unwrap();
    vault.insert(lease(3, 1), key(3)).unwrap();
    assert_eq!(vault.wipe_relay(&RelayKey([2; 32])), Some(lease(2, 5)));
    assert!(!other_handle.contains(&lease(2, 5)));
    assert_eq!(vault.wipe_relay(&RelayKey([2; 32])), None);
    assert_eq!(other_handle.wipe_all(), 2);
    assert!(vault.is_empty());
    assert_eq!(vault.with_key(&lease(1, 1), |_| ()), None);
}

#[test]
fn newer_lease_replaces_the_relay_key_and_older_is_refused() {
    let vault = LeaseVault::new();
    vault.insert(lease(1, 2), key(2)).unwrap();
    assert_eq!(
        vault.insert(lease(1, 3), key(3)).unwrap(),
        Some(lease(1, 2))
    );
    assert!(!vault.contains(&lease(1, 2)));
    let refused = vault.insert(lease(1, 1), key(1)).unwrap_err();
    assert!(matches!(
        refused,
        VaultError::StaleLease { held, offered } if held == lease(1, 3) && offered == lease(1, 1)
    ));
    assert_eq!(vault.len(), 1);
    assert_eq!(
        vault.with_key(&lease(1, 3), |key| key.verifying_key().to_bytes()),
        Some(public_of(3))
    );
}

#[test]
fn dropping_the_last_handle_drops_every_key() {
    let vault = LeaseVault::new();
    vault.insert(lease(1, 1), key(1)).unwrap();
    let keys = Arc::downgrade(&vault.keys);
    let clone = vault.clone();
    drop(vault);
    assert!(keys.upgrade().is_some(), "a handle is still alive");
    assert!(clone.contains(&lease(1, 1)));
    drop(clone);
    assert!(
        keys.upgrade().is_none(),
        "the key map (and its keys) must be gone"
    );
}

#[test]
fn signal_guard_does_not_keep_the_vault_alive() {
    let vault = LeaseVault::new();
    vault.insert(lease(1, 1), key(1)).unwrap();
    let keys = Arc::downgrade(&vault.keys);
    let guard = vault.install_signal_wipe().unwrap();
    drop(vault);
    assert!(keys.upgrade().is_none());
    drop(guard);
}

#[test]
fn a_panicking_closure_does_not_stop_later_wipes() {
    let vault = LeaseVault::new();
    vault.insert(lease(1, 1), key(1)).unwrap();
    let clone = vault.clone();
    let outcome = std::panic::catch_unwind(move || {
        clone.with_key(&lease(1, 1), |_| panic!("caller bug"));
    });
    assert!(outcome.is_err());
    assert_eq!(vault.wipe_all(), 1);
    assert!(vault.is_empty());
}

#[test]
fn debug_shows_lease_ids_and_digests_but_no_key_material() {
    let vault = LeaseVault::new();
    vault.insert(lease(0xab, 4), key(42)).unwrap();
    let debug = format!("{vault:?}");
    let secret = [42u8; 32];
    assert!(!debug.contains(&hex::encode(secret)), "{debug}");
    assert!(!debug.contains(&hex::encode(&secret[..8])), "{debug}");
    assert!(!debug.contains(&BASE64.encode(secret)), "{debug}");
    assert!(debug.contains(&lease(0xab, 4).to_string()), "{debug}");
    let digest = sha256_hex(&public_of(42));
    assert!(debug.contains(&digest[..16]), "{debug}");

    let error = vault.insert(lease(0xab, 1), key(42)).unwrap_err();
    for text in [format!("{error}"), format!("{error:?}")] {
        assert!(!text.contains(&hex::encode(secret)), "{text}");
        assert!(!text.contains(&BASE64.encode(secret)), "{text}");
    }
}
