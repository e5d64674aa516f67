//! The escrow's defences, on a real server over real mTLS: refused
//! handshakes, replayed and forged requests, roles and bound peers, bad input
//! of every kind answered 4xx JSON, deposits that do not validate, certificate
//! hot reload, and fail-closed audit (both store backends).

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod escrow_support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use crypto_box::aead::OsRng;
use ed25519_dalek::SigningKey;
use escrow_support::{
    Backend, Harness, Options, RelayFixture, eventually, evidence_allowing, gateway, now, peer_of,
};
use hyper::Method;
use hypergate_adapters::crypto::seal::seal_to;
use hypergate_core::time::UnixTime;
use hypergate_tokio::escrow::EscrowClient;
use hypergate_tokio::escrow::auth::{NONCE_HEADER, TIMESTAMP_HEADER};
use hypergate_tokio::escrow::client::{
    ClientError, DepositParams, RawResponse, RevokeBy, deposit_body, sign_deposit,
};
use serde_json::{Value, json};

async fn embedded() -> Harness {
    Harness::start(Backend::Embedded, Options::default())
        .await
        .unwrap()
}

/// Sends `body` to `path` signed as `client` would, with any header overridden.
async fn signed_raw(
    client: &EscrowClient,
    method: Method,
    path: &str,
    body: &[u8],
    overrides: &[(&'static str, String)],
) -> RawResponse {
    let signed: &[u8] = if body.is_empty() { b"{}" } else { body };
    let mut headers = client.signing_headers(signed);
    for (name, value) in overrides {
        headers.retain(|(existing, _)| existing != name);
        headers.push((name, value.clone()));
    }
    client
        .send_raw(method, path, &headers, Bytes::copy_from_slice(body))
        .await
        .unwrap()
}

fn error_code(response: &RawResponse) -> String {
    let json = response
        .json()
        .unwrap_or_else(|_| panic!("not JSON: {:?}", response.body));
    json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string in {json}"))
        .to_owned()
}

/// One HTTP request over a raw TLS connection presenting `client`'s
/// certificate (or none); the raw answer, or the I/O error (a TLS alert).
async fn raw_tls_request(harness: &Harness, client: Option<&str>) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = harness.pki.client_tls(client);
    let builder =
        rustls::ClientConfig::builder_with_provider(hypergate_tokio::escrow::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(tls.roots);
    let mut config = match tls.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(harness.addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    stream
        .write_all(
            b"GET /api/escrow/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_at_the_tls_layer() {
    let harness = embedded().await;
    let anonymous = harness.client_with("gateway", harness.pki.client_tls(None));
    let refused = anonymous.health().await.unwrap_err();
    assert!(
        matches!(refused, ClientError::Transport(_)),
        "expected a failure before any HTTP answer, got {refused:?}"
    );
    // At the TLS layer: a raw connection without a certificate gets the
    // server's `certificate_required` alert instead of an HTTP answer.
    let alert = raw_tls_request(&harness, None).await.unwrap_err();
    assert!(alert.to_string().contains("CertificateRequired"), "{alert}");

    // A certificate from another CA is refused the same way.
    let rogue = harness.client_with("gateway", harness.pki.client_tls(Some("rogue")));
    let refused = rogue.health().await.unwrap_err();
    assert!(matches!(refused, ClientError::Transport(_)), "{refused:?}");
    let alert = raw_tls_request(&harness, Some("rogue")).await.unwrap_err();
    assert!(alert.to_string().contains("alert"), "{alert}");
    // The same raw request with a trusted certificate is answered.
    let answer = raw_tls_request(&harness, Some("gateway")).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // Plain HTTP to the TLS port gets no HTTP answer either.
    let plain = EscrowClient::new(
        hypergate_tokio::escrow::EscrowClientConfig {
            base_url: format!("http://127.0.0.1:{}/api/escrow", harness.addr.port()),
            client_id: "gateway".into(),
            secret: zeroize::Zeroizing::new(b"unused".to_vec()),
            tls: None,
            request_timeout: Duration::from_secs(20),
        },
        hypergate_tokio::tokio_spawner(),
    )
    .unwrap();
    assert!(matches!(
        plain.health().await,
        Err(ClientError::Transport(_))
    ));

    // None of them reached the HTTP layer; a client with a certificate does.
    let ok = harness.client("gateway").health().await.unwrap();
    assert_eq!(ok["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_is_refused_and_a_fresh_nonce_is_not() {
    let harness = embedded().await;
    let operator = harness.client("operator");
    let headers = operator.signing_headers(b"{}");
    let send = || operator.send_raw(Method::GET, "/leases", &headers, Bytes::new());
    let first = send().await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = send().await.unwrap();
    assert_eq!(replay.status, 401);
    assert_eq!(error_code(&replay), "replayed-request");
    // The same request signed again (new nonce) is fine.
    assert!(operator.leases().await.unwrap().is_empty());

    // A replayed unlock is refused before it reaches the policy.
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    harness
        .client("worker")
        .deposit(&relay.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    let gateway_client = harness.client("gateway");
    let body = serde_json::to_vec(&json!({
        "relayKey": relay.key().to_hex(),
        "sessionPublicKey": BASE64.encode([7u8; 32]),
        "evidence": evidence_allowing(now()),
    }))
    .unwrap();
    let headers = gateway_client.signing_headers(&body);
    let unlock = || {
        gateway_client.send_raw(
            Method::POST,
            "/escrow/unlock",
            &headers,
            Bytes::from(body.clone()),
        )
    };
    assert_eq!(unlock().await.unwrap().status, 200);
    let replayed = unlock().await.unwrap();
    assert_eq!(replayed.status, 401);
    assert_eq!(error_code(&replayed), "replayed-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_of_every_kind_is_answered_4xx_json_never_5xx() {
    let harness = embedded().await;
    let escrow = harness.policy().await;
    let worker = harness.client("worker");
    let gateway_client = harness.client("gateway");
    let relay = RelayFixture::new();
    let good_deposit = relay.deposit(&escrow, &[gateway()]);
    let with = |key: &str, value: Value| {
        let mut body = good_deposit.clone();
        body[key] = value;
        serde_json::to_vec(&body).unwrap()
    };
    let mut cases: Vec<(&str, RawResponse)> = Vec::new();
    cases.push((
        "malformed JSON",
        signed_raw(&worker, Method::POST, "/escrow", b"{\"relayKey\":", &[]).await,
    ));
    cases.push((
        "not an object",
        signed_raw(&worker, Method::POST, "/escrow", b"[1,2]", &[]).await,
    ));
    cases.push((
        "wrong type",
        signed_raw(
            &worker,
            Method::POST,
            "/escrow",
            &with("expiresAt", json!("soon")),
            &[],
        )
        .await,
    ));
    cases.push((
        "bad key hex",
        signed_raw(
            &worker,
            Method::POST,
            "/escrow",
            &with("relayKey", json!("xyz")),
            &[],
        )
        .await,
    ));
    let mut envelope = good_deposit["encryptedPackage"].clone();
    envelope["nonce"] = json!("@@@@");
    cases.push((
        "bad base64",
        signed_raw(
            &worker,
            Method::POST,
            "/escrow",
            &with("encryptedPackage", envelope),
            &[],
        )
        .await,
    ));
    let mut envelope = good_deposit["encryptedPackage"].clone();
    envelope["publicKey"] = json!(BASE64.encode([1u8; 16]));
    cases.push((
        "wrong key length",
        signed_raw(
            &worker,
            Method::POST,
            "/escrow",
            &with("encryptedPackage", envelope),
            &[],
        )
        .await,
    ));
    let session_short = serde_json::to_vec(&json!({
        "relayKey": relay.key().to_hex(),
        "sessionPublicKey": BASE64.encode([1u8; 31]),
    }))
    .unwrap();
    cases.push((
        "short session key",
        signed_raw(
            &gateway_client,
            Method::POST,
            "/escrow/unlock",
            &session_short,
            &[],
        )
        .await,
    ));
    let oversized = vec![b' '; 300 * 1024];
    cases.push((
        "oversized body",
        signed_raw(&worker, Method::POST, "/escrow", &oversized, &[]).await,
    ));
    let stale = (now().0 - 10 * 60 * 1000).to_string();
    cases.push((
        "expired timestamp",
        signed_raw(
            &worker,
            Method::GET,
            "/leases",
            b"",
            &[(TIMESTAMP_HEADER, stale)],
        )
        .await,
    ));
    cases.push((
        "bad nonce",
        signed_raw(
            &worker,
            Method::GET,
            "/leases",
            b"",
            &[(NONCE_HEADER, "x".into())],
        )
        .await,
    ));
    let stranger = harness.client("gateway");
    let mut headers = stranger.signing_headers(b"{}");
    headers[0].1 = "stranger".into();
    cases.push((
        "unknown client id",
        stranger
            .send_raw(Method::GET, "/leases", &headers, Bytes::new())
            .await
            .unwrap(),
    ));
    cases.push((
        "no signature headers",
        worker
            .send_raw(Method::POST, "/escrow", &[], Bytes::from_static(b"{}"))
            .await
            .unwrap(),
    ));
    cases.push((
        "wrong role",
        signed_raw(&worker, Method::GET, "/leases", b"", &[]).await,
    ));
    cases.push((
        "unknown route",
        worker
            .send_raw(Method::GET, "/nothing-here", &[], Bytes::new())
            .await
            .unwrap(),
    ));
    cases.push((
        "wrong method",
        worker
            .send_raw(Method::DELETE, "/escrow/unlock", &[], Bytes::new())
            .await
            .unwrap(),
    ));
    let expected = [
        ("malformed JSON", 400, "invalid-json"),
        ("not an object", 400, "body-not-object"),
        ("wrong type", 400, "wrong-type"),
        ("bad key hex", 400, "invalid-key"),
        ("bad base64", 400, "invalid-base64"),
        ("wrong key length", 400, "wrong-length"),
        ("short session key", 400, "wrong-length"),
        ("oversized body", 413, "body-too-large"),
        ("expired timestamp", 401, "stale-timestamp"),
        ("bad nonce", 401, "malformed-auth-header"),
        ("unknown client id", 401, "unknown-client"),
        ("no signature headers", 401, "missing-auth-header"),
        ("wrong role", 403, "client-not-permitted"),
        ("unknown route", 404, "not-found"),
        ("wrong method", 405, "method-not-allowed"),
    ];
    for ((name, response), (expected_name, status, code)) in cases.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        assert_eq!(response.status, status, "{name}: {:?}", response.body);
        assert_eq!(error_code(response), code, "{name}");
    }
    // Nothing was stored by any of it, and the service is still healthy.
    assert_eq!(
        harness.client("gateway").health().await.unwrap()["status"],
        "ok"
    );
    worker.deposit(&good_deposit).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_that_do_not_validate_are_refused_and_not_stored() {
    let harness = embedded().await;
    let escrow = harness.policy().await;
    let worker = harness.client("worker");
    let relay = RelayFixture::new();
    let refused = async |body: Value| match worker.deposit(&body).await.unwrap_err() {
        ClientError::Refused { status, code, .. } => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    };

    // Signed by a key other than the relay's.
    let impostor = SigningKey::generate(&mut OsRng);
    let body = sign_deposit(relay.deposit(&escrow, &[gateway()]), &impostor).unwrap();
    assert_eq!(refused(body).await, (400, "invalid-owner-signature".into()));

    // Sealed to some other escrow's key.
    let other_escrow = hypergate_tokio::escrow::client::EscrowPolicy {
        public_key: crypto_box::SecretKey::generate(&mut OsRng).public_key(),
        policy: escrow.policy.clone(),
    };
    assert_eq!(
        refused(relay.deposit(&other_escrow, &[gateway()])).await,
        (400, "package-unreadable".into())
    );

    // A package whose writerKey is not writerSecret's public key (the
    // original escrowed a public key).
    let mut package: Value = serde_json::from_slice(&relay.package().to_json()).unwrap();
    package["writerKey"] = json!(hex::encode([9u8; 32]));
    let sealed = seal_to(
        &escrow.public_key,
        package.to_string().as_bytes(),
        &mut OsRng,
    )
    .unwrap();
    let mut body = relay.deposit(&escrow, &[gateway()]);
    body["encryptedPackage"] = serde_json::to_value(&sealed).unwrap();
    body["metadata"]["writerHash"] = json!(hex::encode([0u8; 32]).replace('0', "a"));
    let body = sign_deposit(body, &relay.relay).unwrap();
    assert_eq!(refused(body).await, (400, "invalid-package".into()));

    // A package of another relay, deposited (and signed) for this one.
    let other = RelayFixture::new();
    let body = deposit_body(
        &escrow,
        &DepositParams {
            package: &other.package(),
            relay_key: &relay.relay,
            permitted_requesters: &[gateway()],
            expires_at: None,
            created_at: now(),
        },
    )
    .unwrap();
    let mut body = body;
    body["relayKey"] = json!(relay.key().to_hex());
    let body = sign_deposit(body, &relay.relay).unwrap();
    assert_eq!(refused(body).await, (400, "invalid-package".into()));

    // Signed too long ago.
    let body = deposit_body(
        &escrow,
        &DepositParams {
            package: &relay.package(),
            relay_key: &relay.relay,
            permitted_requesters: &[gateway()],
            expires_at: None,
            created_at: UnixTime(now().0 - 10 * 60 * 1000),
        },
    )
    .unwrap();
    assert_eq!(refused(body).await, (400, "stale-deposit".into()));

    // A worker depositing as another worker.
    let mut foreign = RelayFixture::new();
    foreign.owner = peer_of("gateway-2");
    assert_eq!(
        refused(foreign.deposit(&escrow, &[gateway()])).await,
        (403, "owner-mismatch".into())
    );

    // None of it was stored: the relay has nothing to unlock.
    let unlock = harness
        .client("gateway")
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&unlock, ClientError::Refused { status: 400, code, .. } if code == "escrow-record-not-found"),
        "{unlock:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesters_and_revokes_are_bound_to_the_clients_peer() {
    let harness = embedded().await;
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    harness
        .client("worker")
        .deposit(&relay.deposit(&escrow, &[gateway(), peer_of("gateway-2")]))
        .await
        .unwrap();
    // The gateway client cannot ask as gateway-2.
    let mismatch = harness
        .client("gateway")
        .unlock(
            relay.key(),
            Some(peer_of("gateway-2")),
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&mismatch, ClientError::Refused { status: 403, code, .. } if code == "requester-mismatch"),
        "{mismatch:?}"
    );
    // A worker may revoke only its own deposits.
    let foreign = harness
        .client("worker")
        .revoke(&RevokeBy::Owner(peer_of("gateway-2")), None, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&foreign, ClientError::Refused { status: 403, code, .. } if code == "not-deposit-owner"),
        "{foreign:?}"
    );
    let own = harness
        .client("worker")
        .revoke(&RevokeBy::Relay(relay.key()), None, "rotation")
        .await
        .unwrap();
    assert_eq!(own["success"], true);
}

async fn an_audit_log_that_cannot_be_written_answers_503_and_releases_nothing(backend: Backend) {
    let Some(mut harness) = Harness::start(backend, Options::default()).await else {
        return;
    };
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    harness
        .client("worker")
        .deposit(&relay.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    // The audit storage goes away under the running escrow.
    std::fs::remove_dir_all(harness.audit_dir()).unwrap();

    let gateway_client = harness.client("gateway");
    let body = serde_json::to_vec(&json!({
        "relayKey": relay.key().to_hex(),
        "sessionPublicKey": BASE64.encode(crypto_box::SecretKey::generate(&mut OsRng).public_key().as_bytes()),
        "evidence": evidence_allowing(now()),
    }))
    .unwrap();
    let refused = signed_raw(&gateway_client, Method::POST, "/escrow/unlock", &body, &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(error_code(&refused), "audit-unavailable");
    assert!(refused.json().unwrap().get("sealedLease").is_none());
    // It stays closed: a retry, a deposit, the health check.
    let again = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&again, ClientError::Refused { status: 503, .. }),
        "{again:?}"
    );
    let deposit = harness
        .client("worker")
        .deposit(&RelayFixture::new().deposit(&escrow, &[gateway()]))
        .await
        .unwrap_err();
    assert!(
        matches!(&deposit, ClientError::Refused { status: 503, .. }),
        "{deposit:?}"
    );
    let health = gateway_client
        .send_raw(Method::GET, "/health", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(health.status, 503);
    // No lease exists anywhere: not listed, no key held, none in the store.
    assert!(
        harness
            .client("operator")
            .leases()
            .await
            .unwrap()
            .is_empty()
    );
    let service = harness.server.as_ref().unwrap().service();
    assert!(service.held_leases().is_empty());
    harness.stop().await;
    let key = relay.key();
    let history = harness.read_store(move |store| store.lease_history(&key).unwrap());
    assert!(history.is_empty(), "{history:?}");
}
both_backends!(an_audit_log_that_cannot_be_written_answers_503_and_releases_nothing);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_certificate_files_are_served_without_a_restart() {
    let harness = embedded().await;
    let presented = async || -> Option<Vec<u8>> {
        let tls = harness.pki.client_tls(Some("gateway"));
        let mut config =
            rustls::ClientConfig::builder_with_provider(hypergate_tokio::escrow::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(tls.roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(harness.addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.ok()?;
        let (_, connection) = stream.get_ref();
        Some(connection.peer_certificates()?.first()?.to_vec())
    };
    let before = presented().await.unwrap();
    let fresh = harness.pki.issue_server("escrow server 2");
    assert_ne!(before, fresh.to_vec());
    let reloaded = eventually(Duration::from_secs(20), async || {
        presented().await.is_some_and(|der| der == fresh.to_vec())
    })
    .await;
    assert!(reloaded, "the new certificate was never presented");
    // Requests work on the new certificate.
    assert_eq!(
        harness.client("gateway").health().await.unwrap()["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_after_the_audit_entry_is_recorded_as_aborted_and_releases_nothing() {
    let Some(harness) = Harness::start(Backend::Postgres, Options::default()).await else {
        return;
    };
    let db = harness.db.as_ref().unwrap();
    let escrow = harness.policy().await;
    let relay = RelayFixture::new();
    harness
        .client("worker")
        .deposit(&relay.deposit(&escrow, &[gateway()]))
        .await
        .unwrap();
    // The lease table disappears between the audit append and the store write.
    db.execute("ALTER TABLE escrow_lease_history RENAME TO escrow_lease_history_away");
    let gateway_client = harness.client("gateway");
    let failed = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&failed, ClientError::Refused { status: 503, code, .. } if code == "store-unavailable"),
        "{failed:?}"
    );
    let service = harness.server.as_ref().unwrap().service();
    assert!(
        service.held_leases().is_empty(),
        "no key is held for the aborted lease"
    );
    let report = hypergate_adapters::audit::AuditLog::verify(&harness.audit_dir())
        .await
        .unwrap();
    let kinds: Vec<&str> = report
        .entries
        .iter()
        .map(|entry| entry.event.kind.as_str())
        .collect();
    assert_eq!(kinds, ["deposit", "unlock-issued", "unlock-aborted"]);
    assert_eq!(
        report.entries[2].event.reason.as_deref(),
        Some("store-unavailable")
    );

    // With the table back, the same unlock succeeds: the aborted one spent nothing.
    db.execute("ALTER TABLE escrow_lease_history_away RENAME TO escrow_lease_history");
    let lease = gateway_client
        .unlock(
            relay.key(),
            None,
            &evidence_allowing(now()),
            &escrow.public_key,
        )
        .await
        .unwrap();
    assert_eq!(lease.lease_id.epoch, 1);
    assert!(!lease.refetched);
}
