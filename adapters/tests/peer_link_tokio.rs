//! The same peer-link scenarios as on smol, over real loopback TCP on tokio (through
//! `tokio_util::compat`, with `tokio::time::sleep` as the link's timer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use peer_link_support::*;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

fn spawn_on_tokio(future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
    tokio::spawn(future);
}

async fn tokio_tcp_pair() -> (Compat<tokio::net::TcpStream>, Compat<tokio::net::TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(address), listener.accept());
    (client.unwrap().compat(), server.unwrap().0.compat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn requests_and_unsolicited_frames_cross_a_tcp_link_on_tokio() {
    runtime().block_on(async {
        let (worker_end, gateway_end) = tokio_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), tokio::time::sleep).await;
        scenario_requests_and_unsolicited_frames(worker, gateway, spawn_on_tokio).await;
    });
}

#[test]
fn a_thousand_concurrent_requests_on_one_tokio_link_get_their_own_answers() {
    runtime().block_on(async {
        let (worker_end, gateway_end) = tokio_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), tokio::time::sleep).await;
        scenario_thousand_concurrent_requests(worker, gateway, spawn_on_tokio).await;
    });
}

#[test]
fn close_reasons_arrive_on_both_sides_on_tokio() {
    runtime().block_on(async {
        let (worker_end, gateway_end) = tokio_tcp_pair().await;
        let (worker, gateway) =
            establish_pair(worker_end, gateway_end, &test_config(), tokio::time::sleep).await;
        scenario_close_reasons_arrive(worker, gateway, spawn_on_tokio).await;
    });
}
