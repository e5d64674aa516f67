//! Heartbeats keep an idle link alive; a peer that goes silent, or stops reading, is declared
//! dead, and its senders are held back instead of buffering without bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use std::time::Duration;

use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use hypergate_adapters::peer_link::record::{encode_frame_record, encode_welcome_record};
use hypergate_adapters::peer_link::{
    CloseCode, LINK_HEARTBEAT_ID, LinkConfig, LinkError, RequestError, connect, respond,
};
use hypergate_core::wire::{BoundedBytes, BoundedVec, Frame, HttpMethod, HttpRequest, Message};
use peer_link_support::*;

fn fast_heartbeats(dead_after: Duration) -> LinkConfig {
    test_config()
        .with_heartbeat_interval(Duration::from_millis(20))
        .with_dead_after(dead_after)
}

#[test]
fn heartbeats_keep_an_idle_link_alive() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let config = fast_heartbeats(Duration::from_millis(400));
        let (worker, gateway) = establish_pair(worker_end, gateway_end, &config, smol_timer).await;
        let _worker_driver = smol::spawn(worker.driver.run());
        let _gateway_driver = smol::spawn(gateway.driver.run());

        // Idle for many dead-peer timeouts; only heartbeats cross the link.
        smol::Timer::after(Duration::from_millis(1500)).await;
        assert_eq!(worker.link.closed(), None);
        assert_eq!(gateway.link.closed(), None);

        let mut heartbeats = 0;
        while let Some(frame) = gateway.inbound.try_recv() {
            assert_eq!(frame.request_id, LINK_HEARTBEAT_ID);
            assert!(matches!(frame.message, Message::Heartbeat(_)));
            heartbeats += 1;
        }
        assert!(
            heartbeats > 0,
            "the worker's heartbeats reach the gateway's user"
        );

        // Still usable: the gateway asks, the worker's user answers.
        let asking = smol::spawn({
            let link = gateway.link.clone();
            async move { link.request(heartbeat(5)).await }
        });
        loop {
            let frame = worker.inbound.recv().await.unwrap();
            if frame.request_id != LINK_HEARTBEAT_ID {
                let Message::Heartbeat(beat) = frame.message else {
                    panic!()
                };
                let ack = Frame::new(frame.request_id, Message::HeartbeatAck(beat));
                worker.link.send(ack).await.unwrap();
                break;
            }
        }
        assert!(matches!(asking.await, Ok(Message::HeartbeatAck(_))));
    });
}

#[test]
fn a_silent_peer_is_declared_dead() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let config = fast_heartbeats(Duration::from_millis(200));
        let (worker, silent_gateway) =
            establish_pair(worker_end, gateway_end, &config, smol_timer).await;
        // The gateway's driver never runs: it neither reads nor sends.
        let waiting = smol::spawn({
            let link = worker.link.clone();
            async move { link.request(http_get("/no/answer")).await }
        });
        let result = worker.driver.run().await;
        assert!(
            matches!(result, Err(LinkError::PeerSilent { silent_for }) if silent_for >= Duration::from_millis(200)),
            "{result:?}"
        );
        let closed = worker.link.closed().unwrap();
        assert_eq!(closed.code, CloseCode::TIMEOUT);
        match waiting.await {
            Err(RequestError::Closed(reason)) => assert_eq!(reason, closed),
            other => panic!("expected the waiting request to fail, got {other:?}"),
        }
        drop(silent_gateway);
    });
}

/// An HTTP request carrying `len` body bytes.
fn upload(len: usize) -> Message {
    Message::HttpRequest(HttpRequest {
        method: HttpMethod::Put,
        path: hypergate_core::wire::BoundedString::new("/drive/r/big").unwrap(),
        headers: BoundedVec::empty(),
        body: BoundedBytes::copy_from_slice(&vec![0x5a; len]).unwrap(),
    })
}

#[test]
fn a_peer_that_stops_reading_is_declared_dead_and_senders_wait_instead_of_buffering() {
    smol::block_on(async {
        let (worker_end, mut raw_gateway) = smol_tcp_pair().await;
        let config = fast_heartbeats(Duration::from_millis(300)).with_outbound_capacity(4);

        // A gateway that completes the handshake and keeps sending heartbeats, but never
        // reads again: the worker hears from it, and its writes pile up in the socket.
        let gateway_side = async {
            let session = respond(&mut raw_gateway, &gateway_identity())
                .await
                .unwrap();
            let (_, mut sealer, _) = session.into_parts();
            let mut plain = Vec::new();
            encode_welcome_record(&mut plain);
            let mut wire = Vec::new();
            sealer.seal_into(&plain, &mut wire).unwrap();
            raw_gateway.write_all(&wire).await.unwrap();
            sealer
        };
        let (worker, mut sealer) = future::zip(
            connect(
                worker_end,
                &worker_identity(),
                gateway_identity().peer_id(),
                &config,
                smol_timer,
            ),
            gateway_side,
        )
        .await;
        let worker = worker.unwrap();
        let _beating = smol::spawn(async move {
            for seq in 0.. {
                let mut plain = Vec::new();
                encode_frame_record(&Frame::new(seq, heartbeat(seq)), &mut plain).unwrap();
                let mut wire = Vec::new();
                sealer.seal_into(&plain, &mut wire).unwrap();
                if raw_gateway.write_all(&wire).await.is_err() {
                    break;
                }
                smol::Timer::after(Duration::from_millis(20)).await;
            }
        });

        let sender = smol::spawn({
            let link = worker.link.clone();
            async move {
                let mut sent = 0u32;
                while link.send(Frame::new(1, upload(1 << 20))).await.is_ok() {
                    sent += 1;
                }
                sent
            }
        });
        let result = worker.driver.run().await;
        assert!(
            matches!(result, Err(LinkError::PeerNotReading { .. })),
            "{result:?}"
        );
        assert_eq!(worker.link.closed().unwrap().code, CloseCode::TIMEOUT);
        let sent = sender.await;
        // Kernel socket buffers take some megabytes; the rest waited in a 4-frame queue.
        assert!(
            sent < 64,
            "{sent} MiB accepted from a sender whose peer reads nothing"
        );
    });
}
