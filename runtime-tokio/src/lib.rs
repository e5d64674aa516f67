//! hypergate-tokio (being written).
