//! The embedded chain's own genesis block, deterministic given the chain parameters.

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{Block, BlockHash, Target, TxMerkleNode, TxOut};

use super::retarget::MAX_NBITS;
use super::{subsidy, ChainError, ChainParams, BLOCK_VERSION};
use crate::coinbase;

/// The genesis timestamp: 2025-01-01T00:00:00Z. Fixed so that the same parameters always
/// give the same genesis block.
pub const GENESIS_TIME: u32 = 1_735_689_600;

/// The genesis block's bits: the easiest target, so mining it takes a couple of hashes
/// whatever the initial difficulty.
pub const GENESIS_NBITS: u32 = MAX_NBITS;

/// [`GENESIS_NBITS`] as a [`bitcoin::CompactTarget`].
pub fn genesis_bits() -> bitcoin::CompactTarget {
    bitcoin::CompactTarget::from_consensus(GENESIS_NBITS)
}

/// Mines the genesis block for `params`: a coinbase at height 0 paying the height-0
/// subsidy to `params.payout`, a zero extranonce, and the first nonce that meets
/// [`GENESIS_NBITS`].
pub(super) fn mine(params: &ChainParams) -> Result<Block, ChainError> {
    let parts = super::coinbase_recipe(params, 0).build(&[TxOut {
        value: subsidy(0),
        script_pubkey: params.payout.clone(),
    }])?;
    let raw = parts.with_extranonce(&vec![0; params.extranonce_len]);
    let placeholder = Header {
        version: Version::from_consensus(BLOCK_VERSION),
        prev_blockhash: BlockHash::all_zeros(),
        merkle_root: TxMerkleNode::all_zeros(),
        time: GENESIS_TIME,
        bits: genesis_bits(),
        nonce: 0,
    };
    let mut block = coinbase::assemble_block(placeholder, &raw, &[])?;
    block.header.merkle_root = block
        .compute_merkle_root()
        .unwrap_or_else(TxMerkleNode::all_zeros);
    let target = Target::from_compact(genesis_bits());
    for nonce in 0..=u32::MAX {
        block.header.nonce = nonce;
        if block.header.validate_pow(target).is_ok() {
            return Ok(block);
        }
    }
    Err(ChainError::GenesisNotFound)
}
