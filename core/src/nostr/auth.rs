//! NIP-42 client authentication: the relay sends `["AUTH", <challenge>]`, the client answers
//! `["AUTH", <event>]` with a signed kind-22242 event naming the relay and the challenge.
//!
//! Contract: [`check_auth_event`] is pure — the caller supplies the challenge it sent (fresh
//! randomness per connection, so a captured answer cannot be replayed on another connection),
//! the relay URL the client connected to, and the wall-clock time. An answer is accepted only
//! when its id and signature verify, its kind is 22242, its `challenge` tag equals the
//! challenge, its `relay` tag names the same host and path (scheme, case of the host and a
//! trailing `/` are ignored: a gateway behind a TLS proxy sees `ws://` where the client wrote
//! `wss://`), and its `created_at` is within [`MAX_AUTH_SKEW_SECS`] of now.
//!
//! [`AuthGate`] is one connection's side of it: it answers `AUTH` frames and, until the client
//! authenticated, refuses every other frame with `auth-required:` (`OK false` for an `EVENT`,
//! `CLOSED` for a `REQ`, nothing for a `CLOSE`), executing nothing.

use super::{ClientMessage, Event, EventError, Limits, PublicKey, RelayMessage, SignatureVerifier};
use crate::time::UnixTime;

/// The kind of a NIP-42 authentication event.
pub const AUTH_KIND: u16 = 22242;

/// How far an authentication event's `created_at` may be from now (NIP-42 suggests ~10 min).
pub const MAX_AUTH_SKEW_SECS: u64 = 600;

/// Why an authentication event was refused (the `OK false` message says which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not kind 22242.
    #[error("auth event must be kind 22242")]
    WrongKind,
    /// The id or signature does not verify.
    #[error(transparent)]
    Event(#[from] EventError),
    /// No `challenge` tag, or another challenge.
    #[error("auth event does not answer this connection's challenge")]
    WrongChallenge,
    /// No `relay` tag, or another relay.
    #[error("auth event names another relay")]
    WrongRelay,
    /// `created_at` too far from now.
    #[error("auth event created_at is too far from now")]
    Stale,
}

/// Checks a NIP-42 answer; the authenticated public key when it is valid. See the module docs.
pub fn check_auth_event(
    event: &Event,
    challenge: &str,
    relay_url: &str,
    now: UnixTime,
    verifier: &SignatureVerifier,
) -> Result<PublicKey, AuthError> {
    if event.kind.0 != AUTH_KIND {
        return Err(AuthError::WrongKind);
    }
    event.verify(verifier)?;
    let tag = |name: &str| {
        event
            .tags
            .iter()
            .find(|tag| tag.0.first().map(String::as_str) == Some(name))
            .and_then(|tag| tag.0.get(1))
    };
    if tag("challenge").map(String::as_str) != Some(challenge) {
        return Err(AuthError::WrongChallenge);
    }
    match tag("relay") {
        Some(url) if same_relay(url, relay_url) => {}
        _ => return Err(AuthError::WrongRelay),
    }
    let now_secs = now.0 / 1000;
    if event.created_at.abs_diff(now_secs) > MAX_AUTH_SKEW_SECS {
        return Err(AuthError::Stale);
    }
    Ok(event.pubkey)
}

/// Whether two relay URLs name the same host and path (see the module docs).
fn same_relay(a: &str, b: &str) -> bool {
    normalise(a) == normalise(b)
}

fn normalise(url: &str) -> String {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let without_query = without_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or(without_scheme);
    let (host, path) = without_query
        .split_once('/')
        .map_or((without_query, ""), |(host, path)| (host, path));
    format!(
        "{}/{}",
        host.to_ascii_lowercase(),
        path.trim_end_matches('/')
    )
}

/// What [`AuthGate::screen`] makes of a client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Screened {
    /// The client is authenticated: the frame goes on to the relay.
    Pass,
    /// The frame was an answer to the challenge, or is refused: send this, nothing else.
    Answer(RelayMessage),
    /// Refused without a reply (a `CLOSE`).
    Drop,
}

/// NIP-42 for one connection to a relay that requires authentication (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthGate {
    challenge: String,
    relay_url: String,
    authenticated: Option<PublicKey>,
}

/// The refusal every frame gets before the client authenticated.
pub const AUTH_REQUIRED: &str = "auth-required: this relay requires authentication (NIP-42)";

impl AuthGate {
    /// A gate for a connection to `relay_url` that sent `challenge` (fresh per connection:
    /// the caller draws it from its own randomness).
    #[must_use]
    pub fn new(challenge: String, relay_url: String) -> AuthGate {
        AuthGate {
            challenge,
            relay_url,
            authenticated: None,
        }
    }

    /// The challenge to send first: `["AUTH", <challenge>]`.
    #[must_use]
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Who authenticated, if anyone has.
    #[must_use]
    pub fn authenticated(&self) -> Option<PublicKey> {
        self.authenticated
    }

    /// Screens one client frame at wall-clock `now`.
    pub fn screen(
        &mut self,
        text: &str,
        limits: &Limits,
        now: UnixTime,
        verifier: &SignatureVerifier,
    ) -> Screened {
        if let Some(event) = auth_answer(text) {
            let (accepted, message) =
                match check_auth_event(&event, &self.challenge, &self.relay_url, now, verifier) {
                    Ok(pubkey) => {
                        self.authenticated = Some(pubkey);
                        (true, String::new())
                    }
                    Err(error) => (false, format!("auth-required: {error}")),
                };
            return Screened::Answer(RelayMessage::Ok {
                event_id: event.id,
                accepted,
                message,
            });
        }
        if self.authenticated.is_some() {
            return Screened::Pass;
        }
        match ClientMessage::parse(text, limits) {
            Ok(ClientMessage::Event(event)) => Screened::Answer(RelayMessage::Ok {
                event_id: event.id,
                accepted: false,
                message: AUTH_REQUIRED.into(),
            }),
            Ok(ClientMessage::Req {
                subscription_id, ..
            }) => Screened::Answer(RelayMessage::Closed {
                subscription_id,
                message: AUTH_REQUIRED.into(),
            }),
            Ok(ClientMessage::Close(_)) => Screened::Drop,
            Err(error) => Screened::Answer(error.reply()),
        }
    }
}

/// The event of an `["AUTH", <event>]` frame, if `text` is one.
fn auth_answer(text: &str) -> Option<Event> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    let items = frame.as_array()?;
    if items.len() != 2 || items[0].as_str() != Some("AUTH") || !items[1].is_object() {
        return None;
    }
    Event::parse_json(&items[1].to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nostr::Tag;
    use crate::nostr::testing::signed_event;

    const NOW: UnixTime = UnixTime(1_700_000_000_000);
    const URL: &str = "wss://gateway.example/relay/abc";

    fn answer(challenge: &str, relay: &str, created_at: u64, kind: u16) -> Event {
        signed_event(
            3,
            created_at,
            kind,
            vec![
                Tag::new(["relay", relay]),
                Tag::new(["challenge", challenge]),
            ],
            "",
        )
    }

    #[test]
    fn a_signed_answer_to_this_challenge_for_this_relay_authenticates_its_author() {
        let event = answer("c-1", URL, 1_700_000_000, AUTH_KIND);
        let verifier = SignatureVerifier::new();
        assert_eq!(
            check_auth_event(&event, "c-1", URL, NOW, &verifier),
            Ok(event.pubkey)
        );
        // What a gateway behind a TLS proxy sees, with a trailing slash and another host case.
        assert!(
            check_auth_event(
                &event,
                "c-1",
                "ws://Gateway.example/relay/abc/",
                NOW,
                &verifier
            )
            .is_ok()
        );
    }

    #[test]
    fn answers_to_another_challenge_relay_time_or_kind_or_tampered_are_refused() {
        let verifier = SignatureVerifier::new();
        let check = |event: &Event| check_auth_event(event, "c-1", URL, NOW, &verifier);
        assert_eq!(
            check(&answer("c-2", URL, 1_700_000_000, AUTH_KIND)),
            Err(AuthError::WrongChallenge)
        );
        assert_eq!(
            check(&answer(
                "c-1",
                "wss://other.example/relay/abc",
                1_700_000_000,
                AUTH_KIND
            )),
            Err(AuthError::WrongRelay)
        );
        assert_eq!(
            check(&answer("c-1", URL, 1_700_000_000 - 601, AUTH_KIND)),
            Err(AuthError::Stale)
        );
        assert_eq!(
            check(&answer("c-1", URL, 1_700_000_000, 1)),
            Err(AuthError::WrongKind)
        );
        let mut tampered = answer("c-1", URL, 1_700_000_000, AUTH_KIND);
        tampered.content = "changed".into();
        assert!(matches!(check(&tampered), Err(AuthError::Event(_))));
    }

    #[test]
    fn a_gate_refuses_everything_but_its_answer_until_the_client_authenticated() {
        let verifier = SignatureVerifier::new();
        let limits = Limits::default();
        let mut gate = AuthGate::new("c-9".into(), URL.into());
        let note = signed_event(4, 1_700_000_000, 1, Vec::new(), "hi");
        let publish = format!(r#"["EVENT",{}]"#, note.to_json());
        assert_eq!(
            gate.screen(&publish, &limits, NOW, &verifier),
            Screened::Answer(RelayMessage::Ok {
                event_id: note.id,
                accepted: false,
                message: AUTH_REQUIRED.into(),
            })
        );
        assert!(matches!(
            gate.screen(r#"["REQ","s",{}]"#, &limits, NOW, &verifier),
            Screened::Answer(RelayMessage::Closed { .. })
        ));
        assert_eq!(
            gate.screen(r#"["CLOSE","s"]"#, &limits, NOW, &verifier),
            Screened::Drop
        );
        // A wrong answer is refused and changes nothing; the right one lets frames pass.
        let wrong = answer("other", URL, 1_700_000_000, AUTH_KIND);
        let refused = gate.screen(
            &format!(r#"["AUTH",{}]"#, wrong.to_json()),
            &limits,
            NOW,
            &verifier,
        );
        assert!(matches!(
            refused,
            Screened::Answer(RelayMessage::Ok {
                accepted: false,
                ..
            })
        ));
        assert_eq!(gate.authenticated(), None);
        let right = answer("c-9", URL, 1_700_000_000, AUTH_KIND);
        let accepted = gate.screen(
            &format!(r#"["AUTH",{}]"#, right.to_json()),
            &limits,
            NOW,
            &verifier,
        );
        assert!(matches!(
            accepted,
            Screened::Answer(RelayMessage::Ok { accepted: true, .. })
        ));
        assert_eq!(gate.authenticated(), Some(right.pubkey));
        assert_eq!(
            gate.screen(&publish, &limits, NOW, &verifier),
            Screened::Pass
        );
    }
}
