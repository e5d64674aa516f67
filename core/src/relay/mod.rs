//! A relay's data model: the ops its logs carry, who may write, and the view of its events.
//!
//! A relay is a set of signed append-only logs. The **owner log** (whose public key is the
//! [`RelayKey`](crate::ids::RelayKey)) carries membership ops; **writer logs** carry events.
//! This module turns those logs into the set of events a client sees, with no I/O: adapters read
//! the logs, verify each event's id and signature, and feed the results in.
//!
//! ## Contract
//! - **One op per log entry, versioned and bounded.** [`RelayOp::encode`] writes a 2-byte format
//!   version and a postcard body; [`RelayOp::decode`] accepts exactly that, rejects an event
//!   payload over [`MAX_EVENT_JSON_BYTES`] or trailing bytes, and never panics on any input.
//! - **Membership is a function of the owner log's prefix.** [`Membership::apply`] takes the
//!   owner log's ops in log order, with no gaps. A writer's entries count while it is a member
//!   and, once removed, only below its `final_length` ([`Membership::counts`]). A removed key is
//!   never re-added (rotation always uses a fresh key); an op that cannot take effect is an error
//!   and leaves membership unchanged.
//! - **The view is a function of the set of counted events.** [`RelayView`] applies NIP-01
//!   replaceable/addressable rules and NIP-09 deletion requests so that the visible events depend
//!   only on *which* events were inserted, never on their order or on duplicates. That is what
//!   lets a gateway's writes and the workers' writes merge by plain set union. The rule is in
//!   [`view`]'s module docs; the tests check it against a non-incremental reference model.
//! - **Every change is reported.** [`RelayView::insert`] returns the exact [`ViewChange`]s (added
//!   events, removed ids) that bring a mirror of the view — a relay index — up to date.
//!
//! ## Map
//! - [`ops`]: [`RelayOp`], [`WriterKey`], [`EventJson`], [`RelayOpError`].
//! - [`membership`]: [`Membership`], [`WriterStatus`], [`MembershipChange`], [`MembershipError`].
//! - [`view`]: [`RelayView`], [`Insertion`], [`InsertOutcome`], [`ViewChange`].

mod deletion;
pub mod membership;
pub mod ops;
pub mod view;

pub use membership::{Membership, MembershipChange, MembershipError, WriterStatus};
pub use ops::{EventJson, FORMAT_VERSION, MAX_EVENT_JSON_BYTES, RelayOp, RelayOpError, WriterKey};
pub use view::{InsertOutcome, Insertion, RelayView, ViewChange};

// Compile-time check: runtimes move these across threads.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Membership>();
    assert_send::<RelayView>();
    assert_send::<RelayOp>();
};
