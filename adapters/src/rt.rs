//! The runtime hooks of the runtime-neutral services (the gateway service, the escrow
//! client): how a background task is started, and timers.
//!
//! Contract:
//! - A [`Spawner`] is the one thing a driver hands in: tokio spawns on its runtime, glommio on
//!   the executor of the calling shard. Tasks are `Send` so that one service body serves
//!   both; a driver keeps its own non-`Send` work (a glommio socket) in its own tasks.
//! - [`Spawner::spawn_with_handle`] ties a task to its handle: dropping the handle cancels
//!   the task, so a session that ends takes its helpers with it.
//! - Timers ([`sleep`], [`timeout`]) and [`unblock`] (blocking file work) need no runtime:
//!   they use the smol-ecosystem reactor and thread pool (`async-io`, `blocking`), which run
//!   on their own threads and wake any executor's tasks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::RemoteHandle;

thread_local! {
    /// The shard this thread serves (see [`current_shard`]).
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The shard the calling thread serves: a thread-per-core driver numbers its executors'
/// threads with [`set_current_shard`]; every other thread (tokio's workers) is shard 0. State a
/// service keeps per shard is keyed by it.
#[must_use]
pub fn current_shard() -> usize {
    SHARD.with(std::cell::Cell::get)
}

/// Marks the calling thread as serving `shard` (a driver's executor thread, once at start).
pub fn set_current_shard(shard: usize) {
    SHARD.with(|current| current.set(shard));
}

/// A boxed background task.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts background tasks on the driver's runtime. Cheap to clone.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

impl Spawner {
    /// A spawner that hands each task to `spawn`.
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Self {
        Spawner(Arc::new(spawn))
    }

    /// Runs `task` in the background, detached.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task));
    }

    /// Runs `task` in the background; the handle resolves to its output, and dropping the
    /// handle cancels the task.
    pub fn spawn_with_handle<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> RemoteHandle<T> {
        let (task, handle) = task.remote_handle();
        self.spawn(task);
        handle
    }
}

/// A future did not finish within its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// Waits `duration`.
pub async fn sleep(duration: Duration) {
    async_io::Timer::after(duration).await;
}

/// Waits until `deadline`.
pub async fn sleep_until(deadline: Instant) {
    async_io::Timer::at(deadline).await;
}

/// `future`'s output, or [`Elapsed`] when it takes longer than `limit` (it is then dropped).
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    futures_lite::future::or(async { Ok(future.await) }, async {
        sleep(limit).await;
        Err(Elapsed(limit))
    })
    .await
}

/// How long a listener's bind keeps trying while its address is still in use
/// ([`bind_patiently`]).
pub const BIND_PATIENCE: Duration = Duration::from_secs(3);

/// The pause between two tries of [`bind_patiently`].
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Binds a listener with `bind`, trying again for up to `patience` while the address is in
/// use. A gateway restarted right after being killed can find its ports still held: the
/// kernel releases a killed glommio process's sockets only when its io_uring is torn down,
/// a few milliseconds after the process is gone, and a listener without `SO_REUSEPORT` (the
/// tokio gateway's, the peer-link listener) cannot bind beside one that still listens. Any
/// other error, or an address still in use after `patience`, is returned as it is.
pub async fn bind_patiently<T>(
    mut bind: impl FnMut() -> std::io::Result<T>,
    patience: Duration,
) -> std::io::Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        match bind() {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                sleep(BIND_RETRY_PAUSE).await;
            }
            result => return result,
        }
    }
}

/// Runs blocking `work` (file syncs, renames) on a thread pool, off the executor.
pub async fn unblock<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    blocking::unblock(work).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn smol_spawner() -> Spawner {
        Spawner::new(|task| smol::spawn(task).detach())
    }

    #[test]
    fn a_bind_waits_for_an_address_still_in_use_and_gives_up_after_its_patience() {
        smol::block_on(async {
            let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = held.local_addr().unwrap();
            // Released while the bind is waiting: the bind then succeeds.
            let release = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                drop(held);
            });
            let bound = bind_patiently(|| std::net::TcpListener::bind(addr), BIND_PATIENCE).await;
            release.join().unwrap();
            assert_eq!(bound.unwrap().local_addr().unwrap(), addr);
            // Never released: the error comes back once the patience is spent.
            let _held = std::net::TcpListener::bind(addr).unwrap();
            let started = Instant::now();
            let refused = bind_patiently(
                || std::net::TcpListener::bind(addr),
                Duration::from_millis(80),
            )
            .await;
            assert_eq!(refused.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
            assert!(started.elapsed() >= Duration::from_millis(80));
        });
    }

    #[test]
    fn a_dropped_handle_cancels_its_task() {
        smol::block_on(async {
            let finished = Arc::new(AtomicUsize::new(0));
            let handle = smol_spawner().spawn_with_handle({
                let finished = Arc::clone(&finished);
                async move {
                    sleep(Duration::from_millis(50)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            });
            drop(handle);
            sleep(Duration::from_millis(150)).await;
            assert_eq!(finished.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn threads_are_shard_zero_until_a_driver_numbers_them() {
        assert_eq!(current_shard(), 0);
        let numbered = std::thread::spawn(|| {
            set_current_shard(3);
            current_shard()
        });
        assert_eq!(numbered.join().ok(), Some(3));
        assert_eq!(current_shard(), 0, "other threads keep their own number");
    }

    #[test]
    fn a_handle_yields_the_task_output() {
        smol::block_on(async {
            let handle = smol_spawner().spawn_with_handle(async { 7 });
            assert_eq!(handle.await, 7);
        });
    }

    #[test]
    fn timeout_passes_a_quick_future_and_stops_a_slow_one() {
        smol::block_on(async {
            assert_eq!(timeout(Duration::from_secs(5), async { 3 }).await, Ok(3));
            let slow = timeout(Duration::from_millis(10), sleep(Duration::from_secs(60))).await;
            assert_eq!(slow, Err(Elapsed(Duration::from_millis(10))));
        });
    }
}
