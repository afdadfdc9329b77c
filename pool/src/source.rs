//! The job source: turns chain templates into jobs and solved shares into blocks.
//!
//! [`JobSource`] is the one interface the server starts: sessions, validation and
//! accounting only see the [`JobBook`] it publishes to and the [`Solved`] blocks they
//! send it, never which chain it serves. The embedded chain is the default; Bitcoin
//! Core is the other ([`crate::bitcoind`]).
//!
//! On the embedded chain a refresh
//! timer publishes a non-clean job with a fresh ntime every `job_interval`; a
//! block found by a miner extends the chain, is persisted, and a clean job for
//! the next height goes out to every session at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::BlockHash;
use quarry_protocol::share::block_hash;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::accounting::{account_of, now_ms, rfc3339, Accounting};
use crate::bitcoind::BitcoindSource;
use crate::chain::{EmbeddedChain, Template};
use crate::jobs::JobBook;
use crate::ledger::{FoundBlock, Ledger, BLOCK_ACCEPTED, BLOCK_ORPHANED};
use crate::reward::Reward;
use crate::validate::{BlockCandidate, Solved};
use crate::watch::webhook::Webhook;

/// What a job source publishes jobs to, records blocks in, and pays blocks by.
pub struct Outlets {
    pub book: Arc<JobBook>,
    pub ledger: Arc<dyn Ledger>,
    pub accounting: Arc<Accounting>,
    pub reward: Arc<Reward>,
    /// The operator's webhook, told of every block found and orphaned.
    pub webhook: Option<Arc<Webhook>>,
}

impl Outlets {
    /// Records a found block, mined on `candidate`, and tells the webhook with the
    /// block's payout table.
    pub async fn record_block(&self, record: FoundBlock, candidate: &BlockCandidate) {
        if let Some(webhook) = &self.webhook {
            let payouts = &candidate.face.payouts;
            webhook.send(json!({
                "event": "block_found",
                "height": record.height,
                "hash": record.hash.to_string(),
                "worker": record.worker,
                "account": account_of(&record.worker),
                "status": record.status,
                "node": record.node,
                "time": rfc3339(record.time_ms),
                "scheme": payouts.scheme.as_str(),
                "coinbase_value": candidate.job.template.coinbase_value.to_sat(),
                "fee_bps": payouts.fee_bps,
                "outputs": payouts.split.outputs_json(),
                "payouts": record.payouts,
            }));
        }
        let hash = record.hash;
        if let Err(err) = self.ledger.record_block(record).await {
            tracing::error!(%hash, %err, "could not record the found block");
        }
    }

    /// Marks a found block orphaned, and tells the webhook.
    pub async fn block_orphaned(&self, height: u64, hash: BlockHash) {
        if let Err(err) = self.ledger.set_block_status(hash, BLOCK_ORPHANED).await {
            tracing::error!(%hash, %err, "could not mark the block orphaned");
        }
        if let Some(webhook) = &self.webhook {
            webhook.send(json!({
                "event": "block_orphaned",
                "height": height,
                "hash": hash.to_string(),
                "time": rfc3339(now_ms()),
            }));
        }
    }
}

/// A job source, started the same way whichever chain it serves.
pub enum JobSource {
    Embedded(Arc<EmbeddedSource>),
    Bitcoind(Arc<BitcoindSource>),
}

impl JobSource {
    /// Runs until `shutdown`: publishes jobs every `interval` (and on new blocks) and
    /// takes solved blocks.
    pub async fn run(
        self,
        solved: mpsc::Receiver<Solved>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        match self {
            JobSource::Embedded(source) => source.run(solved, interval, shutdown).await,
            JobSource::Bitcoind(source) => source.run(solved, shutdown).await,
        }
    }
}

/// The embedded chain as a job source.
///
/// A block is part of the chain once the ledger has stored it. In a cluster every node
/// follows the ledger's chain: a block another node stored arrives by notification (and by
/// a poll, should one be missed), and a block of ours that lost the race for its height is
/// dropped for the stored one.
pub struct EmbeddedSource {
    pub chain: Mutex<EmbeddedChain>,
    pub out: Outlets,
    /// The cluster node this pool is (`None` when it runs alone).
    pub node: Option<u8>,
    /// Woken when another node may have extended the chain (cluster only).
    pub chain_changed: Option<Arc<Notify>>,
}

/// The template for `chain`'s next block, its coinbase paying per `reward` (whose
/// standings are read without holding the chain).
pub async fn paid_template(chain: &Mutex<EmbeddedChain>, reward: &Reward) -> Template {
    let difficulty = lock(chain).next_difficulty();
    let standings = reward.standings(difficulty).await;
    lock(chain).template(unix_now(), |value| reward.payouts(&standings, value))
}

fn lock(chain: &Mutex<EmbeddedChain>) -> std::sync::MutexGuard<'_, EmbeddedChain> {
    chain.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix seconds now.
pub fn unix_now() -> u32 {
    (now_ms() / 1000).clamp(0, i64::from(u32::MAX)) as u32
}

impl EmbeddedSource {
    /// Runs until `shutdown`: refreshes jobs every `interval` and takes solved blocks.
    pub async fn run(
        self: Arc<Self>,
        mut solved: mpsc::Receiver<Solved>,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut refresh =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changed = async |notify: &Option<Arc<Notify>>| match notify {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(found) = solved.recv() => self.on_solved(found).await,
                () = changed(&self.chain_changed) => self.follow().await,
                _ = refresh.tick() => {
                    if self.chain_changed.is_some() {
                        self.follow().await;
                    }
                    let template = self.next_template().await;
                    self.out.book.publish(template);
                }
            }
        }
    }

    /// The template for the next block, its coinbase paying per the reward scheme.
    async fn next_template(&self) -> Template {
        paid_template(&self.chain, &self.out.reward).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EmbeddedChain> {
        lock(&self.chain)
    }

    /// Adopts the blocks the ledger holds beyond our tip, and publishes a job on the new
    /// tip if there were any.
    async fn follow(&self) {
        let next = self.lock().height() + 1;
        let stored = match self.out.ledger.chain_blocks(next).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::warn!(%err, "cannot read the stored chain; keeping the current tip");
                return;
            }
        };
        if stored.is_empty() {
            return;
        }
        {
            let mut chain = self.lock();
            for raw in &stored {
                if let Err(err) = chain.adopt(raw) {
                    tracing::error!(height = chain.height() + 1, %err, "a stored chain block does not extend our chain");
                    break;
                }
            }
            tracing::info!(height = chain.height(), tip = %chain.tip_hash(), "following the chain another node extended");
        }
        let template = self.next_template().await;
        self.out.book.publish(template);
    }

    async fn on_solved(&self, found: Solved) {
        let Solved { worker, candidate } = found;
        let hash = block_hash(&candidate.header);
        let Some(block) = candidate.block() else {
            return;
        };
        let accepted = self.lock().accept(&block, unix_now());
        let height = match accepted {
            Ok(height) => height,
            Err(err) => {
                tracing::warn!(%hash, %worker, %err, "solved block not accepted by the chain");
                return;
            }
        };
        let raw = bitcoin::consensus::serialize(&block);
        if let Err(err) = self
            .out
            .ledger
            .append_chain_block(height, raw.clone())
            .await
        {
            // Not stored, so not part of the chain: back to what the ledger holds (another
            // node's block at this height, if one won the race).
            tracing::warn!(%hash, %worker, height, %err, "solved block not stored; it is not part of the chain");
            self.lock().rewind(height);
            self.follow().await;
            return;
        }
        let record = FoundBlock {
            height,
            hash,
            worker: worker.to_string(),
            time_ms: now_ms(),
            raw,
            status: BLOCK_ACCEPTED.to_owned(),
            node: self.node,
            payouts: candidate.face.payouts.split.lines.clone(),
        };
        self.out.record_block(record, &candidate).await;
        self.out.accounting.block_found();
        tracing::info!(height, %hash, %worker, "block found");
        let template = self.next_template().await;
        self.out.book.publish(template);
    }
}
