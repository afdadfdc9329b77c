//! The embedded chain: a Bitcoin-format chain of the pool's own, the default job source,
//! so the pool runs without any external node.
//!
//! Blocks are real Bitcoin blocks (headers, BIP34 coinbases, merkle roots, compact bits)
//! checked with Bitcoin's consensus rules, on a chain that starts at a genesis block of its
//! own. Difficulty starts at [`ChainParams::initial_difficulty`] and retargets every
//! [`ChainParams::retarget_interval`] blocks so that blocks come every
//! [`ChainParams::block_time`].
//!
//! - [`genesis`]: the deterministic genesis block.
//! - [`retarget`]: Bitcoin's retarget rule in exact integer arithmetic.
//! - `validate`: the consensus check of a candidate block.

pub mod genesis;
pub mod retarget;
mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, Block, BlockHash, CompactTarget, ScriptBuf, Target, Transaction};
use quarry_protocol::merkle::branch_from_txids;
use quarry_protocol::target::{network_difficulty, Difficulty};

use crate::coinbase::{CoinbaseError, CoinbaseParts, CoinbaseRecipe};
use crate::reward::JobPayouts;
pub use validate::{MAX_FUTURE_BLOCK_TIME, MIN_VERSION};

/// The default target spacing between blocks.
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_secs(60);

/// The default number of blocks between retargets.
pub const DEFAULT_RETARGET_INTERVAL: u32 = 60;

/// The default starting difficulty: low enough that a CPU miner finds blocks.
pub const DEFAULT_INITIAL_DIFFICULTY: f64 = 0.001;

/// The version of the blocks this chain templates: BIP9's top bits, leaving the BIP310
/// version-rolling bits free.
pub const BLOCK_VERSION: i32 = 0x2000_0000;

/// Blocks between subsidy halvings, as Bitcoin.
pub const HALVING_INTERVAL: u64 = 210_000;

/// How many blocks the median time past spans (Bitcoin Core `nMedianTimeSpan`).
const MEDIAN_TIME_SPAN: usize = 11;

/// The highest height the chain grows to; templates are validated up to it when the chain
/// is opened, so building a template's coinbase cannot fail.
const MAX_HEIGHT: u64 = u32::MAX as u64;

/// The consensus and payout parameters of an embedded chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainParams {
    /// Difficulty of block 1 (fractional allowed, e.g. 0.001 so CPU rigs find blocks).
    pub initial_difficulty: f64,
    /// The block spacing retargeting aims for; at least one second.
    pub block_time: Duration,
    /// Blocks between retargets; at least one.
    pub retarget_interval: u32,
    /// Where block rewards go.
    pub payout: ScriptBuf,
    /// Pushed in every coinbase scriptSig after the extranonce.
    pub pool_tag: Vec<u8>,
    /// Extranonce1 plus extranonce2 bytes in each coinbase.
    pub extranonce_len: usize,
}

impl ChainParams {
    /// Parameters paying to `payout` with the default difficulty, timing, a `/quarry/`
    /// tag and an 8-byte extranonce (4 + 4).
    pub fn new(payout: ScriptBuf) -> Self {
        Self {
            initial_difficulty: DEFAULT_INITIAL_DIFFICULTY,
            block_time: DEFAULT_BLOCK_TIME,
            retarget_interval: DEFAULT_RETARGET_INTERVAL,
            payout,
            pool_tag: b"/quarry/".to_vec(),
            extranonce_len: 8,
        }
    }
}

/// Everything a job needs to mine the next block.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub height: u64,
    pub prev_hash: BlockHash,
    pub version: i32,
    pub bits: CompactTarget,
    /// `max(now, median time past + 1)`: the earliest valid time, or the clock.
    pub time: u32,
    /// The coinbase split around its `extranonce_len`-byte slot.
    pub coinbase: CoinbaseParts,
    /// How the coinbase was built, to build one paying other outputs (a solo miner's).
    pub recipe: CoinbaseRecipe,
    /// The block's other transactions, in order (none on the embedded chain).
    pub transactions: Vec<Transaction>,
    /// The coinbase's merkle branch, raw sha256d siblings bottom-up.
    pub merkle_branch: Vec<[u8; 32]>,
    /// Subsidy plus fees.
    pub coinbase_value: Amount,
    /// Who the coinbase pays, and why.
    pub payouts: Arc<JobPayouts>,
}

impl Template {
    /// Whether `other` builds on the same tip: the same height and previous block.
    pub fn same_tip(&self, other: &Template) -> bool {
        self.height == other.height && self.prev_hash == other.prev_hash
    }
}

/// Why a chain could not be opened or a block was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("initial difficulty must be finite, above zero and give a non-zero target, got {0}")]
    InitialDifficulty(f64),
    #[error("block time must be at least one second, got {0:?}")]
    BlockTime(Duration),
    #[error("retarget interval must be at least one block, got 0")]
    RetargetInterval,
    #[error("cannot build the coinbase")]
    Coinbase(#[from] CoinbaseError),
    #[error("no nonce meets the genesis bits")]
    GenesisNotFound,
    #[error("stored block {height} does not deserialize")]
    Decode {
        height: u64,
        #[source]
        source: bitcoin::consensus::encode::Error,
    },
    #[error("stored block {height} is invalid")]
    Stored {
        height: u64,
        #[source]
        source: Box<ChainError>,
    },
    #[error("the chain is full at height {0}")]
    Full(u64),
    #[error("bad prev hash: expected {expected}, got {got}")]
    BadPrevHash { expected: BlockHash, got: BlockHash },
    #[error("bad bits: expected {expected:08x}, got {got:08x}")]
    BadBits { expected: u32, got: u32 },
    #[error("high hash: block {hash} does not meet bits {bits:08x}")]
    HighHash { hash: BlockHash, bits: u32 },
    #[error("bad version: {0:#010x} is below {min}", min = MIN_VERSION)]
    BadVersion(i32),
    #[error("time too old: {time} is not after the median time past {median}")]
    TimeTooOld { time: u32, median: u32 },
    #[error("time too new: {time} is after {limit}, two hours past the clock")]
    TimeTooNew { time: u32, limit: u32 },
    #[error("block has no transactions")]
    NoTransactions,
    #[error("first transaction {0} is not a coinbase")]
    FirstNotCoinbase(bitcoin::Txid),
    #[error("transaction {index} is a second coinbase")]
    ExtraCoinbase { index: usize },
    #[error(
        "{count} transactions besides the coinbase: the embedded chain has no utxo set, \
         so its blocks carry only the coinbase"
    )]
    UnexpectedTransactions { count: usize },
    #[error("bad merkle root: expected {expected}, got {got}")]
    BadMerkleRoot {
        expected: bitcoin::TxMerkleNode,
        got: bitcoin::TxMerkleNode,
    },
    #[error("bad coinbase scriptsig length: {0} bytes, must be 2..=100")]
    BadScriptSigLen(usize),
    #[error("bad bip34 height: expected {expected}, coinbase scriptsig is {script_sig}")]
    BadHeight { expected: u64, script_sig: String },
    #[error("coinbase has no outputs")]
    NoOutputs,
    #[error("coinbase output value {0} is out of range")]
    OutputValueRange(Amount),
    #[error("bad coinbase value: pays {got}, more than the {limit} allowed")]
    BadCoinbaseValue { limit: Amount, got: Amount },
    #[error("bad witness commitment")]
    BadWitnessCommitment,
    #[error("unexpected witness: witness data without a witness commitment")]
    UnexpectedWitness,
    #[error("bad block weight: {0} exceeds 4000000")]
    Weight(u64),
    #[error("block {0} does not survive a serialization round trip")]
    RoundTrip(BlockHash),
}

/// The block subsidy at `height`: 50 BTC halving every 210,000 blocks, as Bitcoin
/// (Bitcoin Core `GetBlockSubsidy`).
pub fn subsidy(height: u64) -> Amount {
    let halvings = height / HALVING_INTERVAL;
    if halvings >= 64 {
        return Amount::ZERO;
    }
    Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

/// The pool's own chain, in memory: the genesis block and every header since.
#[derive(Debug, Clone)]
pub struct EmbeddedChain {
    params: ChainParams,
    /// The bits of block 1, from `params.initial_difficulty`.
    initial_bits: CompactTarget,
    genesis: Block,
    /// Headers by height, starting with the genesis header; never empty.
    headers: Vec<Header>,
}

impl EmbeddedChain {
    /// Creates a new chain (mining its genesis block) when `stored` is empty, or restores
    /// the chain whose raw blocks, genesis first, are `stored`, checking each block again.
    ///
    /// # Errors
    /// [`ChainError::InitialDifficulty`], [`ChainError::BlockTime`],
    /// [`ChainError::RetargetInterval`] or [`ChainError::Coinbase`] for unusable
    /// parameters; [`ChainError::Decode`] / [`ChainError::Stored`] for a stored block
    /// that does not deserialize or breaks a consensus rule (including blocks mined under
    /// a different initial difficulty, block time or retarget interval).
    pub fn open(params: ChainParams, stored: Vec<Vec<u8>>) -> Result<EmbeddedChain, ChainError> {
        let initial_bits = initial_bits(params.initial_difficulty)?;
        if params.block_time.as_secs() == 0 {
            return Err(ChainError::BlockTime(params.block_time));
        }
        if params.retarget_interval == 0 {
            return Err(ChainError::RetargetInterval);
        }
        // The longest scriptSig the chain will ever template.
        coinbase_recipe(&params, MAX_HEIGHT).build(&[])?;

        let mut stored = stored.into_iter();
        let Some(raw_genesis) = stored.next() else {
            let genesis = genesis::mine(&params)?;
            return Ok(EmbeddedChain {
                headers: vec![genesis.header],
                params,
                initial_bits,
                genesis,
            });
        };
        let genesis = decode(0, &raw_genesis)?;
        let expected = validate::Expected {
            height: 0,
            prev_hash: BlockHash::all_zeros(),
            bits: genesis::genesis_bits(),
            median_time_past: None,
            now: None,
        };
        validate::check(&genesis, &expected).map_err(|e| stored_error(0, e))?;
        let mut chain = EmbeddedChain {
            headers: vec![genesis.header],
            params,
            initial_bits,
            genesis,
        };
        for raw in stored {
            let height = chain.next_height();
            let block = decode(height, &raw)?;
            chain
                .extend(&block, None)
                .map_err(|e| stored_error(height, e))?;
        }
        Ok(chain)
    }

    /// The height of the tip (0 for a chain holding only its genesis block).
    pub fn height(&self) -> u64 {
        self.next_height() - 1
    }

    /// The hash of the tip.
    pub fn tip_hash(&self) -> BlockHash {
        self.tip().block_hash()
    }

    /// The genesis block.
    pub fn genesis(&self) -> &Block {
        &self.genesis
    }

    /// The parameters the chain was opened with.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The header at `height`, if the chain has one there.
    pub fn header(&self, height: u64) -> Option<&Header> {
        usize::try_from(height)
            .ok()
            .and_then(|index| self.headers.get(index))
    }

    /// The difficulty of the next block's bits.
    pub fn network_difficulty(&self) -> f64 {
        network_difficulty(self.next_bits().to_consensus())
    }

    /// The bits the next block must carry: the initial bits for block 1, the previous
    /// block's bits within a retarget interval, and a retarget at every multiple of
    /// `retarget_interval`.
    ///
    /// A retarget at height `h` measures the `retarget_interval` block gaps ending at
    /// `h - 1` (Bitcoin measures one fewer, an off-by-one it keeps for compatibility). The
    /// genesis block's fixed timestamp says nothing about the miners, so the first window
    /// starts at block 1 instead and is one gap shorter; the expected timespan always
    /// counts the gaps measured.
    pub fn next_bits(&self) -> CompactTarget {
        let height = self.headers.len();
        let tip_bits = self.tip().bits;
        if height <= 1 {
            return self.initial_bits;
        }
        let interval = self.params.retarget_interval as usize;
        if !height.is_multiple_of(interval) {
            return tip_bits;
        }
        let last = height - 1;
        let first = height.saturating_sub(interval + 1).max(1);
        let (Some(first_header), Some(last_header)) =
            (self.headers.get(first), self.headers.get(last))
        else {
            return tip_bits;
        };
        if last <= first {
            return tip_bits;
        }
        let gaps = (last - first) as u64;
        let expected = gaps.saturating_mul(self.params.block_time.as_secs());
        let actual = i64::from(last_header.time) - i64::from(first_header.time);
        retarget::next_bits(tip_bits, actual, expected)
    }

    /// The median time of the last 11 blocks (fewer near genesis); the next block's time
    /// must be above it.
    pub fn median_time_past(&self) -> u32 {
        let start = self.headers.len().saturating_sub(MEDIAN_TIME_SPAN);
        let mut times: Vec<u32> = self.headers[start..].iter().map(|h| h.time).collect();
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0)
    }

    /// The network difficulty of the next block.
    pub fn next_difficulty(&self) -> f64 {
        network_difficulty(self.next_bits().to_consensus())
    }

    /// The template for the next block at wall-clock `now` (unix seconds):
    /// time = `max(now, median time past + 1)`, bits per retarget, its coinbase paying
    /// what `pay` makes of the block's value.
    pub fn template(&self, now: u32, pay: impl FnOnce(Amount) -> JobPayouts) -> Template {
        let height = self.next_height();
        let value = subsidy(height);
        let payouts = pay(value);
        // `open` built the longest scriptSig this chain can need, so this cannot fail
        // below `MAX_HEIGHT`, which `accept` never passes.
        let recipe = coinbase_recipe(&self.params, height);
        let coinbase = recipe.build(&payouts.split.outputs).unwrap_or_default();
        Template {
            height,
            prev_hash: self.tip_hash(),
            version: BLOCK_VERSION,
            bits: self.next_bits(),
            time: now.max(self.median_time_past().saturating_add(1)),
            coinbase,
            recipe,
            transactions: Vec::new(),
            merkle_branch: branch_from_txids(&[]),
            coinbase_value: value,
            payouts: Arc::new(payouts),
        }
    }

    /// Checks `block` as the next block at wall-clock `now` (unix seconds), then makes it
    /// the tip.
    ///
    /// The checks are Bitcoin's: parent is the tip; bits as retargeted; proof of work;
    /// version at least 4; time above the median time past and at most two hours past
    /// `now`; a coinbase first and only first; no other transactions (no UTXO set here);
    /// merkle root; coinbase scriptSig of 2..=100 bytes starting with the BIP34 height;
    /// outputs within the subsidy; witness commitment when present, no witness otherwise;
    /// weight at most 4,000,000; and an exact serialization round trip.
    ///
    /// # Errors
    /// The [`ChainError`] of the first rule broken; the chain is left unchanged.
    pub fn accept(&mut self, block: &Block, now: u32) -> Result<u64, ChainError> {
        self.extend(block, Some(now))
    }

    /// Extends the chain with a block another node stored, checked like a block read at
    /// start (every rule but the clock's).
    ///
    /// # Errors
    /// [`ChainError::Decode`] or the [`ChainError`] of the first rule broken; the chain is
    /// left unchanged.
    pub fn adopt(&mut self, raw: &[u8]) -> Result<u64, ChainError> {
        let block = decode(self.next_height(), raw)?;
        self.extend(&block, None)
    }

    /// Drops the blocks at `height` and above (never the genesis block), to undo an
    /// [`EmbeddedChain::accept`] whose block could not be stored.
    pub fn rewind(&mut self, height: u64) {
        let keep = usize::try_from(height.max(1)).unwrap_or(usize::MAX);
        self.headers.truncate(keep);
    }

    fn extend(&mut self, block: &Block, now: Option<u32>) -> Result<u64, ChainError> {
        let height = self.next_height();
        if height > MAX_HEIGHT {
            return Err(ChainError::Full(height));
        }
        let expected = validate::Expected {
            height,
            prev_hash: self.tip_hash(),
            bits: self.next_bits(),
            median_time_past: Some(self.median_time_past()),
            now,
        };
        validate::check(block, &expected)?;
        self.headers.push(block.header);
        Ok(height)
    }

    fn next_height(&self) -> u64 {
        self.headers.len() as u64
    }

    fn tip(&self) -> &Header {
        self.headers.last().unwrap_or(&self.genesis.header)
    }
}

fn coinbase_recipe(params: &ChainParams, height: u64) -> CoinbaseRecipe {
    CoinbaseRecipe {
        height,
        pool_tag: params.pool_tag.clone(),
        extranonce_len: params.extranonce_len,
        witness_commitment: None,
        lock_to_parent: false,
    }
}

/// The compact bits of `difficulty`, capped at the easiest target.
fn initial_bits(difficulty: f64) -> Result<CompactTarget, ChainError> {
    let target = Difficulty::new(difficulty)
        .map_err(|_| ChainError::InitialDifficulty(difficulty))?
        .to_target()
        .min(retarget::MAX_TARGET);
    let bits = target.to_compact_lossy();
    if Target::from_compact(bits) == Target::ZERO {
        return Err(ChainError::InitialDifficulty(difficulty));
    }
    Ok(bits)
}

fn decode(height: u64, raw: &[u8]) -> Result<Block, ChainError> {
    bitcoin::consensus::deserialize(raw).map_err(|source| ChainError::Decode { height, source })
}

fn stored_error(height: u64, source: ChainError) -> ChainError {
    ChainError::Stored {
        height,
        source: Box::new(source),
    }
}
