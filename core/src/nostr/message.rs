//! NIP-01 frames: what clients send (`EVENT`, `REQ`, `CLOSE`) and what relays answer (`EVENT`,
//! `EOSE`, `OK`, `NOTICE`, `CLOSED`).
//!
//! Contract:
//! - [`ClientMessage::parse`] never panics and does work proportional to
//!   [`Limits::max_frame_bytes`]: the length is checked before any parsing, elements beyond what
//!   a legal frame can hold are validated but not kept, and every list is bounded by [`Limits`].
//! - Parsing checks shape and limits, not authenticity: the gateway calls
//!   [`Event::verify`](super::Event::verify) on every event it accepts.
//! - Every [`FrameError`] says how to answer it: [`FrameError::reply`] gives the NIP-01 reply
//!   (`OK false` when the event id could be read, `CLOSED` when the subscription id could be
//!   read, `NOTICE` otherwise) and [`FrameError::notice_text`] the original gateway's NOTICE
//!   texts (`Invalid message payload`, `Malformed Nostr frame`, `Invalid EVENT payload`,
//!   `REQ frame missing subscription id`).
//! - `AUTH` (NIP-42) and `COUNT` (NIP-45) are recognised and refused with
//!   [`FrameError::Unsupported`], so a client waiting for the `OK` or `CLOSED` those NIPs promise
//!   gets one instead of a generic NOTICE.
//! - `to_json` output parses back to an equal message.

use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::{
    Event, EventError, EventId, Filter, FilterError, Limits, MachineReadablePrefix, SubscriptionId,
    SubscriptionIdError,
};

/// Why a frame was refused, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    // The sender is at fault: the text is not a NIP-01 frame.
    /// The text is not JSON.
    #[error("frame is not JSON")]
    NotJson,
    /// The JSON is not a non-empty array whose first element is a string.
    #[error("frame is not a non-empty array starting with a verb")]
    NotAFrame,
    /// The verb is not one this side of the protocol sends.
    #[error("unknown verb {verb:?}")]
    UnknownVerb {
        /// The verb, cut to 32 characters.
        verb: String,
    },
    /// A known verb with the wrong number or type of elements (other than the cases below).
    #[error("malformed {verb} frame: {detail}")]
    Malformed {
        /// The verb.
        verb: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An `EVENT` frame without exactly one valid event object, or over the event limits.
    #[error("invalid EVENT payload: {error}")]
    InvalidEvent {
        /// The event's id, when it could be read, so that the reply can be an `OK`.
        event_id: Option<EventId>,
        /// What is wrong with the event.
        error: EventError,
    },
    /// A frame that needs a subscription id has none, or not a string.
    #[error("{verb} frame missing subscription id")]
    MissingSubscriptionId {
        /// `REQ`, `CLOSE`, or a relay verb.
        verb: &'static str,
    },
    /// The subscription id is empty or too long.
    #[error("{verb} frame has an invalid subscription id: {error}")]
    InvalidSubscriptionId {
        /// `REQ`, `CLOSE`, or a relay verb.
        verb: &'static str,
        /// What is wrong with it.
        error: SubscriptionIdError,
    },
    /// A `REQ` without filters.
    #[error("REQ {subscription_id} has no filters")]
    NoFilters {
        /// The subscription to close.
        subscription_id: SubscriptionId,
    },
    /// A `REQ` with a filter that is malformed or over the per-list limit.
    #[error("REQ {subscription_id} filter {index}: {error}")]
    InvalidFilter {
        /// The subscription to close.
        subscription_id: SubscriptionId,
        /// Position of the filter in the frame, from 0.
        index: usize,
        /// What is wrong with it.
        error: FilterError,
    },
    /// `AUTH` (NIP-42) or `COUNT` (NIP-45): well-known verbs this gateway does not implement.
    #[error("{verb} is not supported")]
    Unsupported {
        /// `AUTH` or `COUNT`.
        verb: &'static str,
        /// The `COUNT` subscription id, when it could be read, so that the reply can be `CLOSED`.
        subscription_id: Option<SubscriptionId>,
        /// The `AUTH` event id, when it could be read, so that the reply can be an `OK`.
        event_id: Option<EventId>,
    },

    // A local limit is exceeded.
    /// The frame is longer than [`Limits::max_frame_bytes`]; it was not parsed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Bytes in the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `REQ` with more filters than [`Limits::max_filters_per_req`].
    #[error("REQ {subscription_id} has {count} filters, more than {max}")]
    TooManyFilters {
        /// The subscription to close.
        subscription_id: SubscriptionId,
        /// Filters in the frame.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl FrameError {
    /// The text of the `["NOTICE", …]` that answers this error when no better reply exists.
    #[must_use]
    pub fn notice_text(&self) -> String {
        match self {
            FrameError::NotJson => "Invalid message payload".to_owned(),
            FrameError::NotAFrame
            | FrameError::UnknownVerb { .. }
            | FrameError::Malformed { .. } => "Malformed Nostr frame".to_owned(),
            FrameError::InvalidEvent { .. } => "Invalid EVENT payload".to_owned(),
            FrameError::MissingSubscriptionId { verb } => {
                format!("{verb} frame missing subscription id")
            }
            FrameError::InvalidSubscriptionId { verb, error } => {
                format!("{verb} frame has an invalid subscription id: {error}")
            }
            FrameError::NoFilters { .. } => "REQ frame has no filters".to_owned(),
            FrameError::InvalidFilter { index, error, .. } => {
                format!("Invalid REQ filter {index}: {error}")
            }
            FrameError::Unsupported { verb, .. } => format!("{verb} is not supported"),
            FrameError::FrameTooLarge { max, .. } => {
                format!("Frame too large: the limit is {max} bytes")
            }
            FrameError::TooManyFilters { max, .. } => {
                format!("Too many filters: the limit is {max} per REQ")
            }
        }
    }

    /// The subscription the error concerns, when it could be read.
    #[must_use]
    pub fn subscription_id(&self) -> Option<&SubscriptionId> {
        match self {
            FrameError::NoFilters { subscription_id }
            | FrameError::InvalidFilter {
                subscription_id, ..
            }
            | FrameError::TooManyFilters {
                subscription_id, ..
            } => Some(subscription_id),
            FrameError::Unsupported {
                subscription_id, ..
            } => subscription_id.as_ref(),
            _ => None,
        }
    }

    /// The event the error concerns, when its id could be read.
    #[must_use]
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            FrameError::InvalidEvent { event_id, .. }
            | FrameError::Unsupported { event_id, .. } => *event_id,
            _ => None,
        }
    }

    /// The NIP-01 answer to a client frame that failed to parse: `OK false` for an event whose
    /// id could be read, `CLOSED` for a subscription whose id could be read, `NOTICE` otherwise.
    #[must_use]
    pub fn reply(&self) -> RelayMessage {
        let closed = |subscription_id: &SubscriptionId, detail: &str| RelayMessage::Closed {
            subscription_id: subscription_id.clone(),
            message: MachineReadablePrefix::Invalid.message(detail),
        };
        match self {
            FrameError::InvalidEvent {
                event_id: Some(event_id),
                error,
            } => RelayMessage::Ok {
                event_id: *event_id,
                accepted: false,
                message: error.to_ok_message(),
            },
            FrameError::NoFilters { subscription_id } => {
                closed(subscription_id, "REQ needs at least one filter")
            }
            FrameError::InvalidFilter {
                subscription_id,
                index,
                error,
            } => closed(subscription_id, &format!("filter {index}: {error}")),
            FrameError::TooManyFilters {
                subscription_id,
                count,
                max,
            } => closed(
                subscription_id,
                &format!("too many filters ({count} > {max})"),
            ),
            // NIP-42 promises an OK for every AUTH and NIP-45 a CLOSED for a refused COUNT.
            FrameError::Unsupported {
                verb,
                subscription_id,
                event_id,
            } => {
                let message =
                    MachineReadablePrefix::Error.message(&format!("{verb} is not supported"));
                match (event_id, subscription_id) {
                    (Some(event_id), _) => RelayMessage::Ok {
                        event_id: *event_id,
                        accepted: false,
                        message,
                    },
                    (None, Some(subscription_id)) => RelayMessage::Closed {
                        subscription_id: subscription_id.clone(),
                        message,
                    },
                    (None, None) => RelayMessage::Notice(self.notice_text()),
                }
            }
            _ => RelayMessage::Notice(self.notice_text()),
        }
    }
}

/// A frame from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// `["EVENT", <event>]`: publish an event.
    Event(Box<Event>),
    /// `["REQ", <subscription id>, <filter>, …]`: query stored events and follow new ones.
    Req {
        /// Names the subscription in later `EVENT`, `EOSE`, `CLOSED` and `CLOSE` frames.
        subscription_id: SubscriptionId,
        /// Events matching any filter are sent; at least one.
        filters: Vec<Filter>,
    },
    /// `["CLOSE", <subscription id>]`: end a subscription.
    Close(SubscriptionId),
}

impl ClientMessage {
    /// Parses a client frame within `limits`. See [`FrameError::reply`] for how to answer errors.
    pub fn parse(text: &str, limits: &Limits) -> Result<ClientMessage, FrameError> {
        if text.len() > limits.max_frame_bytes {
            return Err(FrameError::FrameTooLarge {
                len: text.len(),
                max: limits.max_frame_bytes,
            });
        }
        // The longest legal frame is a REQ: verb, subscription id, filters.
        let keep = limits.max_filters_per_req.saturating_add(2).max(3);
        let (verb, frame) = split_frame(text, keep)?;
        match verb.as_str() {
            "EVENT" => parse_event(&frame, limits).map(ClientMessage::Event),
            "REQ" => parse_req(&frame, limits),
            "CLOSE" => parse_close(&frame, limits),
            "AUTH" => Err(FrameError::Unsupported {
                verb: "AUTH",
                subscription_id: None,
                event_id: frame.args.first().and_then(|raw| salvage_event_id(raw)),
            }),
            "COUNT" => Err(FrameError::Unsupported {
                verb: "COUNT",
                subscription_id: frame
                    .args
                    .first()
                    .and_then(|raw| subscription_id("COUNT", raw, limits).ok()),
                event_id: None,
            }),
            _ => Err(unknown_verb(verb)),
        }
    }

    /// The frame as compact JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }
}

impl Serialize for ClientMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ClientMessage::Event(event) => ("EVENT", event).serialize(serializer),
            ClientMessage::Req {
                subscription_id,
                filters,
            } => {
                let mut seq = serializer.serialize_seq(Some(2 + filters.len()))?;
                seq.serialize_element("REQ")?;
                seq.serialize_element(subscription_id)?;
                for filter in filters {
                    seq.serialize_element(filter)?;
                }
                seq.end()
            }
            ClientMessage::Close(subscription_id) => {
                ("CLOSE", subscription_id).serialize(serializer)
            }
        }
    }
}

/// A frame from a relay: what the gateway sends to clients and reads back from workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayMessage {
    /// `["EVENT", <subscription id>, <event>]`: an event matching a subscription.
    Event {
        /// The subscription it matches.
        subscription_id: SubscriptionId,
        /// The event.
        event: Box<Event>,
    },
    /// `["EOSE", <subscription id>]`: stored events are done; live ones follow.
    Eose(SubscriptionId),
    /// `["OK", <event id>, <accepted>, <message>]`: the outcome of an `EVENT`.
    Ok {
        /// The event the outcome is for.
        event_id: EventId,
        /// Whether the event was stored (or was already stored).
        accepted: bool,
        /// Empty, or `"<prefix>: <detail>"` (see [`MachineReadablePrefix`]).
        message: String,
    },
    /// `["NOTICE", <message>]`: human-readable, not tied to a request.
    Notice(String),
    /// `["CLOSED", <subscription id>, <message>]`: the relay ended a subscription.
    Closed {
        /// The subscription ended.
        subscription_id: SubscriptionId,
        /// `"<prefix>: <detail>"`.
        message: String,
    },
}

impl RelayMessage {
    /// Parses a relay frame, as the gateway reads them back from workers.
    ///
    /// No [`Limits`] apply: workers are authenticated, the peer link bounds frame sizes, and an
    /// event a worker has stored is forwarded as it is even if it exceeds what this gateway
    /// accepts from clients. Subscription ids must still be valid NIP-01 ids.
    pub fn parse(text: &str) -> Result<RelayMessage, FrameError> {
        // The longest relay frame is OK: verb, id, flag, message.
        let (verb, frame) = split_frame(text, 4)?;
        let limits = Limits::default();
        match verb.as_str() {
            "EVENT" => {
                let subscription_id = frame.subscription_id("EVENT", &limits)?;
                frame.expect_args("EVENT", 2)?;
                let event = parse_event_object(frame.args.get(1).copied(), None)?;
                Ok(RelayMessage::Event {
                    subscription_id,
                    event,
                })
            }
            "EOSE" => {
                let subscription_id = frame.subscription_id("EOSE", &limits)?;
                frame.expect_args("EOSE", 1)?;
                Ok(RelayMessage::Eose(subscription_id))
            }
            "OK" => {
                frame.expect_args("OK", 3)?;
                Ok(RelayMessage::Ok {
                    event_id: frame.element("OK", 0)?,
                    accepted: frame.element("OK", 1)?,
                    message: frame.element("OK", 2)?,
                })
            }
            "NOTICE" => {
                frame.expect_args("NOTICE", 1)?;
                Ok(RelayMessage::Notice(frame.element("NOTICE", 0)?))
            }
            "CLOSED" => {
                let subscription_id = frame.subscription_id("CLOSED", &limits)?;
                frame.expect_args("CLOSED", 2)?;
                Ok(RelayMessage::Closed {
                    subscription_id,
                    message: frame.element("CLOSED", 1)?,
                })
            }
            "AUTH" | "COUNT" => Err(FrameError::Unsupported {
                verb: if verb == "AUTH" { "AUTH" } else { "COUNT" },
                subscription_id: None,
                event_id: None,
            }),
            _ => Err(unknown_verb(verb)),
        }
    }

    /// The frame as compact JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        super::to_json(self)
    }
}

impl Serialize for RelayMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RelayMessage::Event {
                subscription_id,
                event,
            } => ("EVENT", subscription_id, event).serialize(serializer),
            RelayMessage::Eose(subscription_id) => ("EOSE", subscription_id).serialize(serializer),
            RelayMessage::Ok {
                event_id,
                accepted,
                message,
            } => ("OK", event_id, accepted, message).serialize(serializer),
            RelayMessage::Notice(message) => ("NOTICE", message).serialize(serializer),
            RelayMessage::Closed {
                subscription_id,
                message,
            } => ("CLOSED", subscription_id, message).serialize(serializer),
        }
    }
}

/// The elements after the verb: the first few kept unparsed, and how many there were in all.
struct Frame<'a> {
    args: Vec<&'a RawValue>,
    arg_count: usize,
}

impl<'a> Frame<'a> {
    fn expect_args(&self, verb: &'static str, count: usize) -> Result<(), FrameError> {
        if self.arg_count == count {
            Ok(())
        } else {
            Err(FrameError::Malformed {
                verb,
                detail: format!(
                    "expected {count} elements after the verb, got {}",
                    self.arg_count
                ),
            })
        }
    }

    fn element<T: Deserialize<'a>>(
        &self,
        verb: &'static str,
        index: usize,
    ) -> Result<T, FrameError> {
        let malformed = |detail: String| FrameError::Malformed { verb, detail };
        let raw = self
            .args
            .get(index)
            .ok_or_else(|| malformed(format!("element {} is missing", index + 1)))?;
        serde_json::from_str(raw.get())
            .map_err(|error| malformed(format!("element {}: {}", index + 1, super::detail(&error))))
    }

    fn subscription_id(
        &self,
        verb: &'static str,
        limits: &Limits,
    ) -> Result<SubscriptionId, FrameError> {
        match self.args.first() {
            Some(raw) => subscription_id(verb, raw, limits),
            None => Err(FrameError::MissingSubscriptionId { verb }),
        }
    }
}

/// Splits `text` into its verb and the raw elements after it, keeping at most `keep` elements
/// (verb included) and counting the rest.
fn split_frame(text: &str, keep: usize) -> Result<(String, Frame<'_>), FrameError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let (mut kept, total) = ElementsSeed { keep }
        .deserialize(&mut deserializer)
        .and_then(|elements| deserializer.end().map(|()| elements))
        .map_err(|error| match error.classify() {
            // The wrong shape is reported as soon as it is seen (`{` is not `[`) even if the
            // text is no JSON at all; the original answered "Invalid message payload" to
            // anything `JSON.parse` refused, so check the whole text before saying "not a frame".
            Category::Data if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
                FrameError::NotAFrame
            }
            _ => FrameError::NotJson,
        })?;
    if kept.is_empty() {
        return Err(FrameError::NotAFrame);
    }
    let verb_raw = kept.remove(0);
    let verb: String = serde_json::from_str(verb_raw.get()).map_err(|_| FrameError::NotAFrame)?;
    Ok((
        verb,
        Frame {
            args: kept,
            arg_count: total.saturating_sub(1),
        },
    ))
}

/// Reads a JSON array as borrowed raw elements, keeping the first `keep` and only counting (and
/// syntax-checking) the rest, so that a frame of 60 000 tiny elements costs no memory.
struct ElementsSeed {
    keep: usize,
}

impl<'de> DeserializeSeed<'de> for ElementsSeed {
    type Value = (Vec<&'de RawValue>, usize);

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ElementsSeed {
    type Value = (Vec<&'de RawValue>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a NIP-01 frame array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut kept = Vec::new();
        while kept.len() < self.keep {
            match seq.next_element::<&'de RawValue>()? {
                Some(raw) => kept.push(raw),
                None => {
                    let total = kept.len();
                    return Ok((kept, total));
                }
            }
        }
        let mut total = kept.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            total += 1;
        }
        Ok((kept, total))
    }
}

fn unknown_verb(verb: String) -> FrameError {
    FrameError::UnknownVerb {
        verb: verb.chars().take(32).collect(),
    }
}

fn subscription_id(
    verb: &'static str,
    raw: &RawValue,
    limits: &Limits,
) -> Result<SubscriptionId, FrameError> {
    let id: String =
        serde_json::from_str(raw.get()).map_err(|_| FrameError::MissingSubscriptionId { verb })?;
    SubscriptionId::with_max_len(id, limits.max_subscription_id_len)
        .map_err(|error| FrameError::InvalidSubscriptionId { verb, error })
}

/// `["EVENT", <event>]` from a client: exactly one event, within the limits.
fn parse_event(frame: &Frame<'_>, limits: &Limits) -> Result<Box<Event>, FrameError> {
    if frame.arg_count != 1 {
        return Err(FrameError::InvalidEvent {
            event_id: None,
            error: EventError::Malformed(format!(
                "EVENT frame needs exactly one event, got {} elements",
                frame.arg_count
            )),
        });
    }
    parse_event_object(frame.args.first().copied(), Some(limits))
}

fn parse_event_object(
    raw: Option<&RawValue>,
    limits: Option<&Limits>,
) -> Result<Box<Event>, FrameError> {
    let Some(raw) = raw else {
        return Err(FrameError::InvalidEvent {
            event_id: None,
            error: EventError::Malformed("no event".to_owned()),
        });
    };
    let event: Box<Event> =
        serde_json::from_str(raw.get()).map_err(|error| FrameError::InvalidEvent {
            event_id: salvage_event_id(raw),
            error: EventError::Malformed(super::detail(&error)),
        })?;
    if let Some(limits) = limits {
        event
            .check_limits(limits)
            .map_err(|error| FrameError::InvalidEvent {
                event_id: Some(event.id),
                error,
            })?;
    }
    Ok(event)
}

/// The `id` of an object that failed to parse as an event, so the rejection can be an `OK` the
/// client can match to what it sent.
fn salvage_event_id(raw: &RawValue) -> Option<EventId> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: EventId,
    }
    serde_json::from_str::<IdOnly>(raw.get())
        .ok()
        .map(|only| only.id)
}

/// `["REQ", <subscription id>, <filter>, …]`.
fn parse_req(frame: &Frame<'_>, limits: &Limits) -> Result<ClientMessage, FrameError> {
    let subscription_id = frame.subscription_id("REQ", limits)?;
    let count = frame.arg_count.saturating_sub(1);
    if count == 0 {
        return Err(FrameError::NoFilters { subscription_id });
    }
    if count > limits.max_filters_per_req {
        return Err(FrameError::TooManyFilters {
            subscription_id,
            count,
            max: limits.max_filters_per_req,
        });
    }
    let mut filters = Vec::with_capacity(count);
    for (index, raw) in frame.args.iter().skip(1).enumerate() {
        let filter = serde_json::from_str::<Filter>(raw.get())
            .map_err(|error| FilterError::Malformed(super::detail(&error)))
            .and_then(|filter| filter.check_limits(limits).map(|()| filter));
        match filter {
            Ok(filter) => filters.push(filter),
            Err(error) => {
                return Err(FrameError::InvalidFilter {
                    subscription_id,
                    index,
                    error,
                });
            }
        }
    }
    Ok(ClientMessage::Req {
        subscription_id,
        filters,
    })
}

/// `["CLOSE", <subscription id>]`.
fn parse_close(frame: &Frame<'_>, limits: &Limits) -> Result<ClientMessage, FrameError> {
    let subscription_id = frame.subscription_id("CLOSE", limits)?;
    frame.expect_args("CLOSE", 1)?;
    Ok(ClientMessage::Close(subscription_id))
}

#[cfg(test)]
mod tests;
