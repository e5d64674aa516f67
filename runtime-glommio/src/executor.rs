//! Starting glommio executors within the host's locked-memory limit.
//!
//! glommio registers `3 × io_memory` bytes of io_uring buffers per executor,
//! all locked. Containers commonly cap `RLIMIT_MEMLOCK` at 8 MiB (this
//! project's machines do), and an executor below about 512 KiB of io memory
//! does not start. [`plan_io_memory`] picks the largest per-executor size up
//! to [`PREFERRED_IO_MEMORY`] that fits every executor under the limit, or
//! says why none does.

use std::fmt;

/// io memory per executor when the limit allows it.
pub const PREFERRED_IO_MEMORY: usize = 1 << 20;
/// Below this an executor fails to start.
pub const MIN_IO_MEMORY: usize = 512 << 10;
/// glommio locks this many io buffers of `io_memory` bytes per executor.
const LOCKED_BUFFERS_PER_EXECUTOR: usize = 3;

/// Why glommio cannot run here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The locked-memory limit is too small for the executors asked for.
    #[error(
        "RLIMIT_MEMLOCK is {limit} bytes, too small for {executors} glommio executor(s) \
         (each needs at least {needed} bytes locked); raise `ulimit -l` or run the tokio gateway"
    )]
    MemlockTooSmall {
        /// The limit in bytes.
        limit: u64,
        /// Executors requested.
        executors: usize,
        /// Locked bytes one executor needs at minimum.
        needed: usize,
    },
    /// The executor could not be created (io_uring missing, seccomp, …).
    #[error(
        "glommio executor failed to start: {0}; io_uring may be unavailable, run the tokio gateway"
    )]
    Executor(String),
}

/// The locked-memory limit of this process in bytes; `None` means unlimited.
#[must_use]
pub fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_memlock_limit(&limits)
}

fn parse_memlock_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// io memory per executor for `executors` executors under `limit`.
pub fn plan_io_memory(executors: usize, limit: Option<u64>) -> Result<usize, StartError> {
    let executors = executors.max(1);
    let Some(limit) = limit else {
        return Ok(PREFERRED_IO_MEMORY);
    };
    let per_executor =
        usize::try_from(limit).unwrap_or(usize::MAX) / executors / LOCKED_BUFFERS_PER_EXECUTOR;
    let planned = per_executor.min(PREFERRED_IO_MEMORY);
    if planned < MIN_IO_MEMORY {
        return Err(StartError::MemlockTooSmall {
            limit,
            executors,
            needed: MIN_IO_MEMORY * LOCKED_BUFFERS_PER_EXECUTOR,
        });
    }
    Ok(planned)
}

/// Runs `work` on a new glommio executor named `name`, one of `executors`
/// the caller plans to run, and waits for its result.
pub fn start<G, F, T>(name: &str, executors: usize, work: G) -> Result<T, StartError>
where
    G: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let io_memory = plan_io_memory(executors, memlock_limit())?;
    let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name(name)
        .io_memory(io_memory)
        .spawn(work)
        .map_err(|error| StartError::Executor(display(&error)))?;
    handle
        .join()
        .map_err(|error| StartError::Executor(display(&error)))
}

fn display(error: &dyn fmt::Display) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_line_of_proc_limits_is_parsed() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(parse_memlock_limit(limits), Some(8_388_608));
        let unlimited =
            "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_memlock_limit(unlimited), None);
    }

    #[test]
    fn io_memory_plan_fits_every_executor_under_the_limit() {
        let eight_mib = Some(8 << 20);
        assert_eq!(plan_io_memory(1, eight_mib).unwrap(), PREFERRED_IO_MEMORY);
        let two = plan_io_memory(2, eight_mib).unwrap();
        assert!(2 * 3 * two <= 8 << 20);
        assert!(matches!(
            plan_io_memory(8, eight_mib),
            Err(StartError::MemlockTooSmall { executors: 8, .. })
        ));
        assert_eq!(plan_io_memory(64, None).unwrap(), PREFERRED_IO_MEMORY);
    }

    #[test]
    fn an_executor_starts_within_this_hosts_memlock_limit() {
        let answer = start("hypergate-test", 2, || async { 6 * 7 }).unwrap();
        assert_eq!(answer, 42);
    }
}
