//! The worker's reconnect loop over real TCP: it keeps dialling with backoff until a gateway
//! listens, then completes the authenticated handshake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod peer_link_support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hypergate_adapters::peer_link::{
    AcceptPolicy, Backoff, BackoffConfig, HandshakeError, accept, connect, connect_with_backoff,
};
use peer_link_support::*;
use smol::net::{TcpListener, TcpStream};

#[derive(Debug)]
enum DialError {
    Tcp(std::io::Error),
    Handshake(HandshakeError),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(error) => write!(f, "tcp: {error}"),
            Self::Handshake(error) => write!(f, "handshake: {error}"),
        }
    }
}

#[test]
fn the_worker_redials_with_backoff_until_the_gateway_listens() {
    smol::block_on(async {
        // A port nobody listens on yet: bind, note it, close.
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let attempts = AtomicU32::new(0);
        let config = BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            jitter_permille: 200,
            max_attempts: Some(50),
        };
        let mut backoff = Backoff::new(config, 42);

        let dial = || {
            let attempts = &attempts;
            async move {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                if attempt == 3 {
                    // The gateway comes up while the worker waits between attempts.
                    let listener = TcpListener::bind(address).await.unwrap();
                    smol::spawn(async move {
                        let (stream, _) = listener.accept().await.unwrap();
                        let up = accept(
                            stream,
                            &gateway_identity(),
                            &AcceptPolicy::Open,
                            &test_config(),
                            smol_timer,
                        )
                        .await
                        .unwrap();
                        up.driver.run().await.ok();
                    })
                    .detach();
                }
                let stream = TcpStream::connect(address).await.map_err(DialError::Tcp)?;
                connect(
                    stream,
                    &worker_identity(),
                    gateway_identity().peer_id(),
                    &test_config(),
                    smol_timer,
                )
                .await
                .map_err(DialError::Handshake)
            }
        };
        let up = connect_with_backoff(dial, &mut backoff, &smol_timer)
            .await
            .unwrap();
        assert_eq!(up.link.remote(), gateway_identity().peer_id());
        assert_eq!(attempts.load(Ordering::Relaxed), 3);
        assert_eq!(backoff.failures(), 2);
    });
}

#[test]
fn the_worker_gives_up_after_the_configured_attempts_with_the_last_error() {
    smol::block_on(async {
        let address = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut backoff = Backoff::new(
            BackoffConfig {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                jitter_permille: 200,
                max_attempts: Some(3),
            },
            1,
        );
        let gave_up = connect_with_backoff(
            || async move { TcpStream::connect(address).await },
            &mut backoff,
            &smol_timer,
        )
        .await
        .unwrap_err();
        assert_eq!(gave_up.attempts, 3);
        assert_eq!(gave_up.last.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(
            gave_up
                .to_string()
                .starts_with("gave up after 3 failed attempts")
        );
    });
}
