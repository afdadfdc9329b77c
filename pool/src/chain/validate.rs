//! The consensus check of one block against the chain it extends.
//!
//! The rules are Bitcoin's (Bitcoin Core `CheckBlock`, `ContextualCheckBlockHeader`,
//! `ContextualCheckBlock`, <https://github.com/bitcoin/bitcoin/blob/v27.0/src/validation.cpp>),
//! minus what needs a UTXO set: the embedded chain has none, so a block carries its
//! coinbase and nothing else.

use bitcoin::hashes::Hash;
use bitcoin::{Amount, Block, BlockHash, CompactTarget, Target, TxMerkleNode, Weight};

use super::{subsidy, ChainError};
use crate::coinbase::{self, SCRIPT_SIG_LEN};

/// The lowest block version accepted, as Bitcoin Core after BIP65 (`bad-version`).
pub const MIN_VERSION: i32 = 4;

/// How far a block's time may run ahead of the validator's clock, in seconds
/// (Bitcoin Core `MAX_FUTURE_BLOCK_TIME`).
pub const MAX_FUTURE_BLOCK_TIME: u32 = 2 * 60 * 60;

/// What the chain expects of the block at `height`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected {
    pub height: u64,
    pub prev_hash: BlockHash,
    pub bits: CompactTarget,
    /// Median time past of the parent, `None` for the genesis block.
    pub median_time_past: Option<u32>,
    /// The validator's clock, `None` when restoring blocks accepted earlier.
    pub now: Option<u32>,
}

/// Checks `block` against `expected`; `Ok` means it may extend the chain.
pub(super) fn check(block: &Block, expected: &Expected) -> Result<(), ChainError> {
    let header = &block.header;
    if header.prev_blockhash != expected.prev_hash {
        return Err(ChainError::BadPrevHash {
            expected: expected.prev_hash,
            got: header.prev_blockhash,
        });
    }
    if header.bits != expected.bits {
        return Err(ChainError::BadBits {
            expected: expected.bits.to_consensus(),
            got: header.bits.to_consensus(),
        });
    }
    if header
        .validate_pow(Target::from_compact(expected.bits))
        .is_err()
    {
        return Err(ChainError::HighHash {
            hash: header.block_hash(),
            bits: expected.bits.to_consensus(),
        });
    }
    if header.version.to_consensus() < MIN_VERSION {
        return Err(ChainError::BadVersion(header.version.to_consensus()));
    }
    if let Some(median) = expected.median_time_past {
        if header.time <= median {
            return Err(ChainError::TimeTooOld {
                time: header.time,
                median,
            });
        }
    }
    if let Some(now) = expected.now {
        let limit = now.saturating_add(MAX_FUTURE_BLOCK_TIME);
        if header.time > limit {
            return Err(ChainError::TimeTooNew {
                time: header.time,
                limit,
            });
        }
    }

    let coinbase = block.txdata.first().ok_or(ChainError::NoTransactions)?;
    if !coinbase.is_coinbase() {
        return Err(ChainError::FirstNotCoinbase(coinbase.compute_txid()));
    }
    if let Some(index) = block.txdata.iter().skip(1).position(|tx| tx.is_coinbase()) {
        return Err(ChainError::ExtraCoinbase { index: index + 1 });
    }
    if block.txdata.len() > 1 {
        return Err(ChainError::UnexpectedTransactions {
            count: block.txdata.len() - 1,
        });
    }
    if !block.check_merkle_root() {
        return Err(ChainError::BadMerkleRoot {
            expected: block
                .compute_merkle_root()
                .unwrap_or_else(TxMerkleNode::all_zeros),
            got: header.merkle_root,
        });
    }

    let script_sig = &coinbase.input[0].script_sig;
    if !SCRIPT_SIG_LEN.contains(&script_sig.len()) {
        return Err(ChainError::BadScriptSigLen(script_sig.len()));
    }
    if !coinbase::commits_to_height(script_sig, expected.height) {
        return Err(ChainError::BadHeight {
            expected: expected.height,
            script_sig: hex::encode(script_sig.as_bytes()),
        });
    }
    if coinbase.output.is_empty() {
        return Err(ChainError::NoOutputs);
    }
    let mut total = Amount::ZERO;
    for out in &coinbase.output {
        total = total
            .checked_add(out.value)
            .filter(|total| out.value <= Amount::MAX_MONEY && *total <= Amount::MAX_MONEY)
            .ok_or(ChainError::OutputValueRange(out.value))?;
    }
    // Fees are zero: the coinbase is the only transaction.
    let limit = subsidy(expected.height);
    if total > limit {
        return Err(ChainError::BadCoinbaseValue { limit, got: total });
    }

    let has_commitment = coinbase
        .output
        .iter()
        .any(|out| coinbase::is_witness_commitment(&out.script_pubkey));
    if has_commitment {
        // BIP141: the coinbase witness is exactly one 32-byte reserved value. Checking it
        // first also keeps `check_witness_commitment` from skipping a witness-less block.
        let witness = &coinbase.input[0].witness;
        let reserved_ok = witness.len() == 1 && witness.iter().all(|item| item.len() == 32);
        if !reserved_ok || !block.check_witness_commitment() {
            return Err(ChainError::BadWitnessCommitment);
        }
    } else if block
        .txdata
        .iter()
        .any(|tx| tx.input.iter().any(|input| !input.witness.is_empty()))
    {
        return Err(ChainError::UnexpectedWitness);
    }

    let weight = block.weight();
    if weight > Weight::MAX_BLOCK {
        return Err(ChainError::Weight(weight.to_wu()));
    }
    let raw = bitcoin::consensus::serialize(block);
    match bitcoin::consensus::deserialize::<Block>(&raw) {
        Ok(back) if back == *block => Ok(()),
        _ => Err(ChainError::RoundTrip(block.block_hash())),
    }
}
