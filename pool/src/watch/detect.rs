//! The statistics of offline and drop detection, as pure functions.
//!
//! A worker hashing at `H` hashes per second on share difficulty `D` finds shares
//! as a Poisson process of rate `λ = H / (D · 2³²)`. The chance of no share for
//! `t` seconds is `e^(−λt)`, so silence is improbable past `t = ln(1/α) / λ` for a
//! false-alarm chance `α`: a fast worker is flagged within seconds, a slow one
//! (one share in five minutes) only after an hour or so, and neither falsely.
//!
//! `λ` itself is estimated from `n` shares over a span, and a small `n` can
//! overstate it. The threshold uses a lower confidence bound on `λ` instead
//! (Wilson–Hilferty's approximation of the Poisson bound), so few shares mean a
//! longer, honest wait rather than false alarms.
//!
//! A drop compares the last 10 minutes with the hour: it is flagged when the
//! 10-minute rate is below a fraction of the hourly one *and* so few shares in 10
//! minutes are improbable at the hourly rate (a Chernoff bound on the Poisson
//! lower tail), which takes "enough shares to be sure" into account.

/// z of the one-sided 99% confidence bound on the share rate.
const RATE_CONFIDENCE_Z: f64 = 2.326;
/// Silence shorter than this is never "offline" (network hiccups, reconnects).
pub const MIN_QUIET_SECONDS: f64 = 30.0;
/// The window a drop is judged on.
pub const RECENT_SECONDS: f64 = 600.0;

/// What a worker's recent shares say about its share rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Shares (at the current difficulty) seen over `span` seconds.
    pub shares: f64,
    pub span: f64,
}

impl Evidence {
    /// Evidence from accepted work (sum of share difficulties) over `span`,
    /// counted in shares of the current `difficulty`.
    pub fn from_work(work: f64, difficulty: f64, span: f64) -> Evidence {
        let shares = if difficulty > 0.0 {
            work / difficulty
        } else {
            0.0
        };
        Evidence { shares, span }
    }

    /// A lower bound on the share rate (per second) that holds with 99% confidence,
    /// or `None` without evidence.
    pub fn rate_lower_bound(&self) -> Option<f64> {
        let n = self.shares;
        if !(n >= 1.0 && self.span > 0.0) {
            return None;
        }
        let factor = (1.0 - 1.0 / (9.0 * n) - RATE_CONFIDENCE_Z / (3.0 * n.sqrt())).powi(3);
        (factor > 0.0).then(|| factor * n / self.span)
    }
}

/// What a worker's shares said at its last share: over the hour and over the
/// last [`RECENT_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEvidence {
    pub hour: Evidence,
    pub recent: Evidence,
}

impl RateEvidence {
    /// The share rate to judge silence by: the hour's lower bound, or the recent
    /// one when it is lower and rests on [`MIN_RECENT_SHARES`], so a worker
    /// that slowed down is judged by its new rate.
    fn rate(&self) -> Option<f64> {
        let hour = self.hour.rate_lower_bound()?;
        let recent = (self.recent.shares >= MIN_RECENT_SHARES)
            .then(|| self.recent.rate_lower_bound())
            .flatten();
        Some(recent.map_or(hour, |recent| recent.min(hour)))
    }
}

/// Shares the recent window needs before its rate counts for offline detection.
pub const MIN_RECENT_SHARES: f64 = 10.0;

/// Seconds of silence after which a worker with this evidence is improbably
/// quiet (chance below `false_alarm`), or `None` when there is no evidence yet.
pub fn offline_after(evidence: RateEvidence, false_alarm: f64) -> Option<f64> {
    let rate = evidence.rate()?;
    Some(((1.0 / false_alarm).ln() / rate).max(MIN_QUIET_SECONDS))
}

/// Whether `quiet` seconds without a share make the worker offline.
pub fn is_offline(evidence: RateEvidence, quiet: f64, false_alarm: f64) -> bool {
    offline_after(evidence, false_alarm).is_some_and(|after| quiet > after)
}

/// An upper bound on `P(X ≤ observed)` for `X ~ Poisson(expected)`:
/// `e^(−μ) (eμ/m)^m` for `m < μ` (Chernoff), else 1.
pub fn poisson_lower_tail(observed: f64, expected: f64) -> f64 {
    if observed >= expected {
        return 1.0;
    }
    if observed <= 0.0 {
        return (-expected).exp();
    }
    (-expected + observed + observed * (expected / observed).ln()).exp()
}

/// Whether the last 10 minutes' shares are a drop from the hour's rate.
///
/// `recent`: shares in the last [`RECENT_SECONDS`]; `hour`: shares over the
/// hour (which includes them) and the span it covers.
pub fn is_drop(recent: f64, hour: Evidence, fraction: f64, false_alarm: f64) -> bool {
    if hour.span < 2.0 * RECENT_SECONDS || hour.shares <= 0.0 {
        return false;
    }
    let expected = hour.shares / hour.span * RECENT_SECONDS;
    recent < fraction * expected && poisson_lower_tail(recent, expected) < false_alarm
}

#[cfg(test)]
mod tests;
