//! Block ranges over the peer link (used by workers and gateways alike, on any runtime): how a [`MirrorRangeRequest`] is answered and how its
//! [`MirrorRangeResponse`] is turned back into verifiable proofs.
//!
//! Contract:
//! - A request `start..end` means: *my copy's signed tree covers exactly `start` blocks and I
//!   hold all of them; send blocks from `start`*. The holder answers with proofs from
//!   [`HyperLog::export_range`] with `remote_length = start`, so the first proof upgrades the copy
//!   to the holder's current length. It answers **up to its current length** (not only to
//!   `end`) whenever that fits one response, because a copy upgraded past the blocks it received
//!   could not be served by a later push (decisions D62). Past [`MAX_MIRROR_BLOCKS_PER_RANGE`]
//!   blocks or the proof byte budget the answer is cut; see the module-level limitation below.
//! - Block values travel in `blocks`, each proof without its value in `proof` (a postcard list of
//!   `log::encode_proof` byte strings), so the 1 MiB proof budget is spent on tree nodes only.
//! - [`decode_mirror_response`] rebuilds the proofs; it never panics and bounds every length.
//!   Whether a proof is *true* is decided by the receiver's `apply_proof` against the core key.
//!
//! - A [`MirrorProofRequest`] carries what the asking copy holds (its signed length and, per
//!   block, the tree nodes it has: a `RangeRequest` from `request_range`), so its answer
//!   ([`answer_proof_request`], built with [`HyperLog::answer_request`]) verifies from any state,
//!   including a copy whose batch was cut (signed tree ahead of its blocks). Backlogs longer than
//!   one response resume this way; [`proof_request`] turns a `RangeRequest` into the message.
//!   `MirrorRangeRequest` is still answered for peers that send it.

use crate::log::{self, HyperLog, LogError, Proof, RangeRequest};
use hypergate_core::wire::{
    BoundedBytes, BoundedVec, MAX_MIRROR_BLOCKS_PER_RANGE, MAX_MIRROR_PROOF_BYTES,
    MirrorProofRequest, MirrorRangeRequest, MirrorRangeResponse,
};

/// Why a mirror response could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorWireError {
    // The peer's bytes.
    /// The response's proof list is not well-formed.
    #[error("malformed mirror response: {0}")]
    Malformed(String),
    // Local storage.
    /// The log could not export proofs.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Answers `request` from `log`. See the module docs.
pub async fn answer_range(
    log: &mut HyperLog,
    request: &MirrorRangeRequest,
) -> Result<MirrorRangeResponse, MirrorWireError> {
    let length = log.len();
    let start = request.start();
    let core_key = *request.core_key();
    if start >= length {
        return empty(core_key, start);
    }
    let end = length.min(start.saturating_add(MAX_MIRROR_BLOCKS_PER_RANGE as u64));
    let proofs = log.export_range(start, start..end).await?;
    pack_proofs(core_key, start, proofs)
}

/// The message asking `core_key`'s holder for what `request` describes. At most
/// [`MAX_MIRROR_BLOCKS_PER_RANGE`] blocks travel; `request_range` never builds more.
pub fn proof_request(
    core_key: [u8; 32],
    request: RangeRequest,
) -> Result<MirrorProofRequest, MirrorWireError> {
    Ok(MirrorProofRequest {
        core_key,
        signed_length: request.signed_length,
        blocks: BoundedVec::new(request.blocks)
            .map_err(|e| MirrorWireError::Malformed(e.to_string()))?,
    })
}

/// Answers a [`MirrorProofRequest`] from `log` with [`HyperLog::answer_request`]: proofs for the
/// requested blocks in order, each carrying the upgrade from the asker's signed length, cut
/// where the byte budget of one response ends. `start` is the first requested block.
pub async fn answer_proof_request(
    log: &mut HyperLog,
    request: &MirrorProofRequest,
) -> Result<MirrorRangeResponse, MirrorWireError> {
    let start = request.blocks.first().map_or(log.len(), |block| block.0);
    let range = RangeRequest {
        signed_length: request.signed_length,
        blocks: request.blocks.to_vec(),
    };
    let proofs = log.answer_request(&range).await?;
    pack_proofs(request.core_key, start, proofs)
}

/// Moves block values into `blocks` and the value-less proofs into `proof`, stopping before the
/// proof budget or a block over the wire's bound (the gateway answers from its mirror with it).
pub fn pack_proofs(
    core_key: [u8; 32],
    start: u64,
    proofs: Vec<Proof>,
) -> Result<MirrorRangeResponse, MirrorWireError> {
    let mut values = Vec::with_capacity(proofs.len());
    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(proofs.len());
    let mut budget = 0usize;
    for mut proof in proofs {
        let value = proof
            .block
            .as_mut()
            .map(|block| std::mem::take(&mut block.value))
            .unwrap_or_default();
        let bytes = log::encode_proof(&proof);
        // postcard's length prefix per entry is at most 10 bytes.
        budget = budget.saturating_add(bytes.len() + 10);
        if budget > MAX_MIRROR_PROOF_BYTES - 16 {
            break;
        }
        let Ok(value) = BoundedBytes::new(value) else {
            break; // a block over the wire's bound: stop before it
        };
        values.push(value);
        encoded.push(bytes);
    }
    let proof =
        postcard::to_allocvec(&encoded).map_err(|e| MirrorWireError::Malformed(e.to_string()))?;
    Ok(MirrorRangeResponse {
        core_key,
        start,
        blocks: BoundedVec::new(values).map_err(|e| MirrorWireError::Malformed(e.to_string()))?,
        proof: BoundedBytes::new(proof).map_err(|e| MirrorWireError::Malformed(e.to_string()))?,
    })
}

fn empty(core_key: [u8; 32], start: u64) -> Result<MirrorRangeResponse, MirrorWireError> {
    Ok(MirrorRangeResponse {
        core_key,
        start,
        blocks: BoundedVec::default(),
        proof: BoundedBytes::new(Vec::new())
            .map_err(|e| MirrorWireError::Malformed(e.to_string()))?,
    })
}

/// Rebuilds the proofs of a [`MirrorRangeResponse`] (block values put back), in order.
pub fn decode_mirror_response(
    response: &MirrorRangeResponse,
) -> Result<Vec<Proof>, MirrorWireError> {
    let bad = |detail: String| MirrorWireError::Malformed(detail);
    if response.proof.is_empty() {
        return if response.blocks.is_empty() {
            Ok(Vec::new())
        } else {
            Err(bad("blocks without proofs".into()))
        };
    }
    let encoded: Vec<&[u8]> =
        postcard::from_bytes(&response.proof).map_err(|e| bad(e.to_string()))?;
    if encoded.len() != response.blocks.len() {
        return Err(bad(format!(
            "{} proofs for {} blocks",
            encoded.len(),
            response.blocks.len()
        )));
    }
    let mut proofs = Vec::with_capacity(encoded.len());
    for (bytes, value) in encoded.iter().zip(response.blocks.iter()) {
        let mut proof = log::decode_proof(bytes).map_err(|e| bad(e.to_string()))?;
        match proof.block.as_mut() {
            Some(block) => block.value = value.to_vec(),
            None => return Err(bad("a proof without a block".into())),
        }
        proofs.push(proof);
    }
    Ok(proofs)
}

/// The fuzzing entry: decodes a postcard-encoded [`MirrorRangeResponse`] and its proofs.
pub fn decode_mirror_response_bytes(bytes: &[u8]) -> Result<Vec<Proof>, MirrorWireError> {
    let response: MirrorRangeResponse =
        postcard::from_bytes(bytes).map_err(|e| MirrorWireError::Malformed(e.to_string()))?;
    decode_mirror_response(&response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_proof_request_from_a_copy_cut_short_is_answered_with_proofs_that_apply() {
        smol::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut origin = HyperLog::create(&dir.path().join("origin"), None)
                .await
                .unwrap();
            for i in 0..40u32 {
                origin.append(&i.to_be_bytes()).await.unwrap();
            }
            let key = origin.public_key().to_bytes();
            let mut copy = HyperLog::create_replica(&dir.path().join("copy"), origin.public_key())
                .await
                .unwrap();
            // The first answer covers 10 blocks and upgrades the copy's tree to 40.
            let first = proof_request(key, copy.request_range(0..10).await.unwrap()).unwrap();
            let response = answer_proof_request(&mut origin, &first).await.unwrap();
            copy.apply_proofs(&decode_mirror_response(&response).unwrap())
                .await
                .unwrap();
            assert_eq!((copy.len(), copy.contiguous_len()), (40, 10));
            // The origin grows; the rest still verifies, asked by what the copy holds.
            origin.append(b"later").await.unwrap();
            let rest = proof_request(key, copy.request_range(10..41).await.unwrap()).unwrap();
            let response = answer_proof_request(&mut origin, &rest).await.unwrap();
            assert_eq!(response.start, 10);
            copy.apply_proofs(&decode_mirror_response(&response).unwrap())
                .await
                .unwrap();
            assert_eq!(copy.contiguous_len(), 41);
            assert_eq!(copy.get(40).await.unwrap().as_deref(), Some(&b"later"[..]));
        });
    }

    #[test]
    fn a_proof_request_past_the_holders_length_is_an_error() {
        smol::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut origin = HyperLog::create(dir.path(), None).await.unwrap();
            origin.append(b"one").await.unwrap();
            let request = MirrorProofRequest {
                core_key: origin.public_key().to_bytes(),
                signed_length: 0,
                blocks: BoundedVec::new(vec![(0, 0), (5, 0)]).unwrap(),
            };
            assert!(matches!(
                answer_proof_request(&mut origin, &request).await,
                Err(MirrorWireError::Log(LogError::OutOfRange { .. }))
            ));
        });
    }

    #[test]
    fn garbage_mirror_responses_are_errors_not_panics() {
        for bytes in [&[][..], &[0xff; 7][..], &[0; 40][..], &[1; 300][..]] {
            let _ = decode_mirror_response_bytes(bytes);
        }
        let mismatched = MirrorRangeResponse {
            core_key: [1; 32],
            start: 0,
            blocks: BoundedVec::new(vec![BoundedBytes::new(vec![1u8]).unwrap()]).unwrap(),
            proof: BoundedBytes::new(postcard::to_allocvec(&Vec::<Vec<u8>>::new()).unwrap())
                .unwrap(),
        };
        assert!(matches!(
            decode_mirror_response(&mismatched),
            Err(MirrorWireError::Malformed(_))
        ));
    }
}
