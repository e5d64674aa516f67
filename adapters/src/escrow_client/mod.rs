//! [`EscrowClient`]: the escrow API from the caller's side, for the gateway,
//! the worker and the tests. It speaks HTTP/1.1 over rustls with a client
//! certificate (or plain HTTP for a development escrow), signs every request
//! (HMAC headers with a fresh nonce), builds and signs deposits ([`deposit_body`]),
//! generates a one-time X25519 session key per unlock and opens the sealed lease with it.
//!
//! Contract:
//! - **Any executor.** The client needs no runtime of its own: TCP is
//!   `async-io`, TLS is `futures-rustls`, timers are [`rt::timeout`], host
//!   names are resolved with [`rt::unblock`], and the one background task per
//!   connection (hyper's HTTP/1 connection driver) is started with the
//!   [`rt::Spawner`] given to [`EscrowClient::new`]. Its futures are `Send`.
//! - **Bounded.** Every call ends within the request timeout
//!   ([`ClientError::Timeout`]); answers over 4 MiB are refused unread past the limit.
//! - **Pooled.** Connections are kept alive and reused (at most 8 idle); a
//!   signed request that fails because a pooled connection had just been
//!   closed is retried once on a fresh connection, signed again with a new nonce.
//! - **Secrets** (the HMAC secret, the session key, the opened writer key)
//!   stay in zeroizing memory and never appear in errors or `Debug` output.
//!
//! Files: `config` (settings, PEM loading), `deposit` (deposit bodies),
//! `transport` (connections and the HTTP exchange).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use crypto_box::aead::OsRng;
use futures_rustls::TlsConnector;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Uri};
use hypergate_core::escrow::{Evidence, PolicyConfig};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::clock::{Clock as _, SystemClock};
use crate::crypto::{PackageError, SealedEnvelope, WriterPackage};
use crate::escrow_wire::signing::{
    CLIENT_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign,
};
use crate::escrow_wire::stable_stringify;
use crate::rt;

mod config;
mod deposit;
mod transport;

pub use config::{ClientTls, EscrowClientConfig};
pub use deposit::{DepositParams, deposit_body, sign_deposit};
use transport::client_config;

/// The largest response body read.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Idle connections kept for reuse.
const POOL_SIZE: usize = 8;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // The escrow answered with a refusal.
    /// A non-2xx answer: `{error, message, reasons}`.
    #[error("escrow answered {status}: {code}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` code.
        code: String,
        /// The `message`, if any.
        message: Option<String>,
        /// The policy's reasons on a 412.
        reasons: Option<Vec<String>>,
    },
    // The exchange failed.
    /// Connecting, TLS or HTTP failed (no answer was read).
    #[error("escrow transport: {0}")]
    Transport(String),
    /// No answer within the request timeout.
    #[error("escrow did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not what the API promises.
    #[error("unexpected escrow answer: {0}")]
    Decode(String),
    /// The sealed lease does not open or validate.
    #[error("lease package: {0}")]
    Package(#[from] PackageError),
    // Local misconfiguration.
    /// The client configuration is unusable.
    #[error("escrow client configuration: {0}")]
    Config(String),
}

/// An HTTP answer, as read.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The `content-type` header.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| ClientError::Decode(format!("body is not JSON: {error}")))
    }

    fn into_result(self) -> Result<Value, ClientError> {
        let json = self.json();
        if (200..300).contains(&self.status) {
            return json;
        }
        let json = json.unwrap_or(Value::Null);
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_owned);
        Err(ClientError::Refused {
            status: self.status,
            code: text("error").unwrap_or_else(|| "unknown".into()),
            message: text("message"),
            reasons: json.get("reasons").and_then(Value::as_array).map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            }),
        })
    }
}

/// `GET /policy`: the policy and the key deposits are sealed to.
#[derive(Debug, Clone)]
pub struct EscrowPolicy {
    /// The policy.
    pub policy: PolicyConfig,
    /// The escrow's X25519 public key.
    pub public_key: crypto_box::PublicKey,
}

/// A lease opened with its session key: ids, expiry, and the validated package.
#[derive(Debug)]
pub struct OpenedLease {
    /// The lease.
    pub lease_id: LeaseId,
    /// The deposit released.
    pub escrow_id: String,
    /// When it was issued.
    pub issued_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
    /// The package digest the escrow reported.
    pub payload_digest: String,
    /// Whether this was the holder's existing lease fetched again.
    pub refetched: bool,
    /// The writer package (holds the writer's secret key, zeroized on drop).
    pub package: WriterPackage,
}

/// What `POST /escrow/revoke` should revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeBy {
    /// One deposit.
    EscrowId(String),
    /// Every deposit of a relay.
    Relay(RelayKey),
    /// Every deposit of a worker.
    Owner(PeerId),
}

struct Target {
    https: bool,
    host: String,
    port: u16,
    base_path: String,
    server_name: ServerName<'static>,
}

/// A client of one escrow service. Cheap to clone.
#[derive(Clone)]
pub struct EscrowClient {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    client_id: String,
    secret: Zeroizing<Vec<u8>>,
    connector: Option<TlsConnector>,
    spawner: rt::Spawner,
    timeout: Duration,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl fmt::Debug for EscrowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = &self.inner.target;
        f.debug_struct("EscrowClient")
            .field("host", &target.host)
            .field("port", &target.port)
            .field("base_path", &target.base_path)
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl EscrowClient {
    /// A client for `config.base_url`; each new connection's background task is started
    /// with `spawner`.
    pub fn new(config: EscrowClientConfig, spawner: rt::Spawner) -> Result<Self, ClientError> {
        let uri: Uri = config
            .base_url
            .parse()
            .map_err(|error| ClientError::Config(format!("base URL: {error}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Config(
                    "base URL must be http:// or https://".into(),
                ));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Config("base URL has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let name = config
            .tls
            .as_ref()
            .and_then(|tls| tls.server_name.clone())
            .unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name)
            .map_err(|error| ClientError::Config(format!("server name: {error}")))?;
        let connector = match (https, config.tls) {
            (false, _) => None,
            (true, None) => {
                return Err(ClientError::Config("https:// needs TLS settings".into()));
            }
            (true, Some(tls)) => Some(TlsConnector::from(Arc::new(client_config(tls)?))),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                target: Target {
                    https,
                    host,
                    port,
                    base_path: uri.path().trim_end_matches('/').to_owned(),
                    server_name,
                },
                client_id: config.client_id,
                secret: config.secret,
                connector,
                spawner,
                timeout: config.request_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The signing headers for `body` with a fresh nonce, now.
    #[must_use]
    pub fn signing_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = SystemClock.unix_now().0;
        let mut nonce = [0u8; 16];
        crypto_box::aead::rand_core::RngCore::fill_bytes(&mut OsRng, &mut nonce);
        let nonce = hex::encode(nonce);
        let signature = sign(
            &self.inner.secret,
            timestamp,
            &self.inner.client_id,
            &nonce,
            body,
        );
        vec![
            (CLIENT_ID_HEADER, self.inner.client_id.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, signature),
        ]
    }

    /// Sends a request to `path` (relative to the base path) exactly as
    /// given: the caller's headers, no signing. For tests and tools.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<RawResponse, ClientError> {
        rt::timeout(
            self.inner.timeout,
            self.exchange(&method, path, headers, &body),
        )
        .await
        .map_err(|_| ClientError::Timeout(self.inner.timeout))?
    }

    /// Sends a signed request (`None` body: a signed GET of `{}`), retrying
    /// once, re-signed, if a reused connection turned out to be closed.
    pub async fn send_signed(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<RawResponse, ClientError> {
        let bytes = Bytes::from(body.map(stable_stringify).unwrap_or_default());
        let call = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let signed_body: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
                let mut headers = self.signing_headers(signed_body);
                if !bytes.is_empty() {
                    headers.push(("content-type", "application/json".to_owned()));
                }
                match self.exchange(&method, path, &headers, &bytes).await {
                    Err(ClientError::Transport(error))
                        if attempt == 1 && error.starts_with("reused:") =>
                    {
                        continue;
                    }
                    other => return other,
                }
            }
        };
        rt::timeout(self.inner.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout(self.inner.timeout))?
    }

    /// `GET /health` (unsigned).
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.send_raw(Method::GET, "/health", &[], Bytes::new())
            .await?
            .into_result()
    }

    /// `GET /policy` (unsigned).
    pub async fn policy(&self) -> Result<EscrowPolicy, ClientError> {
        let json = self
            .send_raw(Method::GET, "/policy", &[], Bytes::new())
            .await?
            .into_result()?;
        let policy: PolicyConfig = serde_json::from_value(json["policy"].clone())
            .map_err(|error| ClientError::Decode(format!("policy: {error}")))?;
        let key_text = json["publicKey"]
            .as_str()
            .ok_or_else(|| ClientError::Decode("publicKey missing".into()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key_text)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .ok_or_else(|| ClientError::Decode("publicKey is not base64 of 32 bytes".into()))?;
        Ok(EscrowPolicy {
            policy,
            public_key: crypto_box::PublicKey::from(key),
        })
    }

    /// `POST /escrow` with a body from [`deposit_body`]; the `201` answer.
    pub async fn deposit(&self, body: &Value) -> Result<Value, ClientError> {
        self.send_signed(Method::POST, "/escrow", Some(body))
            .await?
            .into_result()
    }

    /// `POST /escrow/unlock` with a fresh session key; opens and validates the lease.
    pub async fn unlock(
        &self,
        relay: RelayKey,
        requester: Option<PeerId>,
        evidence: &Evidence,
        escrow_public: &crypto_box::PublicKey,
    ) -> Result<OpenedLease, ClientError> {
        let session = crypto_box::SecretKey::generate(&mut OsRng);
        let body = json!({
            "relayKey": relay.to_hex(),
            "sessionPublicKey": base64::engine::general_purpose::STANDARD.encode(session.public_key().as_bytes()),
            "evidence": evidence,
        });
        let json = self.post_as("/escrow/unlock", body, requester).await?;
        let field = |key: &str| {
            json.get(key)
                .ok_or_else(|| ClientError::Decode(format!("{key} missing")))
        };
        let millis = |key: &str| {
            field(key)?
                .as_u64()
                .map(UnixTime)
                .ok_or_else(|| ClientError::Decode(format!("{key} is not a number")))
        };
        let text = |key: &str| {
            field(key)?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ClientError::Decode(format!("{key} is not a string")))
        };
        let envelope = SealedEnvelope::from_json(field("sealedLease")?.to_string().as_bytes())
            .map_err(|error| ClientError::Decode(format!("sealedLease: {error}")))?;
        let package = WriterPackage::open_lease(&session, escrow_public, &envelope)?;
        package.validate(&relay)?;
        let lease_id = parse_lease(&text("leaseId")?)?;
        Ok(OpenedLease {
            lease_id,
            escrow_id: text("escrowId")?,
            issued_at: millis("issuedAt")?,
            expires_at: millis("expiresAt")?,
            payload_digest: text("payloadDigest")?,
            refetched: field("refetched")?.as_bool().unwrap_or(false),
            package,
        })
    }

    /// `POST /escrow/renew`: the new expiry.
    pub async fn renew(
        &self,
        lease: LeaseId,
        requester: Option<PeerId>,
        evidence: &Evidence,
    ) -> Result<UnixTime, ClientError> {
        let body = json!({"leaseId": lease.to_string(), "evidence": evidence});
        let json = self.post_as("/escrow/renew", body, requester).await?;
        json["expiresAt"]
            .as_u64()
            .map(UnixTime)
            .ok_or_else(|| ClientError::Decode("expiresAt missing".into()))
    }

    /// `POST /escrow/release`.
    pub async fn release(
        &self,
        lease: LeaseId,
        requester: Option<PeerId>,
        reason: &str,
    ) -> Result<(), ClientError> {
        let body = json!({"leaseId": lease.to_string(), "reason": reason});
        self.post_as("/escrow/release", body, requester)
            .await
            .map(drop)
    }

    /// `POST /escrow/revoke`: `{success, revoked}`.
    pub async fn revoke(
        &self,
        target: &RevokeBy,
        actor: Option<&str>,
        reason: &str,
    ) -> Result<Value, ClientError> {
        let mut body = Map::new();
        match target {
            RevokeBy::EscrowId(id) => body.insert("escrowId".into(), json!(id)),
            RevokeBy::Relay(relay) => body.insert("relayKey".into(), json!(relay.to_hex())),
            RevokeBy::Owner(owner) => body.insert("ownerPeerKey".into(), json!(owner.to_hex())),
        };
        if let Some(actor) = actor {
            body.insert("actor".into(), json!(actor));
        }
        body.insert("reason".into(), json!(reason));
        self.send_signed(Method::POST, "/escrow/revoke", Some(&Value::Object(body)))
            .await?
            .into_result()
    }

    /// `GET /leases`: the active leases (digests only).
    pub async fn leases(&self) -> Result<Vec<Value>, ClientError> {
        let json = self
            .send_signed(Method::GET, "/leases", None)
            .await?
            .into_result()?;
        json["leases"]
            .as_array()
            .cloned()
            .ok_or_else(|| ClientError::Decode("leases missing".into()))
    }

    /// A signed `POST` of `body` (with `requesterId` when given); the 2xx answer's JSON.
    async fn post_as(
        &self,
        path: &str,
        mut body: Value,
        requester: Option<PeerId>,
    ) -> Result<Value, ClientError> {
        if let Some(requester) = requester {
            body["requesterId"] = Value::String(requester.to_hex());
        }
        self.send_signed(Method::POST, path, Some(&body))
            .await?
            .into_result()
    }
}

fn parse_lease(text: &str) -> Result<LeaseId, ClientError> {
    text.parse()
        .map_err(|_| ClientError::Decode(format!("leaseId {text:?} is malformed")))
}
