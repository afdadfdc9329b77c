//! Accounts as the API shows them: the sum of their workers (`account.worker`), with the
//! best share of any of them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::accounting::WorkerView;

/// One account's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountView {
    pub account: String,
    pub workers: usize,
    pub sessions: u64,
    pub accepted: u64,
    pub accepted_difficulty: f64,
    pub rejected: u64,
    pub hashrate_1m: f64,
    pub hashrate_10m: f64,
    pub hashrate_1h: f64,
    /// The best share of any of its workers since the pool's last block.
    pub best_share_since_block: f64,
    /// The best share of any of its workers, ever.
    pub best_share_difficulty: f64,
    /// The latest share of any of its workers (RFC 3339).
    pub last_share: Option<String>,
}

impl AccountView {
    fn empty(account: &str) -> AccountView {
        AccountView {
            account: account.to_owned(),
            workers: 0,
            sessions: 0,
            accepted: 0,
            accepted_difficulty: 0.0,
            rejected: 0,
            hashrate_1m: 0.0,
            hashrate_10m: 0.0,
            hashrate_1h: 0.0,
            best_share_since_block: 0.0,
            best_share_difficulty: 0.0,
            last_share: None,
        }
    }

    fn add(&mut self, w: &WorkerView) {
        self.workers += 1;
        self.sessions += w.sessions;
        self.accepted += w.accepted;
        self.accepted_difficulty += w.accepted_difficulty;
        self.rejected += w.rejected;
        self.hashrate_1m += w.hashrate_1m;
        self.hashrate_10m += w.hashrate_10m;
        self.hashrate_1h += w.hashrate_1h;
        self.best_share_since_block = self.best_share_since_block.max(w.best_share_since_block);
        self.best_share_difficulty = self.best_share_difficulty.max(w.best_share_difficulty);
        // RFC 3339 in UTC with the same precision orders as text.
        self.last_share = self.last_share.take().max(w.last_share.clone());
    }
}

/// The accounts of `workers`, by name.
pub fn accounts(workers: &[WorkerView]) -> Vec<AccountView> {
    let mut accounts: BTreeMap<&str, AccountView> = BTreeMap::new();
    for w in workers {
        accounts
            .entry(w.account.as_str())
            .or_insert_with(|| AccountView::empty(&w.account))
            .add(w);
    }
    accounts.into_values().collect()
}

/// All of `workers` summed as one (named ""): the pool's best shares, for one.
pub fn total(workers: &[WorkerView]) -> AccountView {
    let mut total = AccountView::empty("");
    for w in workers {
        total.add(w);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::Accounting;

    #[test]
    fn an_account_sums_its_workers_and_keeps_their_best_share() {
        let accounting = Accounting::default();
        let now = crate::accounting::now_ms();
        for (worker, difficulty, best) in [
            ("alice.a", 2.0, 40.0),
            ("alice.b", 3.0, 15.0),
            ("bob", 5.0, 7.0),
        ] {
            let stats = accounting.worker(worker);
            accounting.record_accept(&stats, difficulty, best, now);
        }
        let views = accounting.workers(None);
        let before = accounts(&views);
        assert_eq!(before.len(), 2);
        let alice = &before[0];
        assert_eq!(alice.account, "alice");
        assert_eq!((alice.workers, alice.accepted), (2, 2));
        assert_eq!(alice.accepted_difficulty, 5.0);
        assert_eq!(alice.best_share_difficulty, 40.0);
        assert_eq!(alice.best_share_since_block, 40.0);
        let sum = views[0].hashrate_10m + views[1].hashrate_10m;
        assert!((alice.hashrate_10m - sum).abs() < 1e-9);
        accounting.block_found();
        let after = accounting.workers(None);
        assert_eq!(accounts(&after)[0].best_share_since_block, 0.0);
        assert_eq!(accounts(&after)[0].best_share_difficulty, 40.0);
        assert_eq!(accounts(&after)[1].account, "bob");
        let pool = total(&after);
        assert_eq!((pool.workers, pool.accepted), (3, 3));
        assert_eq!(pool.best_share_difficulty, 40.0);
    }
}
