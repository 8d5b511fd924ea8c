//! openraft's own storage test suite (`openraft::testing::Suite::test_all`) against
//! `MmapLogStore`, each test on a fresh log in its own temporary directory: once on a log of
//! its own, once on one group of a shared log that other groups write to meanwhile.
#![cfg(feature = "openraft")]

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raft_mmap_log::groups::{Group, Groups};
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

/// Builds the store of group [`TESTED`] of a shared log whose groups `TESTED - 1` and
/// `TESTED + 1` hold entries, one of which a thread keeps appending to while the suite runs.
struct GroupBuilder;

const TESTED: u64 = 5;

impl StoreBuilder<KvConfig, MmapLogStore<KvConfig, Group>, KvStateMachine, TempDir>
    for GroupBuilder
{
    async fn build(
        &self,
    ) -> Result<(TempDir, MmapLogStore<KvConfig, Group>, KvStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            segment_size: 1 << 20,
            ..Config::default()
        };
        let log = Groups::open(dir.path(), config).expect("open the shared log");
        log.group(TESTED - 1)
            .append_batch((0..100).map(|i| (i, &b"before"[..])))
            .expect("append to another group");
        let busy = log.group(TESTED + 1);
        // 2000 appends (fewer if one fails) over about a fifth of a second: its records and
        // flushes interleave with the tested group's.
        std::thread::spawn(move || {
            for i in 0..2000 {
                if busy.append(i, b"meanwhile").is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        });
        let store = MmapLogStore::for_group(log.group(TESTED)).expect("open the group");
        Ok((dir, store, KvStateMachine::new()))
    }
}

/// The same 35 tests on one group of a shared log.
#[test]
fn openraft_storage_suite_on_a_group() {
    if let Err(e) = Suite::test_all(GroupBuilder) {
        panic!("openraft storage suite failed on a group: {e}");
    }
}
