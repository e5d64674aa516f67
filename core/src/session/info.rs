//! The NIP-11 relay information document (`Accept: application/nostr+json`).
//!
//! Contract: the advertised limits are the ones the relay enforces — frame, subscription,
//! filter, tag and content limits from [`SessionConfig`], and the stored-event limits the
//! adapter's query applies — so a client that stays within them is never refused for size.

use serde::Serialize;

use super::SessionConfig;

/// NIP-11 `limitation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelayLimitation {
    /// Longest frame, in bytes.
    pub max_message_length: usize,
    /// Open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters per `REQ`.
    pub max_filters: usize,
    /// Most stored events returned for one filter.
    pub max_limit: usize,
    /// Longest subscription id, in characters.
    pub max_subid_length: usize,
    /// Most tags on an event.
    pub max_event_tags: usize,
    /// Longest `content`, in bytes.
    pub max_content_length: usize,
    /// Stored events returned for a filter without `limit`.
    pub default_limit: usize,
    /// NIP-42 authentication is never required here.
    pub auth_required: bool,
    /// Writing costs nothing.
    pub payment_required: bool,
    /// Whether events may be refused for reasons other than validity (a read-only relay).
    pub restricted_writes: bool,
}

/// A NIP-11 relay information document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RelayInformation {
    /// Display name.
    pub name: String,
    /// What the relay is.
    pub description: String,
    /// NIPs implemented.
    pub supported_nips: Vec<u16>,
    /// The software's name.
    pub software: String,
    /// The software's version.
    pub version: String,
    /// Limits on what clients may send and ask for.
    pub limitation: RelayLimitation,
}

impl RelayInformation {
    /// The document for a relay served by sessions with `config`, whose queries return at most
    /// `max_limit` events per filter (`default_limit` without a `limit`), and that accepts
    /// events when `writable`.
    #[must_use]
    pub fn new(
        name: String,
        description: String,
        config: &SessionConfig,
        default_limit: usize,
        max_limit: usize,
        writable: bool,
    ) -> RelayInformation {
        let limits = &config.limits;
        RelayInformation {
            name,
            description,
            // NIP-01, NIP-09 (deletion requests are honoured by the view), NIP-11.
            supported_nips: vec![1, 9, 11],
            software: "hypergate".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            limitation: RelayLimitation {
                max_message_length: limits.max_frame_bytes,
                max_subscriptions: config.max_subscriptions,
                max_filters: limits.max_filters_per_req,
                max_limit,
                max_subid_length: limits
                    .max_subscription_id_len
                    .min(crate::nostr::SubscriptionId::MAX_LEN),
                max_event_tags: limits.max_tags,
                max_content_length: limits.max_content_bytes,
                default_limit: default_limit.min(max_limit),
                auth_required: false,
                payment_required: false,
                restricted_writes: !writable,
            },
        }
    }

    /// The document as compact JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings, integers, booleans and lists of integers always serialise.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn information_document_advertises_the_enforced_limits() {
        let config = SessionConfig {
            max_subscriptions: 7,
            ..SessionConfig::default()
        };
        let info = RelayInformation::new("r".into(), "d".into(), &config, 500, 5000, false);
        let json: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(json["supported_nips"], serde_json::json!([1, 9, 11]));
        assert_eq!(json["limitation"]["max_subscriptions"], 7);
        assert_eq!(json["limitation"]["max_message_length"], 131_072);
        assert_eq!(json["limitation"]["max_filters"], 10);
        assert_eq!(json["limitation"]["max_limit"], 5000);
        assert_eq!(json["limitation"]["default_limit"], 500);
        assert_eq!(json["limitation"]["restricted_writes"], true);
        assert_eq!(json["software"], "hypergate");
    }
}
