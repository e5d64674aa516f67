//! The peer link over real loopback TCP on smol: requests, unsolicited frames, 1,000
//! concurrent requests, close reasons, and closing when every handle is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use hypergate_adapters::peer_link::{CloseCode, ClosedBy};
use peer_link_support::*;

fn spawn_on_smol(future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
    smol::spawn(future).detach();
}

#[test]
fn requests_and_unsolicited_frames_cross_a_tcp_link_on_smol() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), smol_timer).await;
        scenario_requests_and_unsolicited_frames(worker, gateway, spawn_on_smol).await;
    });
}

#[test]
fn a_thousand_concurrent_requests_on_one_smol_link_get_their_own_answers() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), smol_timer).await;
        scenario_thousand_concurrent_requests(worker, gateway, spawn_on_smol).await;
    });
}

#[test]
fn close_reasons_arrive_on_both_sides_on_smol() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), smol_timer).await;
        scenario_close_reasons_arrive(worker, gateway, spawn_on_smol).await;
    });
}

#[test]
fn frames_queued_before_a_close_are_delivered_before_it() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), smol_timer).await;
        let worker_driver = smol::spawn(worker.driver.run());
        let gateway_driver = smol::spawn(gateway.driver.run());
        for session in 0..200 {
            worker
                .link
                .send(hypergate_core::wire::Frame::new(0, nostr(session, "[]")))
                .await
                .unwrap();
        }
        worker.link.close(CloseCode::NORMAL, "bye").await.unwrap();
        let mut sessions = Vec::new();
        while let Some(frame) = gateway.inbound.recv().await {
            if let hypergate_core::wire::Message::NostrFrame(nostr) = frame.message {
                sessions.push(nostr.session);
            }
        }
        assert_eq!(sessions, (0..200).collect::<Vec<_>>());
        let closed = gateway_driver.await.unwrap();
        assert_eq!(
            (closed.by, closed.code),
            (ClosedBy::Peer, CloseCode::NORMAL)
        );
        assert_eq!(closed.reason, "bye");
        worker_driver.await.unwrap();
    });
}

#[test]
fn dropping_every_handle_closes_the_link_normally() {
    smol::block_on(async {
        let (worker_end, gateway_end) = smol_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), smol_timer).await;
        let worker_driver = smol::spawn(worker.driver.run());
        let gateway_driver = smol::spawn(gateway.driver.run());
        let second_handle = worker.link.clone();
        drop(worker.link);
        drop(second_handle);
        let closed = gateway_driver.await.unwrap();
        assert_eq!(
            (closed.by, closed.code),
            (ClosedBy::Peer, CloseCode::NORMAL)
        );
        assert_eq!(closed.reason, "every handle of the link was dropped");
        assert_eq!(worker_driver.await.unwrap().by, ClosedBy::Local);
        assert_eq!(gateway.inbound.recv().await, None);
    });
}
