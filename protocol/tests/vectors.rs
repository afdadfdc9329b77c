//! The worked vectors of STRATUM.md §11, exercised end to end through the public API:
//! wire lines are parsed with `jsonrpc::parse`, typed with `Call::server_message` /
//! `Call::client_request`, and the header is assembled with `Notify::header`.
//!
//! Every expected value below is copied from STRATUM.md §11 (whose values were
//! verified there against real blocks) or, where noted, computed independently
//! (exact big-integer arithmetic) and cross-checked with the `bitcoin` crate.

use bitcoin::hashes::Hash;
use quarry_protocol::fields::{Extranonce, HexU32Be, PrevHash};
use quarry_protocol::hash::{display_hex, sha256d, sha256d_pair};
use quarry_protocol::jsonrpc::{self, Call, Id, Message};
use quarry_protocol::merkle::{branch_from_txids, root_from_branch, root_from_txids};
use quarry_protocol::messages::{
    ClientRequest, ConfigureResult, Notify, ServerMessage, Submit, SubscribeResult,
};
use quarry_protocol::share::{self, rolled_version, ShareFields};
use quarry_protocol::target::{
    hash_difficulty, meets_target, nbits_from_target, network_difficulty, target_from_nbits,
};
use quarry_protocol::Difficulty;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------

fn call(line: &str) -> Call {
    match jsonrpc::parse(line).unwrap_or_else(|e| panic!("{e}: {line}")) {
        Message::Request(call) | Message::Notification(call) => call,
        Message::Response(r) => panic!("classified as a response: {r:?}"),
    }
}

fn notify_from_line(line: &str) -> Notify {
    match call(line).server_message().unwrap() {
        ServerMessage::Notify(notify) => notify,
        other => panic!("not a notify: {other:?}"),
    }
}

fn submit_from_line(line: &str) -> Submit {
    match call(line).client_request().unwrap() {
        ClientRequest::Submit(submit) => submit,
        other => panic!("not a submit: {other:?}"),
    }
}

fn raw(hex_text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut out).unwrap();
    out
}

/// A target as 64 big-endian hex digits (the way the difficulty table prints it).
fn target_hex(target: bitcoin::Target) -> String {
    let mut be = target.to_le_bytes();
    be.reverse();
    hex::encode(be)
}

fn approx(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} is not within {tolerance} of {expected}"
    );
}

// ---------------------------------------------------------------------------------
// (a) Genesis block — STRATUM.md §11(a)
// ---------------------------------------------------------------------------------

/// §11(a) "coinbase hex": the genesis coinbase (non-witness serialization).
const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";
/// §11(a) "header".
const GENESIS_HEADER: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";
/// §11(a) "hash".
const GENESIS_HASH: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

#[test]
fn genesis_block_through_notify_and_submit() {
    // §11(a): coinb1 = coinbase bytes 0..50 (version 4, input count 1, outpoint 36,
    // scriptSig length 1, then the first 8 scriptSig bytes `04ffff001d010445`),
    // extranonce1 = the next 4 bytes, extranonce2 = the 4 after, coinb2 = the rest.
    let coinbase = hex::decode(GENESIS_COINBASE).unwrap();
    let (coinb1, rest) = coinbase.split_at(50);
    let (en1, rest) = rest.split_at(4);
    let (en2, coinb2) = rest.split_at(4);
    assert_eq!(
        hex::encode(&coinb1[42..]),
        "04ffff001d010445",
        "first 8 scriptSig bytes"
    );
    assert_eq!(hex::encode(en1), "54686520"); // "The " — §11(a) extranonce1
    assert_eq!(hex::encode(en2), "54696d65"); // "Time" — §11(a) extranonce2

    // The job as a pool would send it (§11(a) "as Stratum").
    let line = json!({
        "id": null,
        "method": "mining.notify",
        "params": [
            "0", "0".repeat(64), hex::encode(coinb1), hex::encode(coinb2), [],
            "00000001", "1d00ffff", "495fab29", true
        ]
    })
    .to_string();
    let notify = notify_from_line(&line);
    assert_eq!(notify.prevhash.header_bytes(), [0u8; 32]);
    assert!(notify.merkle_branch.is_empty());

    let en1: Extranonce = hex::encode(en1).parse().unwrap();
    let en2 = Extranonce::parse_sized("54696d65", 4).unwrap();
    assert_eq!(notify.coinbase(&en1, &en2), coinbase);

    // txid (display) and raw, = merkle root because the branch is empty.
    let txid = sha256d(&coinbase);
    assert_eq!(
        hex::encode(txid),
        "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    );
    assert_eq!(
        display_hex(&txid),
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    );
    assert_eq!(notify.merkle_root(&en1, &en2), txid);

    // The submit the miner would send: nonce 7c2bac1d (value 2083236893).
    let submit = submit_from_line(
        r#"{"id":2,"method":"mining.submit","params":["satoshi","0","54696d65","495fab29","7c2bac1d"]}"#,
    );
    assert_eq!(submit.nonce, HexU32Be(2_083_236_893));
    assert_eq!(submit.extranonce2, en2);
    let header = notify.header(&ShareFields {
        extranonce1: en1,
        extranonce2: submit.extranonce2,
        ntime: submit.ntime.0,
        nonce: submit.nonce.0,
        version: notify.version.0,
    });
    assert_eq!(hex::encode(share::header_bytes(&header)), GENESIS_HEADER);
    assert_eq!(share::block_hash(&header).to_string(), GENESIS_HASH);
    assert_eq!(display_hex(&share::header_hash(&header)), GENESIS_HASH);
    // §11(a): hash difficulty 2536.43.
    approx(hash_difficulty(&share::header_hash(&header)), 2536.43, 0.01);

    // Cross-check with the bitcoin crate's own genesis block.
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Bitcoin);
    assert_eq!(header, genesis.header);
    let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(&coinbase).unwrap();
    assert_eq!(tx.compute_txid().to_byte_array(), txid);
    assert_eq!(genesis.txdata[0], tx);
}

// ---------------------------------------------------------------------------------
// (b) Block 100000 — STRATUM.md §11(b)
// ---------------------------------------------------------------------------------

const B100K_SUBSCRIBE_RESULT: &str = r#"[[["mining.set_difficulty","deadbeefcafebabe0100000000000000"],["mining.notify","deadbeefcafebabe0100000000000000"]],"044c8604",4]"#;
const B100K_COINB1: &str =
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08";
const B100K_COINB2: &str = "ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000";
const B100K_BRANCH: [&str; 2] = [
    "c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff",
    "49aef42d78e3e9999c9e6ec9e1dddd6cb880bf3b076a03be1318ca789089308e",
];
const B100K_PREVHASH_DISPLAY: &str =
    "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250";
const B100K_PREVHASH_NOTIFY: &str =
    "1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000";
const B100K_HEADER: &str = "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710";
const B100K_SUBMIT: &str = r#"{"id":4,"method":"mining.submit","params":["user.worker","186a0","1b020602","4d1b2237","10572b0f"]}"#;

fn b100k_notify_line() -> String {
    json!({
        "id": null,
        "method": "mining.notify",
        "params": [
            "186a0", B100K_PREVHASH_NOTIFY, B100K_COINB1, B100K_COINB2, B100K_BRANCH,
            "00000001", "1b04864c", "4d1b2237", true
        ]
    })
    .to_string()
}

#[test]
fn block_100000_full_round_trip() {
    // Subscribe reply as a response line.
    let line = format!(r#"{{"id":1,"result":{B100K_SUBSCRIBE_RESULT},"error":null}}"#);
    let Message::Response(response) = jsonrpc::parse(&line).unwrap() else {
        panic!("not a response")
    };
    assert_eq!(response.id, Id::from(1));
    let subscribed = SubscribeResult::from_value(&response.result).unwrap();
    assert_eq!(subscribed.session_id, "deadbeefcafebabe0100000000000000");
    assert_eq!(subscribed.extranonce1.to_string(), "044c8604");
    assert_eq!(subscribed.extranonce2_size, 4);
    // Our own formatting of that result is byte-identical to the vector.
    assert_eq!(subscribed.to_value().to_string(), B100K_SUBSCRIBE_RESULT);

    // The job.
    let notify = notify_from_line(&b100k_notify_line());
    assert_eq!(notify.job_id.as_str(), "186a0");
    assert_eq!(
        notify.prevhash.to_block_hash().to_string(),
        B100K_PREVHASH_DISPLAY
    );
    assert_eq!(
        PrevHash::from_block_hash(B100K_PREVHASH_DISPLAY.parse().unwrap()),
        notify.prevhash
    );
    assert_eq!(notify.version, HexU32Be(1));
    assert_eq!(notify.nbits, HexU32Be(0x1b04864c));
    assert_eq!(notify.ntime, HexU32Be(0x4d1b2237));
    assert!(notify.clean_jobs);

    // The share.
    let submit = submit_from_line(B100K_SUBMIT);
    assert_eq!(submit.worker, "user.worker");
    assert_eq!(submit.job_id, notify.job_id);
    assert_eq!(submit.nonce, HexU32Be(274_148_111));
    assert_eq!(submit.version_bits, None);
    assert_eq!(submit.extranonce2.len(), subscribed.extranonce2_size);

    assert_eq!(
        notify.merkle_branch.iter().map(|h| h.0).collect::<Vec<_>>(),
        B100K_BRANCH.map(raw)
    );

    // Coinbase, txid, first fold, root.
    let coinbase = notify.coinbase(&subscribed.extranonce1, &submit.extranonce2);
    let txid = sha256d(&coinbase);
    assert_eq!(
        hex::encode(txid),
        "876dd0a3ef4a2816ffd1c12ab649825a958b0ff3bb3d6f3e1250f13ddbf0148c"
    );
    assert_eq!(
        display_hex(&txid),
        "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87"
    );
    let first_fold = sha256d_pair(&txid, &notify.merkle_branch[0].0);
    assert_eq!(
        hex::encode(first_fold),
        "15b88c5107195bf09eb9da89b83d95b3d070079a3c5c5d3d17d0dcd873fbdacc"
    );
    let root = notify.merkle_root(&subscribed.extranonce1, &submit.extranonce2);
    assert_eq!(
        hex::encode(root),
        "6657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f3"
    );
    assert_eq!(
        display_hex(&root),
        "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    );

    // Header and its hash.
    let share = ShareFields {
        extranonce1: subscribed.extranonce1,
        extranonce2: submit.extranonce2,
        ntime: submit.ntime.0,
        nonce: submit.nonce.0,
        version: notify.version.0,
    };
    let header = notify.header(&share);
    assert_eq!(notify.header_with_root(root, &share), header);
    let bytes = share::header_bytes(&header);
    assert_eq!(hex::encode(bytes), B100K_HEADER);
    let hash = share::header_hash(&header);
    assert_eq!(
        hex::encode(hash),
        "06e533fd1ada86391f3f6c343204b0d278d4aaec1c0b20aa27ba030000000000"
    );
    assert_eq!(
        share::block_hash(&header).to_string(),
        "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506"
    );
    approx(hash_difficulty(&hash), 17583.056276, 1e-6);
    approx(network_difficulty(notify.nbits.0), 14484.162361, 1e-6);

    // The share meets the network target (it is a block) and a share target up to its
    // own difficulty, but not a share target just above it.
    assert!(meets_target(&hash, &target_from_nbits(notify.nbits.0)));
    assert!(meets_target(
        &hash,
        &Difficulty::new(17583.0).unwrap().to_target()
    ));
    assert!(!meets_target(
        &hash,
        &Difficulty::new(17583.1).unwrap().to_target()
    ));

    // Independent check with the bitcoin crate.
    let theirs: bitcoin::block::Header = bitcoin::consensus::deserialize(&bytes).unwrap();
    assert_eq!(theirs, header);
    assert_eq!(
        theirs.validate_pow(theirs.target()).unwrap(),
        share::block_hash(&header)
    );
    approx(theirs.difficulty_float(), 14484.162361, 1e-6);
    let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(&coinbase).unwrap();
    assert!(tx.is_coinbase());
    assert_eq!(tx.compute_txid().to_byte_array(), txid);

    // A different nonce breaks the proof of work.
    let wrong = notify.header(&ShareFields {
        nonce: share.nonce ^ 1,
        ..share
    });
    assert!(wrong.validate_pow(wrong.target()).is_err());
    assert!(!meets_target(
        &share::header_hash(&wrong),
        &target_from_nbits(notify.nbits.0)
    ));
}

#[test]
fn block_100000_lines_reformat_to_what_was_parsed() {
    // The typed messages format back to lines that parse to the same values.
    let notify = ServerMessage::Notify(notify_from_line(&b100k_notify_line()));
    let again = call(&notify.to_line(&Id::Null)).server_message().unwrap();
    assert_eq!(again, notify);
    assert_eq!(
        notify.params(),
        Value::Array(call(&b100k_notify_line()).params)
    );

    let submit = ClientRequest::Submit(submit_from_line(B100K_SUBMIT));
    let line = submit.to_line(&Id::from(4));
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        serde_json::from_str::<Value>(B100K_SUBMIT).unwrap()
    );
}

// ---------------------------------------------------------------------------------
// (c) Further checks — STRATUM.md §11(c)
// ---------------------------------------------------------------------------------

/// §11(c) difficulty/target table, the difficulty arriving as `mining.set_difficulty`.
/// Full 64-digit targets are `floor(T1 / d)` computed with exact rationals (the table
/// gives their prefixes).
#[test]
fn difficulty_table_via_set_difficulty() {
    let table: [(&str, &str); 5] = [
        (
            "1",
            "00000000ffff0000000000000000000000000000000000000000000000000000",
        ),
        (
            "2",
            "000000007fff8000000000000000000000000000000000000000000000000000",
        ),
        (
            "0.5",
            "00000001fffe0000000000000000000000000000000000000000000000000000",
        ),
        (
            "0.0000152587890625", // 1/65536
            "0000ffff00000000000000000000000000000000000000000000000000000000",
        ),
        (
            "1000",
            "00000000004188f5c28f5c28f5c28f5c28f5c28f5c28f5c28f5c28f5c28f5c28",
        ),
    ];
    for (difficulty, expected) in table {
        let line =
            format!(r#"{{"id":null,"method":"mining.set_difficulty","params":[{difficulty}]}}"#);
        let ServerMessage::SetDifficulty(d) = call(&line).server_message().unwrap() else {
            panic!("not set_difficulty")
        };
        let target = d.to_target();
        assert_eq!(target_hex(target), expected, "difficulty {difficulty}");
        // And back: T1 / target.
        approx(
            Difficulty::from_target(target).get(),
            d.get(),
            d.get() * 1e-12,
        );
    }
    // Difficulty 1 is compact 1d00ffff exactly, and bitcoin's difficulty-1 target.
    assert_eq!(Difficulty::ONE.to_target(), target_from_nbits(0x1d00ffff));
    assert_eq!(Difficulty::ONE.to_target(), bitcoin::Target::MAX);
}

/// §11(c) compact round trips, the nBits arriving in `mining.notify` lines.
#[test]
fn compact_round_trips_via_notify() {
    for nbits in ["1d00ffff", "1b04864c", "1705ae3a", "1c2ac4af", "207fffff"] {
        let mut line: Value = serde_json::from_str(&b100k_notify_line()).unwrap();
        line["params"][6] = Value::String(nbits.to_owned());
        let notify = notify_from_line(&line.to_string());
        assert_eq!(notify.nbits.to_string(), nbits);
        let target = target_from_nbits(notify.nbits.0);
        assert_eq!(
            target,
            bitcoin::Target::from_compact(bitcoin::CompactTarget::from_consensus(notify.nbits.0))
        );
        assert_eq!(
            HexU32Be(nbits_from_target(target)).to_string(),
            nbits,
            "{nbits}"
        );
        // Network difficulty agrees with the bitcoin crate's (same T1).
        let ours = network_difficulty(notify.nbits.0);
        approx(ours, target.difficulty_float(), ours * 1e-12);
    }
    // §7: regtest nBits 207fffff has network difficulty ≈ 4.66e-10.
    approx(network_difficulty(0x207fffff), 4.656542373906925e-10, 1e-20);
}

/// §11(c) BIP310 example: job version 20000000, mask 1fffe000, bits 00002000 →
/// header version 20002000 (bytes 00200020). Negotiated with `mining.configure`,
/// submitted as a 6-parameter `mining.submit`, assembled into the header.
#[test]
fn bip310_example_end_to_end() {
    let configure = call(
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff","version-rolling.min-bit-count":2}]}"#,
    )
    .client_request()
    .unwrap();
    let ClientRequest::Configure(configure) = configure else {
        panic!("not configure")
    };
    let request = configure.version_rolling().unwrap();
    assert_eq!(request.mask, 0xffff_ffff);
    assert_eq!(request.min_bit_count, 2);
    let result = ConfigureResult::negotiate(&configure, 0x1fff_e000);
    assert_eq!(
        result.to_value(),
        json!({"version-rolling": true, "version-rolling.mask": "1fffe000"})
    );
    let mask = ConfigureResult::from_value(&result.to_value())
        .version_rolling
        .unwrap();
    assert_eq!(mask, 0x1fff_e000);

    let mut line: Value = serde_json::from_str(&b100k_notify_line()).unwrap();
    line["params"][5] = json!("20000000");
    let notify = notify_from_line(&line.to_string());
    let submit = submit_from_line(
        r#"{"id":5,"method":"mining.submit","params":["user.worker","186a0","1b020602","4d1b2237","10572b0f","00002000"]}"#,
    );
    let bits = submit.version_bits.unwrap();
    assert_eq!(bits, HexU32Be(0x2000));
    let version = rolled_version(notify.version.0, mask, bits.0).unwrap();
    assert_eq!(version, 0x2000_2000);
    let header = notify.header(&ShareFields {
        extranonce1: "044c8604".parse().unwrap(),
        extranonce2: submit.extranonce2,
        ntime: submit.ntime.0,
        nonce: submit.nonce.0,
        version,
    });
    let bytes = share::header_bytes(&header);
    assert_eq!(hex::encode(&bytes[..4]), "00200020");
    // Only the version differs from the block-100000 header.
    assert_eq!(hex::encode(&bytes[4..]), &B100K_HEADER[8..]);

    // Bits outside the negotiated mask are refused.
    assert!(rolled_version(notify.version.0, mask, 0x0000_1000).is_err());
    assert!(rolled_version(notify.version.0, mask, 0xe000_0000).is_err());
}

/// §6 / §11(c) extranonce2 counters: little-endian, first byte least significant
/// (ESP-Miner vectors 1 → 01000000, 0xfffffffe → feffffff), carried in a submit.
#[test]
fn extranonce2_counters_in_submits() {
    let cases: [(u64, usize, &str); 7] = [
        (1, 4, "01000000"),
        (0xffff_fffe, 4, "feffffff"),
        (0xff, 4, "ff000000"),
        (0x100, 4, "00010000"), // carry into byte 1 (cpuminer)
        (0x0102, 2, "0201"),
        (0x1_0000_0001, 4, "01000000"), // truncated to the size (cgminer htole64)
        (0x0102_0304_0506_0708, 8, "0807060504030201"),
    ];
    for (counter, size, expected) in cases {
        let en2 = Extranonce::from_counter(counter, size);
        assert_eq!(en2.to_string(), expected, "{counter:#x}/{size}");
        let request = ClientRequest::Submit(Submit {
            worker: "w".into(),
            job_id: "1".parse().unwrap(),
            extranonce2: en2,
            ntime: HexU32Be(0x4d1b2237),
            nonce: HexU32Be(0),
            version_bits: None,
        });
        let line = request.to_line(&Id::from(7));
        assert!(line.contains(&format!("\"{expected}\"")), "{line}");
        assert_eq!(submit_from_line(&line).extranonce2, en2);
        assert_eq!(
            Extranonce::parse_sized(expected, size).unwrap().as_bytes(),
            en2.as_bytes()
        );
    }
}

/// §6 / §11(c): merkle branches for 1..41 transactions. The branch goes out in a
/// notify line; the miner's root (coinbase folded up the branch) must equal the
/// bitcoin crate's root of all txids, and our level-by-level root.
#[test]
fn merkle_branches_for_1_to_41_transactions() {
    let en1: Extranonce = "044c8604".parse().unwrap();
    for n in 1..=41usize {
        let others: Vec<[u8; 32]> = (1..n)
            .map(|i| sha256d(format!("tx {i} of {n}").as_bytes()))
            .collect();
        let branch = branch_from_txids(&others);
        assert_eq!(
            branch.len(),
            n.next_power_of_two().trailing_zeros() as usize,
            "{n}"
        );

        let branch_hex: Vec<String> = branch.iter().map(hex::encode).collect();
        let line = json!({
            "id": null,
            "method": "mining.notify",
            "params": [
                format!("{n:x}"), B100K_PREVHASH_NOTIFY, B100K_COINB1, B100K_COINB2,
                branch_hex, "20000000", "1b04864c", "4d1b2237", false
            ]
        })
        .to_string();
        let notify = notify_from_line(&line);
        let en2 = Extranonce::from_counter(n as u64, 4);
        let leaf = sha256d(&notify.coinbase(&en1, &en2));

        let mut all = vec![leaf];
        all.extend_from_slice(&others);
        let theirs = bitcoin::merkle_tree::calculate_root(
            all.iter().map(|t| bitcoin::Txid::from_byte_array(*t)),
        )
        .unwrap()
        .to_byte_array();
        let root = notify.merkle_root(&en1, &en2);
        assert_eq!(root, theirs, "{n} transactions");
        assert_eq!(root, root_from_txids(&all).unwrap(), "{n} transactions");
        assert_eq!(root, root_from_branch(leaf, &branch), "{n} transactions");

        let header = notify.header(&ShareFields {
            extranonce1: en1,
            extranonce2: en2,
            ntime: 0x4d1b2237,
            nonce: 0,
            version: 0x2000_0000,
        });
        assert_eq!(header.merkle_root.to_byte_array(), theirs);
    }
}
