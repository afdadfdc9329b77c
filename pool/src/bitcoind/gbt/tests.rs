//! Templates Bitcoin Core v30.0 returned on regtest (`tests/fixtures/bitcoind`), turned into jobs
//! and blocks and compared with the block the node accepted.

use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::{Block, TxMerkleNode};
use quarry_protocol::merkle::root_from_branch;
use serde_json::Value;

use super::*;
use crate::coinbase::commits_to_height;

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/bitcoind")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn template(name: &str) -> BlockTemplate {
    serde_json::from_str(&fixture(name)).unwrap()
}

/// The coinbase the fixture block was built with. Its scriptSig pushes 12
/// bytes after the height: today 10 of extranonce and the 2 variant bytes the
/// pool owns (the fixture's last two, `00 01`, are variant 0x0100).
fn fixture_coinbase() -> CoinbaseConfig {
    CoinbaseConfig {
        pool_tag: b"/quarry-fixture/".to_vec(),
        extranonce_len: 10,
    }
}

/// The fixture block's payout script.
fn fixture_payout() -> ScriptBuf {
    ScriptBuf::from_bytes(hex::decode("0014b5649baabd65219af6ab6f782099a7976f5edce3").unwrap())
}

/// The job for `gbt` with the fixture's coinbase, paying everything to the payout script.
fn job(gbt: &BlockTemplate) -> Result<Template, TemplateError> {
    let value = Amount::from_sat(gbt.coinbasevalue);
    gbt.to_template(
        &fixture_coinbase(),
        JobPayouts::operator(value, &fixture_payout()),
    )
}

fn unhex(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().unwrap()).unwrap()
}

/// Builds the block a miner's share on `job` (as its `variant`) makes, as
/// the pool does.
fn block_of_variant(job: &Template, variant: u16, extranonce: &[u8], nonce: u32) -> Block {
    let parts = crate::coinbase::CoinbaseParts {
        coinb2: job.coinbase.coinb2_variant(variant),
        ..job.coinbase.clone()
    };
    let coinbase = parts.with_extranonce(extranonce);
    let txid = bitcoin::Txid::hash(&coinbase).to_byte_array();
    let root = root_from_branch(txid, &job.merkle_branch);
    let header = bitcoin::block::Header {
        version: bitcoin::block::Version::from_consensus(job.version),
        prev_blockhash: job.prev_hash,
        merkle_root: TxMerkleNode::from_byte_array(root),
        time: job.time,
        bits: job.bits,
        nonce,
    };
    assemble_block(header, &coinbase, &job.transactions).unwrap()
}

fn block(job: &Template, extranonce: &[u8], nonce: u32) -> Block {
    block_of_variant(job, 0, extranonce, nonce)
}

#[test]
fn the_accepted_block_is_rebuilt_byte_for_byte() {
    let facts: Value = serde_json::from_str(&fixture("block-from-gbt-many.json")).unwrap();
    let gbt = template("gbt-many.json");
    let job = job(&gbt).unwrap();

    let stratum = &facts["stratum"];
    assert_eq!(job.coinbase.coinb1, unhex(&stratum["coinb1"]));
    // coinb2 now starts with the (zero) variant bytes.
    assert_eq!(job.coinbase.coinb2[..2], [0, 0]);
    assert_eq!(job.coinbase.coinb2[2..], unhex(&stratum["coinb2"]));
    let branch: Vec<Vec<u8>> = facts["merkle_branch"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    assert_eq!(job.merkle_branch.len(), 6);
    assert_eq!(
        job.merkle_branch
            .iter()
            .map(|b| b.to_vec())
            .collect::<Vec<_>>(),
        branch
    );
    assert_eq!(job.height, 142);
    assert_eq!(job.time, gbt.curtime);
    assert_eq!(job.coinbase_value.to_sat(), 5_000_318_444);
    assert_eq!(job.transactions.len(), 32);

    let pushed = [
        unhex(&stratum["extranonce1"]),
        unhex(&stratum["extranonce2"]),
    ]
    .concat();
    let (extranonce, variant) = pushed.split_at(10);
    let variant = u16::from_le_bytes([variant[0], variant[1]]);
    let nonce = facts["nonce"].as_u64().unwrap() as u32;
    let block = block_of_variant(&job, variant, extranonce, nonce);
    assert_eq!(
        serialize_hex(&block.header),
        facts["header_hex"].as_str().unwrap()
    );
    assert_eq!(
        block.block_hash().to_string(),
        facts["block_hash"].as_str().unwrap()
    );
    assert_eq!(
        serialize_hex(&block),
        fixture("block-from-gbt-many.hex").trim()
    );
    assert_eq!(
        serialize_hex(&block.txdata[0]),
        facts["coinbase_tx_hex"].as_str().unwrap()
    );
}

#[test]
fn every_template_gives_a_consistent_block() {
    for name in ["gbt-empty.json", "gbt-2tx.json", "gbt-many.json"] {
        let gbt = template(name);
        let job = job(&gbt).unwrap();
        let block = block(&job, &[0x5a; 10], 0);
        assert!(block.check_merkle_root(), "{name}");
        assert!(block.check_witness_commitment(), "{name}");
        assert_eq!(
            block.header.prev_blockhash.to_string(),
            gbt.previousblockhash
        );
        assert_eq!(
            format!("{:08x}", block.header.bits.to_consensus()),
            gbt.bits
        );
        assert!(commits_to_height(
            &block.txdata[0].input[0].script_sig,
            gbt.height
        ));
        assert_eq!(block.bip34_block_height().unwrap(), gbt.height, "{name}");
        let commitment = &block.txdata[0].output[1].script_pubkey;
        assert_eq!(
            Some(hex::encode(commitment.as_bytes())),
            gbt.default_witness_commitment,
            "{name}"
        );
        let txids: Vec<String> = block.txdata[1..]
            .iter()
            .map(|tx| tx.compute_txid().to_string())
            .collect();
        let expected: Vec<&String> = gbt.transactions.iter().map(|t| &t.txid).collect();
        assert_eq!(txids.iter().collect::<Vec<_>>(), expected, "{name}");
        assert_eq!(block.txdata[0].output[0].value.to_sat(), gbt.coinbasevalue);
        assert_eq!(block.txdata[0].output[0].script_pubkey, fixture_payout());
    }
}

#[test]
fn transactions_that_do_not_fit_with_the_coinbase_are_dropped_from_the_end() {
    let mut gbt = template("gbt-many.json");
    let all = job(&gbt).unwrap();
    let full = block(&all, &[0; 10], 0);
    // Leave room for everything but the last three transactions.
    let last_three: u64 = full.txdata[30..].iter().map(|tx| tx.weight().to_wu()).sum();
    gbt.weightlimit = Some(full.weight().to_wu() - last_three);
    let fitted = job(&gbt).unwrap();
    assert_eq!(fitted.transactions.len(), 29);
    let trimmed = block(&fitted, &[0; 10], 0);
    assert!(trimmed.weight().to_wu() <= gbt.weightlimit.unwrap());
    assert!(trimmed.check_merkle_root());
    assert!(trimmed.check_witness_commitment(), "commitment recomputed");

    let mut gbt = template("gbt-many.json");
    let sigops: u64 = gbt.transactions.iter().map(|t| t.sigops).sum();
    gbt.sigoplimit = Some(sigops - 1);
    let trimmed = job(&gbt).unwrap();
    assert!(trimmed.transactions.len() < 32);

    let mut gbt = template("gbt-empty.json");
    gbt.sizelimit = Some(100);
    assert!(matches!(
        job(&gbt),
        Err(TemplateError::CoinbaseTooBig { .. })
    ));
}

#[test]
fn a_transaction_that_does_not_match_its_txid_is_refused() {
    let mut gbt = template("gbt-2tx.json");
    gbt.transactions.swap(0, 1);
    let txid = gbt.transactions[0].txid.clone();
    gbt.transactions[0].txid = gbt.transactions[1].txid.clone();
    let err = job(&gbt).unwrap_err();
    assert!(matches!(err, TemplateError::Txid { index: 0, .. }), "{err}");
    assert!(err.to_string().contains(&txid), "{err}");

    let mut gbt = template("gbt-2tx.json");
    gbt.transactions[1].data.truncate(20);
    let err = job(&gbt).unwrap_err();
    assert!(
        matches!(err, TemplateError::Transaction { index: 1, .. }),
        "{err}"
    );

    let mut gbt = template("gbt-empty.json");
    gbt.bits = "7fffff".into();
    assert_eq!(
        job(&gbt).unwrap_err().to_string(),
        "bits \"7fffff\" is not 8 hex digits"
    );
}
