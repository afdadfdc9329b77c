//! How a block's reward is divided in its coinbase under PPLNS: deterministic, from the
//! window's credits and the owed balances alone (both in the ledger).
//!
//! 1. The fee, `floor(value × fee_bps / 10 000)`, goes to the operator.
//! 2. Each payee earns `rest × credit / total credit`, rounded down, and the sats the
//!    rounding leaves go one each to the largest remainders (ties by address), so the
//!    payees earn all of `rest`. Its entitlement is what it earned plus what it is owed
//!    (negative when an earlier coinbase paid it more than it earned).
//! 3. Payees with an address and an entitlement of at least the dust threshold are paid,
//!    the largest entitlements first (ties by address), as many as the output cap allows
//!    (the operator's output counts against it).
//! 4. The paid payees divide `rest` in proportion to their entitlements, rounded down; the
//!    sats rounding leaves go to the first of them. A payee whose amount falls below the
//!    threshold this way is not paid, and step 4 runs again without it.
//! 5. Every payee's owed balance becomes its entitlement minus what it was paid: nothing
//!    earned vanishes, and the balances always sum to what they summed to before. With no
//!    payee paid, `rest` goes to the operator's output and stays owed to the payees.

use std::collections::BTreeMap;

use bitcoin::{Amount, ScriptBuf, TxOut};

use crate::ledger::PayoutLine;

/// Whom the operator's output pays, in [`Split::paid_to`].
pub const OPERATOR: &str = "operator";

/// The limits a split respects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The operator's fee in basis points (0..=10 000).
    pub fee_bps: u32,
    /// Entitlements below this are carried, not paid.
    pub dust: Amount,
    /// Most outputs paying anyone (the operator's included; the witness commitment not).
    pub max_outputs: usize,
}

/// A payee's standing going into a split.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// Credited difficulty in the window.
    pub credit: f64,
    /// Owed from earlier blocks, in sats (negative: paid ahead).
    pub owed: i64,
    /// Where to pay it; `None` for an account without a usable address (always carried).
    pub script: Option<ScriptBuf>,
}

/// A coinbase's payouts: its outputs in order, and the table behind them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    /// The operator's output first (when above zero), then the paid payees by address.
    pub outputs: Vec<TxOut>,
    /// Whom each output pays: [`OPERATOR`] or the payee.
    pub paid_to: Vec<String>,
    /// Every payee, paid or carried, by address.
    pub lines: Vec<PayoutLine>,
}

impl Split {
    /// What the operator's output pays: the fee, plus `rest` when no payee was paid.
    pub fn operator_amount(&self) -> Amount {
        self.outputs
            .iter()
            .zip(&self.paid_to)
            .filter(|(_, to)| *to == OPERATOR)
            .map(|(output, _)| output.value)
            .sum()
    }

    /// The outputs as the API and the webhook show them: whom each pays, its script
    /// (hex) and its amount in sats.
    pub fn outputs_json(&self) -> Vec<serde_json::Value> {
        self.outputs
            .iter()
            .zip(&self.paid_to)
            .map(|(output, to)| {
                serde_json::json!({
                    "to": to,
                    "script": hex::encode(output.script_pubkey.as_bytes()),
                    "amount": output.value.to_sat(),
                })
            })
            .collect()
    }
}

/// Divides `value` among `standings` (by payee name) under `rules`; the operator is paid
/// to `operator`.
pub fn split(
    value: Amount,
    standings: &BTreeMap<String, Standing>,
    operator: &ScriptBuf,
    rules: Rules,
) -> Split {
    let value = value.to_sat();
    let fee = u64::try_from(u128::from(value) * u128::from(rules.fee_bps.min(10_000)) / 10_000)
        .unwrap_or(value);
    let rest = value - fee;
    let earned = earnings(rest, standings);
    let entitlement: BTreeMap<&str, i64> = standings
        .iter()
        .map(|(payee, s)| {
            (
                payee.as_str(),
                earned[payee.as_str()].saturating_add(s.owed),
            )
        })
        .collect();
    let dust = i64::try_from(rules.dust.to_sat())
        .unwrap_or(i64::MAX)
        .max(1);
    // Candidates: payable, largest entitlement first, as many as the cap leaves room for.
    let mut candidates: Vec<&str> = entitlement
        .iter()
        .filter(|(payee, e)| **e >= dust && standings[**payee].script.is_some())
        .map(|(payee, _)| *payee)
        .collect();
    candidates.sort_by(|a, b| entitlement[b].cmp(&entitlement[a]).then(a.cmp(b)));
    candidates.truncate(rules.max_outputs.saturating_sub(1));
    let paid = divide(rest, &candidates, &entitlement, dust);
    let paid_total: u64 = paid.values().sum();
    let operator_sats = fee + (rest - paid_total);

    let (mut outputs, mut paid_to) = (Vec::new(), Vec::new());
    if operator_sats > 0 {
        outputs.push(TxOut {
            value: Amount::from_sat(operator_sats),
            script_pubkey: operator.clone(),
        });
        paid_to.push(OPERATOR.to_owned());
    }
    let mut lines = Vec::with_capacity(standings.len());
    for (payee, standing) in standings {
        let amount = paid.get(payee.as_str()).copied().unwrap_or(0);
        if let (Some(script), true) = (&standing.script, amount > 0) {
            outputs.push(TxOut {
                value: Amount::from_sat(amount),
                script_pubkey: script.clone(),
            });
            paid_to.push(payee.clone());
        }
        let paid = i64::try_from(amount).unwrap_or(i64::MAX);
        lines.push(PayoutLine {
            payee: payee.clone(),
            credit: standing.credit,
            earned: earned[payee.as_str()],
            owed_before: standing.owed,
            paid,
            owed_after: entitlement[payee.as_str()] - paid,
        });
    }
    Split {
        outputs,
        paid_to,
        lines,
    }
}

/// What each payee earned of `rest`: its credit's share, rounded down, and one sat more
/// for the payees with the largest remainders (ties by name) until all of `rest` is
/// earned (none of it when nobody has credit).
fn earnings(rest: u64, standings: &BTreeMap<String, Standing>) -> BTreeMap<&str, i64> {
    let total: f64 = standings.values().map(|s| s.credit.max(0.0)).sum();
    let exact = |s: &Standing| -> f64 {
        if total > 0.0 && s.credit > 0.0 {
            rest as f64 * (s.credit / total)
        } else {
            0.0
        }
    };
    let mut earned: BTreeMap<&str, i64> = standings
        .iter()
        .map(|(payee, s)| (payee.as_str(), exact(s).floor() as i64))
        .collect();
    if total > 0.0 {
        let floors: i64 = earned.values().sum();
        let short = usize::try_from(i64::try_from(rest).unwrap_or(i64::MAX) - floors).unwrap_or(0);
        let mut by_remainder: Vec<(&str, f64)> = standings
            .iter()
            .filter(|(_, s)| s.credit > 0.0)
            .map(|(payee, s)| (payee.as_str(), exact(s) - exact(s).floor()))
            .collect();
        by_remainder.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        for (payee, _) in by_remainder.iter().take(short) {
            *earned.entry(payee).or_default() += 1;
        }
    }
    earned
}

/// Divides `rest` among `candidates` in proportion to their entitlements, dropping any
/// whose amount falls below `dust` until none does; the rounding's sats go to the first.
fn divide<'a>(
    rest: u64,
    candidates: &[&'a str],
    entitlement: &BTreeMap<&str, i64>,
    dust: i64,
) -> BTreeMap<&'a str, u64> {
    let mut paid_set: Vec<&str> = candidates.to_vec();
    loop {
        let sum: u128 = paid_set.iter().map(|p| entitlement[p] as u128).sum();
        if paid_set.is_empty() || sum == 0 {
            return BTreeMap::new();
        }
        let amounts: Vec<u64> = paid_set
            .iter()
            .map(|p| (u128::from(rest) * entitlement[p] as u128 / sum) as u64)
            .collect();
        let before = paid_set.len();
        let kept: Vec<(&str, u64)> = paid_set
            .iter()
            .zip(&amounts)
            .filter(|(_, amount)| i64::try_from(**amount).unwrap_or(i64::MAX) >= dust)
            .map(|(p, a)| (*p, *a))
            .collect();
        if kept.len() == before {
            let mut paid: BTreeMap<&str, u64> = kept.iter().copied().collect();
            let leftover = rest - amounts.iter().sum::<u64>();
            if let Some(first) = paid.get_mut(paid_set[0]) {
                *first += leftover;
            }
            return paid;
        }
        paid_set = kept.into_iter().map(|(p, _)| p).collect();
    }
}

#[cfg(test)]
mod tests;
