//! hypergate-adapters (being written).
