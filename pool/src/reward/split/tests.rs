use std::collections::BTreeMap;

use bitcoin::{Amount, ScriptBuf};
use proptest::prelude::*;

use super::*;

fn script(byte: u8) -> ScriptBuf {
    ScriptBuf::from_bytes(vec![
        0x00, 0x14, byte, byte, byte, byte, byte, byte, byte, byte, byte, byte, byte, byte, byte,
        byte, byte, byte, byte, byte, byte, byte,
    ])
}

fn operator() -> ScriptBuf {
    ScriptBuf::from_bytes(vec![0x51])
}

fn standing(credit: f64, owed: i64, byte: Option<u8>) -> Standing {
    Standing {
        credit,
        owed,
        script: byte.map(script),
    }
}

const RULES: Rules = Rules {
    fee_bps: 100,
    dust: Amount::from_sat(1_000),
    max_outputs: 10,
};

fn total(split: &Split) -> u64 {
    split.outputs.iter().map(|o| o.value.to_sat()).sum()
}

fn line<'a>(split: &'a Split, payee: &str) -> &'a PayoutLine {
    split.lines.iter().find(|l| l.payee == payee).unwrap()
}

#[test]
fn the_reward_is_split_by_credit_after_the_fee() {
    let standings = BTreeMap::from([
        ("alice".to_owned(), standing(1.0, 0, Some(1))),
        ("bob".to_owned(), standing(3.0, 0, Some(2))),
    ]);
    let value = Amount::from_sat(5_000_000_000);
    let split = split(value, &standings, &operator(), RULES);
    assert_eq!(total(&split), 5_000_000_000);
    // 1 % fee, then 1 : 3.
    assert_eq!(split.operator_amount(), Amount::from_sat(50_000_000));
    assert_eq!(split.outputs[0].script_pubkey, operator());
    assert_eq!(line(&split, "alice").paid, 1_237_500_000);
    assert_eq!(line(&split, "bob").paid, 3_712_500_000);
    assert_eq!(
        split.outputs[1].script_pubkey,
        script(1),
        "payees by address"
    );
    for l in &split.lines {
        assert_eq!(l.owed_after, 0);
    }
}

#[test]
fn small_earners_are_carried_as_owed_and_paid_once_they_reach_the_threshold() {
    let value = Amount::from_sat(100_000);
    let mut standings = BTreeMap::from([
        ("big".to_owned(), standing(999.0, 0, Some(1))),
        ("small".to_owned(), standing(1.0, 0, Some(2))),
    ]);
    let rules = Rules {
        fee_bps: 0,
        ..RULES
    };
    let first = split(value, &standings, &operator(), rules);
    // small earned 100 sats: below the threshold, carried; big is paid the whole block.
    assert_eq!(line(&first, "small").paid, 0);
    assert_eq!(line(&first, "small").owed_after, 100);
    assert_eq!(line(&first, "big").paid, 100_000);
    assert_eq!(
        line(&first, "big").owed_after,
        -100,
        "paid ahead by what small is owed"
    );
    assert_eq!(total(&first), 100_000);
    // Blocks later small's balance reaches the threshold and is paid; big's evens out.
    let mut blocks = 1;
    while line(&split(value, &standings, &operator(), rules), "small").paid == 0 {
        let next = split(value, &standings, &operator(), rules);
        for l in &next.lines {
            standings.get_mut(&l.payee).unwrap().owed = l.owed_after;
        }
        blocks += 1;
        assert!(blocks < 20);
    }
    let paying = split(value, &standings, &operator(), rules);
    assert!(line(&paying, "small").paid >= 1_000, "{paying:?}");
    let owed: i64 = paying.lines.iter().map(|l| l.owed_after).sum();
    assert_eq!(owed, 0, "balances still sum to zero");
}

#[test]
fn payees_beyond_the_output_cap_or_without_an_address_are_carried() {
    let standings: BTreeMap<String, Standing> = (0..20u8)
        .map(|i| (format!("p{i:02}"), standing(f64::from(i) + 1.0, 0, Some(i))))
        .chain([("no-address".to_owned(), standing(50.0, 0, None))])
        .collect();
    let rules = Rules {
        max_outputs: 5,
        ..RULES
    };
    let split = split(Amount::from_sat(50_000_000), &standings, &operator(), rules);
    assert_eq!(split.outputs.len(), 5, "the operator and the four largest");
    let paid: Vec<&str> = split
        .lines
        .iter()
        .filter(|l| l.paid > 0)
        .map(|l| l.payee.as_str())
        .collect();
    assert_eq!(paid, ["p16", "p17", "p18", "p19"]);
    let carried = line(&split, "no-address");
    assert_eq!((carried.paid, carried.owed_after), (0, carried.earned));
    assert_eq!(total(&split), 50_000_000);
}

#[test]
fn an_empty_window_pays_the_operator() {
    let split = split(
        Amount::from_sat(5_000),
        &BTreeMap::new(),
        &operator(),
        RULES,
    );
    assert_eq!(split.outputs.len(), 1);
    assert_eq!(split.operator_amount(), Amount::from_sat(5_000));
}

proptest! {
    /// Whatever the standings: the outputs pay exactly the value, no output is below the
    /// threshold but the operator's, the cap holds, and owed balances are conserved.
    #[test]
    fn splits_pay_the_value_exactly_and_conserve_what_is_owed(
        value in 0u64..2_100_000_000_000_000,
        fee_bps in 0u32..=10_000,
        dust in 0u64..100_000,
        max_outputs in 1usize..30,
        payees in proptest::collection::vec(
            (0.0f64..1e6, -1_000_000i64..1_000_000, proptest::option::of(0u8..=255)),
            0..40,
        ),
    ) {
        let standings: BTreeMap<String, Standing> = payees
            .iter()
            .enumerate()
            .map(|(i, (credit, owed, byte))| (format!("p{i:02}"), standing(*credit, *owed, *byte)))
            .collect();
        let rules = Rules { fee_bps, dust: Amount::from_sat(dust), max_outputs };
        let split = split(Amount::from_sat(value), &standings, &operator(), rules);
        prop_assert_eq!(total(&split), value);
        prop_assert!(split.outputs.len() <= max_outputs.max(1));
        for line in &split.lines {
            prop_assert!(line.paid == 0 || line.paid >= i64::try_from(dust.max(1)).unwrap());
            prop_assert_eq!(line.owed_after, line.earned + line.owed_before - line.paid);
        }
        let before: i64 = standings.values().map(|s| s.owed).sum();
        let after: i64 = split.lines.iter().map(|l| l.owed_after).sum();
        let earned: i64 = split.lines.iter().map(|l| l.earned).sum();
        let paid: i64 = split.lines.iter().map(|l| l.paid).sum();
        prop_assert_eq!(after, before + earned - paid);
        let fee = u64::try_from(u128::from(value) * u128::from(fee_bps) / 10_000).unwrap();
        if payees.iter().any(|(credit, _, _)| *credit > 0.0) {
            prop_assert_eq!(earned, i64::try_from(value - fee).unwrap(), "all of the rest is earned");
        }
    }
}
