//! Detection on simulated share streams: Poisson arrivals from a seeded RNG,
//! checked every few seconds the way the monitor checks live workers.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const ALPHA: f64 = 1e-4;
const CHECK: f64 = 5.0;
const HOUR: f64 = 3600.0;

/// A worker whose mean share interval is `interval(t)` seconds at time `t`
/// (`None`: stopped), checked every [`CHECK`] seconds until `end`.
struct Outcome {
    /// Times the worker turned "offline" / "drop".
    offline_at: Vec<f64>,
    drop_at: Vec<f64>,
    last_share: Option<f64>,
}

fn simulate(seed: u64, end: f64, interval: impl Fn(f64) -> Option<f64>) -> Outcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shares: VecDeque<f64> = VecDeque::new();
    let mut next = 0.0;
    let schedule = |from: f64, rng: &mut StdRng| -> f64 {
        match interval(from) {
            // Exponential gaps; a stopped worker is re-examined a check later.
            Some(mean) => from - mean * (1.0 - rng.random::<f64>()).ln(),
            None => from + CHECK,
        }
    };
    next = schedule(next, &mut rng);
    let (mut evidence, mut last) = (None, None);
    let (mut offline, mut dropped) = (false, false);
    let mut outcome = Outcome {
        offline_at: Vec::new(),
        drop_at: Vec::new(),
        last_share: None,
    };
    let mut t = 0.0;
    while t < end {
        t += CHECK;
        let mut new_share = false;
        while next <= t {
            if interval(next).is_some() {
                shares.push_back(next);
                last = Some(next);
                new_share = true;
            }
            next = schedule(next, &mut rng);
        }
        while shares.front().is_some_and(|s| *s <= t - HOUR) {
            shares.pop_front();
        }
        let hour = Evidence {
            shares: shares.len() as f64,
            span: t.min(HOUR),
        };
        let recent = shares.iter().filter(|s| **s > t - RECENT_SECONDS).count() as f64;
        if new_share {
            evidence = Some(RateEvidence {
                hour,
                recent: Evidence {
                    shares: recent,
                    span: t.min(RECENT_SECONDS),
                },
            });
        }
        let now_offline = match (evidence, last) {
            (Some(e), Some(l)) => is_offline(e, t - l, ALPHA),
            _ => false,
        };
        let now_dropped = !now_offline && is_drop(recent, hour, 0.5, ALPHA);
        if now_offline && !offline {
            outcome.offline_at.push(t);
        }
        if now_dropped && !dropped {
            outcome.drop_at.push(t);
        }
        (offline, dropped) = (now_offline, now_dropped);
    }
    outcome.last_share = last;
    outcome
}

#[test]
fn a_slow_low_difficulty_worker_is_never_flagged() {
    // One share per five minutes on average, for 30 simulated days.
    for seed in 1..=3 {
        let outcome = simulate(seed, 30.0 * 24.0 * HOUR, |_| Some(300.0));
        assert!(
            outcome.offline_at.is_empty(),
            "seed {seed}: {:?}",
            outcome.offline_at
        );
        assert!(
            outcome.drop_at.is_empty(),
            "seed {seed}: {:?}",
            outcome.drop_at
        );
    }
}

#[test]
fn a_steady_fast_worker_is_never_flagged() {
    for seed in 1..=3 {
        let outcome = simulate(seed, 7.0 * 24.0 * HOUR, |_| Some(2.0));
        assert!(
            outcome.offline_at.is_empty(),
            "seed {seed}: {:?}",
            outcome.offline_at
        );
        assert!(
            outcome.drop_at.is_empty(),
            "seed {seed}: {:?}",
            outcome.drop_at
        );
    }
}

/// How long after its last share each seeded run was flagged, in mean share intervals.
fn delays_after_stopping(interval: f64, stop: f64) -> Vec<f64> {
    (1..=20)
        .map(|seed| {
            let outcome = simulate(seed, stop + 100.0 * interval, |t| {
                (t < stop).then_some(interval)
            });
            assert_eq!(
                outcome.offline_at.len(),
                1,
                "seed {seed}: {:?}",
                outcome.offline_at
            );
            assert!(
                outcome.offline_at[0] > stop,
                "seed {seed}: flagged while mining"
            );
            let last = outcome.last_share.expect("shares before the stop");
            (outcome.offline_at[0] - last) / interval
        })
        .collect()
}

#[test]
fn a_stopped_worker_is_flagged_within_the_time_its_rate_implies() {
    // ln(1/α) ≈ 9.2 mean intervals is the silence that is improbable at the true
    // rate; the estimated rate's confidence bound adds a little for fast workers
    // (hundreds of shares of evidence) and more for slow ones (a dozen).
    let k = (1.0 / ALPHA).ln();
    let fast = delays_after_stopping(10.0, 2.0 * HOUR);
    assert!(fast.iter().all(|d| *d <= 2.0 * k), "{fast:?}");
    let slow = delays_after_stopping(300.0, 24.0 * HOUR);
    assert!(slow.iter().all(|d| *d <= 4.0 * k), "{slow:?}");
    // And never before the silence is improbable even at the true rate.
    assert!(
        fast.iter().chain(&slow).all(|d| *d >= k),
        "{fast:?} {slow:?}"
    );
}

#[test]
fn a_hashrate_drop_is_flagged_within_ten_minutes() {
    for seed in 1..=5 {
        let drop = 3.0 * HOUR;
        let outcome = simulate(seed, drop + 2.0 * HOUR, |t| {
            Some(if t < drop { 2.0 } else { 8.0 })
        });
        let after = outcome.drop_at.first().map(|at| at - drop);
        assert!(
            after.is_some_and(|after| (0.0..=RECENT_SECONDS).contains(&after)),
            "seed {seed}: {:?}",
            outcome.drop_at
        );
        // A long gap right after a fourfold slowdown is improbable at the old
        // rate and may read as offline; once ten minutes at the new rate are
        // evidence, it is judged by the new rate.
        assert!(
            outcome
                .offline_at
                .iter()
                .all(|at| *at < drop + RECENT_SECONDS),
            "seed {seed}: {:?}",
            outcome.offline_at
        );
    }
}

#[test]
fn no_evidence_no_verdict() {
    let none = Evidence {
        shares: 0.0,
        span: 600.0,
    };
    let evidence = RateEvidence {
        hour: none,
        recent: none,
    };
    assert_eq!(offline_after(evidence, ALPHA), None);
    assert!(!is_offline(evidence, 1e9, ALPHA));
    assert!(!is_drop(0.0, none, 0.5, ALPHA));
    // A short history is not a baseline for a drop.
    assert!(!is_drop(
        0.0,
        Evidence {
            shares: 1000.0,
            span: 900.0
        },
        0.5,
        ALPHA
    ));
}

#[test]
fn poisson_tail_bound() {
    assert_eq!(poisson_lower_tail(0.0, 3.0), (-3.0f64).exp());
    assert_eq!(poisson_lower_tail(5.0, 3.0), 1.0);
    // Exact P(X ≤ 2 | μ = 10) ≈ 0.00277; the bound is above it and of its order.
    let bound = poisson_lower_tail(2.0, 10.0);
    assert!((0.00277..0.05).contains(&bound), "{bound}");
}
