use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;

use super::*;

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
    }
}

/// Options keeping every share: the tests' made-up times are decades past any retention.
fn keep_all() -> StoreOptions {
    StoreOptions {
        share_retention: Duration::MAX,
        ..StoreOptions::default()
    }
}

fn user_version(store: &Store) -> i64 {
    Connection::open(store.path())
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

#[tokio::test]
async fn shares_survive_reopen_with_exact_totals_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
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

    let store = Store::open(dir.path(), keep_all()).unwrap();
    assert_eq!(
        store.worker_totals().unwrap(),
        vec![
            WorkerTotals {
                worker: "alice.rig1".into(),
                accepted: 2,
                accepted_difficulty: 3.0,
                rejected: [0; 5],
                best_share_difficulty: 3.5,
                last_share_ms: Some(1_001),
            },
            WorkerTotals {
                worker: "bob.x".into(),
                accepted: 1,
                accepted_difficulty: 4.0,
                rejected: [0; 5],
                best_share_difficulty: 100.0,
                last_share_ms: Some(1_002),
            },
        ]
    );
    assert_eq!(
        store.shares_since(0).unwrap(),
        vec![
            ("alice.rig1".to_string(), 1_000, 1.0),
            ("alice.rig1".to_string(), 1_001, 2.0),
            ("bob.x".to_string(), 1_002, 4.0),
        ]
    );
    assert_eq!(
        store.shares_since(1_001).unwrap(),
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
    let bob = store.worker_totals().unwrap().remove(1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_shares_are_all_acknowledged_and_counted() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    // A small queue and batch cap, so senders hit backpressure and batches split.
    let options = StoreOptions {
        queue_capacity: 8,
        max_batch: 16,
        ..keep_all()
    };
    let store = Store::open(dir.path(), options).unwrap();
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
    let totals = store.worker_totals().unwrap();
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

#[tokio::test]
async fn rejects_are_counted_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
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
    let totals = store.worker_totals().unwrap();
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

#[tokio::test]
async fn a_reject_alone_wakes_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
    store.record_reject("a.1", RejectKind::Duplicate, 5);
    store.record_reject("a.1", RejectKind::Duplicate, 6);
    // No other write follows: the writer must commit on its own. The timeout only turns
    // a missing wake-up into a failure instead of a hang.
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.stats().commits == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the rejects were never committed");
    assert_eq!(store.stats().commits, 1);
    let totals = store.worker_totals().unwrap();
    assert_eq!(totals[0].rejected, [0, 2, 0, 0, 0]);
    assert_eq!(totals[0].last_share_ms, Some(6));
}

#[tokio::test]
async fn blocks_round_trip_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
    let (first, second, third) = (block(1, 100, 10), block(2, 102, 30), block(3, 101, 20));
    for found in [&first, &second, &third] {
        store.record_block(found.clone()).await.unwrap();
    }
    assert_eq!(
        store.blocks(10).unwrap(),
        vec![second.clone(), third.clone(), first.clone()]
    );
    assert_eq!(
        store.blocks(2).unwrap(),
        vec![second.clone(), third.clone()]
    );
    assert_eq!(store.blocks(0).unwrap(), vec![]);

    store
        .set_block_status(first.hash, "orphaned")
        .await
        .unwrap();
    let unknown = BlockHash::from_byte_array([9; 32]);
    assert!(matches!(
        store.set_block_status(unknown, "orphaned").await,
        Err(StoreError::UnknownBlock { hash }) if hash == unknown
    ));
    assert!(matches!(
        store.record_block(block(4, u64::MAX, 40)).await,
        Err(StoreError::HeightOutOfRange { height: u64::MAX })
    ));
    store.close().await.unwrap();
    drop(store);

    let store = Store::open(dir.path(), keep_all()).unwrap();
    let orphaned = FoundBlock {
        status: "orphaned".into(),
        ..first
    };
    assert_eq!(
        store.blocks(usize::MAX).unwrap(),
        vec![second, third, orphaned]
    );
}

#[tokio::test]
async fn chain_blocks_come_back_in_height_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
    assert!(store.chain_blocks().unwrap().is_empty());
    assert!(matches!(
        store.append_chain_block(1, vec![1]).await,
        Err(StoreError::ChainGap { height: 1, next: 0 })
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
        Err(StoreError::ChainConflict { height: 1 })
    ));
    assert!(matches!(
        store.append_chain_block(u64::MAX, vec![7]).await,
        Err(StoreError::ChainGap { .. })
    ));
    store.close().await.unwrap();
    drop(store);

    let store = Store::open(dir.path(), keep_all()).unwrap();
    assert!(matches!(
        store.append_chain_block(4, vec![4]).await,
        Err(StoreError::ChainGap { height: 4, next: 3 })
    ));
    store.append_chain_block(3, vec![3; 3]).await.unwrap();
    assert_eq!(
        store.chain_blocks().unwrap(),
        vec![vec![0; 3], vec![1; 3], vec![2; 3], vec![3; 3]]
    );
}

#[tokio::test]
async fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("data").join("pool");
    let store = Store::open(&nested, keep_all()).unwrap();
    assert_eq!(store.path(), nested.join(FILE_NAME));
    assert_eq!(user_version(&store), schema::MIGRATIONS.len() as i64);
    store.record_share(share("a.1", 1.0, 1.0, 1)).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    for _ in 0..2 {
        let store = Store::open(&nested, keep_all()).unwrap();
        assert_eq!(user_version(&store), schema::MIGRATIONS.len() as i64);
        assert_eq!(store.worker_totals().unwrap()[0].accepted, 1);
        let mode: String = Connection::open(store.path())
            .unwrap()
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        store.close().await.unwrap();
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), keep_all()).unwrap());
    Connection::open(dir.path().join(FILE_NAME))
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let error = Store::open(dir.path(), keep_all()).unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaTooNew { found: 99, supported, .. } if supported == schema::MIGRATIONS.len()),
        "{error:?}"
    );
    assert!(error.to_string().contains(FILE_NAME), "{error}");
}

#[test]
fn an_unusable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = Store::open(&file, StoreOptions::default()).unwrap_err();
    assert!(matches!(error, StoreError::CreateDir { .. }), "{error:?}");
    assert!(std::error::Error::source(&error).is_some());
}

#[tokio::test]
async fn close_flushes_and_then_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
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
            Err(StoreError::Closed { .. }) => {}
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    // Reads still work after close and show everything acknowledged.
    let totals = store.worker_totals().unwrap();
    assert_eq!(totals[0].rejected, [0, 0, 0, 7, 0]);
    assert_eq!(totals[0].accepted, acked);
    assert_eq!(store.shares_since(i64::MIN).unwrap().len() as u64, acked);

    assert!(matches!(
        store.record_share(share("a.1", 1.0, 1.0, 1)).await,
        Err(StoreError::Closed { .. })
    ));
    assert!(matches!(
        store.append_chain_block(0, vec![]).await,
        Err(StoreError::Closed { .. })
    ));
    store.record_reject("a.1", RejectKind::Stale, 1);
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(dir.path(), keep_all()).unwrap();
    assert_eq!(store.worker_totals().unwrap()[0].rejected, [0, 0, 0, 7, 0]);
}

#[tokio::test]
async fn invalid_share_numbers_are_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
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
            Err(StoreError::InvalidShare { .. })
        ));
    }
    // Odd but valid inputs are stored as given.
    store
        .record_share(share("", 0.0, 0.0, i64::MIN))
        .await
        .unwrap();
    store
        .record_share(share("a\0b.\u{1f600}", 1e300, f64::MAX, i64::MAX))
        .await
        .unwrap();
    assert_eq!(
        store.shares_since(i64::MIN).unwrap(),
        vec![
            (String::new(), i64::MIN, 0.0),
            ("a\0b.\u{1f600}".to_string(), i64::MAX, 1e300),
        ]
    );
    assert_eq!(store.stats().failed_commits, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_waiter_of_its_batch_and_acks_nothing_false() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), keep_all()).unwrap();
    store.record_share(share("a.1", 1.0, 1.0, 0)).await.unwrap();
    // Inject a failure: inserting a share with time -42 aborts its transaction.
    let side = Connection::open(store.path()).unwrap();
    side.execute_batch(
        "CREATE TRIGGER fail_marked BEFORE INSERT ON shares WHEN NEW.time_ms = -42 \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
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
            (time_ms, Err(StoreError::Commit { source, .. })) => {
                assert!(source.to_string().contains("injected failure"), "{source}");
                failed.insert(time_ms);
            }
            (_, Err(error)) => panic!("unexpected {error:?}"),
        }
    }
    assert!(failed.contains(&-42));
    assert!(store.stats().failed_commits >= 1);
    let stored: BTreeSet<i64> = store
        .shares_since(i64::MIN)
        .unwrap()
        .into_iter()
        .map(|(_, time_ms, _)| time_ms)
        .collect();
    assert_eq!(stored, acked);

    // The writer recovers, including for a worker whose row was rolled back.
    side.execute_batch("DROP TRIGGER fail_marked").unwrap();
    store
        .record_share(share("c.new", 2.0, 5.0, 7))
        .await
        .unwrap();
    let totals = store.worker_totals().unwrap();
    assert_eq!(totals[0].accepted, acked.len() as u64);
    assert_eq!(
        totals[1],
        WorkerTotals {
            worker: "c.new".into(),
            accepted: 1,
            accepted_difficulty: 2.0,
            rejected: [1, 0, 0, 0, 0],
            best_share_difficulty: 5.0,
            last_share_ms: Some(7),
        }
    );
}

#[tokio::test]
async fn expired_shares_are_pruned_but_totals_kept() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        share_retention: Duration::from_secs(3600),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
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
        store.shares_since(i64::MIN).unwrap(),
        vec![("a.1".to_string(), now, 1.0)]
    );
    assert_eq!(store.worker_totals().unwrap()[0].accepted, 2);
}

/// Selects the child mode of [`kill_9_loses_no_acknowledged_share`]: the store directory.
const CHILD_ENV: &str = "QUARRY_STORE_CHILD";

#[test]
fn kill_9_loses_no_acknowledged_share() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        crash_child(std::path::Path::new(&dir));
        return;
    }
    const ACKS_BEFORE_KILL: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let test_name = concat!(module_path!(), "::kill_9_loses_no_acknowledged_share");
    let test_name = test_name
        .split_once("::")
        .map_or(test_name, |(_, path)| path);
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
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

    let store = Store::open(dir.path(), keep_all()).unwrap();
    let stored: BTreeSet<i64> = store
        .shares_since(i64::MIN)
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
    for (worker, _, _) in store.shares_since(i64::MIN).unwrap() {
        *per_worker.entry(worker).or_default() += 1;
    }
    for totals in store.worker_totals().unwrap() {
        assert_eq!(
            per_worker.get(&totals.worker).copied().unwrap_or(0),
            totals.accepted
        );
    }
}

/// Records shares from 512 concurrent tasks (so batches are large and an acknowledgement
/// sent before its commit would be caught) forever, printing `ack <id>` for each
/// acknowledged one, until killed (or its stdout closes).
fn crash_child(dir: &std::path::Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(dir, keep_all()).unwrap();
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
    });
}
