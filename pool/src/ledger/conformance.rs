//! The ledger conformance suite: what every backend must do, written once.
//!
//! Each backend's tests module runs every function here through
//! [`conformance_tests!`](crate::conformance_tests) with a [`Fixture`] of its own: a fresh,
//! empty ledger per test, and the backend-specific ways to break it.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;

use super::error_chain;
use super::history::{HistoryRow, Scope, MINUTES_KEPT_MS, MINUTE_MS};
use super::*;

/// One test's ledger: a fresh, empty database of one backend.
#[async_trait::async_trait]
pub(super) trait Fixture: Send + Sync {
    /// Where the test's database is.
    fn database(&self) -> &Database;

    /// Opens (or reopens) the test's ledger.
    async fn open(&self, options: LedgerOptions) -> Arc<dyn Ledger> {
        open(self.database(), options).await.unwrap()
    }

    /// Makes any transaction that inserts a share with `time_ms` -42 fail (`on`), or stops
    /// doing so, from a connection of its own.
    async fn inject_failure(&self, on: bool);

    /// The schema version the database records.
    async fn schema_version(&self) -> i64;

    /// Overwrites the schema version the database records, as a newer build would.
    async fn set_schema_version(&self, version: i64);
}

/// Runs every conformance test as a test of the calling module, each with a fresh fixture
/// from `$fixture` (an async expression yielding `Option<impl Fixture>`; `None` skips).
#[macro_export]
#[doc(hidden)]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@each $fixture;
            shares_survive_reopen_with_exact_totals_and_rows,
            concurrent_shares_are_all_acknowledged_and_counted,
            rejects_are_counted_per_kind,
            a_reject_alone_wakes_the_writer,
            blocks_round_trip_newest_first,
            chain_blocks_come_back_in_height_order,
            migrations_are_idempotent_on_reopen,
            a_newer_schema_is_refused,
            close_flushes_and_then_refuses_writes,
            invalid_share_numbers_are_refused_before_queueing,
            a_failed_commit_fails_every_waiter_of_its_batch_and_acks_nothing_false,
            expired_shares_are_pruned_but_totals_kept,
            old_minutes_roll_up_into_hours,
            an_accepted_block_starts_every_best_share_over,
            pplns_windows_are_read_newest_first_and_kept_from_pruning,
            payouts_move_owed_balances_while_their_block_is_accepted,
            bound_addresses_are_replaced_and_removed_and_survive_reopen
        );

        /// A `kill -9` in the middle of a share stream loses no acknowledged share.
        #[test]
        fn kill_9_loses_no_acknowledged_share() {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            if $crate::ledger::conformance::crash_child_if_asked(&runtime) {
                return;
            }
            let Some(fixture) = runtime.block_on($fixture) else {
                return;
            };
            let test = concat!(module_path!(), "::kill_9_loses_no_acknowledged_share");
            runtime.block_on($crate::ledger::conformance::kill_9_loses_no_acknowledged_share(
                &fixture, test,
            ));
        }
    };
    (@each $fixture:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(fixture) = $fixture.await {
                    $crate::ledger::conformance::$name(&fixture).await;
                }
            }
        )*
    };
}

fn share(worker: &str, difficulty: f64, hash_difficulty: f64, time_ms: i64) -> AcceptedShare {
    AcceptedShare {
        worker: Arc::from(worker),
        difficulty,
        hash_difficulty,
        time_ms,
    }
}

fn block(byte: u8, height: u64, time_ms: i64) -> FoundBlock {
    FoundBlock {
        height,
        hash: BlockHash::from_byte_array([byte; 32]),
        worker: format!("acct.rig{byte}"),
        time_ms,
        raw: vec![byte; 80 + usize::from(byte)],
        status: "accepted".into(),
        node: byte.is_multiple_of(2).then_some(byte),
        payouts: Vec::new(),
    }
}

/// Options keeping every share: the tests' made-up times are decades past any retention.
fn keep_all() -> LedgerOptions {
    LedgerOptions {
        share_retention: Duration::MAX,
        ..LedgerOptions::default()
    }
}

pub(super) async fn shares_survive_reopen_with_exact_totals_and_rows(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    store
        .record_share(share("alice.rig1", 1.0, 3.5, 1_000))
        .await
        .unwrap();
    store
        .record_share(share("alice.rig1", 2.0, 1.5, 1_001))
        .await
        .unwrap();
    store
        .record_share(share("bob.x", 4.0, 100.0, 1_002))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = fixture.open(keep_all()).await;
    assert_eq!(
        store.worker_totals().await.unwrap(),
        vec![
            WorkerTotals {
                worker: "alice.rig1".into(),
                accepted: 2,
                accepted_difficulty: 3.0,
                rejected: [0; 5],
                best_share_difficulty: 3.5,
                best_share_since_block: 3.5,
                last_share_ms: Some(1_001),
            },
            WorkerTotals {
                worker: "bob.x".into(),
                accepted: 1,
                accepted_difficulty: 4.0,
                rejected: [0; 5],
                best_share_difficulty: 100.0,
                best_share_since_block: 100.0,
                last_share_ms: Some(1_002),
            },
        ]
    );
    assert_eq!(
        store.shares_since(0).await.unwrap(),
        vec![
            ("alice.rig1".to_string(), 1_000, 1.0),
            ("alice.rig1".to_string(), 1_001, 2.0),
            ("bob.x".to_string(), 1_002, 4.0),
        ]
    );
    assert_eq!(
        store.shares_since(1_001).await.unwrap(),
        vec![
            ("alice.rig1".to_string(), 1_001, 2.0),
            ("bob.x".to_string(), 1_002, 4.0),
        ]
    );
    // Later shares add to the restored totals.
    store
        .record_share(share("bob.x", 4.0, 2.0, 999))
        .await
        .unwrap();
    let bob = store.worker_totals().await.unwrap().remove(1);
    assert_eq!(
        (
            bob.accepted,
            bob.accepted_difficulty,
            bob.best_share_difficulty,
            bob.last_share_ms
        ),
        (2, 8.0, 100.0, Some(1_002))
    );
}

/// The best share since the last block: an accepted block starts it over for every worker
/// (the block's own share, committed before it, counts before it); a refused block does
/// not; the best ever is kept; reopening keeps both.
pub(super) async fn an_accepted_block_starts_every_best_share_over(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    let best = |totals: &[WorkerTotals]| -> Vec<(f64, f64)> {
        totals
            .iter()
            .map(|t| (t.best_share_since_block, t.best_share_difficulty))
            .collect()
    };
    store
        .record_share(share("alice.rig", 1.0, 50.0, 1_000))
        .await
        .unwrap();
    store
        .record_share(share("bob.rig", 1.0, 7.0, 1_001))
        .await
        .unwrap();
    let mut refused = block(1, 10, 1_002);
    refused.status = "rejected:high-hash".into();
    store.record_block(refused).await.unwrap();
    assert_eq!(
        best(&store.worker_totals().await.unwrap()),
        vec![(50.0, 50.0), (7.0, 7.0)]
    );
    // The block's share and the block in one batch: the share counts before the block.
    let (found, recorded) = tokio::join!(
        store.record_share(share("alice.rig", 1.0, 900.0, 1_003)),
        store.record_block(block(2, 11, 1_003))
    );
    found.unwrap();
    recorded.unwrap();
    assert_eq!(
        best(&store.worker_totals().await.unwrap()),
        vec![(0.0, 900.0), (0.0, 7.0)]
    );
    store
        .record_share(share("bob.rig", 1.0, 3.0, 1_004))
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);
    let store = fixture.open(keep_all()).await;
    assert_eq!(
        best(&store.worker_totals().await.unwrap()),
        vec![(0.0, 900.0), (3.0, 7.0)]
    );
}

pub(super) async fn concurrent_shares_are_all_acknowledged_and_counted(fixture: &dyn Fixture) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    // A small queue and batch cap, so senders hit backpressure and batches split.
    let options = LedgerOptions {
        queue_capacity: 8,
        max_batch: 16,
        ..keep_all()
    };
    let store = fixture.open(options).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let worker: Arc<str> = Arc::from(format!("acct.w{}", task % 8));
                for i in 0..PER_TASK {
                    let time_ms = (task * PER_TASK + i) as i64;
                    store
                        .record_share(AcceptedShare {
                            worker: worker.clone(),
                            difficulty: 1.0,
                            hash_difficulty: time_ms as f64,
                            time_ms,
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let stats = store.stats();
    assert_eq!(stats.shares_committed, (TASKS * PER_TASK) as u64);
    assert!(stats.commits >= (TASKS * PER_TASK / 16) as u64, "{stats:?}");
    assert_eq!(stats.failed_commits, 0);
    let totals = store.worker_totals().await.unwrap();
    assert_eq!(totals.len(), 8);
    for (w, totals) in totals.iter().enumerate() {
        assert_eq!(totals.worker, format!("acct.w{w}"));
        assert_eq!(totals.accepted, (TASKS / 8 * PER_TASK) as u64);
        assert_eq!(totals.accepted_difficulty, (TASKS / 8 * PER_TASK) as f64);
        // Task `56 + w` is the last of worker `w`; its last share has the highest time.
        let last = ((56 + w) * PER_TASK + PER_TASK - 1) as i64;
        assert_eq!(totals.last_share_ms, Some(last));
        assert_eq!(totals.best_share_difficulty, last as f64);
    }
    let times: BTreeSet<i64> = store
        .shares_since(i64::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, time_ms, _)| time_ms)
        .collect();
    let expected: BTreeSet<i64> = (0..(TASKS * PER_TASK) as i64).collect();
    let missing: Vec<_> = expected.difference(&times).take(20).collect();
    assert!(
        missing.is_empty() && times.len() == expected.len(),
        "missing {missing:?}"
    );
    store.close().await.unwrap();
}

pub(super) async fn rejects_are_counted_per_kind(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    store
        .record_share(share("a.1", 1.0, 1.0, 50))
        .await
        .unwrap();
    for (i, kind) in RejectKind::ALL.into_iter().enumerate() {
        for _ in 0..=i {
            store.record_reject("a.1", kind, 40);
        }
    }
    store.record_reject("b.only_rejects", RejectKind::Stale, 70);
    store.record_reject("b.only_rejects", RejectKind::Stale, 60);
    // A later share's commit also commits the rejects counted before it.
    store
        .record_share(share("c.1", 1.0, 1.0, 10))
        .await
        .unwrap();
    let totals = store.worker_totals().await.unwrap();
    assert_eq!(totals[0].worker, "a.1");
    assert_eq!(totals[0].rejected, [1, 2, 3, 4, 5]);
    assert_eq!(totals[0].accepted, 1);
    assert_eq!(totals[0].last_share_ms, Some(50));
    assert_eq!(
        totals[1],
        WorkerTotals {
            worker: "b.only_rejects".into(),
            rejected: [2, 0, 0, 0, 0],
            last_share_ms: Some(70),
            ..WorkerTotals::default()
        }
    );
    assert_eq!(
        RejectKind::ALL.map(RejectKind::as_str),
        [
            "stale",
            "duplicate",
            "low_difficulty",
            "malformed",
            "unauthorized"
        ]
    );
    for (i, kind) in RejectKind::ALL.into_iter().enumerate() {
        assert_eq!(kind as usize, i);
    }
}

pub(super) async fn a_reject_alone_wakes_the_writer(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    store.record_reject("a.1", RejectKind::Duplicate, 5);
    store.record_reject("a.1", RejectKind::Duplicate, 6);
    // No other write follows: the writer must commit on its own. The timeout only turns
    // a missing wake-up into a failure instead of a hang.
    // (The writer may take the first reject before the second is counted: two commits.)
    let totals = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let totals = store.worker_totals().await.unwrap();
            if totals.first().is_some_and(|t| t.rejected[1] == 2) {
                return totals;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the rejects were never committed");
    assert!(
        (1..=2).contains(&store.stats().commits),
        "{:?}",
        store.stats()
    );
    assert_eq!(totals[0].rejected, [0, 2, 0, 0, 0]);
    assert_eq!(totals[0].last_share_ms, Some(6));
}

pub(super) async fn blocks_round_trip_newest_first(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    let (first, second, third) = (block(1, 100, 10), block(2, 102, 30), block(3, 101, 20));
    for found in [&first, &second, &third] {
        store.record_block(found.clone()).await.unwrap();
    }
    assert_eq!(
        store.blocks(10).await.unwrap(),
        vec![second.clone(), third.clone(), first.clone()]
    );
    assert_eq!(
        store.blocks(2).await.unwrap(),
        vec![second.clone(), third.clone()]
    );
    assert_eq!(store.blocks(0).await.unwrap(), vec![]);

    store
        .set_block_status(first.hash, "orphaned")
        .await
        .unwrap();
    let unknown = BlockHash::from_byte_array([9; 32]);
    assert!(matches!(
        store.set_block_status(unknown, "orphaned").await,
        Err(LedgerError::UnknownBlock { hash }) if hash == unknown
    ));
    assert!(matches!(
        store.record_block(block(4, u64::MAX, 40)).await,
        Err(LedgerError::HeightOutOfRange { height: u64::MAX })
    ));
    store.close().await.unwrap();
    drop(store);

    let store = fixture.open(keep_all()).await;
    let orphaned = FoundBlock {
        status: "orphaned".into(),
        ..first
    };
    assert_eq!(
        store.blocks(usize::MAX).await.unwrap(),
        vec![second, third, orphaned]
    );
}

pub(super) async fn chain_blocks_come_back_in_height_order(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    assert!(store.chain_blocks(0).await.unwrap().is_empty());
    assert!(matches!(
        store.append_chain_block(1, vec![1]).await,
        Err(LedgerError::ChainGap { height: 1, next: 0 })
    ));
    for height in 0..3u8 {
        store
            .append_chain_block(u64::from(height), vec![height; 3])
            .await
            .unwrap();
    }
    // Replaying a stored block is a no-op; replacing one is refused.
    store.append_chain_block(1, vec![1; 3]).await.unwrap();
    assert!(matches!(
        store.append_chain_block(1, vec![7]).await,
        Err(LedgerError::ChainConflict { height: 1 })
    ));
    assert!(matches!(
        store.append_chain_block(u64::MAX, vec![7]).await,
        Err(LedgerError::ChainGap { .. })
    ));
    store.close().await.unwrap();
    drop(store);

    let store = fixture.open(keep_all()).await;
    assert!(matches!(
        store.append_chain_block(4, vec![4]).await,
        Err(LedgerError::ChainGap { height: 4, next: 3 })
    ));
    store.append_chain_block(3, vec![3; 3]).await.unwrap();
    assert_eq!(
        store.chain_blocks(0).await.unwrap(),
        vec![vec![0; 3], vec![1; 3], vec![2; 3], vec![3; 3]]
    );
    assert_eq!(
        store.chain_blocks(2).await.unwrap(),
        vec![vec![2; 3], vec![3; 3]]
    );
    assert!(store.chain_blocks(4).await.unwrap().is_empty());
}

pub(super) async fn migrations_are_idempotent_on_reopen(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    let newest = fixture.schema_version().await;
    assert!(newest >= 1, "schema version {newest}");
    store.record_share(share("a.1", 1.0, 1.0, 1)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    for _ in 0..2 {
        let store = fixture.open(keep_all()).await;
        assert_eq!(fixture.schema_version().await, newest);
        assert_eq!(store.worker_totals().await.unwrap()[0].accepted, 1);
        store.close().await.unwrap();
    }
}

pub(super) async fn a_newer_schema_is_refused(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    let supported = fixture.schema_version().await;
    store.record_share(share("a.1", 1.0, 1.0, 1)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    fixture.set_schema_version(99).await;
    let error = open(fixture.database(), keep_all()).await.unwrap_err();
    assert!(
        matches!(error, LedgerError::SchemaTooNew { found: 99, supported: s, .. } if s as i64 == supported),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade this node"), "{error}");
    // Refusing touched nothing: back at the known version, the data is all there.
    fixture.set_schema_version(supported).await;
    let store = fixture.open(keep_all()).await;
    assert_eq!(store.worker_totals().await.unwrap()[0].accepted, 1);
    store.close().await.unwrap();
}

pub(super) async fn close_flushes_and_then_refuses_writes(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    // Queued but not awaited when close starts.
    let pending: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.record_share(share("a.1", 1.0, 1.0, i)).await })
        })
        .collect();
    for _ in 0..7 {
        store.record_reject("a.1", RejectKind::Malformed, 0);
    }
    store.close().await.unwrap();
    let mut acked = 0;
    for task in pending {
        match task.await.unwrap() {
            Ok(()) => acked += 1,
            Err(LedgerError::Closed { .. }) => {}
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    // Reads still work after close and show everything acknowledged.
    let totals = store.worker_totals().await.unwrap();
    assert_eq!(totals[0].rejected, [0, 0, 0, 7, 0]);
    assert_eq!(totals[0].accepted, acked);
    assert_eq!(
        store.shares_since(i64::MIN).await.unwrap().len() as u64,
        acked
    );

    assert!(matches!(
        store.record_share(share("a.1", 1.0, 1.0, 1)).await,
        Err(LedgerError::Closed { .. })
    ));
    assert!(matches!(
        store.append_chain_block(0, vec![]).await,
        Err(LedgerError::Closed { .. })
    ));
    store.record_reject("a.1", RejectKind::Stale, 1);
    store.close().await.unwrap();
    drop(store);
    let store = fixture.open(keep_all()).await;
    assert_eq!(
        store.worker_totals().await.unwrap()[0].rejected,
        [0, 0, 0, 7, 0]
    );
}

pub(super) async fn invalid_share_numbers_are_refused_before_queueing(fixture: &dyn Fixture) {
    let store = fixture.open(keep_all()).await;
    for (difficulty, hash_difficulty) in [
        (f64::NAN, 1.0),
        (1.0, f64::NAN),
        (f64::INFINITY, 1.0),
        (-1.0, 1.0),
        (1.0, f64::NEG_INFINITY),
    ] {
        assert!(matches!(
            store
                .record_share(share("a.1", difficulty, hash_difficulty, 1))
                .await,
            Err(LedgerError::InvalidShare { .. })
        ));
    }
    // NUL cannot be stored in PostgreSQL text, so no backend takes it.
    assert!(matches!(
        store.record_share(share("a\0b", 1.0, 1.0, 1)).await,
        Err(LedgerError::InvalidShare { .. })
    ));
    // Odd but valid inputs are stored as given.
    store
        .record_share(share("", 0.0, 0.0, i64::MIN))
        .await
        .unwrap();
    store
        .record_share(share("a\u{1}b.\u{1f600}", 1e300, f64::MAX, i64::MAX))
        .await
        .unwrap();
    assert_eq!(
        store.shares_since(i64::MIN).await.unwrap(),
        vec![
            (String::new(), i64::MIN, 0.0),
            ("a\u{1}b.\u{1f600}".to_string(), i64::MAX, 1e300),
        ]
    );
    assert_eq!(store.stats().failed_commits, 0);
}

pub(super) async fn a_failed_commit_fails_every_waiter_of_its_batch_and_acks_nothing_false(
    fixture: &dyn Fixture,
) {
    let store = fixture.open(keep_all()).await;
    store.record_share(share("a.1", 1.0, 1.0, 0)).await.unwrap();
    // Inject a failure: inserting a share with time -42 aborts its transaction.
    fixture.inject_failure(true).await;
    store.record_reject("c.new", RejectKind::Stale, 3);
    let tasks: Vec<_> = (1..=40)
        .map(|i| {
            let store = store.clone();
            let time_ms = if i == 20 { -42 } else { i };
            let worker = if i == 20 { "c.new" } else { "a.1" };
            tokio::spawn(async move {
                (
                    time_ms,
                    store.record_share(share(worker, 1.0, 1.0, time_ms)).await,
                )
            })
        })
        .collect();
    let mut acked = BTreeSet::from([0]);
    let mut failed = BTreeSet::new();
    for task in tasks {
        match task.await.unwrap() {
            (time_ms, Ok(())) => assert!(acked.insert(time_ms)),
            (time_ms, Err(LedgerError::Commit { source, .. })) => {
                let chain = error_chain(&*source);
                assert!(chain.contains("injected failure"), "{chain}");
                failed.insert(time_ms);
            }
            (_, Err(error)) => panic!("unexpected {error:?}"),
        }
    }
    assert!(failed.contains(&-42));
    assert!(store.stats().failed_commits >= 1);
    let stored: BTreeSet<i64> = store
        .shares_since(i64::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, time_ms, _)| time_ms)
        .collect();
    assert_eq!(stored, acked);

    // The writer recovers, including for a worker whose row was rolled back.
    fixture.inject_failure(false).await;
    store
        .record_share(share("c.new", 2.0, 5.0, 7))
        .await
        .unwrap();
    let totals = store.worker_totals().await.unwrap();
    assert_eq!(totals[0].accepted, acked.len() as u64);
    assert_eq!(
        totals[1],
        WorkerTotals {
            worker: "c.new".into(),
            accepted: 1,
            accepted_difficulty: 2.0,
            rejected: [1, 0, 0, 0, 0],
            best_share_difficulty: 5.0,
            best_share_since_block: 5.0,
            last_share_ms: Some(7),
        }
    );
}

pub(super) async fn expired_shares_are_pruned_but_totals_kept(fixture: &dyn Fixture) {
    let options = LedgerOptions {
        share_retention: Duration::from_secs(3600),
        ..LedgerOptions::default()
    };
    let store = fixture.open(options).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The writer prunes right after its first batch, before taking the second.
    store
        .record_share(share("a.1", 1.0, 1.0, now - 7_200_000))
        .await
        .unwrap();
    store
        .record_share(share("a.1", 1.0, 1.0, now))
        .await
        .unwrap();
    assert_eq!(
        store.shares_since(i64::MIN).await.unwrap(),
        vec![("a.1".to_string(), now, 1.0)]
    );
    assert_eq!(store.worker_totals().await.unwrap()[0].accepted, 2);
}

/// A PPLNS window is the newest shares filling it (the oldest in part); once read, its
/// shares survive pruning however old they are, and older ones do not.
pub(super) async fn pplns_windows_are_read_newest_first_and_kept_from_pruning(
    fixture: &dyn Fixture,
) {
    let now = crate::accounting::now_ms();
    let day = 86_400_000;
    let store = fixture.open(keep_all()).await;
    for (worker, difficulty, age) in [
        ("x.rig", 4.0, 3 * day),
        ("y.rig", 2.0, 2 * day),
        ("z.rig", 1.0, 2 * day),
        ("y.rig", 1.0, 0),
    ] {
        store
            .record_share(share(worker, difficulty, difficulty, now - age))
            .await
            .unwrap();
    }
    store.close().await.unwrap();
    drop(store);

    // A day's retention: every share but the newest has expired.
    let store = fixture
        .open(LedgerOptions {
            share_retention: Duration::from_secs(86_400),
            ..LedgerOptions::default()
        })
        .await;
    let window = store.window_credits(3.5).await.unwrap();
    assert_eq!(
        window.workers,
        vec![("y.rig".into(), 2.5), ("z.rig".into(), 1.0)],
        "newest first; y's older share counts for the 1.5 left"
    );
    // The writer prunes after its first batch, before taking the second: x's share goes,
    // the window's stay.
    for _ in 0..2 {
        store
            .record_share(share("y.rig", 1.0, 1.0, now))
            .await
            .unwrap();
    }
    let kept: Vec<String> = store
        .shares_since(i64::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|(worker, _, _)| worker)
        .collect();
    assert_eq!(kept, ["y.rig", "z.rig", "y.rig", "y.rig", "y.rig"]);
    assert_eq!(
        store.window_credits(0.0).await.unwrap(),
        WindowCredits::default()
    );
}

/// A block's payout table is stored with it; while it is accepted each payee's owed
/// balance carries `earned - paid`, and orphaning it takes that back.
pub(super) async fn payouts_move_owed_balances_while_their_block_is_accepted(
    fixture: &dyn Fixture,
) {
    let store = fixture.open(keep_all()).await;
    let line = |payee: &str, earned: i64, paid: i64| PayoutLine {
        payee: payee.into(),
        credit: 1.5,
        earned,
        owed_before: 0,
        paid,
        owed_after: earned - paid,
    };
    let mut first = block(1, 10, 1_000);
    first.payouts = vec![line("big", 99_900, 100_000), line("small", 100, 0)];
    store.record_block(first.clone()).await.unwrap();
    let mut refused = block(2, 11, 2_000);
    refused.status = "rejected:high-hash".into();
    refused.payouts = vec![line("small", 5_000, 0)];
    store.record_block(refused).await.unwrap();
    assert_eq!(
        store.owed(None).await.unwrap(),
        vec![("big".into(), -100), ("small".into(), 100)],
        "only the accepted block counts"
    );
    assert_eq!(
        store.block(first.hash).await.unwrap().unwrap().payouts,
        first.payouts
    );
    assert_eq!(store.blocks(1).await.unwrap()[0].payouts.len(), 1);
    // Recording a block again replaces its table and counts it once.
    store.record_block(first.clone()).await.unwrap();
    assert_eq!(store.owed(None).await.unwrap()[1], ("small".into(), 100));
    assert_eq!(
        store.owed(Some("small")).await.unwrap(),
        [("small".into(), 100)]
    );
    store
        .set_block_status(first.hash, "orphaned")
        .await
        .unwrap();
    assert_eq!(
        store.owed(None).await.unwrap(),
        vec![("big".into(), 0), ("small".into(), 0)]
    );
    // Each payee's lines, newest block first, with the block's status.
    let earnings = store.earnings("small", 10).await.unwrap();
    let seen: Vec<(u64, &str, i64)> = earnings
        .iter()
        .map(|e| (e.height, e.status.as_str(), e.line.earned))
        .collect();
    assert_eq!(
        seen,
        [(11, "rejected:high-hash", 5_000), (10, "orphaned", 100)]
    );
    assert_eq!(
        store.earnings("big", 1).await.unwrap()[0].line.paid,
        100_000
    );
    assert!(store.earnings("nobody", 10).await.unwrap().is_empty());
    store.close().await.unwrap();
    drop(store);
    let store = fixture.open(keep_all()).await;
    assert_eq!(
        store.block(first.hash).await.unwrap().unwrap().payouts,
        first.payouts
    );
}

/// Selects the child mode of [`kill_9_loses_no_acknowledged_share`]: the database, as
/// `sqlite:DIR` or a PostgreSQL URL.
const CHILD_ENV: &str = "QUARRY_LEDGER_CHILD";

/// In the child process of [`kill_9_loses_no_acknowledged_share`], records shares until
/// killed and returns `true`; elsewhere returns `false`.
pub(super) fn crash_child_if_asked(runtime: &tokio::runtime::Runtime) -> bool {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let database = match spec.strip_prefix("sqlite:") {
        Some(dir) => Database::Sqlite { dir: dir.into() },
        None => Database::Postgres { url: spec },
    };
    runtime.block_on(crash_child(&database));
    true
}

/// Kills a process that records shares from 512 tasks with SIGKILL after 3,000
/// acknowledgements, then finds every acknowledged share in the ledger and the totals
/// matching the rows. `test` is the calling test's path, which the child runs.
pub(super) async fn kill_9_loses_no_acknowledged_share(fixture: &dyn Fixture, test: &str) {
    const ACKS_BEFORE_KILL: usize = 3_000;
    let test_name = test.split_once("::").map_or(test, |(_, path)| path);
    let spec = match fixture.database() {
        Database::Sqlite { dir } => format!("sqlite:{}", dir.display()),
        Database::Postgres { url } => url.clone(),
    };
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let parse = |line: &str| {
        line.strip_prefix("ack ")
            .map(|id| id.parse::<i64>().unwrap())
    };
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        acked.extend(parse(&line.unwrap()));
        if acked.len() >= ACKS_BEFORE_KILL {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill count too.
    for line in lines {
        match line {
            Ok(line) => acked.extend(parse(&line)),
            Err(_) => break,
        }
    }
    assert!(
        acked.len() >= ACKS_BEFORE_KILL,
        "child acked only {}",
        acked.len()
    );

    let store = fixture.open(keep_all()).await;
    let stored: BTreeSet<i64> = store
        .shares_since(i64::MIN)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, time_ms, _)| time_ms)
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !stored.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged shares lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    // Totals and rows were committed together.
    let mut per_worker: HashMap<String, u64> = HashMap::new();
    for (worker, _, _) in store.shares_since(i64::MIN).await.unwrap() {
        *per_worker.entry(worker).or_default() += 1;
    }
    for totals in store.worker_totals().await.unwrap() {
        assert_eq!(
            per_worker.get(&totals.worker).copied().unwrap_or(0),
            totals.accepted
        );
    }
}

/// Records shares from 512 concurrent tasks (so batches are large and an acknowledgement
/// sent before its commit would be caught) forever, printing `ack <id>` for each
/// acknowledged one, until killed (or its stdout closes).
async fn crash_child(database: &Database) {
    let store = open(database, keep_all()).await.unwrap();
    let next = Arc::new(AtomicI64::new(0));
    let tasks: Vec<_> = (0..512)
        .map(|task| {
            let (store, next) = (store.clone(), next.clone());
            tokio::spawn(async move {
                let worker: Arc<str> = Arc::from(format!("acct.w{}", task % 4));
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id > 10_000_000 {
                        return;
                    }
                    let share = AcceptedShare {
                        worker: worker.clone(),
                        difficulty: 1.0,
                        hash_difficulty: 1.0,
                        time_ms: id,
                    };
                    store.record_share(share).await.unwrap();
                    let mut stdout = std::io::stdout().lock();
                    if writeln!(stdout, "ack {id}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Minutes older than seven days become hours; the sums stay the same.
pub(super) async fn old_minutes_roll_up_into_hours(fixture: &dyn Fixture) {
    let store = fixture.open(LedgerOptions::default()).await;
    let hour = 3_600_000;
    let start = 1_700_000_000_000_i64.div_euclid(hour) * hour;
    let rows: Vec<HistoryRow> = (0..120)
        .map(|m| HistoryRow {
            scope: Scope::Worker,
            name: "ivy".into(),
            start_ms: start + m * MINUTE_MS,
            difficulty: 1.0,
            shares: 2,
        })
        .collect();
    store.record_history(rows, start + 2 * hour).await.unwrap();
    let all = || store.history(Scope::Worker, "ivy", 0, i64::MAX, hour);
    assert_eq!(
        all().await.unwrap(),
        vec![(start, 60.0, 120), (start + hour, 60.0, 120)]
    );
    // Eight days later the first hour's minutes are gone into one hour row.
    let later = start + hour + MINUTES_KEPT_MS + 1;
    store.record_history(Vec::new(), later).await.unwrap();
    assert_eq!(
        all().await.unwrap(),
        vec![(start, 60.0, 120), (start + hour, 60.0, 120)]
    );
    let minutes = store
        .history(Scope::Worker, "ivy", 0, i64::MAX, MINUTE_MS)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 1 + 60, "one hour row and 60 minute rows");
    store.close().await.unwrap();
}

pub(super) async fn bound_addresses_are_replaced_and_removed_and_survive_reopen(
    fixture: &impl Fixture,
) {
    let store = fixture.open(LedgerOptions::default()).await;
    assert!(store.bindings().await.unwrap().is_empty());
    store.bind_address("alice", Some("bcrt1qa")).await.unwrap();
    store.bind_address("bob", Some("bcrt1qb")).await.unwrap();
    store.bind_address("alice", Some("bcrt1qc")).await.unwrap();
    // Unbinding an account that has no address is no error.
    store.bind_address("carol", None).await.unwrap();
    assert_eq!(
        store.bindings().await.unwrap(),
        [
            ("alice".to_owned(), "bcrt1qc".to_owned()),
            ("bob".to_owned(), "bcrt1qb".to_owned())
        ]
    );
    store.bind_address("bob", None).await.unwrap();
    store.close().await.unwrap();
    let store = fixture.open(LedgerOptions::default()).await;
    assert_eq!(
        store.bindings().await.unwrap(),
        [("alice".to_owned(), "bcrt1qc".to_owned())]
    );
}
