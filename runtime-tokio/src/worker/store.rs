//! [`WorkerStore`]: the relay logs behind the local server's [`RelayHost`](hypergate_adapters::relay::RelayHost), with one owner.
//!
//! Contract:
//! - Without a gateway the server owns each relay's [`RelayLogs`] itself ([`WorkerStore::Own`]).
//! - With a gateway the worker agent owns them ([`WorkerStore::Agent`]): every read the host
//!   makes and every append of a locally published event goes through the agent's handle, under
//!   the agent's lock on its relays. An append made this way wakes the agent, which advertises
//!   the new length to the gateway, so the mirror pulls it.
//! - The server never holds a second `RelayLogs` of a relay the agent hosts: two owners would
//!   hold two in-memory hypercore states of one log on disk, and an append by one would be
//!   invisible to (and could be overwritten by) the other.
//!
//! Lock order: a connection holds its `RelayHost` lock, then the agent's relays lock for the
//! duration of one read or append. The agent never takes a `RelayHost` lock, so the order
//! cannot invert.

use hypergate_adapters::relay::{BlockSource, RelayLogs, RelayLogsError, RelayStore};
use hypergate_core::ids::RelayKey;
use hypergate_core::nostr::Event;
use hypergate_core::relay::WriterKey;

use crate::worker_agent::{AgentError, WorkerAgentHandle};

/// Where a served relay's logs live. See the module docs.
#[derive(Debug)]
pub enum WorkerStore {
    /// The server owns the logs (no gateway configured). Boxed: a `RelayLogs` is large and a
    /// store is made once per relay.
    Own(Box<RelayLogs>),
    /// The worker agent owns the logs.
    Agent {
        /// The agent.
        handle: WorkerAgentHandle,
        /// The relay.
        relay: RelayKey,
    },
}

impl BlockSource for WorkerStore {
    type Error = AgentError;

    async fn held_len(&mut self, key: &WriterKey) -> Result<Option<u64>, AgentError> {
        match self {
            WorkerStore::Own(logs) => logs.held_len(key).await.map_err(log_error),
            WorkerStore::Agent { handle, relay } => handle
                .with_relay(*relay, async |logs| logs.held_len(key).await)
                .await?
                .map_err(log_error),
        }
    }

    async fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> Result<Option<Vec<u8>>, AgentError> {
        match self {
            WorkerStore::Own(logs) => logs.read_block(key, index).await.map_err(log_error),
            WorkerStore::Agent { handle, relay } => handle
                .with_relay(*relay, async |logs| logs.read_block(key, index).await)
                .await?
                .map_err(log_error),
        }
    }
}

impl RelayStore for WorkerStore {
    type WriteError = AgentError;

    async fn append_events(
        &mut self,
        writer: &WriterKey,
        events: &[Event],
    ) -> Result<(), AgentError> {
        match self {
            WorkerStore::Own(logs) => logs
                .append_events(writer, events)
                .await
                .map(|_first| ())
                .map_err(AgentError::Relay),
            // The agent appends to the worker's own writer (the host's writer is that one:
            // both read `localWriter` from the relay's keys file).
            WorkerStore::Agent { handle, relay } => {
                handle.append_events(*relay, events).await.map(|_first| ())
            }
        }
    }
}

fn log_error(error: hypergate_adapters::log::LogError) -> AgentError {
    AgentError::Relay(RelayLogsError::from(error))
}
