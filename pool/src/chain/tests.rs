use bitcoin::absolute::LockTime;
use bitcoin::block::Version;
use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Sequence, TxIn, TxMerkleNode, TxOut, WitnessMerkleNode};
use quarry_protocol::share::ShareFields;
use quarry_protocol::{Extranonce, HexBytes, HexU32Be, Notify, PrevHash, RawHash};

use super::genesis::{genesis_bits, GENESIS_TIME};
use super::retarget::max_bits;
use super::*;
use crate::coinbase::{self, assemble_block, WITNESS_COMMITMENT_MAGIC};

/// 1e-10 is below regtest's difficulty (4.66e-10), so the target is the maximum and about every
/// second nonce solves a block.
const EASY: f64 = 1e-10;
const START: u32 = GENESIS_TIME + 1_000_000;

fn payout() -> ScriptBuf {
    // A P2WPKH script for a fixed key hash.
    ScriptBuf::from_bytes([&[0x00, 0x14][..], &[0x11; 20]].concat())
}

/// The next template, paying everything to [`payout`].
fn operator_template(chain: &EmbeddedChain, now: u32) -> Template {
    chain.template(now, |value| JobPayouts::operator(value, &payout()))
}

fn params(initial_difficulty: f64) -> ChainParams {
    ChainParams {
        initial_difficulty,
        block_time: Duration::from_secs(60),
        retarget_interval: 60,
        payout: payout(),
        pool_tag: b"/quarry-test/".to_vec(),
        extranonce_len: 8,
    }
}

fn fresh(initial_difficulty: f64) -> EmbeddedChain {
    EmbeddedChain::open(params(initial_difficulty), Vec::new()).unwrap()
}

/// The Stratum job a pool would send for `template`.
fn notify(template: &Template) -> Notify {
    Notify {
        job_id: "1".parse().unwrap(),
        prevhash: PrevHash::from_block_hash(template.prev_hash),
        coinb1: HexBytes(template.coinbase.coinb1.clone()),
        coinb2: HexBytes(template.coinbase.coinb2.clone()),
        merkle_branch: template
            .merkle_branch
            .iter()
            .copied()
            .map(RawHash)
            .collect(),
        version: HexU32Be(template.version as u32),
        nbits: HexU32Be(template.bits.to_consensus()),
        ntime: HexU32Be(template.time),
        clean_jobs: true,
    }
}

/// Mines `template` at `time` the way a miner and the pool would: the header from the
/// Stratum job and a submit, then the block from the solved share.
fn solve(template: &Template, time: u32) -> Block {
    let job = notify(template);
    let mut share = ShareFields {
        extranonce1: Extranonce::new(&[0xde, 0xad, 0xbe, 0xef]).unwrap(),
        extranonce2: Extranonce::from_counter(template.height, 4),
        ntime: time,
        nonce: 0,
        version: template.version as u32,
    };
    let target = Target::from_compact(template.bits);
    while job.header(&share).validate_pow(target).is_err() {
        share.nonce += 1;
    }
    let raw = job.coinbase(&share.extranonce1, &share.extranonce2);
    assemble_block(job.header(&share), &raw, &template.transactions).unwrap()
}

/// Grinds the nonce of `block` until it meets its bits again.
fn regrind(block: &mut Block) {
    block.header.nonce = 0;
    while block.header.validate_pow(block.header.target()).is_err() {
        block.header.nonce += 1;
    }
}

/// Fixes the merkle root of `block` after its transactions changed, then regrinds.
fn reseal(block: &mut Block) {
    block.header.merkle_root = block.compute_merkle_root().unwrap();
    regrind(block);
}

/// Mines and accepts `count` blocks spaced `spacing` seconds after the tip (`START` for
/// the first), returning their raw bytes.
fn mine(chain: &mut EmbeddedChain, count: usize, spacing: u32) -> Vec<Vec<u8>> {
    let mut raw = Vec::new();
    for _ in 0..count {
        let time = if chain.height() == 0 {
            START
        } else {
            chain.header(chain.height()).unwrap().time + spacing
        };
        let template = operator_template(chain, time);
        assert_eq!(template.time, time);
        let block = solve(&template, time);
        assert_eq!(chain.accept(&block, time).unwrap(), template.height);
        raw.push(bitcoin::consensus::serialize(&block));
    }
    raw
}

/// A valid next block for `chain` at `START`-based time, not yet accepted.
fn candidate(chain: &EmbeddedChain) -> (Block, u32) {
    let now = chain.median_time_past().max(START) + 60;
    (solve(&operator_template(chain, now), now), now)
}

fn independently_valid(raw: &[u8], height: u64) {
    let block: Block = bitcoin::consensus::deserialize(raw).unwrap();
    assert!(block.check_merkle_root());
    block.header.validate_pow(block.header.target()).unwrap();
    assert!(block.txdata[0].is_coinbase());
    assert!(coinbase::commits_to_height(
        &block.txdata[0].input[0].script_sig,
        height
    ));
    if !(1..=16).contains(&height) {
        assert_eq!(block.bip34_block_height().unwrap(), height);
    }
    assert_eq!(bitcoin::consensus::serialize(&block), raw);
}

#[test]
fn fresh_chain_has_a_valid_genesis() {
    let chain = fresh(0.001);
    assert_eq!(chain.height(), 0);
    let genesis = chain.genesis();
    assert_eq!(chain.tip_hash(), genesis.block_hash());
    assert_eq!(genesis.header.prev_blockhash, BlockHash::all_zeros());
    assert_eq!(genesis.header.bits, genesis_bits());
    assert_eq!(genesis.header.time, GENESIS_TIME);
    assert_eq!(genesis.txdata.len(), 1);
    assert_eq!(genesis.txdata[0].output[0].script_pubkey, payout());
    assert_eq!(
        genesis.txdata[0].output[0].value,
        Amount::from_sat(5_000_000_000)
    );
    independently_valid(&bitcoin::consensus::serialize(genesis), 0);
    assert_ne!(
        genesis.block_hash(),
        bitcoin::constants::genesis_block(bitcoin::Network::Bitcoin).block_hash()
    );
    // Block 1 is mined at the initial difficulty, not the genesis bits.
    assert!((chain.network_difficulty() - 0.001).abs() < 1e-9);
}

#[test]
fn genesis_is_deterministic_given_params() {
    let a = fresh(0.001);
    let b = fresh(0.001);
    assert_eq!(a.genesis(), b.genesis());
    let mut other = params(0.001);
    other.pool_tag = b"/other/".to_vec();
    let c = EmbeddedChain::open(other, Vec::new()).unwrap();
    assert_ne!(a.tip_hash(), c.tip_hash());
}

#[test]
fn mined_blocks_extend_the_tip() {
    let mut chain = fresh(EASY);
    let raw = mine(&mut chain, 20, 60);
    assert_eq!(chain.height(), 20);
    for (i, raw) in raw.iter().enumerate() {
        independently_valid(raw, i as u64 + 1);
    }
    let tip: Block = bitcoin::consensus::deserialize(raw.last().unwrap()).unwrap();
    assert_eq!(chain.tip_hash(), tip.block_hash());
    assert_eq!(operator_template(&chain, 0).prev_hash, tip.block_hash());
    assert_eq!(operator_template(&chain, 0).height, 21);
}

#[test]
fn template_time_is_after_the_median_time_past() {
    let mut chain = fresh(EASY);
    mine(&mut chain, 11, 60);
    let median = chain.median_time_past();
    // Blocks 1..=11 at START + 60·k: the median of the last 11 is block 6's time.
    assert_eq!(median, START + 300);
    assert_eq!(operator_template(&chain, 0).time, median + 1);
    assert_eq!(
        operator_template(&chain, START + 10_000).time,
        START + 10_000
    );
    let template = operator_template(&chain, START);
    assert_eq!(template.coinbase_value, Amount::from_sat(5_000_000_000));
    assert!(template.transactions.is_empty());
    assert!(template.merkle_branch.is_empty());
    assert_eq!(template.version, BLOCK_VERSION);
}

#[test]
fn reopening_restores_height_and_tip() {
    let mut chain = fresh(EASY);
    let mut stored = vec![bitcoin::consensus::serialize(chain.genesis())];
    stored.extend(mine(&mut chain, 70, 30));
    let restored = EmbeddedChain::open(params(EASY), stored.clone()).unwrap();
    assert_eq!(restored.height(), 70);
    assert_eq!(restored.tip_hash(), chain.tip_hash());
    assert_eq!(restored.genesis(), chain.genesis());
    assert_eq!(restored.next_bits(), chain.next_bits());
    assert_eq!(
        operator_template(&restored, START),
        operator_template(&chain, START)
    );

    // Only the genesis block.
    let restored = EmbeddedChain::open(params(EASY), stored[..1].to_vec()).unwrap();
    assert_eq!(restored.height(), 0);
    assert_eq!(restored.tip_hash(), chain.genesis().block_hash());
}

#[test]
fn reopening_rejects_invalid_stored_blocks() {
    let mut chain = fresh(EASY);
    let mut stored = vec![bitcoin::consensus::serialize(chain.genesis())];
    stored.extend(mine(&mut chain, 3, 60));

    let mut truncated = stored.clone();
    truncated[2].pop();
    let err = EmbeddedChain::open(params(EASY), truncated).unwrap_err();
    assert!(matches!(err, ChainError::Decode { height: 2, .. }), "{err}");
    assert_eq!(err.to_string(), "stored block 2 does not deserialize");

    let mut swapped = stored.clone();
    swapped.swap(1, 2);
    let err = EmbeddedChain::open(params(EASY), swapped).unwrap_err();
    let ChainError::Stored { height: 1, source } = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(**source, ChainError::BadPrevHash { .. }),
        "{source}"
    );

    // Blocks mined under another initial difficulty break the bits rule.
    let err = EmbeddedChain::open(params(0.001), stored.clone()).unwrap_err();
    let ChainError::Stored { height: 1, source } = &err else {
        panic!("{err:?}");
    };
    assert!(matches!(**source, ChainError::BadBits { .. }), "{source}");

    // A genesis that does not start at the null hash.
    let err = EmbeddedChain::open(params(EASY), stored[1..].to_vec()).unwrap_err();
    assert!(matches!(err, ChainError::Stored { height: 0, .. }), "{err}");

    assert!(matches!(
        EmbeddedChain::open(params(EASY), vec![Vec::new()]),
        Err(ChainError::Decode { height: 0, .. })
    ));
}

#[test]
fn retarget_follows_block_times() {
    let mut params = params(EASY);
    params.retarget_interval = 4;
    let mut chain = EmbeddedChain::open(params, Vec::new()).unwrap();
    assert_eq!(chain.next_bits(), max_bits());
    let difficulty = |chain: &EmbeddedChain| chain.network_difficulty();

    // Blocks 1..=3 twice as fast as the 60 s block time: the first window (blocks 1..3,
    // two gaps) halves the target, up to compact rounding.
    mine(&mut chain, 2, 30);
    assert_eq!(chain.next_bits(), max_bits());
    let before = difficulty(&chain);
    mine(&mut chain, 1, 30);
    assert_eq!(chain.next_bits().to_consensus(), 0x203f_ffff);
    assert!((difficulty(&chain) / before - 2.0).abs() < 1e-6);
    let raw = mine(&mut chain, 1, 30);
    assert_eq!(chain.header(4).unwrap().bits.to_consensus(), 0x203f_ffff);
    independently_valid(&raw[0], 4);

    // Blocks 4..=7 twice as fast again: window 3..7, four gaps.
    mine(&mut chain, 2, 30);
    assert_eq!(chain.next_bits().to_consensus(), 0x203f_ffff);
    mine(&mut chain, 1, 30);
    assert_eq!(chain.next_bits().to_consensus(), 0x201f_ffff);

    // Far too fast: clamped to a quarter of the target.
    let before = difficulty(&chain);
    mine(&mut chain, 4, 1);
    assert_eq!(chain.next_bits().to_consensus(), 0x2007_ffff);
    assert!((difficulty(&chain) / before - 4.0).abs() < 1e-4);

    // Far too slow: clamped to four times the target.
    mine(&mut chain, 4, 10_000);
    assert_eq!(chain.next_bits().to_consensus(), 0x201f_fffc);
    mine(&mut chain, 4, 10_000);
    assert_eq!(chain.next_bits().to_consensus(), 0x207f_fff0);

    // Slow at the easiest target: capped there.
    mine(&mut chain, 4, 10_000);
    assert_eq!(chain.next_bits(), max_bits());
    assert_eq!(chain.height(), 23);
}

#[test]
fn on_time_blocks_keep_the_difficulty() {
    let mut params = params(1e-8);
    params.retarget_interval = 5;
    let mut chain = EmbeddedChain::open(params, Vec::new()).unwrap();
    let bits = chain.next_bits();
    assert_ne!(bits, max_bits());
    mine(&mut chain, 12, 60);
    assert_eq!(chain.next_bits(), bits);
}

/// The error `chain` gives `block`, checking the chain stays unchanged.
fn reject(chain: &mut EmbeddedChain, block: &Block, now: u32) -> ChainError {
    let (height, tip) = (chain.height(), chain.tip_hash());
    let err = chain.accept(block, now).unwrap_err();
    assert_eq!((chain.height(), chain.tip_hash()), (height, tip));
    err
}

fn chain_with_blocks() -> EmbeddedChain {
    let mut chain = fresh(EASY);
    mine(&mut chain, 2, 60);
    chain
}

#[test]
fn rejects_a_bad_prev_hash() {
    let mut chain = chain_with_blocks();
    let (mut block, now) = candidate(&chain);
    block.header.prev_blockhash = chain.genesis().block_hash();
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert_eq!(
        err.to_string(),
        format!(
            "bad prev hash: expected {}, got {}",
            chain.tip_hash(),
            chain.genesis().block_hash()
        )
    );
}

#[test]
fn rejects_bad_bits() {
    let mut chain = chain_with_blocks();
    let (mut block, now) = candidate(&chain);
    block.header.bits = CompactTarget::from_consensus(0x207f_fffe);
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert_eq!(err.to_string(), "bad bits: expected 207fffff, got 207ffffe");
}

#[test]
fn rejects_a_high_hash() {
    let mut chain = chain_with_blocks();
    let (mut block, now) = candidate(&chain);
    let target = block.header.target();
    while block.header.validate_pow(target).is_ok() {
        block.header.nonce += 1;
    }
    let err = reject(&mut chain, &block, now);
    assert!(
        matches!(err, ChainError::HighHash { hash, bits: 0x207f_ffff } if hash == block.block_hash())
    );
    assert!(err.to_string().starts_with("high hash: block "), "{err}");
}

#[test]
fn rejects_a_low_version() {
    let mut chain = chain_with_blocks();
    let (mut block, now) = candidate(&chain);
    block.header.version = Version::from_consensus(3);
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert_eq!(err.to_string(), "bad version: 0x00000003 is below 4");
}

#[test]
fn rejects_times_outside_the_window() {
    let mut chain = chain_with_blocks();
    let median = chain.median_time_past();
    let (mut block, now) = candidate(&chain);
    block.header.time = median;
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert_eq!(
        err.to_string(),
        format!("time too old: {median} is not after the median time past {median}")
    );

    block.header.time = now + MAX_FUTURE_BLOCK_TIME + 1;
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert!(matches!(err, ChainError::TimeTooNew { time, limit } if time == limit + 1));

    block.header.time = now + MAX_FUTURE_BLOCK_TIME;
    regrind(&mut block);
    chain.accept(&block, now).unwrap();
}

#[test]
fn rejects_a_bad_merkle_root() {
    let mut chain = chain_with_blocks();
    let (mut block, now) = candidate(&chain);
    block.header.merkle_root = TxMerkleNode::all_zeros();
    regrind(&mut block);
    let err = reject(&mut chain, &block, now);
    assert!(
        matches!(err, ChainError::BadMerkleRoot { expected, .. } if expected == block.compute_merkle_root().unwrap())
    );
    assert!(err.to_string().starts_with("bad merkle root: expected "));
}

#[test]
fn rejects_blocks_without_a_proper_coinbase() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);

    let mut empty = block.clone();
    empty.txdata.clear();
    assert!(matches!(
        reject(&mut chain, &empty, now),
        ChainError::NoTransactions
    ));

    let mut not_coinbase = block.clone();
    not_coinbase.txdata[0].input[0].previous_output = OutPoint {
        txid: bitcoin::Txid::all_zeros(),
        vout: 0,
    };
    reseal(&mut not_coinbase);
    assert!(matches!(
        reject(&mut chain, &not_coinbase, now),
        ChainError::FirstNotCoinbase(_)
    ));

    let mut two = block.clone();
    two.txdata.push(block.txdata[0].clone());
    reseal(&mut two);
    let err = reject(&mut chain, &two, now);
    assert_eq!(err.to_string(), "transaction 1 is a second coinbase");

    let mut spend = block.clone();
    spend.txdata.push(Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: block.txdata[0].compute_txid(),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1),
            script_pubkey: payout(),
        }],
    });
    reseal(&mut spend);
    assert!(matches!(
        reject(&mut chain, &spend, now),
        ChainError::UnexpectedTransactions { count: 1 }
    ));
}

/// `block` with its coinbase replaced by `coinbase`, resealed.
fn with_coinbase(block: &Block, coinbase: Transaction) -> Block {
    let mut block = block.clone();
    block.txdata[0] = coinbase;
    reseal(&mut block);
    block
}

fn coinbase_at(height: u64, value: Amount, commitment: Option<ScriptBuf>) -> Transaction {
    let outputs = [TxOut {
        value,
        script_pubkey: payout(),
    }];
    let recipe = CoinbaseRecipe {
        height,
        pool_tag: b"/quarry-test/".to_vec(),
        extranonce_len: 8,
        witness_commitment: commitment,
        lock_to_parent: false,
    };
    let parts = recipe.build(&outputs).unwrap();
    bitcoin::consensus::deserialize(&parts.with_extranonce(&[0; 8])).unwrap()
}

#[test]
fn rejects_a_wrong_bip34_height() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);
    for wrong in [0, 2, 4, 17] {
        let block = with_coinbase(&block, coinbase_at(wrong, subsidy(3), None));
        let err = reject(&mut chain, &block, now);
        assert!(
            matches!(err, ChainError::BadHeight { expected: 3, .. }),
            "{wrong}: {err}"
        );
    }
    let block = with_coinbase(&block, coinbase_at(3, subsidy(3), None));
    chain.accept(&block, now).unwrap();
}

#[test]
fn rejects_an_overpaying_coinbase() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);
    let over = with_coinbase(
        &block,
        coinbase_at(3, subsidy(3) + Amount::from_sat(1), None),
    );
    let err = reject(&mut chain, &over, now);
    assert_eq!(
        err.to_string(),
        "bad coinbase value: pays 50.00000001 BTC, more than the 50 BTC allowed"
    );

    let mut split = coinbase_at(3, Amount::from_sat(2_500_000_000), None);
    split.output.push(split.output[0].clone());
    split.output.push(TxOut {
        value: Amount::from_sat(1),
        script_pubkey: payout(),
    });
    assert!(matches!(
        reject(&mut chain, &with_coinbase(&block, split.clone()), now),
        ChainError::BadCoinbaseValue { .. }
    ));

    split.output[2].value = Amount::MAX_MONEY;
    assert!(matches!(
        reject(&mut chain, &with_coinbase(&block, split.clone()), now),
        ChainError::OutputValueRange(_)
    ));

    split.output.clear();
    assert!(matches!(
        reject(&mut chain, &with_coinbase(&block, split), now),
        ChainError::NoOutputs
    ));

    // Paying less than the subsidy is allowed.
    chain
        .accept(
            &with_coinbase(&block, coinbase_at(3, Amount::from_sat(1), None)),
            now,
        )
        .unwrap();
}

#[test]
fn rejects_a_bad_scriptsig_length() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);
    let mut long = block.txdata[0].clone();
    let mut script = long.input[0].script_sig.to_bytes();
    script.resize(101, 0x61); // OP_NOP
    long.input[0].script_sig = ScriptBuf::from_bytes(script);
    let err = reject(&mut chain, &with_coinbase(&block, long), now);
    assert_eq!(
        err.to_string(),
        "bad coinbase scriptsig length: 101 bytes, must be 2..=100"
    );
}

#[test]
fn checks_witness_commitments() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);

    // A witness without a commitment.
    let mut witnessed = block.clone();
    witnessed.txdata[0].input[0].witness = bitcoin::Witness::from_slice(&[[0u8; 32]]);
    assert!(matches!(
        reject(&mut chain, &witnessed, now),
        ChainError::UnexpectedWitness
    ));

    // A commitment to the wrong root, assembled with its reserved value.
    let wrong = ScriptBuf::from_bytes([&WITNESS_COMMITMENT_MAGIC[..], &[0x42; 32]].concat());
    let raw = bitcoin::consensus::serialize(&coinbase_at(3, subsidy(3), Some(wrong)));
    let mut bad = assemble_block(block.header, &raw, &[]).unwrap();
    reseal(&mut bad);
    assert!(matches!(
        reject(&mut chain, &bad, now),
        ChainError::BadWitnessCommitment
    ));

    // The right commitment: with only a coinbase the witness root is all zeros.
    let commitment = Block::compute_witness_commitment(&WitnessMerkleNode::all_zeros(), &[0u8; 32]);
    let script =
        ScriptBuf::from_bytes([&WITNESS_COMMITMENT_MAGIC[..], commitment.as_byte_array()].concat());
    let raw = bitcoin::consensus::serialize(&coinbase_at(3, subsidy(3), Some(script)));
    let mut good = assemble_block(block.header, &raw, &[]).unwrap();
    reseal(&mut good);

    // ... but without its reserved value.
    let mut bare = good.clone();
    bare.txdata[0].input[0].witness = bitcoin::Witness::new();
    assert!(matches!(
        reject(&mut chain, &bare, now),
        ChainError::BadWitnessCommitment
    ));

    assert_eq!(chain.accept(&good, now).unwrap(), 3);
    independently_valid(&bitcoin::consensus::serialize(&good), 3);
    assert!(good.check_witness_commitment());
}

#[test]
fn rejects_an_overweight_block() {
    let mut chain = chain_with_blocks();
    let (block, now) = candidate(&chain);
    let mut heavy = block.txdata[0].clone();
    heavy.output.push(TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x6a; 1_000_000]),
    });
    let err = reject(&mut chain, &with_coinbase(&block, heavy), now);
    let ChainError::Weight(weight) = err else {
        panic!("{err:?}");
    };
    assert!(weight > 4_000_000);
}

#[test]
fn rejects_unusable_params() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e80] {
        let err = EmbeddedChain::open(params(bad), Vec::new()).unwrap_err();
        assert!(matches!(err, ChainError::InitialDifficulty(_)), "{bad}");
    }
    let mut p = params(EASY);
    p.block_time = Duration::from_millis(999);
    assert!(matches!(
        EmbeddedChain::open(p, Vec::new()),
        Err(ChainError::BlockTime(_))
    ));
    let mut p = params(EASY);
    p.retarget_interval = 0;
    assert!(matches!(
        EmbeddedChain::open(p, Vec::new()),
        Err(ChainError::RetargetInterval)
    ));
    let mut p = params(EASY);
    p.extranonce_len = 0;
    assert!(matches!(
        EmbeddedChain::open(p, Vec::new()),
        Err(ChainError::Coinbase(_))
    ));
    // Fits at height 0, but not at the heights the chain grows to.
    let mut p = params(EASY);
    p.pool_tag = vec![b'q'; 87];
    assert!(matches!(
        EmbeddedChain::open(p, Vec::new()),
        Err(ChainError::Coinbase(_))
    ));
}

#[test]
fn initial_difficulty_sets_block_one_bits() {
    let chain = fresh(1.0);
    assert_eq!(chain.next_bits().to_consensus(), 0x1d00_ffff);
    assert_eq!(chain.genesis().header.bits, genesis_bits());
    let chain = fresh(EASY);
    assert_eq!(chain.next_bits(), max_bits());
}

#[test]
fn subsidy_halves_like_bitcoin() {
    assert_eq!(subsidy(0), Amount::from_sat(5_000_000_000));
    assert_eq!(subsidy(209_999), Amount::from_sat(5_000_000_000));
    assert_eq!(subsidy(210_000), Amount::from_sat(2_500_000_000));
    assert_eq!(subsidy(840_000), Amount::from_sat(312_500_000));
    assert_eq!(subsidy(32 * 210_000), Amount::from_sat(1));
    assert_eq!(subsidy(33 * 210_000), Amount::ZERO);
    assert_eq!(subsidy(u64::MAX), Amount::ZERO);
}
