//! Coinbase transactions with an extranonce slot, and block assembly for solved shares.
//!
//! Every job source (the embedded chain now, Bitcoin Core's `getblocktemplate` later)
//! builds its coinbase here. The coinbase is split around the extranonce bytes into
//! `coinb1` and `coinb2`, the non-witness serialization Stratum sends (STRATUM.md §6):
//!
//! ```text
//! scriptSig = <BIP34 height> <push: en1 || en2 || variant> [<pool tag>]
//!             coinb1 ends after the push opcode ^   coinb2 starts at ^ variant
//! ```
//!
//! The extranonce is push data inside the scriptSig, exactly where ckpool and
//! node-stratum-pool put it, so any extranonce keeps the scriptSig valid. The
//! same push ends with [`VARIANT_LEN`] bytes of the pool's own, the first bytes
//! of `coinb2`: zero in a job as first announced, and different in every
//! variant of it the pool hands one miner (a job re-announced at a new
//! difficulty, or to a resumed session), so a variant is new work even for a
//! miner that starts its search over on every notify.

use bitcoin::absolute::LockTime;
use bitcoin::block::Header;
use bitcoin::script::{self, PushBytesBuf};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};

/// Consensus bounds of a coinbase scriptSig, in bytes (Bitcoin Core `CheckTransaction`,
/// `bad-cb-length`).
pub const SCRIPT_SIG_LEN: std::ops::RangeInclusive<usize> = 2..=100;

/// Bytes at the start of `coinb2`, inside the extranonce push, that tell a job's
/// variants apart (see the module doc).
pub const VARIANT_LEN: usize = 2;

/// The largest extranonce that, with the variant bytes, a single-byte push opcode
/// (`OP_PUSHBYTES_1..=75`) carries, so that `coinb1` ends with exactly one
/// push-length byte.
pub const MAX_EXTRANONCE_LEN: usize = 75 - VARIANT_LEN;

/// The first bytes of a BIP141 witness commitment output script:
/// `OP_RETURN OP_PUSHBYTES_36 aa21a9ed`.
pub const WITNESS_COMMITMENT_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// Length of a witness commitment output script: the magic and the 32-byte commitment.
const WITNESS_COMMITMENT_LEN: usize = 38;

/// What goes into a block's coinbase besides its outputs: one recipe per template, from
/// which a coinbase paying any outputs can be built (one per solo miner).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoinbaseRecipe {
    /// The height of the block this coinbase belongs to, committed per BIP34.
    pub height: u64,
    /// Pushed after the extranonce so explorers show who mined the block; may be empty.
    pub pool_tag: Vec<u8>,
    /// Length of the extranonce slot: extranonce1 plus extranonce2 bytes.
    pub extranonce_len: usize,
    /// The `default_witness_commitment` output script, for blocks with segwit transactions.
    pub witness_commitment: Option<ScriptBuf>,
    /// Lock time `height - 1` with sequence `0xfffffffe`, as Bitcoin Core's own block
    /// assembler writes (`BlockAssembler::CreateNewBlock`); otherwise lock time 0 with
    /// sequence `0xffffffff`.
    pub lock_to_parent: bool,
}

/// A coinbase's non-witness serialization split around the extranonce bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CoinbaseParts {
    /// Bytes before the extranonce; ends with the extranonce push opcode.
    pub coinb1: Vec<u8>,
    /// Bytes after the extranonce: the variant bytes (zero), the pool tag push, the
    /// sequence, outputs and locktime.
    pub coinb2: Vec<u8>,
}

impl CoinbaseParts {
    /// `coinb2` of the job's `variant`.
    pub fn coinb2_variant(&self, variant: u16) -> Vec<u8> {
        let mut coinb2 = self.coinb2.clone();
        set_variant(&mut coinb2, variant);
        coinb2
    }

    /// Concatenates `coinb1 || extranonce || coinb2`, the coinbase a miner hashes.
    pub fn with_extranonce(&self, extranonce: &[u8]) -> Vec<u8> {
        let mut tx = Vec::with_capacity(self.coinb1.len() + extranonce.len() + self.coinb2.len());
        tx.extend_from_slice(&self.coinb1);
        tx.extend_from_slice(extranonce);
        tx.extend_from_slice(&self.coinb2);
        tx
    }
}

/// Writes `variant` into the variant bytes at the start of `coinb2`, which is
/// the whole coinbase's tail from there on (`coinb2` or the bytes after the
/// extranonce).
pub fn set_variant(coinb2: &mut [u8], variant: u16) {
    coinb2[..VARIANT_LEN].copy_from_slice(&variant.to_le_bytes());
}

/// Why a coinbase could not be built or a block could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum CoinbaseError {
    /// The extranonce slot does not fit a single-byte push opcode.
    #[error("extranonce length {got} is outside 1..={max}", max = MAX_EXTRANONCE_LEN)]
    ExtranonceLen { got: usize },
    /// The height does not fit a script number.
    #[error("height {0} does not fit a script number")]
    Height(u64),
    /// The scriptSig breaks the consensus size bounds.
    #[error(
        "coinbase scriptsig is {total} bytes (height push {height}, extranonce push {extranonce}, \
         pool tag push {tag}), must be {min}..={max} bytes",
        min = SCRIPT_SIG_LEN.start(),
        max = SCRIPT_SIG_LEN.end()
    )]
    ScriptSigLen {
        total: usize,
        height: usize,
        extranonce: usize,
        tag: usize,
    },
    /// The pool tag cannot be pushed.
    #[error("pool tag of {0} bytes cannot be pushed")]
    PoolTag(usize),
    /// The witness commitment output script is not a BIP141 commitment.
    #[error("witness commitment script {0} is not 6a24aa21a9ed followed by 32 bytes")]
    WitnessCommitment(String),
    /// The coinbase bytes do not deserialize to one transaction.
    #[error("coinbase does not deserialize")]
    Decode(#[source] bitcoin::consensus::encode::Error),
    /// The transaction is not a coinbase.
    #[error("transaction {0} is not a coinbase")]
    NotCoinbase(bitcoin::Txid),
}

/// The BIP34 height push that starts every coinbase scriptSig: the script Bitcoin Core
/// compares against (`CScript() << nHeight`, `ContextualCheckBlock`), i.e. `OP_0` for 0,
/// `OP_1..OP_16` for 1..=16 and a minimal `CScriptNum` push otherwise.
///
/// # Errors
/// [`CoinbaseError::Height`] when `height` exceeds `i64::MAX`.
pub fn height_script(height: u64) -> Result<ScriptBuf, CoinbaseError> {
    let value = i64::try_from(height).map_err(|_| CoinbaseError::Height(height))?;
    Ok(script::Builder::new().push_int(value).into_script())
}

/// Whether `script_sig` starts with the BIP34 push of `height`, Bitcoin Core's exact rule.
///
/// Unlike [`Block::bip34_block_height`], this also accepts heights 1..=16, which Core
/// encodes as `OP_1..OP_16` and the `bitcoin` crate does not read as a push.
pub fn commits_to_height(script_sig: &Script, height: u64) -> bool {
    height_script(height).is_ok_and(|prefix| script_sig.as_bytes().starts_with(prefix.as_bytes()))
}

/// Whether `script_pubkey` is a BIP141 witness commitment output script.
pub fn is_witness_commitment(script_pubkey: &Script) -> bool {
    let bytes = script_pubkey.as_bytes();
    bytes.len() >= WITNESS_COMMITMENT_LEN && bytes[..6] == WITNESS_COMMITMENT_MAGIC
}

impl CoinbaseRecipe {
    /// Builds the coinbase paying `outputs` (the whole reward, subsidy plus fees, in
    /// order) and splits it around the extranonce slot.
    ///
    /// The transaction is version 2 with one input (null outpoint; lock time and sequence per
    /// [`CoinbaseRecipe::lock_to_parent`]) and the outputs, then the witness commitment
    /// (value 0) when given.
    ///
    /// # Errors
    /// [`CoinbaseError::ExtranonceLen`] for an empty or over-long slot,
    /// [`CoinbaseError::ScriptSigLen`] when the scriptSig leaves 2..=100 bytes,
    /// [`CoinbaseError::WitnessCommitment`] for a commitment script of the wrong shape,
    /// [`CoinbaseError::Height`] / [`CoinbaseError::PoolTag`] for unencodable inputs.
    pub fn build(&self, outputs: &[TxOut]) -> Result<CoinbaseParts, CoinbaseError> {
        if !(1..=MAX_EXTRANONCE_LEN).contains(&self.extranonce_len) {
            return Err(CoinbaseError::ExtranonceLen {
                got: self.extranonce_len,
            });
        }
        let height = height_script(self.height)?;
        let tag = if self.pool_tag.is_empty() {
            ScriptBuf::new()
        } else {
            let push = PushBytesBuf::try_from(self.pool_tag.to_vec())
                .map_err(|_| CoinbaseError::PoolTag(self.pool_tag.len()))?;
            script::Builder::new().push_slice(push).into_script()
        };
        let extranonce_push = 1 + self.extranonce_len + VARIANT_LEN;
        let total = height.len() + extranonce_push + tag.len();
        if !SCRIPT_SIG_LEN.contains(&total) {
            return Err(CoinbaseError::ScriptSigLen {
                total,
                height: height.len(),
                extranonce: extranonce_push,
                tag: tag.len(),
            });
        }
        if let Some(commitment) = &self.witness_commitment {
            if !is_witness_commitment(commitment) {
                return Err(CoinbaseError::WitnessCommitment(hex::encode(
                    commitment.as_bytes(),
                )));
            }
        }

        // The extranonce push, assembled byte-wise so the slot sits at a known offset; with
        // placeholder zeros it is an ordinary `OP_PUSHBYTES_n` push.
        let mut script_sig = Vec::with_capacity(total);
        script_sig.extend_from_slice(height.as_bytes());
        script_sig.push((self.extranonce_len + VARIANT_LEN) as u8);
        let slot_in_script = script_sig.len();
        script_sig.resize(slot_in_script + self.extranonce_len + VARIANT_LEN, 0);
        script_sig.extend_from_slice(tag.as_bytes());

        let mut output = outputs.to_vec();
        if let Some(commitment) = &self.witness_commitment {
            output.push(TxOut {
                value: Amount::ZERO,
                script_pubkey: commitment.clone(),
            });
        }
        let (lock_time, sequence) = match self.height.checked_sub(1).map(u32::try_from) {
            Some(Ok(parent)) if self.lock_to_parent => (
                LockTime::from_height(parent).map_err(|_| CoinbaseError::Height(self.height))?,
                Sequence::ENABLE_LOCKTIME_NO_RBF,
            ),
            _ => (LockTime::ZERO, Sequence::MAX),
        };
        let tx = Transaction {
            version: Version::TWO,
            lock_time,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig),
                sequence,
                witness: Witness::new(),
            }],
            output,
        };
        let raw = bitcoin::consensus::serialize(&tx);
        // version (4) || input count (1) || null outpoint (36) || scriptSig length (1, as
        // the scriptSig is at most 100 bytes) || scriptSig up to the slot.
        let slot = 4 + 1 + 36 + 1 + slot_in_script;
        let end = slot + self.extranonce_len;
        match (raw.get(..slot), raw.get(end..)) {
            (Some(coinb1), Some(coinb2)) => Ok(CoinbaseParts {
                coinb1: coinb1.to_vec(),
                coinb2: coinb2.to_vec(),
            }),
            // The layout above is fixed by the size checks; this is unreachable.
            _ => Err(CoinbaseError::ScriptSigLen {
                total,
                height: height.len(),
                extranonce: extranonce_push,
                tag: tag.len(),
            }),
        }
    }
}

/// Assembles the full block for a solved share.
///
/// `coinbase` is `coinb1 || extranonce1 || extranonce2 || coinb2`, deserialized with the
/// `bitcoin` crate; `transactions` are the template's other transactions in block order.
/// When the coinbase has a witness commitment output, its witness becomes the single
/// 32-byte zero reserved value (BIP141), which the Stratum coinbase leaves out.
///
/// # Errors
/// [`CoinbaseError::Decode`] when `coinbase` is not exactly one transaction,
/// [`CoinbaseError::NotCoinbase`] when it is not a coinbase.
pub fn assemble_block(
    header: Header,
    coinbase: &[u8],
    transactions: &[Transaction],
) -> Result<Block, CoinbaseError> {
    let mut coinbase: Transaction =
        bitcoin::consensus::deserialize(coinbase).map_err(CoinbaseError::Decode)?;
    if !coinbase.is_coinbase() {
        return Err(CoinbaseError::NotCoinbase(coinbase.compute_txid()));
    }
    if coinbase
        .output
        .iter()
        .any(|out| is_witness_commitment(&out.script_pubkey))
    {
        if let Some(input) = coinbase.input.first_mut() {
            input.witness = Witness::from_slice(&[[0u8; 32]]);
        }
    }
    let mut txdata = Vec::with_capacity(1 + transactions.len());
    txdata.push(coinbase);
    txdata.extend_from_slice(transactions);
    Ok(Block { header, txdata })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::block::Version as BlockVersion;
    use bitcoin::hashes::Hash;
    use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};

    const HEIGHTS: [u64; 7] = [0, 1, 16, 17, 127, 128, 500_000];

    fn payout() -> Vec<TxOut> {
        vec![TxOut {
            value: Amount::from_sat(50 * 100_000_000),
            script_pubkey: ScriptBuf::new_op_return([0x51u8; 4]),
        }]
    }

    fn recipe(height: u64) -> CoinbaseRecipe {
        CoinbaseRecipe {
            height,
            pool_tag: b"/quarry/".to_vec(),
            extranonce_len: 8,
            witness_commitment: None,
            lock_to_parent: false,
        }
    }

    fn commitment() -> ScriptBuf {
        let mut bytes = WITNESS_COMMITMENT_MAGIC.to_vec();
        bytes.extend_from_slice(&[0x42; 32]);
        ScriptBuf::from_bytes(bytes)
    }

    fn header() -> Header {
        Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash: BlockHash::all_zeros(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: 1_700_000_000,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        }
    }

    #[test]
    fn parts_reassemble_to_a_coinbase_for_any_extranonce() {
        let payout = payout();
        for height in HEIGHTS {
            let parts = recipe(height).build(&payout).unwrap();
            assert_eq!(
                parts.coinb1.last(),
                Some(&10),
                "coinb1 ends with the push length: extranonce and variant"
            );
            assert_eq!(parts.coinb2[..VARIANT_LEN], [0, 0]);
            for extranonce in [[0u8; 8], [0xff; 8], *b"\x01\x4c\x4d\x4e\x00\x6a\x51\x00"] {
                let raw = parts.with_extranonce(&extranonce);
                let tx: Transaction = bitcoin::consensus::deserialize(&raw).unwrap();
                assert!(tx.is_coinbase());
                assert_eq!(bitcoin::consensus::serialize(&tx), raw);
                let script_sig = tx.input[0].script_sig.as_bytes();
                assert!(script_sig.windows(8).any(|w| w == extranonce));
                assert!(script_sig.ends_with(b"\x08/quarry/"));
                assert!(commits_to_height(&tx.input[0].script_sig, height));
                assert_eq!(tx.output.len(), 1);
                assert_eq!(tx.output[0].script_pubkey, payout[0].script_pubkey);
                assert_eq!(tx.output[0].value, Amount::from_sat(5_000_000_000));
                assert_eq!(tx.version, Version::TWO);
                assert_eq!(tx.lock_time, LockTime::ZERO);
                assert_eq!(tx.input[0].sequence, Sequence::MAX);
            }
        }
    }

    #[test]
    fn bip34_height_of_assembled_blocks() {
        let payout = payout();
        for height in HEIGHTS {
            let parts = recipe(height).build(&payout).unwrap();
            let block = assemble_block(header(), &parts.with_extranonce(&[7; 8]), &[]).unwrap();
            let script_sig = &block.txdata[0].input[0].script_sig;
            assert!(commits_to_height(script_sig, height), "height {height}");
            assert!(
                !commits_to_height(script_sig, height + 1),
                "height {height}"
            );
            if (1..=16).contains(&height) {
                // Core's `CScript() << n` is OP_n here, which the crate does not read.
                assert!(block.bip34_block_height().is_err(), "height {height}");
            } else {
                assert_eq!(block.bip34_block_height().unwrap(), height);
            }
        }
    }

    #[test]
    fn height_pushes_match_bitcoin_core() {
        let hex = |h| hex::encode(height_script(h).unwrap().as_bytes());
        assert_eq!(hex(0), "00");
        assert_eq!(hex(1), "51");
        assert_eq!(hex(16), "60");
        assert_eq!(hex(17), "0111");
        assert_eq!(hex(127), "017f");
        assert_eq!(hex(128), "028000");
        // Mainnet block 500000's coinbase starts with 0320a107.
        assert_eq!(hex(500_000), "0320a107");
        assert!(matches!(
            height_script(u64::MAX),
            Err(CoinbaseError::Height(u64::MAX))
        ));
    }

    #[test]
    fn script_sig_is_bounded() {
        let payout = payout();
        // height push 4 + extranonce push 11 + tag push 2+83 (OP_PUSHDATA1) = 100 bytes.
        let tag = [b'q'; 83];
        let ok = CoinbaseRecipe {
            pool_tag: tag.to_vec(),
            ..recipe(500_000)
        };
        let parts = ok.build(&payout).unwrap();
        let tx: Transaction =
            bitcoin::consensus::deserialize(&parts.with_extranonce(&[0; 8])).unwrap();
        assert_eq!(tx.input[0].script_sig.len(), 100);

        let tag = [b'q'; 84];
        let err = CoinbaseRecipe {
            pool_tag: tag.to_vec(),
            ..recipe(500_000)
        }
        .build(&payout)
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "coinbase scriptsig is 101 bytes (height push 4, extranonce push 11, pool tag push 86), \
             must be 2..=100 bytes"
        );

        for extranonce_len in [0, 74] {
            let err = CoinbaseRecipe {
                extranonce_len,
                pool_tag: Vec::new(),
                ..recipe(0)
            }
            .build(&payout)
            .unwrap_err();
            assert!(matches!(err, CoinbaseError::ExtranonceLen { got } if got == extranonce_len));
        }
        // The smallest scriptSig: OP_0 and the push of a one-byte extranonce and the variant.
        let parts = CoinbaseRecipe {
            extranonce_len: 1,
            pool_tag: Vec::new(),
            ..recipe(0)
        }
        .build(&payout)
        .unwrap();
        let tx: Transaction =
            bitcoin::consensus::deserialize(&parts.with_extranonce(&[0])).unwrap();
        assert_eq!(tx.input[0].script_sig.as_bytes(), [0x00, 0x03, 0x00, 0, 0]);
    }

    #[test]
    fn variants_differ_only_in_the_variant_bytes_and_stay_valid() {
        let payout = payout();
        let parts = recipe(500_000).build(&payout).unwrap();
        let base = parts.with_extranonce(&[7; 8]);
        let variant = CoinbaseParts {
            coinb2: parts.coinb2_variant(0x0102),
            ..parts.clone()
        }
        .with_extranonce(&[7; 8]);
        let differing: Vec<usize> = (0..base.len()).filter(|&i| base[i] != variant[i]).collect();
        let at = parts.coinb1.len() + 8;
        assert_eq!(differing, [at, at + 1]);
        assert_eq!(variant[at..at + VARIANT_LEN], [0x02, 0x01]);
        let tx: Transaction = bitcoin::consensus::deserialize(&variant).unwrap();
        assert!(tx.is_coinbase() && commits_to_height(&tx.input[0].script_sig, 500_000));
        assert!(tx.input[0].script_sig.as_bytes().ends_with(b"\x08/quarry/"));
    }

    #[test]
    fn witness_is_added_only_with_a_commitment() {
        let payout = payout();
        let plain = recipe(17).build(&payout).unwrap();
        let block = assemble_block(header(), &plain.with_extranonce(&[1; 8]), &[]).unwrap();
        assert!(block.txdata[0].input[0].witness.is_empty());
        assert!(block.check_witness_commitment());

        let segwit = CoinbaseRecipe {
            witness_commitment: Some(commitment()),
            ..recipe(17)
        }
        .build(&payout)
        .unwrap();
        let raw = segwit.with_extranonce(&[1; 8]);
        let tx: Transaction = bitcoin::consensus::deserialize(&raw).unwrap();
        assert_eq!(tx.output.len(), 2);
        assert_eq!(tx.output[1].value, Amount::ZERO);
        assert_eq!(tx.output[1].script_pubkey, commitment());
        assert!(
            tx.input[0].witness.is_empty(),
            "coinb1/coinb2 carry no witness"
        );

        let block = assemble_block(header(), &raw, &[]).unwrap();
        let witness: Vec<&[u8]> = block.txdata[0].input[0].witness.iter().collect();
        assert_eq!(witness, [&[0u8; 32][..]]);
        // The txid, and so the merkle root, does not depend on the witness.
        assert_eq!(block.txdata[0].compute_txid(), tx.compute_txid());
    }

    #[test]
    fn malformed_commitments_are_rejected() {
        let payout = payout();
        let err = CoinbaseRecipe {
            witness_commitment: Some(ScriptBuf::from_bytes(vec![0x6a, 0x24])),
            ..recipe(1)
        }
        .build(&payout)
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "witness commitment script 6a24 is not 6a24aa21a9ed followed by 32 bytes"
        );
    }

    #[test]
    fn assembly_rejects_garbage_and_non_coinbases() {
        let payout = payout();
        let parts = recipe(3).build(&payout).unwrap();
        let mut raw = parts.with_extranonce(&[0; 8]);
        raw.push(0);
        assert!(matches!(
            assemble_block(header(), &raw, &[]),
            Err(CoinbaseError::Decode(_))
        ));
        assert!(matches!(
            assemble_block(header(), &[], &[]),
            Err(CoinbaseError::Decode(_))
        ));

        let mut tx: Transaction =
            bitcoin::consensus::deserialize(&parts.with_extranonce(&[0; 8])).unwrap();
        tx.input[0].previous_output.vout = 0;
        let raw = bitcoin::consensus::serialize(&tx);
        assert!(matches!(
            assemble_block(header(), &raw, &[]),
            Err(CoinbaseError::NotCoinbase(_))
        ));
    }

    #[test]
    fn template_transactions_follow_the_coinbase() {
        let payout = payout();
        let parts = recipe(200).build(&payout).unwrap();
        let other: Transaction = bitcoin::consensus::deserialize(
            &recipe(1).build(&payout).unwrap().with_extranonce(&[9; 8]),
        )
        .unwrap();
        let block = assemble_block(
            header(),
            &parts.with_extranonce(&[0; 8]),
            std::slice::from_ref(&other),
        )
        .unwrap();
        assert_eq!(block.txdata.len(), 2);
        assert_eq!(block.txdata[1], other);
    }
}
