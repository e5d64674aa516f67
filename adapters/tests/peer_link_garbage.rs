//! Bytes after a completed handshake that are not sealed records of the link end it with an
//! error (and, where it can, a close record telling the peer why), never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use hypergate_adapters::peer_link::record::{
    KIND_FRAME, encode_frame_record, encode_welcome_record,
};
use hypergate_adapters::peer_link::{
    AcceptPolicy, CloseCode, ClosedBy, Established, LinkError, Opener, Record, RecordError,
    SealError, SealedRecordDecoder, Sealer, accept, connect, initiate, respond,
};
use hypergate_core::wire::{Frame, MAX_FRAME_BYTES};
use peer_link_support::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smol::net::TcpStream;

type Timer = fn(std::time::Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

fn timer(duration: std::time::Duration) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(smol_timer(duration))
}

/// A hand-driven worker (raw socket + its session keys) against a real gateway.
async fn raw_worker_and_gateway() -> (TcpStream, Sealer, Opener, Established<TcpStream, Timer>) {
    let (mut raw, gateway_end) = smol_tcp_pair().await;
    let config = test_config();
    let (session, gateway) = future::zip(
        initiate(&mut raw, &worker_identity(), gateway_identity().peer_id()),
        accept(
            gateway_end,
            &gateway_identity(),
            &AcceptPolicy::Open,
            &config,
            timer as Timer,
        ),
    )
    .await;
    let (_, sealer, opener) = session.unwrap().into_parts();
    (raw, sealer, opener, gateway.unwrap())
}

/// Everything the gateway sent the raw worker, opened, until the gateway hung up.
async fn records_sent_to(mut raw: TcpStream, opener: Opener) -> Vec<Record> {
    let mut bytes = Vec::new();
    raw.read_to_end(&mut bytes).await.unwrap();
    let mut decoder = SealedRecordDecoder::new(opener, MAX_FRAME_BYTES);
    decoder.push(&bytes);
    let mut records = Vec::new();
    while let Some(record) = decoder.next_record().unwrap() {
        records.push(record);
    }
    records
}

/// Sends `garbage` from the raw worker (then shuts its write side, still reading); returns the
/// gateway driver's result and what the gateway sent back.
async fn gateway_after(garbage: Vec<u8>) -> (Result<(), LinkError>, Vec<Record>) {
    let (mut raw, _sealer, opener, gateway) = raw_worker_and_gateway().await;
    let driver = smol::spawn(gateway.driver.run());
    raw.write_all(&garbage).await.unwrap();
    raw.close().await.unwrap();
    let result = driver.await.map(|_| ());
    assert_eq!(gateway.link.closed().unwrap().by, ClosedBy::Local);
    (result, records_sent_to(raw, opener).await)
}

fn assert_told_protocol_error(records: &[Record]) {
    match records {
        [Record::Welcome, Record::Close { code, reason }] => {
            assert_eq!(*code, CloseCode::PROTOCOL_ERROR);
            assert!(reason.starts_with("peer sent invalid data"), "{reason}");
        }
        other => panic!("expected a welcome then a protocol-error close, got {other:?}"),
    }
}

fn sealed(sealer: &mut Sealer, plaintext: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    sealer.seal_into(plaintext, &mut wire).unwrap();
    wire
}

#[test]
fn random_bytes_after_the_handshake_end_the_link_with_a_protocol_error() {
    smol::block_on(async {
        for seed in 0..5 {
            let mut garbage = vec![0; 70_000];
            ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut garbage);
            let (result, records) = gateway_after(garbage).await;
            assert!(
                matches!(result, Err(LinkError::Protocol(RecordError::Sealed(_)))),
                "seed {seed}: {result:?}"
            );
            assert_told_protocol_error(&records);
        }
    });
}

#[test]
fn a_chunk_with_a_bad_authentication_tag_ends_the_link() {
    smol::block_on(async {
        let (mut raw, mut sealer, opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let mut plain = Vec::new();
        encode_frame_record(&Frame::new(1, heartbeat(1)), &mut plain).unwrap();
        let mut wire = sealed(&mut sealer, &plain);
        *wire.last_mut().unwrap() ^= 0x80;
        raw.write_all(&wire).await.unwrap();
        raw.close().await.unwrap();
        let result = driver.await;
        assert!(matches!(
            result,
            Err(LinkError::Protocol(RecordError::Sealed(
                SealError::Unauthentic { index: 0 }
            )))
        ));
        assert_eq!(
            gateway.link.closed().unwrap().code,
            CloseCode::PROTOCOL_ERROR
        );
        // The forged frame was not delivered.
        assert_eq!(gateway.inbound.recv().await, None);
        assert_told_protocol_error(&records_sent_to(raw, opener).await);
    });
}

#[test]
fn a_frame_with_an_unknown_message_tag_ends_the_link() {
    smol::block_on(async {
        let (mut raw, mut sealer, opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let mut plain = Vec::new();
        encode_frame_record(&Frame::new(1, heartbeat(1)), &mut plain).unwrap();
        plain[8] = 0x7f; // the message tag: no message kind has it
        raw.write_all(&sealed(&mut sealer, &plain)).await.unwrap();
        raw.close().await.unwrap();
        assert!(matches!(
            driver.await,
            Err(LinkError::Protocol(RecordError::Wire(_)))
        ));
        assert_told_protocol_error(&records_sent_to(raw, opener).await);
    });
}

#[test]
fn a_truncated_frame_ends_the_link_with_an_error() {
    smol::block_on(async {
        // A record whose length matches its body, but the core frame inside is cut short.
        let (mut raw, mut sealer, _opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let mut full = Vec::new();
        encode_frame_record(&Frame::new(3, nostr(3, "[\"EVENT\",{}]")), &mut full).unwrap();
        let body = &full[5..full.len() - 4];
        let mut plain = vec![KIND_FRAME];
        plain.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        plain.extend_from_slice(body);
        raw.write_all(&sealed(&mut sealer, &plain)).await.unwrap();
        assert!(matches!(
            driver.await,
            Err(LinkError::Protocol(RecordError::Wire(_)))
        ));

        // The stream ends inside a record: a lost connection, not a clean close.
        let (mut raw, mut sealer, _opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let cut = &full[..full.len() - 4];
        raw.write_all(&sealed(&mut sealer, cut)).await.unwrap();
        raw.close().await.unwrap();
        assert!(matches!(driver.await, Err(LinkError::ConnectionLost)));
        assert_eq!(
            gateway.link.closed().unwrap().code,
            CloseCode::CONNECTION_LOST
        );

        // The stream ends inside a sealed chunk.
        let (mut raw, mut sealer, _opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let wire = sealed(&mut sealer, &full);
        raw.write_all(&wire[..wire.len() / 2]).await.unwrap();
        raw.close().await.unwrap();
        assert!(matches!(driver.await, Err(LinkError::ConnectionLost)));
    });
}

#[test]
fn a_second_welcome_after_the_handshake_ends_the_link() {
    smol::block_on(async {
        let (mut raw, mut sealer, _opener, gateway) = raw_worker_and_gateway().await;
        let driver = smol::spawn(gateway.driver.run());
        let mut plain = Vec::new();
        encode_welcome_record(&mut plain);
        raw.write_all(&sealed(&mut sealer, &plain)).await.unwrap();
        assert!(matches!(
            driver.await,
            Err(LinkError::UnexpectedRecord { kind: "welcome" })
        ));
    });
}

#[test]
fn garbage_from_a_gateway_after_its_welcome_ends_the_workers_link() {
    smol::block_on(async {
        let (worker_end, mut raw_gateway) = smol_tcp_pair().await;
        let gateway_side = async {
            let session = respond(&mut raw_gateway, &gateway_identity())
                .await
                .unwrap();
            let (_, mut sealer, _) = session.into_parts();
            let mut plain = Vec::new();
            encode_welcome_record(&mut plain);
            let mut wire = sealed(&mut sealer, &plain);
            let mut garbage = vec![0; 70_000];
            ChaCha8Rng::seed_from_u64(99).fill_bytes(&mut garbage);
            wire.extend_from_slice(&garbage);
            raw_gateway.write_all(&wire).await.unwrap();
        };
        let (worker, ()) = future::zip(
            connect(
                worker_end,
                &worker_identity(),
                gateway_identity().peer_id(),
                &test_config(),
                smol_timer,
            ),
            gateway_side,
        )
        .await;
        // The garbage arrived with the welcome; it is the driver's to refuse, not connect's.
        let worker = worker.unwrap();
        assert!(matches!(
            worker.driver.run().await,
            Err(LinkError::Protocol(RecordError::Sealed(_)))
        ));
        assert_eq!(
            worker.link.closed().unwrap().code,
            CloseCode::PROTOCOL_ERROR
        );
    });
}
