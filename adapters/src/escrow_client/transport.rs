//! The client's HTTP/1.1 exchange: a small pool of kept-alive connections,
//! each over rustls (client certificate) or plain TCP, on any executor.
//!
//! A connection is an `async-io` TCP stream (the host resolved off the
//! executor), optionally wrapped in `futures-rustls`, seen by hyper through
//! [`HyperIo`]; hyper's connection driver runs as a task of the client's
//! spawner and ends when the connection closes or its sender is dropped.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::PoisonError;

use async_io::Async;
use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};

use super::{ClientError, ClientTls, EscrowClient, MAX_RESPONSE_BYTES, POOL_SIZE, RawResponse};
use crate::hyper_io::HyperIo;
use crate::rt;
use crate::tls::provider;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl EscrowClient {
    pub(super) async fn exchange(
        &self,
        method: &Method,
        path: &str,
        headers: &[(&str, String)],
        body: &Bytes,
    ) -> Result<RawResponse, ClientError> {
        let target = &self.inner.target;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", target.base_path))
            .header("host", format!("{}:{}", target.host, target.port));
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder
            .body(Full::new(body.clone()))
            .map_err(|error| ClientError::Config(format!("request: {error}")))?;
        let (mut sender, reused) = self.connection().await?;
        let response = sender.send_request(request).await.map_err(|error| {
            let prefix = if reused && (error.is_canceled() || error.is_incomplete_message()) {
                "reused: "
            } else {
                ""
            };
            ClientError::Transport(format!("{prefix}{}", describe(&error)))
        })?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|error| ClientError::Transport(format!("reading the answer: {error}")))?
            .to_bytes();
        if !sender.is_closed() {
            let mut idle = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < POOL_SIZE {
                idle.push(sender);
            }
        }
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    /// A ready connection: a pooled one, or a new one.
    async fn connection(&self) -> Result<(SendRequest<Full<Bytes>>, bool), ClientError> {
        loop {
            let pooled = self
                .inner
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut sender) = pooled else { break };
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let target = &self.inner.target;
        let tcp = connect_tcp(&target.host, target.port)
            .await
            .map_err(|error| ClientError::Transport(format!("connect: {error}")))?;
        let io: Box<dyn Io> = match (&self.inner.connector, target.https) {
            (Some(connector), true) => Box::new(
                connector
                    .connect(target.server_name.clone(), tcp)
                    .await
                    .map_err(|error| ClientError::Transport(format!("TLS: {error}")))?,
            ),
            _ => Box::new(tcp),
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(HyperIo(io))
            .await
            .map_err(|error| ClientError::Transport(describe(&error)))?;
        self.inner.spawner.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "escrow client connection ended");
            }
        });
        Ok(sender)
    }
}

/// A TCP connection to `host:port` with `TCP_NODELAY`: the name is resolved on the blocking
/// pool, then each address is tried in turn (as `std` and tokio do), the last error kept.
async fn connect_tcp(host: &str, port: u16) -> io::Result<Async<TcpStream>> {
    let name = (host.to_owned(), port);
    let addresses: Vec<SocketAddr> =
        rt::unblock(move || name.to_socket_addrs().map(Iterator::collect)).await?;
    let mut last_error = None;
    for address in addresses {
        match Async::<TcpStream>::connect(address).await {
            Ok(stream) => {
                // Requests are small and answered at once: do not let Nagle hold them back.
                let _ = stream.get_ref().set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// An error with its causes (where a TLS alert usually hides).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn client_config(tls: ClientTls) -> Result<rustls::ClientConfig, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Config(error.to_string()))?
        .with_root_certificates(tls.roots);
    let mut config = match tls.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key.clone_key())
            .map_err(|error| ClientError::Config(format!("client certificate: {error}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
