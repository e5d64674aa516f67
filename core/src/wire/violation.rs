//! The detail of a bound violation found while deserialising, carried past postcard.
//!
//! postcard turns every custom deserialisation error into its unit `SerdeDeCustom` variant and
//! drops the message, so `decode` could only say "malformed" when a peer sends a 2 MiB name.
//! The bounded types therefore also leave a [`Violation`] in a thread-local note, and
//! [`super::decode`] reads it back after the same call on the same thread. The note never
//! outlives one `decode` call: `decode` takes it on every path. It is not shared state between
//! calls, so the codec stays a pure function of its input.

use std::cell::Cell;
use std::fmt;

use super::{MAX_MIRROR_BLOCKS_PER_RANGE, WireError};

/// A bound a peer's bytes broke, recorded where it was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Violation {
    /// A string, byte string or list longer than its bound.
    TooLong {
        what: &'static str,
        max: usize,
        got: usize,
    },
    /// A reversed or oversized mirror range.
    BadRange { start: u64, end: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::TooLong { what, max, got } => {
                write!(f, "{what} of {got} exceeds the limit of {max}")
            }
            Violation::BadRange { start, end } => write!(
                f,
                "mirror range {start}..{end} is reversed or spans more than \
                 {MAX_MIRROR_BLOCKS_PER_RANGE} blocks"
            ),
        }
    }
}

impl From<Violation> for WireError {
    fn from(violation: Violation) -> Self {
        match violation {
            Violation::TooLong { what, max, got } => WireError::TooLong { what, max, got },
            Violation::BadRange { start, end } => WireError::BadRange { start, end },
        }
    }
}

thread_local! {
    static NOTE: Cell<Option<Violation>> = const { Cell::new(None) };
}

/// Records `violation` for `decode` and returns the serde error that aborts deserialisation.
/// Other formats (serde_json, …) keep the message in the error itself.
pub(super) fn reject<E: serde::de::Error>(violation: Violation) -> E {
    NOTE.with(|note| note.set(Some(violation)));
    E::custom(violation)
}

/// Takes (and clears) the last recorded violation on this thread.
pub(super) fn take() -> Option<Violation> {
    NOTE.with(Cell::take)
}
