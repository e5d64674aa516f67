//! Peer-link codec (being written).
