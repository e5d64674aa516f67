//! The mirror store as a [`BlockSource`]: the gateway reads a relay's view
//! straight from the verified cores it mirrors.

use hypergate_core::relay::WriterKey;

use super::{CoreKey, MirrorError, MirrorStore};
use crate::relay::BlockSource;

impl BlockSource for MirrorStore {
    type Error = MirrorError;

    async fn held_len(&mut self, key: &WriterKey) -> Result<Option<u64>, MirrorError> {
        Ok(self
            .core(&CoreKey(*key.as_bytes()))
            .map(|record| record.local_length))
    }

    async fn read_block(
        &mut self,
        key: &WriterKey,
        index: u64,
    ) -> Result<Option<Vec<u8>>, MirrorError> {
        let core = CoreKey(*key.as_bytes());
        if self.core(&core).is_none() {
            return Ok(None);
        }
        MirrorStore::read_block(self, &core, index).await
    }
}
