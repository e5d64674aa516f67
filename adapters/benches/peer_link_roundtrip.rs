//! Round trips per second on one authenticated peer link over loopback TCP (a benchmark, not a
//! test; figures go to docs/benchmarks.md).
//!
//! `cargo bench -p hypergate-adapters --bench peer_link_roundtrip`
//!
//! A gateway and a worker on smol, one TCP connection, after a real handshake. The gateway
//! answers every `Heartbeat` request with a `HeartbeatAck` (what the gateway core does). Two
//! loads: one request at a time (latency-bound), and 64 concurrent requesters (the link batches
//! what is queued into shared chunks and writes). Each load runs `RUNS` times; the median is
//! printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures_lite::future;
use hypergate_adapters::crypto::Identity;
use hypergate_adapters::peer_link::{AcceptPolicy, LinkConfig, PeerLink, accept, connect};
use hypergate_core::time::UnixTime;
use hypergate_core::wire::{Frame, Heartbeat, Message};
use smol::net::{TcpListener, TcpStream};

const SEQUENTIAL: u64 = 20_000;
const CONCURRENT_TASKS: u64 = 64;
const PER_TASK: u64 = 2_000;
const RUNS: usize = 5;

async fn timer(duration: Duration) {
    smol::Timer::after(duration).await;
}

fn ping(seq: u64) -> Message {
    Message::Heartbeat(Heartbeat {
        seq,
        sent_at: UnixTime(seq),
    })
}

async fn link_pair() -> PeerLink {
    let gateway = Identity::from_signing_key(SigningKey::from_bytes(&[1; 32]));
    let worker = Identity::from_signing_key(SigningKey::from_bytes(&[2; 32]));
    let gateway_id = gateway.peer_id();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    smol::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let up = accept(
            stream,
            &gateway,
            &AcceptPolicy::Open,
            &LinkConfig::default(),
            timer,
        )
        .await
        .unwrap();
        smol::spawn(up.driver.run()).detach();
        while let Some(frame) = up.inbound.recv().await {
            if let Message::Heartbeat(beat) = frame.message {
                let ack = Frame::new(frame.request_id, Message::HeartbeatAck(beat));
                up.link.send(ack).await.unwrap();
            }
        }
    })
    .detach();
    let stream = TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let up = connect(stream, &worker, gateway_id, &LinkConfig::default(), timer)
        .await
        .unwrap();
    smol::spawn(up.driver.run()).detach();
    up.link
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    smol::block_on(async {
        let link = link_pair().await;
        let mut sequential = Vec::new();
        let mut concurrent = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            for seq in 0..SEQUENTIAL {
                link.request(ping(seq)).await.unwrap();
            }
            sequential.push(SEQUENTIAL as f64 / start.elapsed().as_secs_f64());

            let start = Instant::now();
            let tasks: Vec<_> = (0..CONCURRENT_TASKS)
                .map(|task| {
                    let link = link.clone();
                    smol::spawn(async move {
                        for seq in 0..PER_TASK {
                            link.request(ping(task * PER_TASK + seq)).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            let total = CONCURRENT_TASKS * PER_TASK;
            concurrent.push(total as f64 / start.elapsed().as_secs_f64());
        }
        println!(
            "one request at a time: {:>9.0} round trips/s (median of {RUNS} × {SEQUENTIAL})",
            median(sequential)
        );
        println!(
            "{CONCURRENT_TASKS} concurrent requesters: {:>9.0} round trips/s (median of {RUNS} × {})",
            median(concurrent),
            CONCURRENT_TASKS * PER_TASK
        );
        future::yield_now().await;
    });
}
