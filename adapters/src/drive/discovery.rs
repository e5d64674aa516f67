//! The discovery key of a log: the name peers announce and look up instead of
//! the public key, so finding a log does not reveal the key that reads it.
//!
//! Contract: [`discovery_key`] is hypercore's convention (`hypercore-crypto`
//! `discoveryKey`, datrs `hypercore-protocol` `discovery_key`): the 32-byte
//! BLAKE2b keyed hash of the ASCII bytes `hypercore`, keyed with the public key.
//! A drive's discovery key therefore matches the one a Holepunch peer computes
//! for the same metadata key.

use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;

/// The message hypercore hashes under the public key.
const DISCOVERY_MESSAGE: &[u8] = b"hypercore";

/// hypercore's discovery key for the log with public key `public_key`.
#[allow(clippy::expect_used)]
pub fn discovery_key(public_key: &[u8; 32]) -> [u8; 32] {
    // BLAKE2b accepts keys of up to 64 bytes; a 32-byte key is always valid, so
    // this cannot fail.
    let mut mac = Blake2bMac::<U32>::new_from_slice(public_key)
        .expect("a 32-byte BLAKE2b key is within the 64-byte limit");
    mac.update(DISCOVERY_MESSAGE);
    mac.finalize().into_bytes().into()
}
