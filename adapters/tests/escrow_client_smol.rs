//! The escrow client on smol (no tokio anywhere in this test binary's runtime) against a real
//! rustls server with mutual TLS on loopback: it proves the client is runtime-neutral, and
//! checks the behaviours the gateway relies on: signed requests, connection reuse, the retry
//! of a request whose pooled connection was closed, a refused handshake, the request timeout.
//!
//! The server is a small HTTP/1.1 responder written here (not hyper), so it can close a
//! kept-alive connection exactly when the client reuses it.

// Test helpers: a failed setup step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_io::Async;
use futures_lite::io::{AsyncReadExt as _, AsyncWriteExt as _};
use futures_rustls::TlsAcceptor;
use hypergate_adapters::escrow_client::{ClientError, ClientTls, EscrowClient, EscrowClientConfig};
use hypergate_adapters::escrow_wire::signing::{
    CLIENT_ID_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_matches,
    signing_bytes,
};
use hypergate_adapters::rt::Spawner;
use hypergate_adapters::tls::{provider, read_certificates, read_private_key, read_roots};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::server::WebPkiClientVerifier;
use zeroize::Zeroizing;

const SECRET: &[u8] = b"escrow client smol test secret";

fn smol_spawner() -> Spawner {
    Spawner::new(|task| smol::spawn(task).detach())
}

/// A CA, a server certificate for `localhost` and one client certificate, as PEM files.
fn mint_pki(dir: &Path) {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, purpose, sans) in [
        (
            "server",
            ExtendedKeyUsagePurpose::ServerAuth,
            vec!["localhost".to_owned()],
        ),
        ("client", ExtendedKeyUsagePurpose::ClientAuth, Vec::new()),
    ] {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// The server's TLS: its certificate, and client certificates from the CA required.
fn acceptor(dir: &Path) -> TlsAcceptor {
    let provider = provider();
    let roots = Arc::new(read_roots(&dir.join("ca.pem")).unwrap());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            read_certificates(&dir.join("server.pem")).unwrap(),
            read_private_key(&dir.join("server-key.pem")).unwrap(),
        )
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// How the test server treats its connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Answers every request, keeping the connection alive.
    Answer,
    /// Answers the first request of a connection; at the second, closes it (cleanly, with
    /// TLS close_notify) without answering, as a server whose idle timer just fired does.
    CloseAtSecondRequest,
    /// Accepts TCP and never says a word.
    Silent,
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    /// (path, nonce header) of every request read.
    requests: Vec<(String, Option<String>)>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(script: Script) -> Self {
        let dir = tempfile::tempdir().unwrap();
        mint_pki(dir.path());
        let acceptor = acceptor(dir.path());
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        smol::spawn({
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    seen.lock().unwrap().connections += 1;
                    let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
                    smol::spawn(serve_connection(tcp, acceptor, script, seen)).detach();
                }
            }
        })
        .detach();
        Self {
            addr,
            seen,
            _dir: dir,
        }
    }

    fn client(&self, with_certificate: bool, timeout: Duration) -> EscrowClient {
        let dir = self._dir.path();
        let (cert, key) = (dir.join("client.pem"), dir.join("client-key.pem"));
        let identity = with_certificate.then_some((cert.as_path(), key.as_path()));
        let mut tls = ClientTls::from_pem_files(&dir.join("ca.pem"), identity).unwrap();
        tls.server_name = Some("localhost".into());
        EscrowClient::new(
            EscrowClientConfig {
                base_url: format!("https://127.0.0.1:{}/api/escrow", self.addr.port()),
                client_id: "gateway".into(),
                secret: Zeroizing::new(SECRET.to_vec()),
                tls: Some(tls),
                request_timeout: timeout,
            },
            smol_spawner(),
        )
        .unwrap()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve_connection(
    tcp: Async<TcpStream>,
    acceptor: TlsAcceptor,
    script: Script,
    seen: Arc<Mutex<Seen>>,
) {
    if script == Script::Silent {
        // The socket stays open, unanswered, until the test ends.
        let never = std::future::pending::<std::convert::Infallible>().await;
        match never {}
    }
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let mut served = 0;
    while let Some((path, headers)) = read_head(&mut tls).await {
        seen.lock().unwrap().requests.push((
            path.clone(),
            header(&headers, NONCE_HEADER).map(str::to_owned),
        ));
        served += 1;
        if script == Script::CloseAtSecondRequest && served == 2 {
            let _ = tls.close().await;
            return;
        }
        let (status, body) = answer(&path, &headers);
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if tls.write_all(response.as_bytes()).await.is_err() || tls.flush().await.is_err() {
            return;
        }
    }
}

/// A request head: its path and headers (names lowercased); `None` at the end of the stream.
async fn read_head(
    stream: &mut (impl futures_io::AsyncRead + Unpin),
) -> Option<(String, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    Some((path, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `/health` unsigned; `/leases` only with a valid signature over `{}` (a signed GET).
fn answer(path: &str, headers: &[(String, String)]) -> (&'static str, String) {
    match path {
        "/api/escrow/health" => ("200 OK", r#"{"status":"ok"}"#.to_owned()),
        "/api/escrow/leases" => {
            let verified = (|| {
                let signature = hex::decode(header(headers, SIGNATURE_HEADER)?).ok()?;
                let signed = signing_bytes(
                    header(headers, TIMESTAMP_HEADER)?.parse().ok()?,
                    header(headers, CLIENT_ID_HEADER)?,
                    header(headers, NONCE_HEADER)?,
                    b"",
                );
                Some(signature_matches(SECRET, &signed, &signature))
            })();
            if verified == Some(true) {
                ("200 OK", r#"{"leases":[]}"#.to_owned())
            } else {
                (
                    "401 Unauthorized",
                    r#"{"error":"invalid-signature"}"#.to_owned(),
                )
            }
        }
        _ => ("404 Not Found", r#"{"error":"not-found"}"#.to_owned()),
    }
}

/// Runs `test` on smol against a fresh server following `script`.
fn on_smol(script: Script, test: impl AsyncFnOnce(&Server)) {
    smol::block_on(async {
        let server = Server::start(script);
        test(&server).await;
    });
}

#[test]
fn the_client_runs_on_smol_over_mutual_tls_signs_and_reuses_its_connection() {
    on_smol(Script::Answer, async |server| {
        let client = server.client(true, Duration::from_secs(20));
        assert_eq!(client.health().await.unwrap()["status"], "ok");
        assert_eq!(
            client.leases().await.unwrap(),
            Vec::<serde_json::Value>::new()
        );
        assert_eq!(client.leases().await.unwrap().len(), 0);
        let seen = server.seen();
        assert_eq!(seen.connections, 1, "one kept-alive connection serves all");
        let paths: Vec<&str> = seen
            .requests
            .iter()
            .map(|(path, _)| path.as_str())
            .collect();
        assert_eq!(
            paths,
            [
                "/api/escrow/health",
                "/api/escrow/leases",
                "/api/escrow/leases"
            ]
        );
        assert_eq!(seen.requests[0].1, None, "health is not signed");
        assert_ne!(
            seen.requests[1].1, seen.requests[2].1,
            "a fresh nonce per request"
        );
    });
}

#[test]
fn a_request_on_a_pooled_connection_the_server_closed_is_retried_once_resigned() {
    on_smol(Script::CloseAtSecondRequest, async |server| {
        let client = server.client(true, Duration::from_secs(20));
        assert_eq!(client.leases().await.unwrap().len(), 0);
        // Reuses the pooled connection, which the server closes unanswered: the client
        // retries on a new connection with a new signature, and the call succeeds.
        assert_eq!(client.leases().await.unwrap().len(), 0);
        let seen = server.seen();
        assert_eq!(seen.connections, 2);
        assert_eq!(seen.requests.len(), 3);
        let nonces: BTreeSet<_> = seen.requests.iter().map(|(_, nonce)| nonce).collect();
        assert_eq!(
            nonces.len(),
            3,
            "the retry is signed again with a new nonce"
        );
    });
}

#[test]
fn an_unsigned_raw_request_to_a_signed_route_gets_the_servers_refusal() {
    on_smol(Script::Answer, async |server| {
        let response = server
            .client(true, Duration::from_secs(20))
            .send_raw(hyper::Method::GET, "/leases", &[], bytes::Bytes::new())
            .await
            .unwrap();
        assert_eq!(response.status, 401);
        assert_eq!(response.content_type.as_deref(), Some("application/json"));
        assert_eq!(response.json().unwrap()["error"], "invalid-signature");
    });
}

#[test]
fn a_client_without_a_certificate_is_refused_before_any_request_is_read() {
    on_smol(Script::Answer, async |server| {
        let error = server
            .client(false, Duration::from_secs(20))
            .health()
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Transport(_)), "{error:?}");
        assert!(server.seen().requests.is_empty());
    });
}

#[test]
fn a_silent_escrow_ends_the_call_with_a_timeout() {
    on_smol(Script::Silent, async |server| {
        let limit = Duration::from_millis(200);
        let error = server.client(true, limit).health().await.unwrap_err();
        assert!(
            matches!(error, ClientError::Timeout(after) if after == limit),
            "{error:?}"
        );
        assert!(server.seen().requests.is_empty());
    });
}
