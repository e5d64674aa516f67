//! Peer-link frames over any `futures-io` byte stream.
//!
//! Contract: [`FramedLink::send`] writes one length-prefixed, versioned frame
//! (the core's [`encode_length_prefixed`]) and flushes it;
//! [`FramedLink::recv`] returns the next whole frame, `Ok(None)` on a clean
//! end of stream between frames, and an error for a stream that ends inside
//! a frame or carries bytes the core's decoder rejects. After an error the
//! link must be closed: the decoder does not resynchronise. Reads are bounded
//! by `max_frame_bytes`, so a peer cannot make the link buffer more than one
//! maximum frame.
//!
//! This type carries frames only; the encrypted, authenticated handshake that
//! must precede it lives in the peer-link module of a later layer.

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hypergate_core::wire::{
    Frame, FrameDecoder, MAX_FRAME_BYTES, WireError, encode_length_prefixed,
};

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The peer sent bytes that are not a valid frame.
    #[error("peer sent an invalid frame: {0}")]
    Protocol(#[from] WireError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    TruncatedFrame {
        /// Bytes of the unfinished frame.
        buffered: usize,
    },
    /// The underlying stream failed.
    #[error("link i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A byte stream carrying peer-link frames.
#[derive(Debug)]
pub struct FramedLink<S> {
    stream: S,
    decoder: FrameDecoder,
    read_buffer: Vec<u8>,
}

/// Bytes read from the stream per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> FramedLink<S> {
    /// Frames `stream` with the protocol's maximum frame size.
    pub fn new(stream: S) -> Self {
        Self::with_max_frame_bytes(stream, MAX_FRAME_BYTES)
    }

    /// Frames `stream`, rejecting frames longer than `max_frame_bytes`.
    pub fn with_max_frame_bytes(stream: S, max_frame_bytes: usize) -> Self {
        Self {
            stream,
            decoder: FrameDecoder::new(max_frame_bytes),
            read_buffer: vec![0; READ_CHUNK_BYTES],
        }
    }

    /// Writes one frame and flushes.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), LinkError> {
        let bytes = encode_length_prefixed(frame)?;
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next frame; `None` when the peer closed the stream between frames.
    pub async fn recv(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let read = self.stream.read(&mut self.read_buffer).await?;
            if read == 0 {
                let buffered = self.decoder.buffered_len();
                return if buffered == 0 {
                    Ok(None)
                } else {
                    Err(LinkError::TruncatedFrame { buffered })
                };
            }
            let chunk = self.read_buffer.get(..read).unwrap_or_default();
            self.decoder.push(chunk);
        }
    }

    /// Closes the write half.
    pub async fn close(&mut self) -> Result<(), LinkError> {
        self.stream.close().await?;
        Ok(())
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypergate_core::ids::RelayKey;
    use hypergate_core::time::UnixTime;
    use hypergate_core::wire::{BoundedString, Heartbeat, Message, NostrFrame};
    use smol::net::{TcpListener, TcpStream};

    /// Listens on loopback and runs `handle` on the first accepted stream.
    async fn accept_once<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
        handle: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) -> (std::net::SocketAddr, smol::Task<T>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = smol::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            handle(stream).await
        });
        (address, task)
    }

    fn heartbeat(seq: u64) -> Frame {
        Frame {
            request_id: seq,
            message: Message::Heartbeat(Heartbeat {
                seq,
                sent_at: UnixTime(seq),
            }),
        }
    }

    #[test]
    fn frames_cross_a_real_tcp_socket_on_smol_in_order() {
        smol::block_on(async {
            let (address, server) = accept_once(|stream| async move {
                let mut link = FramedLink::new(stream);
                let mut received = Vec::new();
                while let Some(frame) = link.recv().await.unwrap() {
                    received.push(frame);
                }
                received
            })
            .await;
            let mut client = FramedLink::new(TcpStream::connect(address).await.unwrap());
            let big = Frame {
                request_id: 99,
                message: Message::NostrFrame(NostrFrame {
                    relay_key: RelayKey([1; 32]),
                    session: 7,
                    frame: BoundedString::new("x".repeat(200_000)).unwrap(),
                }),
            };
            for seq in 0..50 {
                client.send(&heartbeat(seq)).await.unwrap();
            }
            client.send(&big).await.unwrap();
            client.close().await.unwrap();
            let received = server.await;
            assert_eq!(received.len(), 51);
            assert_eq!(received[10], heartbeat(10));
            assert_eq!(received[50], big);
        });
    }

    #[test]
    fn garbage_on_the_stream_is_a_protocol_error_not_a_panic() {
        smol::block_on(async {
            let (address, server) =
                accept_once(|stream| async move { FramedLink::new(stream).recv().await }).await;
            let mut raw = TcpStream::connect(address).await.unwrap();
            // A length prefix of 8 followed by 8 bytes that are no frame.
            raw.write_all(&[0, 0, 0, 8, 0xff, 0xff, 1, 2, 3, 4, 5, 6])
                .await
                .unwrap();
            raw.close().await.unwrap();
            assert!(matches!(server.await, Err(LinkError::Protocol(_))));
        });
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_the_body_arrives() {
        smol::block_on(async {
            let (address, server) = accept_once(|stream| async move {
                FramedLink::with_max_frame_bytes(stream, 1024).recv().await
            })
            .await;
            let mut raw = TcpStream::connect(address).await.unwrap();
            raw.write_all(&[0x7f, 0xff, 0xff, 0xff]).await.unwrap();
            // The stream stays open: the refusal must not wait for 2 GiB.
            let result = server.await;
            assert!(matches!(
                result,
                Err(LinkError::Protocol(WireError::TooLong { .. }))
            ));
            drop(raw);
        });
    }

    #[test]
    fn stream_ending_inside_a_frame_is_reported_as_truncated() {
        smol::block_on(async {
            let (address, server) =
                accept_once(|stream| async move { FramedLink::new(stream).recv().await }).await;
            let mut raw = TcpStream::connect(address).await.unwrap();
            let bytes = encode_length_prefixed(&heartbeat(1)).unwrap();
            raw.write_all(&bytes[..bytes.len() - 1]).await.unwrap();
            raw.close().await.unwrap();
            assert!(matches!(
                server.await,
                Err(LinkError::TruncatedFrame { .. })
            ));
        });
    }
}
