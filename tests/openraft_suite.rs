//! openraft's own storage test suite (`openraft::testing::Suite::test_all`) against
//! `MmapLogStore`, each test on a fresh log in its own temporary directory.
#![cfg(feature = "openraft")]

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raft_mmap_log::openraft::{KvConfig, KvStateMachine, MmapLogStore};
use raft_mmap_log::Config;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<KvConfig, MmapLogStore<KvConfig>, KvStateMachine, TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(TempDir, MmapLogStore<KvConfig>, KvStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            segment_size: 1 << 20,
            ..Config::default()
        };
        let log = MmapLogStore::open(dir.path(), config).expect("open log");
        Ok((dir, log, KvStateMachine::new()))
    }
}

/// Runs all 35 tests of openraft 0.9.25's `Suite::test_store` (32 on a log + state machine
/// pair, 2 state-machine `apply` tests, `transfer_snapshot`). The suite builds its own tokio
/// runtime per test, so this is a plain `#[test]`.
#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(Builder) {
        panic!("openraft storage suite failed: {e}");
    }
}
