//! [`EscrowClient`]: the escrow API from the caller's side, for the gateway,
//! the worker and the tests. It speaks HTTP/1.1 over rustls with a client
//! certificate (or plain HTTP for a development escrow), signs every request
//! (HMAC headers with a fresh nonce), builds and signs deposits, generates a
//! one-time X25519 session key per unlock and opens the sealed lease with it.
//!
//! Connections are kept alive and reused (a small pool); a request that
//! fails because a pooled connection had just been closed is retried once on
//! a fresh connection, signed again with a new nonce. Secrets (the HMAC
//! secret, the session key, the opened writer key) stay in zeroizing memory
//! and never appear in errors or `Debug` output.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use crypto_box::aead::OsRng;
use ed25519_dalek::{Signer, SigningKey};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Uri};
use hypergate_adapters::crypto::{PackageError, SealedEnvelope, WriterPackage};
use hypergate_core::escrow::{Evidence, PolicyConfig};
use hypergate_core::ids::{PeerId, RelayKey};
use hypergate_core::lease::LeaseId;
use hypergate_core::time::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Map, Value, json};
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::escrow::auth::{
    CLIENT_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, stable_stringify,
};
use crate::escrow::tls::{read_certificates, read_private_key, read_roots};
use crate::escrow::wire::deposit_signing_digest;

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

/// Client-side TLS: the CA that signs the escrow's certificate, and this
/// client's certificate and key (mandatory for a real escrow).
#[derive(Clone)]
pub struct ClientTls {
    /// Roots the server's certificate must chain to.
    pub roots: rustls::RootCertStore,
    /// This client's certificate chain and key; `None` sends no certificate
    /// (the escrow will refuse the handshake).
    pub identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// The name to verify the server certificate for; defaults to the URL's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ClientTls {
    /// Reads PEM files: the CA bundle, and optionally this client's certificate and key.
    pub fn from_pem_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, ClientError> {
        let config = |error: crate::escrow::tls::TlsError| ClientError::Config(error.to_string());
        let identity = match identity {
            Some((cert, key)) => Some((
                read_certificates(cert).map_err(config)?,
                Arc::new(read_private_key(key).map_err(config)?),
            )),
            None => None,
        };
        Ok(Self {
            roots: read_roots(ca).map_err(config)?,
            identity,
            server_name: None,
        })
    }
}

/// How to reach and authenticate to the escrow.
#[derive(Clone)]
pub struct EscrowClientConfig {
    /// `https://host:port/api/escrow` (or `http://` for a development escrow).
    pub base_url: String,
    /// The client id on the escrow's allow-list.
    pub client_id: String,
    /// The HMAC secret (the client's own or the shared one).
    pub secret: Zeroizing<Vec<u8>>,
    /// TLS settings; required for `https://`.
    pub tls: Option<ClientTls>,
    /// Bound on each call (the original's unused 5 s `requestTimeoutMs`).
    pub request_timeout: Duration,
}

impl fmt::Debug for EscrowClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowClientConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl EscrowClientConfig {
    /// The settings of a client whose HMAC secret and TLS material are files: the secret is
    /// trimmed and must not be empty; `ca` is required for `https://`; `identity` is this
    /// client's certificate and key (PEM).
    pub fn from_files(
        base_url: &str,
        client_id: &str,
        secret_file: &std::path::Path,
        ca: Option<&std::path::Path>,
        identity: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self, ClientError> {
        let secret = std::fs::read_to_string(secret_file)
            .map_err(|e| ClientError::Config(format!("reading {}: {e}", secret_file.display())))?;
        let secret = Zeroizing::new(secret.trim().as_bytes().to_vec());
        if secret.is_empty() {
            return Err(ClientError::Config(format!(
                "{} is empty",
                secret_file.display()
            )));
        }
        let tls = match ca {
            Some(ca) => Some(ClientTls::from_pem_files(ca, identity)?),
            None => None,
        };
        Ok(Self {
            base_url: base_url.to_owned(),
            client_id: client_id.to_owned(),
            secret,
            tls,
            request_timeout: Duration::from_secs(5),
        })
    }
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

/// The pieces of a deposit a worker provides.
#[derive(Debug)]
pub struct DepositParams<'a> {
    /// The package to seal (it carries the writer secret).
    pub package: &'a WriterPackage,
    /// The relay's owner key: signs the deposit.
    pub relay_key: &'a SigningKey,
    /// The gateways allowed to unlock it.
    pub permitted_requesters: &'a [PeerId],
    /// The expiry asked for (the escrow clamps it).
    pub expires_at: Option<UnixTime>,
    /// Now, by the worker's clock (signed; must be within 5 minutes of the escrow's).
    pub created_at: UnixTime,
}

/// Builds a signed deposit body for the escrow whose key is `escrow_public`.
pub fn deposit_body(
    escrow: &EscrowPolicy,
    params: &DepositParams<'_>,
) -> Result<Value, ClientError> {
    let package = params.package;
    let sealed = package.seal_to(&escrow.public_key, &mut OsRng)?;
    let body = json!({
        "relayKey": package.relay_key.to_hex(),
        "ownerPeerKey": package.owner_peer_key.to_hex(),
        "encryptedPackage": sealed,
        "policyVersion": escrow.policy.version,
        "metadata": {
            "identifier": package.metadata.identifier,
            "name": package.metadata.name,
            "writerHash": package.writer_hash(),
        },
        "unlockConditions": {
            "peerLivenessTimeoutMs": hypergate_core::time::duration_millis(escrow.policy.peer_liveness_timeout),
            "mirrorFreshnessMaxLagMs": hypergate_core::time::duration_millis(escrow.policy.mirror_freshness_max_lag),
        },
        "permittedRequesters": params.permitted_requesters.iter().map(PeerId::to_hex).collect::<Vec<_>>(),
        "expiresAt": params.expires_at.map(|at| at.0),
        "createdAt": params.created_at.0,
    });
    sign_deposit(body, params.relay_key)
}

/// Adds `ownerSignature` to a deposit body (the relay key signs the SHA-256
/// of the stable-stringified body without that field).
pub fn sign_deposit(body: Value, relay_key: &SigningKey) -> Result<Value, ClientError> {
    let Value::Object(mut map) = body else {
        return Err(ClientError::Config(
            "a deposit body is a JSON object".into(),
        ));
    };
    map.remove("ownerSignature");
    let digest = deposit_signing_digest(&map);
    let signature = relay_key.sign(&digest);
    map.insert(
        "ownerSignature".into(),
        Value::String(hex::encode(signature.to_bytes())),
    );
    Ok(Value::Object(map))
}

mod transport;

use transport::client_config;

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
    /// A client for `config.base_url`.
    pub fn new(config: EscrowClientConfig) -> Result<Self, ClientError> {
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
                timeout: config.request_timeout,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The signing headers for `body` with a fresh nonce, now.
    #[must_use]
    pub fn signing_headers(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = crate::escrow::unix_now().0;
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
        tokio::time::timeout(
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
        tokio::time::timeout(self.inner.timeout, call)
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
        use base64::Engine as _;
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
        use base64::Engine as _;
        let mut body = json!({
            "relayKey": relay.to_hex(),
            "sessionPublicKey": base64::engine::general_purpose::STANDARD.encode(session.public_key().as_bytes()),
            "evidence": evidence,
        });
        if let Some(requester) = requester {
            body["requesterId"] = Value::String(requester.to_hex());
        }
        let json = self
            .send_signed(Method::POST, "/escrow/unlock", Some(&body))
            .await?
            .into_result()?;
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
        let mut body = json!({"leaseId": lease.to_string(), "evidence": evidence});
        if let Some(requester) = requester {
            body["requesterId"] = Value::String(requester.to_hex());
        }
        let json = self
            .send_signed(Method::POST, "/escrow/renew", Some(&body))
            .await?
            .into_result()?;
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
        let mut body = json!({"leaseId": lease.to_string(), "reason": reason});
        if let Some(requester) = requester {
            body["requesterId"] = Value::String(requester.to_hex());
        }
        self.send_signed(Method::POST, "/escrow/release", Some(&body))
            .await?
            .into_result()
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
}

fn parse_lease(text: &str) -> Result<LeaseId, ClientError> {
    text.parse()
        .map_err(|_| ClientError::Decode(format!("leaseId {text:?} is malformed")))
}
