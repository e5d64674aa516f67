//! The WebSocket handshake on a glommio connection (RFC 6455 §4.2).
//!
//! Contract: [`check`] validates an upgrade request head (`GET`, `Upgrade:
//! websocket`, `Connection: upgrade`, version 13, a key) and returns the
//! `Sec-WebSocket-Accept` value, or [`UpgradeRefused`] with the status and
//! reason for a JSON error answer ([`write_error`]); nothing panics.
//! [`complete`] writes the `101` and returns async-tungstenite's stream
//! directly on the glommio `TcpStream`, fed first with any frame bytes the
//! client sent right behind its head.

use std::io;

use async_tungstenite::WebSocketStream;
use futures_io::AsyncWrite;
use futures_lite::AsyncWriteExt as _;
use glommio::net::TcpStream;
use hyper::StatusCode;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::head::RequestHead;

/// The server side of an accepted WebSocket.
pub type ServerSocket = WebSocketStream<TcpStream>;

/// Why a request head is not an acceptable WebSocket upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeRefused {
    /// Not `GET`, or no `Upgrade: websocket` / `Connection: upgrade`.
    #[error("expected a WebSocket upgrade (GET with Upgrade: websocket, Connection: upgrade)")]
    NotAnUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported WebSocket version (only 13)")]
    UnsupportedVersion,
    /// No usable `Sec-WebSocket-Key`.
    #[error("missing or malformed Sec-WebSocket-Key")]
    BadKey,
}

impl UpgradeRefused {
    /// The HTTP status to answer with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            UpgradeRefused::NotAnUpgrade => StatusCode::UPGRADE_REQUIRED,
            UpgradeRefused::UnsupportedVersion | UpgradeRefused::BadKey => StatusCode::BAD_REQUEST,
        }
    }
}

/// The `Sec-WebSocket-Accept` value for `head`, if it is a valid upgrade.
pub fn check(head: &RequestHead) -> Result<String, UpgradeRefused> {
    if head.method != "GET" || !head.wants_websocket() || !head.has_token("connection", "upgrade") {
        return Err(UpgradeRefused::NotAnUpgrade);
    }
    if head.header("sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(UpgradeRefused::UnsupportedVersion);
    }
    let key = head
        .header("sec-websocket-key")
        .filter(|key| !key.is_empty() && key.len() <= 64)
        .ok_or(UpgradeRefused::BadKey)?;
    Ok(tungstenite::handshake::derive_accept_key(key))
}

/// Sends the `101` and returns the WebSocket; `after_head` are bytes the
/// client sent after its request head.
pub async fn complete(
    mut stream: TcpStream,
    accept_key: &str,
    after_head: Vec<u8>,
    config: WebSocketConfig,
) -> io::Result<ServerSocket> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    Ok(WebSocketStream::from_partially_read(stream, after_head, Role::Server, Some(config)).await)
}

/// Answers `status` with `{"error": message}` and `Connection: close`.
pub async fn write_error<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: StatusCode,
    message: &str,
) -> io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{Parsed, parse};

    fn head(text: &str) -> RequestHead {
        match parse(text.as_bytes()) {
            Parsed::Complete { head, .. } => head,
            other => panic!("not a head: {other:?}"),
        }
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        let upgrade = head(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(check(&upgrade).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn bad_upgrades_are_refused_with_a_status() {
        let no_version = head(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: a\r\n\r\n",
        );
        assert_eq!(check(&no_version), Err(UpgradeRefused::UnsupportedVersion));
        let post = head("POST / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        assert_eq!(
            check(&post).unwrap_err().status(),
            StatusCode::UPGRADE_REQUIRED
        );
        let no_key = head(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(check(&no_key), Err(UpgradeRefused::BadKey));
    }
}
