//! The runtime-neutral storage adapters run inside a glommio executor: hypercore
//! 0.16 on its `async-std` storage feature does its file I/O on async-std's
//! blocking pool, so it needs no tokio context (with the `tokio` feature it
//! panics outside a tokio runtime). This is the proof the design relies on for
//! the thread-per-core gateway.

#![allow(clippy::unwrap_used)] // Test code inside the executor closure.

use hypergate_adapters::log::HyperLog;
use hypergate_glommio::executor;

#[test]
fn a_log_appends_replicates_and_reopens_inside_a_glommio_executor() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (read_back, replica_len) = executor::start("storage-test", 1, move || async move {
        let mut origin = HyperLog::create(&root.join("origin"), None).await.unwrap();
        origin
            .append_batch(&[b"one".as_slice(), b"two", b"three"])
            .await
            .unwrap();
        let mut replica = HyperLog::create_replica(&root.join("replica"), origin.public_key())
            .await
            .unwrap();
        let proofs = origin.export_range(0, 0..3).await.unwrap();
        replica.apply_proofs(&proofs).await.unwrap();
        drop(replica);
        let mut reopened = HyperLog::open(&root.join("replica")).await.unwrap();
        let block = reopened.get(2).await.unwrap().unwrap();
        (block, reopened.contiguous_len())
    })
    .unwrap();
    assert_eq!(read_back, b"three");
    assert_eq!(replica_len, 3);
}
