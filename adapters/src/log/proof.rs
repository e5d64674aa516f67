//! The byte form of a hypercore [`Proof`], as it travels on the peer link.
//!
//! hypercore 0.16 encodes the parts of a proof for its own wire protocol but not
//! the proof as a whole, so hypergate carries proofs as postcard over mirror
//! types of its own, with one format version byte first. Decoding bounds every
//! length (a node hash is exactly 32 bytes, a signature exactly 64, a block at
//! most [`MAX_BLOCK_BYTES`], at most [`MAX_NODES`] nodes per list) and never
//! panics. Decoding only checks *shape*: whether a proof is true is decided by
//! [`HyperLog::apply_proof`](super::HyperLog::apply_proof) against the log's key.

use hypercore_schema::{DataBlock, DataHash, DataSeek, DataUpgrade, Node, Proof};
use serde::{Deserialize, Serialize};

/// Largest block a log accepts or a proof may carry (1 MiB): big enough for any
/// Nostr event and for drive chunks, small enough to bound a frame.
pub const MAX_BLOCK_BYTES: usize = 1 << 20;
/// Most tree nodes one list of a proof may carry (a tree of 2^64 blocks needs 64).
pub const MAX_NODES: usize = 128;
/// The proof format version this build writes and reads.
const FORMAT_VERSION: u8 = 1;

/// Why bytes are not a proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofDecodeError {
    /// The input is empty.
    #[error("empty proof")]
    Empty,
    /// The format version is not one this build reads.
    #[error("unsupported proof format version {0}")]
    UnsupportedVersion(u8),
    /// The bytes are not a well-formed proof.
    #[error("malformed proof: {0}")]
    Malformed(String),
    /// A field is longer or shorter than allowed.
    #[error("proof field {field} has length {found}, allowed {allowed}")]
    BadLength {
        /// Which field.
        field: &'static str,
        /// Its length.
        found: usize,
        /// What is allowed.
        allowed: &'static str,
    },
}

#[derive(Serialize, Deserialize)]
struct WireNode {
    index: u64,
    length: u64,
    hash: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct WireProof {
    fork: u64,
    block: Option<(u64, Vec<u8>, Vec<WireNode>)>,
    hash: Option<(u64, Vec<WireNode>)>,
    seek: Option<(u64, Vec<WireNode>)>,
    upgrade: Option<WireUpgrade>,
}

#[derive(Serialize, Deserialize)]
struct WireUpgrade {
    start: u64,
    length: u64,
    nodes: Vec<WireNode>,
    additional_nodes: Vec<WireNode>,
    signature: Vec<u8>,
}

/// Encodes `proof` for the wire.
pub fn encode_proof(proof: &Proof) -> Vec<u8> {
    let wire = WireProof {
        fork: proof.fork,
        block: proof
            .block
            .as_ref()
            .map(|b| (b.index, b.value.clone(), to_wire(&b.nodes))),
        hash: proof.hash.as_ref().map(|h| (h.index, to_wire(&h.nodes))),
        seek: proof.seek.as_ref().map(|s| (s.bytes, to_wire(&s.nodes))),
        upgrade: proof.upgrade.as_ref().map(|u| WireUpgrade {
            start: u.start,
            length: u.length,
            nodes: to_wire(&u.nodes),
            additional_nodes: to_wire(&u.additional_nodes),
            signature: u.signature.clone(),
        }),
    };
    let mut out = vec![FORMAT_VERSION];
    // Serialising plain structs of integers and byte vectors into a Vec cannot fail.
    out.extend(postcard::to_allocvec(&wire).unwrap_or_default());
    out
}

/// Decodes a proof written by [`encode_proof`], checking every bound.
pub fn decode_proof(bytes: &[u8]) -> Result<Proof, ProofDecodeError> {
    let (&version, body) = bytes.split_first().ok_or(ProofDecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(ProofDecodeError::UnsupportedVersion(version));
    }
    // Refuse before allocating: postcard trusts length prefixes up to the input size,
    // so the input size itself bounds what decoding can allocate.
    let max_input = MAX_BLOCK_BYTES + 5 * MAX_NODES * 64 + 4096;
    if body.len() > max_input {
        return Err(ProofDecodeError::BadLength {
            field: "proof",
            found: body.len(),
            allowed: "at most one block plus its nodes",
        });
    }
    let (wire, rest): (WireProof, &[u8]) =
        postcard::take_from_bytes(body).map_err(|e| ProofDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProofDecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    let block = match wire.block {
        Some((index, value, nodes)) => {
            if value.len() > MAX_BLOCK_BYTES {
                return Err(ProofDecodeError::BadLength {
                    field: "block.value",
                    found: value.len(),
                    allowed: "at most 1 MiB",
                });
            }
            Some(DataBlock {
                index,
                value,
                nodes: from_wire("block.nodes", nodes)?,
            })
        }
        None => None,
    };
    let hash = match wire.hash {
        Some((index, nodes)) => Some(DataHash {
            index,
            nodes: from_wire("hash.nodes", nodes)?,
        }),
        None => None,
    };
    let seek = match wire.seek {
        Some((bytes, nodes)) => Some(DataSeek {
            bytes,
            nodes: from_wire("seek.nodes", nodes)?,
        }),
        None => None,
    };
    let upgrade = match wire.upgrade {
        Some(u) => {
            if u.signature.len() != 64 {
                return Err(ProofDecodeError::BadLength {
                    field: "upgrade.signature",
                    found: u.signature.len(),
                    allowed: "exactly 64",
                });
            }
            Some(DataUpgrade {
                start: u.start,
                length: u.length,
                nodes: from_wire("upgrade.nodes", u.nodes)?,
                additional_nodes: from_wire("upgrade.additional_nodes", u.additional_nodes)?,
                signature: u.signature,
            })
        }
        None => None,
    };
    Ok(Proof {
        fork: wire.fork,
        block,
        hash,
        seek,
        upgrade,
    })
}

fn to_wire(nodes: &[Node]) -> Vec<WireNode> {
    nodes
        .iter()
        .map(|n| WireNode {
            index: n.index,
            length: n.length,
            hash: n.hash.clone(),
        })
        .collect()
}

fn from_wire(field: &'static str, nodes: Vec<WireNode>) -> Result<Vec<Node>, ProofDecodeError> {
    if nodes.len() > MAX_NODES {
        return Err(ProofDecodeError::BadLength {
            field,
            found: nodes.len(),
            allowed: "at most 128 nodes",
        });
    }
    nodes
        .into_iter()
        .map(|n| {
            if n.hash.len() != 32 {
                return Err(ProofDecodeError::BadLength {
                    field,
                    found: n.hash.len(),
                    allowed: "node hashes of exactly 32 bytes",
                });
            }
            Ok(Node::new(n.index, n.hash, n.length))
        })
        .collect()
}
