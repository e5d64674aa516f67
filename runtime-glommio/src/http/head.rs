//! The head of a connection's first request, read before hyper sees it.
//!
//! Why: hyper's upgrade path needs `Send` I/O and glommio's sockets are not
//! `Send`, so the WebSocket handshake is done here. [`read_first_head`] reads
//! until the end of the first request's header block (bounded by
//! [`MAX_HEAD_BYTES`]) and parses it; if it asks for a WebSocket the
//! connection becomes one, otherwise hyper serves it from the start: the
//! bytes read are replayed to it by [`Replayed`]. So only a connection's
//! first request can upgrade (browsers and Nostr clients open a new
//! connection per WebSocket).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::AsyncReadExt as _;

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers accepted in one request head.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// Headers in order; names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    /// The first header named `name` (lower case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header == name)
            .map(|(_, value)| value.as_slice())
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    #[must_use]
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(header, _)| header == name)
            .filter_map(|(_, value)| std::str::from_utf8(value).ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
    }

    /// Whether this asks for a WebSocket (`Upgrade: websocket`).
    #[must_use]
    pub fn wants_websocket(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }
}

/// What the first read found.
#[derive(Debug)]
pub enum FirstHead {
    /// A complete head: it, and every byte read so far (the head and
    /// whatever followed it).
    Complete {
        /// The parsed head.
        head: RequestHead,
        /// Length of the head in `bytes`.
        head_len: usize,
        /// The bytes read.
        bytes: Vec<u8>,
    },
    /// Not a parsable HTTP/1.x head (hyper answers it from `bytes`).
    Unparsed(Vec<u8>),
    /// The client closed before sending a request.
    Closed,
}

/// Why the head could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Over [`MAX_HEAD_BYTES`] without the end of the head.
    #[error("request head over {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    /// The socket failed.
    #[error("reading the request head: {0}")]
    Io(#[from] io::Error),
}

/// Reads and parses the first request head of `stream` (see the module docs).
pub async fn read_first_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<FirstHead, HeadError> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(if bytes.is_empty() {
                FirstHead::Closed
            } else {
                FirstHead::Unparsed(bytes)
            });
        }
        bytes.extend_from_slice(&chunk[..read]);
        match parse(&bytes) {
            Parsed::Complete { head, head_len } => {
                return Ok(FirstHead::Complete {
                    head,
                    head_len,
                    bytes,
                });
            }
            Parsed::Partial if bytes.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
            Parsed::Partial => {}
            Parsed::NotHttp => return Ok(FirstHead::Unparsed(bytes)),
        }
    }
}

/// What [`parse`] found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole head, `head_len` bytes long.
    Complete {
        /// The head.
        head: RequestHead,
        /// Its length in the buffer.
        head_len: usize,
    },
    /// A head that has not ended yet.
    Partial,
    /// Not an HTTP/1.x request head.
    NotHttp,
}

/// Parses the request head at the start of `bytes`.
#[must_use]
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => {
            let target = request.path.unwrap_or("/");
            let (path, query) = match target.split_once('?') {
                Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
                None => (target.to_owned(), None),
            };
            let head = RequestHead {
                method: request.method.unwrap_or("GET").to_owned(),
                path,
                query,
                headers: request
                    .headers
                    .iter()
                    .map(|header| (header.name.to_ascii_lowercase(), header.value.to_vec()))
                    .collect(),
            };
            Parsed::Complete { head, head_len }
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::NotHttp,
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Replayed<S> {
    read: Vec<u8>,
    position: usize,
    stream: S,
}

impl<S> Replayed<S> {
    /// `stream`, after `read`.
    pub fn new(read: Vec<u8>, stream: S) -> Self {
        Self {
            read,
            position: 0,
            stream,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.position < this.read.len() {
            let left = &this.read[this.position..];
            let copied = left.len().min(out.len());
            out[..copied].copy_from_slice(&left[..copied]);
            this.position += copied;
            if this.position == this.read.len() {
                this.read = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(copied));
        }
        Pin::new(&mut this.stream).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_websocket_head_is_parsed_with_its_length() {
        let text = b"GET /relay/ab?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n[\"REQ\"";
        let Parsed::Complete {
            head,
            head_len: len,
        } = parse(text)
        else {
            panic!("not parsed");
        };
        assert_eq!(head.path, "/relay/ab");
        assert_eq!(head.query.as_deref(), Some("x=1"));
        assert!(head.wants_websocket());
        assert!(head.has_token("connection", "upgrade"));
        assert_eq!(&text[len..], b"[\"REQ\"");
    }

    #[test]
    fn partial_and_garbage_heads_are_told_apart() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost:"), Parsed::Partial);
        assert_eq!(parse(b"\x16\x03\x01 not http\r\n\r\n"), Parsed::NotHttp);
    }

    #[test]
    fn replayed_bytes_come_before_the_stream() {
        let mut stream = Replayed::new(
            b"abc".to_vec(),
            futures_lite::io::Cursor::new(b"def".to_vec()),
        );
        let mut all = Vec::new();
        futures_lite::future::block_on(stream.read_to_end(&mut all)).unwrap();
        assert_eq!(all, b"abcdef");
    }
}
