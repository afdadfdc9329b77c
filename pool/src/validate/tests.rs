//! Share validation against arbitrary submits: every verdict is the one the
//! rules of STRATUM.md §4 give, recomputed independently with the protocol
//! crate's header assembly.

use bitcoin::ScriptBuf;
use proptest::prelude::*;
use quarry_protocol::fields::HexU32Be;
use quarry_protocol::messages::Submit;
use quarry_protocol::reject::ErrorCode;
use quarry_protocol::share::{header_hash, rolled_version, ShareFields};
use quarry_protocol::target::meets_target;
use quarry_protocol::{Difficulty, Extranonce};

use super::{validate, Proposal, SessionTerms, NTIME_AHEAD};
use crate::chain::{ChainParams, EmbeddedChain};
use crate::jobs::JobBook;
use crate::ledger::RejectKind;
use crate::reward::JobPayouts;

const EN2_SIZE: usize = 4;
const POOL_MASK: u32 = 0x1fff_e000;

fn book() -> JobBook {
    let payout = ScriptBuf::from_bytes(vec![0x51]);
    let mut params = ChainParams::new(payout.clone());
    // Far above any share difficulty here: no submit solves a block.
    params.initial_difficulty = 1e6;
    let chain = EmbeddedChain::open(params, Vec::new()).expect("a fresh chain");
    JobBook::new(chain.template(1_700_000_000, |value| JobPayouts::operator(value, &payout)))
}

fn terms(mask: u32, difficulty: f64) -> SessionTerms<'static> {
    SessionTerms {
        extranonce1: Extranonce::from_counter(7, 4),
        extranonce2_size: EN2_SIZE,
        version_mask: mask,
        difficulty_for: &|_| None,
        current_difficulty: Difficulty::new(difficulty).expect("a valid difficulty"),
        payee: None,
        held: None,
    }
}

/// The rule-by-rule expectation: `Ok(())` for an acceptable share.
fn expected(
    book: &JobBook,
    submit: &Submit,
    terms: &SessionTerms<'_>,
) -> Result<(), (RejectKind, ErrorCode)> {
    let malformed = Err((RejectKind::Malformed, ErrorCode::Other));
    if submit.extranonce2.len() != EN2_SIZE {
        return malformed;
    }
    let job = book.current().job.clone();
    let bits = submit.version_bits.map_or(0, |b| b.0);
    if bits & !terms.version_mask != 0 {
        return malformed;
    }
    let ntime = submit.ntime.0;
    let job_ntime = job.notify.ntime.0;
    if ntime < job_ntime || ntime - job_ntime > NTIME_AHEAD {
        return malformed;
    }
    let fields = ShareFields {
        extranonce1: terms.extranonce1,
        extranonce2: submit.extranonce2,
        ntime,
        nonce: submit.nonce.0,
        version: rolled_version(job.notify.version.0, terms.version_mask, bits)
            .expect("bits inside the mask"),
    };
    let root = job
        .notify
        .merkle_root(&fields.extranonce1, &fields.extranonce2);
    let hash = header_hash(&job.notify.header_with_root(root, &fields));
    if meets_target(&hash, &terms.current_difficulty.to_target()) {
        Ok(())
    } else {
        Err((RejectKind::LowDifficulty, ErrorCode::LowDifficulty))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn every_verdict_follows_the_rules(
        en2 in prop_oneof![3 => prop::collection::vec(any::<u8>(), EN2_SIZE), 1 => prop::collection::vec(any::<u8>(), 0..9)],
        ntime_offset in -100i64..(i64::from(NTIME_AHEAD) + 100),
        nonce: u32,
        version_bits in prop::option::of(prop_oneof![any::<u32>(), (0u32..0x10000).prop_map(|b| b << 13)]),
        rolling: bool,
        log_difficulty in -12f64..-8.0,
    ) {
        let difficulty = 10f64.powf(log_difficulty);
        let book = book();
        let job = book.current().job.clone();
        let ntime = (i64::from(job.notify.ntime.0) + ntime_offset).clamp(0, i64::from(u32::MAX));
        let submit = Submit {
            worker: "a.b".into(),
            job_id: job.notify.job_id.clone(),
            extranonce2: Extranonce::new(&en2).expect("at most 32 bytes"),
            ntime: HexU32Be(u32::try_from(ntime).expect("clamped")),
            nonce: HexU32Be(nonce),
            version_bits: version_bits.map(HexU32Be),
        };
        let terms = terms(if rolling { POOL_MASK } else { 0 }, difficulty);
        let verdict = validate(&book, &Proposal::from(&submit), &terms);
        prop_assert!(verdict.block.is_none());
        let got = verdict.outcome.as_ref().map(|_| ()).map_err(|(kind, err)| (*kind, err.code));
        prop_assert_eq!(got, expected(&book, &submit, &terms));
        if verdict.outcome.is_ok() {
            // The same share again, however it is spelled, is a duplicate.
            let again = validate(&book, &Proposal::from(&submit), &terms);
            let (kind, err) = again.outcome.err().expect("a resubmission is refused");
            prop_assert_eq!((kind, err.code), (RejectKind::Duplicate, ErrorCode::Duplicate));
        }
    }
}

#[test]
fn an_unknown_job_is_not_found() {
    let book = book();
    let mut submit = Submit {
        worker: "a.b".into(),
        job_id: "ffff".parse().expect("a job id"),
        extranonce2: Extranonce::from_counter(1, EN2_SIZE),
        ntime: book.current().job.notify.ntime,
        nonce: HexU32Be(0),
        version_bits: None,
    };
    for job_id in ["ffff", "not-hex", "1ffffffffffffffff"] {
        submit.job_id = job_id.parse().expect("a job id");
        let verdict = validate(&book, &Proposal::from(&submit), &terms(0, 1e-12));
        let (kind, err) = verdict.outcome.err().expect("refused");
        assert_eq!(
            (kind, err.code),
            (RejectKind::Stale, ErrorCode::JobNotFound),
            "{job_id}"
        );
    }
    submit.job_id = book.current().job.notify.job_id.clone();
    assert!(validate(&book, &Proposal::from(&submit), &terms(0, 1e-12))
        .outcome
        .is_ok());
}
