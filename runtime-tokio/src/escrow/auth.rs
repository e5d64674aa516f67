//! Request authentication for the escrow API: the original's shared-secret
//! HMAC headers, plus the nonce replay cache and client allow-list it lacked.
//!
//! Contract:
//! - A signed request carries `x-escrow-client-id`, `x-escrow-timestamp`
//!   (milliseconds since the epoch, decimal), `x-escrow-nonce` (16–128
//!   characters of `[A-Za-z0-9_-]`) and `x-escrow-signature`: lowercase hex of
//!   `HMAC-SHA256(secret, "<timestamp>:<clientId>:<nonce>:<body>")` (the format
//!   is [`hypergate_adapters::escrow_wire::signing`], shared with the client). The body
//!   is the exact request body; a GET signs `{}`. Clients send the body as
//!   key-sorted compact JSON (the original's `stableStringify`), and the
//!   server also accepts a signature over its own key-sorted re-serialisation
//!   of the parsed body ([`stable_stringify`]), so a client that signs the
//!   canonical form but sends other whitespace still verifies.
//! - The original's string had no nonce (`<timestamp>:<clientId>:<body>`):
//!   it was replayable for ten minutes. Here the nonce is mandatory and part
//!   of the MAC, and a (client, nonce) pair is accepted once while its
//!   timestamp is inside the ±5 minute window. Nonces are remembered only
//!   after the signature verified, so nobody can burn another client's nonces.
//! - Only clients on the allow-list are served, each with one [`Role`] and an
//!   optional bound peer id and secret of its own (else the shared secret).
//! - Checks run in a fixed order and the first failure is the answer:
//!   headers, client, timestamp, nonce form, signature, replay.
//!   Comparisons of MACs are constant-time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hypergate_adapters::escrow_wire::signing::signature_matches;
use hypergate_core::ids::PeerId;
use hypergate_core::time::{UnixTime, duration_millis};
use serde_json::Value;
use zeroize::Zeroizing;

pub use hypergate_adapters::escrow_wire::signing::{
    CLIENT_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signing_bytes,
};
/// How far a request's timestamp may be from the escrow's clock (the original's 5 minutes).
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The longest client id.
pub const MAX_CLIENT_ID_LEN: usize = 64;
/// Nonce length bounds, in characters.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=128;
/// How many nonces the replay cache holds at most; beyond that, requests are
/// refused (503) rather than forgetting a nonce still inside its window.
pub const DEFAULT_REPLAY_CAPACITY: usize = 200_000;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A relay's worker: deposits its relays' keys and revokes its deposits.
    Worker,
    /// A gateway: unlocks, renews and releases leases, lists them.
    Gateway,
    /// An operator: revokes anything, lists leases.
    Operator,
}

impl Role {
    /// The role's name in configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Gateway => "gateway",
            Role::Operator => "operator",
        }
    }

    /// Whether this role may perform `action`.
    #[must_use]
    pub fn may(self, action: Action) -> bool {
        match action {
            Action::Deposit => self == Role::Worker,
            Action::Unlock | Action::Renew | Action::Release => self == Role::Gateway,
            Action::Revoke => matches!(self, Role::Worker | Role::Operator),
            Action::ListLeases => matches!(self, Role::Gateway | Role::Operator),
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "worker" => Ok(Role::Worker),
            "gateway" => Ok(Role::Gateway),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role {other:?} (expected worker, gateway or operator)"
            )),
        }
    }
}

/// A signed API action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /escrow`.
    Deposit,
    /// `POST /escrow/unlock`.
    Unlock,
    /// `POST /escrow/renew`.
    Renew,
    /// `POST /escrow/release`.
    Release,
    /// `POST /escrow/revoke`.
    Revoke,
    /// `GET /leases`.
    ListLeases,
}

impl Action {
    /// The action's name in errors.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deposit => "deposit",
            Action::Unlock => "unlock",
            Action::Renew => "renew",
            Action::Release => "release",
            Action::Revoke => "revoke",
            Action::ListLeases => "list-leases",
        }
    }
}

/// One allow-listed client.
#[derive(Clone)]
pub struct ClientEntry {
    /// Its id (`[A-Za-z0-9._-]`, at most [`MAX_CLIENT_ID_LEN`]).
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The peer id it acts as: a gateway's requester id, a worker's owner key.
    pub peer: Option<PeerId>,
    /// Its own HMAC secret; `None` uses the shared secret.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for ClientEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientEntry")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("own_secret", &self.secret.is_some())
            .finish()
    }
}

/// Whether `id` is a well-formed client id.
#[must_use]
pub fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLIENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_nonce(nonce: &str) -> bool {
    NONCE_LEN.contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Why a request was not authenticated, grouped by blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    // The request is not properly signed (the caller's fault): 401.
    /// A signing header is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A signing header is not of the required form.
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    /// The client id is not on the allow-list.
    #[error("unknown client id")]
    UnknownClient,
    /// The timestamp is more than the window away from the escrow's clock.
    #[error("timestamp outside the ±{}s window", SIGNATURE_WINDOW.as_secs())]
    StaleTimestamp,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// The nonce was used already within the window.
    #[error("replayed request (nonce already used)")]
    Replayed,
    // Authenticated, but not allowed: 403.
    /// The client's role does not allow the action.
    #[error("client role {role} may not {action}")]
    NotPermitted {
        /// The client's role.
        role: &'static str,
        /// The action.
        action: &'static str,
    },
    // The escrow's own limit: 503.
    /// The replay cache is full of nonces still inside their window.
    #[error("replay cache is full; retry later")]
    ReplayCacheFull,
}

impl AuthError {
    /// The HTTP status to answer with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::NotPermitted { .. } => StatusCode::FORBIDDEN,
            AuthError::ReplayCacheFull => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `{error}` code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingHeader(_) => "missing-auth-header",
            AuthError::MalformedHeader(_) => "malformed-auth-header",
            AuthError::UnknownClient => "unknown-client",
            AuthError::StaleTimestamp => "stale-timestamp",
            AuthError::BadSignature => "invalid-signature",
            AuthError::Replayed => "replayed-request",
            AuthError::NotPermitted { .. } => "client-not-permitted",
            AuthError::ReplayCacheFull => "replay-cache-full",
        }
    }
}

/// The client a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Its id.
    pub client_id: String,
    /// Its role.
    pub role: Role,
    /// Its bound peer id, if any.
    pub peer: Option<PeerId>,
}

impl Authenticated {
    /// `Ok` if the role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), AuthError> {
        if self.role.may(action) {
            Ok(())
        } else {
            Err(AuthError::NotPermitted {
                role: self.role.as_str(),
                action: action.as_str(),
            })
        }
    }
}

pub use hypergate_adapters::escrow_wire::stable_stringify;

/// Nonces seen inside the window, per client.
#[derive(Debug)]
struct ReplayCache {
    seen: HashSet<(String, String)>,
    /// `(forget_at ms, client, nonce)`, so expired entries are found in order.
    by_expiry: BTreeSet<(u64, String, String)>,
    capacity: usize,
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    fn prune(&mut self, now: UnixTime) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now.0 {
                break;
            }
            if let Some((_, client, nonce)) = self.by_expiry.pop_first() {
                self.seen.remove(&(client, nonce));
            }
        }
    }

    /// Records the pair; `Err` if it was seen (or there is no room).
    fn insert(
        &mut self,
        client: &str,
        nonce: &str,
        forget_at: UnixTime,
        now: UnixTime,
    ) -> Result<(), AuthError> {
        self.prune(now);
        let key = (client.to_owned(), nonce.to_owned());
        if self.seen.contains(&key) {
            return Err(AuthError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(AuthError::ReplayCacheFull);
        }
        self.by_expiry
            .insert((forget_at.0, key.0.clone(), key.1.clone()));
        self.seen.insert(key);
        Ok(())
    }
}

/// The allow-list, the shared secret and the replay cache.
pub struct Authenticator {
    clients: BTreeMap<String, ClientEntry>,
    shared_secret: Option<Zeroizing<Vec<u8>>>,
    replay: Mutex<ReplayCache>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("clients", &self.clients.values().collect::<Vec<_>>())
            .field("shared_secret", &self.shared_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for these clients. Every client needs a secret: its
    /// own or the shared one.
    pub fn new(
        clients: Vec<ClientEntry>,
        shared_secret: Option<Zeroizing<Vec<u8>>>,
        replay_capacity: usize,
    ) -> Result<Self, String> {
        let mut by_id = BTreeMap::new();
        for client in clients {
            if !valid_client_id(&client.id) {
                return Err(format!(
                    "client id {:?} must be 1..={MAX_CLIENT_ID_LEN} characters of [A-Za-z0-9._-]",
                    client.id
                ));
            }
            if client.secret.is_none() && shared_secret.is_none() {
                return Err(format!(
                    "client {:?} has no secret of its own and no shared secret is set",
                    client.id
                ));
            }
            if let Some(previous) = by_id.insert(client.id.clone(), client) {
                return Err(format!("client {:?} is listed twice", previous.id));
            }
        }
        if shared_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 16)
        {
            return Err("the shared secret must be at least 16 bytes".into());
        }
        Ok(Self {
            clients: by_id,
            shared_secret,
            replay: Mutex::new(ReplayCache::new(replay_capacity)),
        })
    }

    /// How many clients are allowed.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Authenticates a request whose body is `body`, at the escrow's wall-clock `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: UnixTime,
    ) -> Result<Authenticated, AuthError> {
        let header = |name: &'static str| -> Result<&str, AuthError> {
            let value = headers.get(name).ok_or(AuthError::MissingHeader(name))?;
            value.to_str().map_err(|_| AuthError::MalformedHeader(name))
        };
        let client_id = header(CLIENT_ID_HEADER)?;
        let timestamp = header(TIMESTAMP_HEADER)?;
        let nonce = header(NONCE_HEADER)?;
        let signature = header(SIGNATURE_HEADER)?;

        let client = self
            .clients
            .get(client_id)
            .ok_or(AuthError::UnknownClient)?;
        if timestamp.is_empty()
            || timestamp.len() > 16
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AuthError::MalformedHeader(TIMESTAMP_HEADER));
        }
        let timestamp_ms: u64 = timestamp
            .parse()
            .map_err(|_| AuthError::MalformedHeader(TIMESTAMP_HEADER))?;
        let window = duration_millis(SIGNATURE_WINDOW);
        if timestamp_ms.abs_diff(now.0) > window {
            return Err(AuthError::StaleTimestamp);
        }
        if !valid_nonce(nonce) {
            return Err(AuthError::MalformedHeader(NONCE_HEADER));
        }
        let mut signature_bytes = [0u8; 32];
        if signature.len() != 64 || hex::decode_to_slice(signature, &mut signature_bytes).is_err() {
            return Err(AuthError::MalformedHeader(SIGNATURE_HEADER));
        }
        let secret: &[u8] = match (&client.secret, &self.shared_secret) {
            (Some(own), _) => own,
            (None, Some(shared)) => shared,
            // `new` refuses clients without any secret.
            (None, None) => return Err(AuthError::UnknownClient),
        };
        let raw = signing_bytes(timestamp_ms, client_id, nonce, body);
        let verified = signature_matches(secret, &raw, &signature_bytes)
            || serde_json::from_slice::<Value>(body).is_ok_and(|parsed| {
                let canonical = stable_stringify(&parsed);
                canonical.as_bytes() != body
                    && signature_matches(
                        secret,
                        &signing_bytes(timestamp_ms, client_id, nonce, canonical.as_bytes()),
                        &signature_bytes,
                    )
            });
        if !verified {
            return Err(AuthError::BadSignature);
        }
        let forget_at = UnixTime(timestamp_ms.saturating_add(window).saturating_add(1));
        self.replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(client_id, nonce, forget_at, now)?;
        Ok(Authenticated {
            client_id: client.id.clone(),
            role: client.role,
            peer: client.peer,
        })
    }
}

#[cfg(test)]
mod tests;
