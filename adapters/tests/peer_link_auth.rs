//! Who may open a peer link: the worker pins the gateway's key, the gateway admits workers by
//! allow-list, and bytes that are no handshake are refused with an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use std::collections::BTreeSet;
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use hypergate_adapters::peer_link::{
    AcceptPolicy, CloseCode, HandshakeError, LinkConfig, accept, connect,
};
use peer_link_support::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

#[test]
fn a_worker_pinning_another_gateway_key_refuses_the_gateway() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let pinned = identity(9).peer_id();
        let config = test_config();
        let (worker, gateway) = future::zip(
            connect(worker_end, &worker_identity(), pinned, &config, smol_timer),
            accept(
                gateway_end,
                &gateway_identity(),
                &AcceptPolicy::Open,
                &config,
                smol_timer,
            ),
        )
        .await;
        match worker {
            Err(HandshakeError::UnexpectedRemote { expected, got }) => {
                assert_eq!(expected, pinned);
                assert_eq!(got, gateway_identity().peer_id());
            }
            other => panic!("expected UnexpectedRemote, got {other:?}"),
        }
        // The worker hung up before message 3: the gateway never learns who it was.
        assert!(
            matches!(gateway, Err(HandshakeError::Closed)),
            "{gateway:?}"
        );
    });
}

#[test]
fn a_worker_not_on_the_allow_list_is_refused_on_both_sides() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let policy = AcceptPolicy::AllowList(BTreeSet::from([identity(5).peer_id()]));
        let config = test_config();
        let (worker, gateway) = future::zip(
            connect(
                worker_end,
                &worker_identity(),
                gateway_identity().peer_id(),
                &config,
                smol_timer,
            ),
            accept(
                gateway_end,
                &gateway_identity(),
                &policy,
                &config,
                smol_timer,
            ),
        )
        .await;
        match worker {
            Err(HandshakeError::Refused { code, reason }) => {
                assert_eq!(code, CloseCode::NOT_ALLOWED);
                assert!(
                    reason.contains(&worker_identity().peer_id().to_hex()),
                    "{reason}"
                );
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        match gateway {
            Err(HandshakeError::NotAllowed { peer }) => {
                assert_eq!(peer, worker_identity().peer_id());
            }
            other => panic!("expected NotAllowed, got {other:?}"),
        }
    });
}

#[test]
fn a_worker_on_the_allow_list_is_admitted_under_its_proven_identity() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let policy = AcceptPolicy::AllowList(BTreeSet::from([
            identity(5).peer_id(),
            worker_identity().peer_id(),
        ]));
        let config = test_config();
        let (worker, gateway) = future::zip(
            connect(
                worker_end,
                &worker_identity(),
                gateway_identity().peer_id(),
                &config,
                smol_timer,
            ),
            accept(
                gateway_end,
                &gateway_identity(),
                &policy,
                &config,
                smol_timer,
            ),
        )
        .await;
        let (worker, gateway) = (worker.unwrap(), gateway.unwrap());
        assert_eq!(gateway.link.remote(), worker_identity().peer_id());
        assert_eq!(gateway.inbound.remote(), worker_identity().peer_id());
        assert_eq!(worker.link.remote(), gateway_identity().peer_id());
    });
}

/// Runs `accept` against a raw client that writes `bytes` and then waits (or hangs up).
async fn accept_raw(bytes: Vec<u8>, hang_up: bool) -> HandshakeError {
    let (mut client, gateway_end) = smol_tcp_pair().await;
    let config = test_config().with_handshake_timeout(Duration::from_secs(5));
    let client_side = async move {
        client.write_all(&bytes).await.unwrap();
        if hang_up {
            client.close().await.unwrap();
        }
        client
    };
    let (_client, result) = future::zip(
        client_side,
        accept(
            gateway_end,
            &gateway_identity(),
            &AcceptPolicy::Open,
            &config,
            smol_timer,
        ),
    )
    .await;
    result.expect_err("garbage must not complete a handshake")
}

#[test]
fn garbage_before_the_handshake_is_refused_with_an_error() {
    smol::block_on(async {
        // An HTTP client: "GE" declares an 18,245-byte message.
        let http = accept_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false).await;
        assert!(
            matches!(http, HandshakeError::MessageTooLong { len: 18245, .. }),
            "{http:?}"
        );

        // A length-prefixed message of random bytes: Noise gets the 32-byte ephemeral key, and
        // the cleartext payload is not the peer-link protocol.
        let mut framed = vec![0, 60];
        framed.extend(random_bytes(1, 60));
        let noise = accept_raw(framed, false).await;
        assert!(
            matches!(noise, HandshakeError::Malformed { .. }),
            "{noise:?}"
        );

        // Too short for an ephemeral key.
        let short = accept_raw(vec![0, 3, 1, 2, 3], false).await;
        assert!(matches!(short, HandshakeError::Noise { .. }), "{short:?}");

        // Random bytes, then the client hangs up.
        for seed in 0..20 {
            let error = accept_raw(random_bytes(seed, 700), true).await;
            assert!(error.is_peer_fault(), "seed {seed}: {error:?}");
        }

        // Nothing at all.
        let nothing = accept_raw(Vec::new(), true).await;
        assert!(matches!(nothing, HandshakeError::Closed), "{nothing:?}");
    });
}

#[test]
fn a_gateway_answering_with_garbage_is_refused_by_the_worker() {
    smol::block_on(async {
        for seed in 0..10u64 {
            let (worker_end, mut raw_gateway) = smol_tcp_pair().await;
            let reply = random_bytes(seed, 300);
            let gateway_side = async move {
                let mut first = [0u8; 2];
                raw_gateway.read_exact(&mut first).await.unwrap();
                raw_gateway.write_all(&reply).await.unwrap();
                raw_gateway.close().await.unwrap();
                raw_gateway
            };
            let (_raw, result) = future::zip(
                gateway_side,
                connect(
                    worker_end,
                    &worker_identity(),
                    gateway_identity().peer_id(),
                    &test_config(),
                    smol_timer,
                ),
            )
            .await;
            let error = result.expect_err("garbage must not complete a handshake");
            assert!(error.is_peer_fault(), "seed {seed}: {error:?}");
        }
    });
}

#[test]
fn a_silent_gateway_times_the_handshake_out() {
    smol::block_on(async {
        let (worker_end, _silent_gateway) = smol_tcp_pair().await;
        let config = LinkConfig::default().with_handshake_timeout(Duration::from_millis(200));
        let result = connect(
            worker_end,
            &worker_identity(),
            gateway_identity().peer_id(),
            &config,
            smol_timer,
        )
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::TimedOut { after }) if after == Duration::from_millis(200)
        ));
    });
}
