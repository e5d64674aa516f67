//! hypergate-tests (being written).
