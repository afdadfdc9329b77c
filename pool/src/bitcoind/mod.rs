//! Bitcoin Core as the job source: templates from `getblocktemplate`, blocks out with
//! `submitblock`, on regtest, signet, testnet or mainnet.
//!
//! A new tip is noticed by whichever comes first: the `getblocktemplate` long poll, or a
//! short poll of `getbestblockhash` (every `bitcoind_poll_interval`). Between blocks the
//! template is refreshed every `job_interval` so new transactions reach miners. A solved
//! share is assembled and sent to every node before anything else; accepted blocks are
//! checked with `getblockhash` at each new tip until they are 100 deep, and marked
//! `orphaned` if they left the best chain. When no node has answered for
//! `max_job_age`, the jobs are retired (shares on them answered stale) until one does.
//!
//! - [`rpc`]: the JSON-RPC client with failover.
//! - [`gbt`]: templates into jobs.

pub mod gbt;
pub mod rpc;

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use bitcoin::{Amount, BlockHash, Network};
use quarry_protocol::share::block_hash;
use quarry_protocol::target::network_difficulty;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::accounting::now_ms;
use crate::chain::Template;
use crate::cluster::Cluster;
use crate::ledger::{FoundBlock, BLOCK_ACCEPTED};
use crate::reward::Reward;
use crate::source::Outlets;
use crate::validate::Solved;
use gbt::{BlockTemplate, CoinbaseConfig};
use rpc::{RpcClient, RpcError};

/// Blocks an accepted block must be buried under before orphan checks stop (coinbase
/// maturity).
const CONFIRMATIONS: u64 = 100;
/// The longest wait between attempts to reach a node.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the source talks to its nodes and how fresh its jobs must be.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Between `getbestblockhash` polls.
    pub poll_interval: Duration,
    /// Between template refreshes on the same tip.
    pub refresh_interval: Duration,
    /// How long jobs are served without any node answering.
    pub max_job_age: Duration,
}

#[derive(Deserialize)]
struct ChainInfo {
    chain: String,
    blocks: u64,
    #[serde(default)]
    initialblockdownload: bool,
}

/// The tip the current jobs build on.
struct Tip {
    prev_hash: BlockHash,
    height: u64,
    longpollid: Option<String>,
    /// The last time a node answered.
    heard: Instant,
    retired: bool,
}

/// A node found and ready: its network and first template.
pub struct Connected {
    pub rpc: RpcClient,
    pub network: Network,
    pub first: BlockTemplate,
}

/// Waits for a node that is reachable, accepts the credentials and is out of initial
/// block download, and takes its first template; retries with backoff.
///
/// # Errors
/// Refused credentials, or an unknown network name, which retrying will not fix.
pub async fn connect(rpc: RpcClient) -> anyhow::Result<Connected> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match probe(&rpc).await {
            Ok(Some((network, first))) => {
                return Ok(Connected {
                    rpc,
                    network,
                    first,
                })
            }
            Ok(None) => tracing::warn!(
                retry_in = ?backoff,
                "bitcoind is in initial block download; waiting before mining"
            ),
            Err(Probe::Fatal(err)) => return Err(err),
            Err(Probe::Retry(err)) => tracing::warn!(
                err = %err, urls = ?rpc.urls(), retry_in = ?backoff,
                "no bitcoind answered; retrying"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Probe {
    Fatal(anyhow::Error),
    Retry(RpcError),
}

async fn probe(rpc: &RpcClient) -> Result<Option<(Network, BlockTemplate)>, Probe> {
    let classify = |err: RpcError| {
        if err.is_unauthorized() {
            Probe::Fatal(err.into())
        } else {
            Probe::Retry(err)
        }
    };
    let info: ChainInfo = rpc
        .call("getblockchaininfo", json!([]))
        .await
        .map_err(classify)?;
    let Ok(network) = Network::from_core_arg(&info.chain) else {
        return Err(Probe::Fatal(anyhow::anyhow!(
            "bitcoind reports an unknown chain {:?}",
            info.chain
        )));
    };
    if info.initialblockdownload {
        return Ok(None);
    }
    let first = rpc
        .call("getblocktemplate", json!([{"rules": ["segwit"]}]))
        .await
        .map_err(classify)?;
    tracing::info!(chain = %info.chain, height = info.blocks, "bitcoind ready");
    Ok(Some((network, first)))
}

/// Bitcoin Core as a job source.
pub struct BitcoindSource {
    rpc: RpcClient,
    coinbase: CoinbaseConfig,
    settings: Settings,
    out: Outlets,
    /// The cluster node this pool is (`None` when it runs alone).
    node: Option<u8>,
    /// Woken when any node of the cluster recorded a found block: check the tip at once.
    block_found: Option<Arc<Notify>>,
    tip: Mutex<Tip>,
    /// Accepted blocks not yet `CONFIRMATIONS` deep: (height, hash).
    unconfirmed: Mutex<Vec<(u64, BlockHash)>>,
}

impl BitcoindSource {
    /// The source for a connected node whose first template `book` already serves.
    ///
    /// # Errors
    /// The first template's previous block hash does not parse, or the ledger cannot be read.
    pub async fn new(
        connected: Connected,
        coinbase: CoinbaseConfig,
        settings: Settings,
        out: Outlets,
        cluster: Option<&Cluster>,
    ) -> anyhow::Result<BitcoindSource> {
        let unconfirmed = out
            .ledger
            .blocks(1000)
            .await?
            .into_iter()
            .filter(|b| b.status == BLOCK_ACCEPTED)
            .map(|b| (b.height, b.hash))
            .collect();
        let first = connected.first;
        let tip = Tip {
            prev_hash: first.prev_hash()?,
            height: first.height,
            longpollid: first.longpollid,
            heard: Instant::now(),
            retired: false,
        };
        Ok(BitcoindSource {
            rpc: connected.rpc,
            coinbase,
            settings,
            out,
            node: cluster.map(Cluster::id),
            block_found: cluster.map(Cluster::block_found),
            tip: Mutex::new(tip),
            unconfirmed: Mutex::new(unconfirmed),
        })
    }

    /// Runs until `shutdown`: the long poll, the tip poll, refreshes and solved blocks.
    pub async fn run(self: Arc<Self>, solved: mpsc::Receiver<Solved>, shutdown: CancellationToken) {
        let tasks = [
            tokio::spawn(self.clone().submit_solved(solved)),
            tokio::spawn(self.clone().long_poll()),
        ];
        let every = |period: Duration| {
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            timer
        };
        let mut poll = every(self.settings.poll_interval);
        let mut refresh = every(self.settings.refresh_interval);
        let found_elsewhere = async |notify: &Option<Arc<Notify>>| match notify {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = found_elsewhere(&self.block_found) => self.check_tip().await,
                _ = poll.tick() => self.check_tip().await,
                _ = refresh.tick() => self.refresh().await,
            }
        }
        for task in tasks {
            task.abort();
        }
    }

    async fn submit_solved(self: Arc<Self>, mut solved: mpsc::Receiver<Solved>) {
        while let Some(found) = solved.recv().await {
            self.on_solved(found).await;
        }
    }

    /// Long-polls the node for template changes, with backoff on errors.
    async fn long_poll(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let id = self.lock_tip().longpollid.clone();
            let Some(id) = id else {
                // The node offers no long poll: the tip poll and refreshes suffice.
                tokio::time::sleep(self.settings.refresh_interval).await;
                continue;
            };
            match self.rpc.long_poll::<BlockTemplate>(&id).await {
                Ok(template) => {
                    backoff = Duration::from_secs(1);
                    self.lock_tip().longpollid = template.longpollid.clone();
                    self.offer(template).await;
                }
                Err(err) => {
                    tracing::debug!(%err, "long poll failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Fetches a new template when the node's best block is not the current jobs' parent.
    async fn check_tip(&self) {
        match self.rpc.call::<String>("getbestblockhash", json!([])).await {
            Ok(best) => {
                self.heard();
                let (current, retired) = {
                    let tip = self.lock_tip();
                    (tip.prev_hash, tip.retired)
                };
                if retired || BlockHash::from_str(&best).ok() != Some(current) {
                    self.refresh().await;
                }
            }
            Err(err) => self.unheard(&err),
        }
    }

    /// Fetches and publishes a template.
    async fn refresh(&self) {
        let params = json!([{"rules": ["segwit"]}]);
        match self
            .rpc
            .call::<BlockTemplate>("getblocktemplate", params)
            .await
        {
            Ok(template) => self.offer(template).await,
            Err(err) => self.unheard(&err),
        }
    }

    /// Publishes `template` unless it builds below the current tip.
    async fn offer(&self, template: BlockTemplate) {
        self.heard();
        let Ok(prev_hash) = template.prev_hash() else {
            tracing::error!(prev = %template.previousblockhash, "template with a bad previousblockhash");
            return;
        };
        // Below the tip: not worth reading the PPLNS window for (checked again below).
        if template.height < self.lock_tip().height {
            return;
        }
        let job = match job_template(&template, &self.coinbase, &self.out.reward).await {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(height = template.height, err = %err, "unusable template");
                return;
            }
        };
        let new_tip = {
            // Held while publishing, so that the long poll and a refresh racing with
            // it publish in the order they moved the tip.
            let mut tip = self.lock_tip();
            if template.height < tip.height {
                return;
            }
            let new_tip = prev_hash != tip.prev_hash;
            tip.prev_hash = prev_hash;
            tip.height = template.height;
            if template.longpollid.is_some() {
                tip.longpollid = template.longpollid.clone();
            }
            tip.retired = false;
            self.publish(job, new_tip);
            new_tip
        };
        if new_tip {
            self.check_orphans(template.height.saturating_sub(1)).await;
        }
    }

    fn publish(&self, job: Template, new_tip: bool) {
        let (height, transactions) = (job.height, job.transactions.len());
        self.out.book.publish(job);
        if new_tip {
            tracing::info!(height, transactions, "new block template");
        } else {
            tracing::debug!(height, transactions, "template refreshed");
        }
    }

    fn heard(&self) {
        self.lock_tip().heard = Instant::now();
    }

    /// Logs a failed call, and retires the jobs once no node has answered for too long.
    fn unheard(&self, err: &RpcError) {
        let retire = {
            let mut tip = self.lock_tip();
            let retire = !tip.retired && tip.heard.elapsed() >= self.settings.max_job_age;
            tip.retired |= retire;
            retire
        };
        tracing::warn!(%err, "bitcoind call failed");
        if retire {
            tracing::error!(
                max_job_age = ?self.settings.max_job_age,
                "no bitcoind has answered for too long: jobs retired, miners must wait"
            );
            self.out.book.retire();
        }
    }

    async fn on_solved(&self, found: Solved) {
        let Solved { worker, candidate } = found;
        let hash = block_hash(&candidate.header);
        let height = candidate.job.height();
        let Some(block) = candidate.block() else {
            return;
        };
        let raw = bitcoin::consensus::serialize(&block);
        let replies = self
            .rpc
            .call_all::<Option<String>>("submitblock", json!([hex::encode(&raw)]))
            .await;
        for (url, reply) in &replies {
            match reply {
                Ok(verdict) => tracing::info!(%url, %hash, ?verdict, "submitblock"),
                Err(err) => tracing::error!(%url, %hash, %err, "submitblock failed"),
            }
        }
        let verdict = verdict(&replies);
        let counters = &self.out.accounting.totals.submissions;
        match &verdict {
            Verdict::Accepted => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                self.out.accounting.block_found();
                self.lock_unconfirmed().push((height, hash));
            }
            Verdict::Rejected(_) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Verdict::Failed(_) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let status = verdict.status();
        tracing::info!(height, %hash, %worker, %status, "block found");
        let record = FoundBlock {
            height,
            hash,
            worker: worker.to_string(),
            time_ms: now_ms(),
            raw,
            status,
            node: self.node,
            payouts: candidate.face.payouts.split.lines.clone(),
        };
        self.out.record_block(record, &candidate).await;
        self.refresh().await;
    }

    /// Marks accepted blocks at or below `tip_height` that left the best chain as
    /// orphaned; forgets those buried deep enough.
    async fn check_orphans(&self, tip_height: u64) {
        let pending: Vec<(u64, BlockHash)> = self.lock_unconfirmed().clone();
        for (height, hash) in pending.into_iter().filter(|(h, _)| *h <= tip_height) {
            let Ok(at_height) = self
                .rpc
                .call::<String>("getblockhash", json!([height]))
                .await
            else {
                continue;
            };
            let orphaned = BlockHash::from_str(&at_height).ok() != Some(hash);
            if orphaned || tip_height >= height + CONFIRMATIONS {
                // Checks can overlap (the long poll and the tip poll): the one that takes
                // the block off the list reports it.
                let mut unconfirmed = self.lock_unconfirmed();
                let before = unconfirmed.len();
                unconfirmed.retain(|(_, h)| *h != hash);
                if unconfirmed.len() == before {
                    continue;
                }
            }
            if orphaned {
                tracing::warn!(height, %hash, best = %at_height, "found block orphaned");
                self.out
                    .accounting
                    .totals
                    .submissions
                    .orphaned
                    .fetch_add(1, Ordering::Relaxed);
                self.out.block_orphaned(height, hash).await;
            }
        }
    }

    fn lock_tip(&self) -> std::sync::MutexGuard<'_, Tip> {
        self.tip.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_unconfirmed(&self) -> std::sync::MutexGuard<'_, Vec<(u64, BlockHash)>> {
        self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the nodes made of a submitted block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A node took it (`null`), or already had it (`duplicate`, `inconclusive`).
    Accepted,
    /// Every node that answered refused it; the first reason.
    Rejected(String),
    /// No node answered.
    Failed(String),
}

impl Verdict {
    /// The status stored with the block and shown by the API.
    pub fn status(&self) -> String {
        match self {
            Verdict::Accepted => BLOCK_ACCEPTED.to_owned(),
            Verdict::Rejected(reason) | Verdict::Failed(reason) => format!("rejected:{reason}"),
        }
    }
}

/// The verdict of `submitblock` replies from every node.
pub fn verdict(replies: &[(String, Result<Option<String>, RpcError>)]) -> Verdict {
    let answered = || replies.iter().filter_map(|(_, reply)| reply.as_ref().ok());
    if answered().any(|reply| {
        matches!(
            reply.as_deref(),
            None | Some("duplicate") | Some("inconclusive")
        )
    }) {
        return Verdict::Accepted;
    }
    if let Some(Some(reason)) = answered().next() {
        return Verdict::Rejected(reason.clone());
    }
    let reason = replies
        .iter()
        .find_map(|(_, reply)| match reply {
            Err(RpcError::Rpc { message, .. }) => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "no node reachable".to_owned());
    Verdict::Failed(reason)
}

/// The job template for Bitcoin Core's `template`, its coinbase paying per `reward`.
///
/// # Errors
/// The template does not parse or its coinbase cannot be built (see [`BlockTemplate::to_template`]).
pub async fn job_template(
    template: &BlockTemplate,
    coinbase: &CoinbaseConfig,
    reward: &Reward,
) -> Result<Template, gbt::TemplateError> {
    let bits = template.compact_bits()?;
    let standings = reward
        .standings(network_difficulty(bits.to_consensus()))
        .await;
    let payouts = reward.payouts(&standings, Amount::from_sat(template.coinbasevalue));
    template.to_template(coinbase, payouts)
}

/// The payout script for `address` on the node's `network`.
///
/// # Errors
/// An address that does not parse or belongs to another network, named.
pub fn payout_script(address: &str, network: Network) -> anyhow::Result<bitcoin::ScriptBuf> {
    let parsed: bitcoin::Address<_> = match address.parse() {
        Ok(parsed) => parsed,
        Err(err) => bail!("payout address {address:?} is not an address: {err}"),
    };
    match parsed.require_network(network) {
        Ok(checked) => Ok(checked.script_pubkey()),
        Err(_) => {
            bail!("payout address {address:?} is not an address of the node's network ({network})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(reply: Option<&str>) -> (String, Result<Option<String>, RpcError>) {
        ("http://a".into(), Ok(reply.map(str::to_owned)))
    }

    fn down() -> (String, Result<Option<String>, RpcError>) {
        let err = RpcError::Http {
            url: "http://b".into(),
            method: "submitblock",
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
        };
        ("http://b".into(), Err(err))
    }

    #[test]
    fn verdicts_of_submitblock_replies() {
        assert_eq!(verdict(&[ok(None)]), Verdict::Accepted);
        assert_eq!(verdict(&[down(), ok(None)]), Verdict::Accepted);
        assert_eq!(
            verdict(&[ok(Some("high-hash")), ok(Some("duplicate"))]),
            Verdict::Accepted
        );
        assert_eq!(verdict(&[ok(Some("inconclusive"))]).status(), "accepted");
        let rejected = verdict(&[down(), ok(Some("bad-txnmrklroot"))]);
        assert_eq!(rejected.status(), "rejected:bad-txnmrklroot");
        assert_eq!(verdict(&[down()]).status(), "rejected:no node reachable");
    }

    #[test]
    fn payout_addresses_are_checked_against_the_network() {
        let regtest = "bcrt1qk4jfh24av5se4a4tdauzpxd8jah4ah8rgk4gwn";
        let script = payout_script(regtest, Network::Regtest).unwrap();
        assert_eq!(
            hex::encode(script.as_bytes()),
            "0014b5649baabd65219af6ab6f782099a7976f5edce3"
        );
        let err = payout_script(regtest, Network::Bitcoin)
            .unwrap_err()
            .to_string();
        assert!(err.contains(regtest) && err.contains("bitcoin"), "{err}");
        assert!(payout_script("nonsense", Network::Regtest).is_err());
    }
}
