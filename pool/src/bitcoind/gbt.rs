//! `getblocktemplate` replies ([BIP22]/[BIP23]) and how one becomes a [`Template`].
//!
//! The coinbase is the pool's own (BIP34 height, extranonce slot, pool tag, the whole
//! `coinbasevalue` to the payout script, the witness commitment); the other transactions
//! are the template's, in its order. When the coinbase would push the block past the
//! template's `weightlimit`, `sizelimit` or `sigoplimit`, transactions are dropped from
//! the end (a parent always precedes its children, so no kept transaction loses one), and
//! the witness commitment is computed for the transactions actually kept.
//!
//! [BIP22]: https://github.com/bitcoin/bips/blob/master/bip-0022.mediawiki
//! [BIP23]: https://github.com/bitcoin/bips/blob/master/bip-0023.mediawiki

use std::str::FromStr;
use std::sync::Arc;

use bitcoin::consensus::encode::VarInt;
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, ScriptBuf, Transaction, Txid, Witness,
    WitnessMerkleNode, Wtxid,
};
use quarry_protocol::merkle::branch_from_txids;
use serde::Deserialize;

use crate::chain::Template;
use crate::coinbase::{assemble_block, CoinbaseError, CoinbaseRecipe, WITNESS_COMMITMENT_MAGIC};
use crate::reward::JobPayouts;

/// Bitcoin's weight units per byte of non-witness data (BIP141).
const WITNESS_SCALE_FACTOR: u64 = 4;
/// Header bytes in a block.
const HEADER_SIZE: u64 = 80;

/// A `getblocktemplate` result: the fields the pool uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockTemplate {
    pub version: i32,
    /// Display hex.
    pub previousblockhash: String,
    pub transactions: Vec<TemplateTransaction>,
    /// Subsidy plus fees, in satoshis.
    pub coinbasevalue: u64,
    /// Opaque; sent back to long-poll for the next template.
    #[serde(default)]
    pub longpollid: Option<String>,
    pub mintime: u32,
    pub curtime: u32,
    /// Compact target, 8 hex digits.
    pub bits: String,
    pub height: u64,
    #[serde(default)]
    pub sigoplimit: Option<u64>,
    #[serde(default)]
    pub sizelimit: Option<u64>,
    #[serde(default)]
    pub weightlimit: Option<u64>,
    /// The complete commitment output script, hex.
    #[serde(default)]
    pub default_witness_commitment: Option<String>,
}

/// One transaction of a template.
#[derive(Debug, Clone, Deserialize)]
pub struct TemplateTransaction {
    /// Full serialization, with witness, hex.
    pub data: String,
    /// Display hex of the txid.
    pub txid: String,
    /// Sigop cost.
    #[serde(default)]
    pub sigops: u64,
}

/// Why a template could not become a job.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("previousblockhash {0:?} is not a block hash")]
    PrevHash(String),
    #[error("bits {0:?} is not 8 hex digits")]
    Bits(String),
    #[error("transaction {index} ({txid}) does not decode")]
    Transaction {
        index: usize,
        txid: String,
        #[source]
        source: bitcoin::consensus::encode::FromHexError,
    },
    #[error("transaction {index} hashes to {computed}, but the template says {claimed}")]
    Txid {
        index: usize,
        claimed: String,
        computed: Txid,
    },
    #[error("cannot build the coinbase")]
    Coinbase(#[from] CoinbaseError),
    #[error(
        "the coinbase alone ({weight} weight, {size} bytes, {sigops} sigops) exceeds the \
         template's limits"
    )]
    CoinbaseTooBig { weight: u64, size: u64, sigops: u64 },
}

/// The pool's part of every coinbase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinbaseConfig {
    pub pool_tag: Vec<u8>,
    pub extranonce_len: usize,
}

impl BlockTemplate {
    /// The template's `bits`.
    ///
    /// # Errors
    /// [`TemplateError::Bits`] when `bits` is not 8 hex digits.
    pub fn compact_bits(&self) -> Result<CompactTarget, TemplateError> {
        u32::from_str_radix(&self.bits, 16)
            .ok()
            .filter(|_| self.bits.len() == 8)
            .map(CompactTarget::from_consensus)
            .ok_or_else(|| TemplateError::Bits(self.bits.clone()))
    }

    /// The tip this template builds on.
    ///
    /// # Errors
    /// [`TemplateError::PrevHash`] when `previousblockhash` is not 64 hex digits.
    pub fn prev_hash(&self) -> Result<BlockHash, TemplateError> {
        BlockHash::from_str(&self.previousblockhash)
            .map_err(|_| TemplateError::PrevHash(self.previousblockhash.clone()))
    }

    /// The job template: the pool's coinbase and as many of the template's transactions
    /// as fit the limits with it, header time `max(curtime, mintime)`.
    ///
    /// # Errors
    /// A [`TemplateError`] naming the field or transaction that does not parse, or a
    /// coinbase that cannot be built or does not fit at all.
    pub fn to_template(
        &self,
        config: &CoinbaseConfig,
        payouts: JobPayouts,
    ) -> Result<Template, TemplateError> {
        let prev_hash = self.prev_hash()?;
        let bits = self.compact_bits()?;
        let transactions = self.decode_transactions()?;
        let coinbase_value = Amount::from_sat(self.coinbasevalue);

        let recipe = |kept: &[Transaction]| CoinbaseRecipe {
            height: self.height,
            pool_tag: config.pool_tag.clone(),
            extranonce_len: config.extranonce_len,
            witness_commitment: Some(witness_commitment(kept)),
            lock_to_parent: true,
        };
        // Transactions are kept so that the widest coinbase any miner may be handed fits.
        let widest = recipe(&transactions).build(&payouts.widest_outputs())?;
        let keep = self.fitting(
            &widest.with_extranonce(&vec![0; config.extranonce_len]),
            &transactions,
        )?;
        let mut transactions = transactions;
        if keep < transactions.len() {
            tracing::warn!(
                height = self.height,
                dropped = transactions.len() - keep,
                "template transactions dropped to fit the coinbase within the block limits"
            );
            transactions.truncate(keep);
        }
        let recipe = recipe(&transactions);
        let coinbase = recipe.build(&payouts.split.outputs)?;
        let txids: Vec<[u8; 32]> = transactions
            .iter()
            .map(|tx| tx.compute_txid().to_byte_array())
            .collect();
        Ok(Template {
            height: self.height,
            prev_hash,
            version: self.version,
            bits,
            time: self.curtime.max(self.mintime),
            coinbase,
            recipe,
            merkle_branch: branch_from_txids(&txids),
            transactions,
            coinbase_value,
            payouts: Arc::new(payouts),
        })
    }

    fn decode_transactions(&self) -> Result<Vec<Transaction>, TemplateError> {
        self.transactions
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let tx: Transaction = bitcoin::consensus::encode::deserialize_hex(&entry.data)
                    .map_err(|source| TemplateError::Transaction {
                        index,
                        txid: entry.txid.clone(),
                        source,
                    })?;
                let computed = tx.compute_txid();
                if Txid::from_str(&entry.txid).ok() != Some(computed) {
                    return Err(TemplateError::Txid {
                        index,
                        claimed: entry.txid.clone(),
                        computed,
                    });
                }
                Ok(tx)
            })
            .collect()
    }

    /// How many of `transactions` (a prefix) fit the limits together with `coinbase`.
    fn fitting(
        &self,
        coinbase: &[u8],
        transactions: &[Transaction],
    ) -> Result<usize, TemplateError> {
        let header = bitcoin::block::Header {
            version: bitcoin::block::Version::from_consensus(self.version),
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: bitcoin::TxMerkleNode::all_zeros(),
            time: 0,
            bits: CompactTarget::from_consensus(0),
            nonce: 0,
        };
        let block = assemble_block(header, coinbase, &[])?;
        let coinbase_tx = &block.txdata[0];
        let sigops = coinbase_tx
            .input
            .iter()
            .map(|input| input.script_sig.count_sigops_legacy())
            .chain(
                coinbase_tx
                    .output
                    .iter()
                    .map(|output| output.script_pubkey.count_sigops_legacy()),
            )
            .sum::<usize>() as u64
            * WITNESS_SCALE_FACTOR;
        let size = coinbase_tx.total_size() as u64 + HEADER_SIZE;
        let weight = coinbase_tx.weight().to_wu() + HEADER_SIZE * WITNESS_SCALE_FACTOR;
        let limit = |value: Option<u64>| value.unwrap_or(u64::MAX);
        let (weight_limit, size_limit, sigop_limit) = (
            limit(self.weightlimit),
            limit(self.sizelimit),
            limit(self.sigoplimit),
        );
        let fits = |weight: u64, size: u64, sigops: u64, count: usize| {
            let count_size = VarInt::from(count + 1).size() as u64;
            weight + count_size * WITNESS_SCALE_FACTOR <= weight_limit
                && size + count_size <= size_limit
                && sigops <= sigop_limit
        };
        if !fits(weight, size, sigops, 0) {
            return Err(TemplateError::CoinbaseTooBig {
                weight,
                size,
                sigops,
            });
        }
        let (mut weight, mut size, mut sigops) = (weight, size, sigops);
        for (index, (tx, entry)) in transactions.iter().zip(&self.transactions).enumerate() {
            weight += tx.weight().to_wu();
            size += tx.total_size() as u64;
            sigops += entry.sigops;
            if !fits(weight, size, sigops, index + 1) {
                return Ok(index);
            }
        }
        Ok(transactions.len())
    }
}

/// The BIP141 commitment output script for a block of a coinbase and `transactions`:
/// `OP_RETURN 0xaa21a9ed sha256d(witness root || 32 zero bytes)`, the coinbase's wtxid
/// leaf being zero, so it does not depend on the coinbase.
pub fn witness_commitment(transactions: &[Transaction]) -> ScriptBuf {
    let leaves = std::iter::once(Wtxid::all_zeros().to_raw_hash()).chain(
        transactions
            .iter()
            .map(|tx| tx.compute_wtxid().to_raw_hash()),
    );
    let root = bitcoin::merkle_tree::calculate_root(leaves.map(WitnessMerkleNode::from_raw_hash))
        .unwrap_or_else(WitnessMerkleNode::all_zeros);
    let reserved = Witness::from_slice(&[[0u8; 32]]);
    let commitment = Block::compute_witness_commitment(&root, &reserved[0]);
    let mut script = WITNESS_COMMITMENT_MAGIC.to_vec();
    script.extend_from_slice(commitment.as_byte_array());
    ScriptBuf::from_bytes(script)
}

#[cfg(test)]
mod tests;
