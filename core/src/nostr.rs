//! NIP-01 (being written).
