//! Opening a link: [`connect`] on the worker, [`accept`] on the gateway.
//!
//! Contract:
//! - [`connect`] runs the handshake as initiator with the gateway's pinned identity, then waits
//!   for the gateway's first sealed record: a welcome establishes the link, a close record is
//!   [`HandshakeError::Refused`] with the gateway's code and reason.
//! - [`accept`] runs the handshake as responder, then admits the worker's proven identity by
//!   [`AcceptPolicy`]: an admitted worker gets the welcome; a refused one gets a close record
//!   ([`CloseCode::NOT_ALLOWED`] and why) and `accept` returns [`HandshakeError::NotAllowed`].
//! - Both are bounded by [`LinkConfig::handshake_timeout`]. No frame is read as a frame before
//!   the handshake and the welcome: bytes the gateway sends right after its welcome stay
//!   buffered for the driver.
//! - Success is an [`Established`] link: the handle, the inbound queue and the driver future the
//!   caller must spawn.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use hypergate_core::ids::PeerId;

use super::handle::{Inbound, PeerLink, Shared};
use super::handshake::{HandshakeError, initiate, respond};
use super::record::{
    CloseCode, Record, SealedRecordDecoder, encode_close_record, encode_welcome_record,
};
use super::sealed::Sealer;
use super::{LinkConfig, LinkDriver, Sleeper};
use crate::crypto::Identity;

/// Which workers a gateway admits, by proven identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// Any worker that proves an identity (open registration).
    Open,
    /// Only these identities.
    AllowList(BTreeSet<PeerId>),
}

impl AcceptPolicy {
    /// Whether `peer` is admitted.
    #[must_use]
    pub fn admits(&self, peer: &PeerId) -> bool {
        match self {
            Self::Open => true,
            Self::AllowList(allowed) => allowed.contains(peer),
        }
    }
}

/// An authenticated link, ready to use once [`Established::driver`] is spawned.
pub struct Established<S, T> {
    /// The handle: requests, sends, close.
    pub link: PeerLink,
    /// Unsolicited frames from the peer.
    pub inbound: Inbound,
    /// The future that moves the bytes: spawn `driver.run()` on the caller's executor.
    pub driver: LinkDriver<S, T>,
}

impl<S, T> std::fmt::Debug for Established<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Established")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl<S, T> Established<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Sleeper,
{
    fn assemble(
        stream: S,
        remote: PeerId,
        sealer: Sealer,
        decoder: SealedRecordDecoder,
        config: &LinkConfig,
        timer: T,
    ) -> Self {
        let shared = Arc::new(Shared::new(remote, config.max_in_flight()));
        let (outbound_tx, outbound_rx) = async_channel::bounded(config.outbound_capacity());
        let (inbound_tx, inbound_rx) = async_channel::bounded(config.inbound_capacity());
        Self {
            link: PeerLink::new(Arc::clone(&shared), outbound_tx),
            inbound: Inbound::new(inbound_rx, Arc::clone(&shared)),
            driver: LinkDriver::new(
                stream,
                sealer,
                decoder,
                shared,
                outbound_rx,
                inbound_tx,
                config.clone(),
                timer,
            ),
        }
    }
}

/// Fails with [`HandshakeError::TimedOut`] if `work` takes longer than `after`.
async fn timed<T: Sleeper, R>(
    timer: &T,
    after: Duration,
    work: impl Future<Output = Result<R, HandshakeError>>,
) -> Result<R, HandshakeError> {
    future::or(work, async {
        timer.sleep(after).await;
        Err(HandshakeError::TimedOut { after })
    })
    .await
}

/// Worker side: opens a link to the gateway whose identity is `gateway`.
pub async fn connect<S, T>(
    mut stream: S,
    identity: &Identity,
    gateway: PeerId,
    config: &LinkConfig,
    timer: T,
) -> Result<Established<S, T>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Sleeper,
{
    let (remote, sealer, decoder) = timed(&timer, config.handshake_timeout(), async {
        let (remote, sealer, opener) = initiate(&mut stream, identity, gateway).await?.into_parts();
        let mut decoder = SealedRecordDecoder::new(opener, config.max_frame_bytes());
        await_welcome(&mut stream, &mut decoder).await?;
        Ok((remote, sealer, decoder))
    })
    .await?;
    Ok(Established::assemble(
        stream, remote, sealer, decoder, config, timer,
    ))
}

/// Reads until the gateway's first record: welcome, or a close that refuses the worker.
async fn await_welcome<S: AsyncRead + Unpin>(
    stream: &mut S,
    decoder: &mut SealedRecordDecoder,
) -> Result<(), HandshakeError> {
    let mut buffer = vec![0u8; 4096];
    loop {
        match decoder.next_record()? {
            Some(Record::Welcome) => return Ok(()),
            Some(Record::Close { code, reason }) => {
                return Err(HandshakeError::Refused { code, reason });
            }
            Some(Record::Frame(_)) => {
                return Err(HandshakeError::Malformed {
                    detail: "a frame arrived before the gateway's welcome",
                });
            }
            None => {}
        }
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            return Err(HandshakeError::Closed);
        }
        decoder.push(buffer.get(..read).unwrap_or_default());
    }
}

/// Gateway side: authenticates a worker on `stream` and admits it by `policy`.
pub async fn accept<S, T>(
    mut stream: S,
    identity: &Identity,
    policy: &AcceptPolicy,
    config: &LinkConfig,
    timer: T,
) -> Result<Established<S, T>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: Sleeper,
{
    let (remote, sealer, opener) = timed(
        &timer,
        config.handshake_timeout(),
        respond(&mut stream, identity),
    )
    .await?
    .into_parts();
    let mut sealer = sealer;
    let mut plain = Vec::new();
    let admitted = policy.admits(&remote);
    if admitted {
        encode_welcome_record(&mut plain);
    } else {
        let reason = format!("worker {remote} is not on this gateway's allow-list");
        encode_close_record(CloseCode::NOT_ALLOWED, &reason, &mut plain);
    }
    let mut wire = Vec::new();
    sealer
        .seal_into(&plain, &mut wire)
        .map_err(|error| HandshakeError::Setup {
            detail: error.to_string(),
        })?;
    let sent = timed(&timer, config.handshake_timeout(), async {
        stream.write_all(&wire).await?;
        stream.flush().await?;
        Ok(())
    })
    .await;
    if !admitted {
        // The worker is told why, as far as it still listens; refused either way.
        let _ = timed(&timer, config.close_timeout(), async {
            stream.close().await?;
            Ok(())
        })
        .await;
        return Err(HandshakeError::NotAllowed { peer: remote });
    }
    sent?;
    let decoder = SealedRecordDecoder::new(opener, config.max_frame_bytes());
    Ok(Established::assemble(
        stream, remote, sealer, decoder, config, timer,
    ))
}
