//! Bounds on what one client frame may ask of the gateway.
//!
//! A frame is checked against its byte length before it is parsed at all, so parsing work and
//! memory are proportional to [`Limits::max_frame_bytes`]; the other limits bound the work a
//! parsed frame can cause later (matching cost of a subscription, size of a stored event). The
//! defaults follow common public-relay practice and are advertised to clients through NIP-11
//! (`max_message_length`, `max_subid_length`, `max_filters`, `max_event_tags`,
//! `max_content_length`).

/// Per-frame limits applied by [`ClientMessage::parse`](super::ClientMessage::parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest frame accepted, in bytes of UTF-8 text. Default 131072 (128 KiB).
    pub max_frame_bytes: usize,
    /// Longest subscription id, in characters. Default 64, the NIP-01 maximum; a larger value
    /// has no effect because [`SubscriptionId`](super::SubscriptionId) never exceeds 64.
    pub max_subscription_id_len: usize,
    /// Most filters in one `REQ`. Default 10.
    pub max_filters_per_req: usize,
    /// Most values in one filter list (`ids`, `authors`, `kinds`, or one `#x` tag list),
    /// counted after duplicates are removed. Default 1000.
    pub max_filter_values: usize,
    /// Most tags on one event. Default 2000.
    pub max_tags: usize,
    /// Longest event `content`, in bytes of UTF-8. Default 65536 (64 KiB).
    pub max_content_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 131_072,
            max_subscription_id_len: 64,
            max_filters_per_req: 10,
            max_filter_values: 1000,
            max_tags: 2000,
            max_content_bytes: 65_536,
        }
    }
}
