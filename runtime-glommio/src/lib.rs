//! hypergate-glommio (being written).
