//! The monitor: every few seconds it judges every worker with [`super::detect`],
//! stores the status where the API reads it, and reports each change to the log
//! and the webhook.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::detect::{is_drop, is_offline, offline_after, RateEvidence};
use super::webhook::Webhook;
use super::{Status, WatchConfig};
use crate::accounting::{account_of, now_ms, rfc3339, Accounting};

/// Judges workers and remembers what it needs between checks.
pub struct Monitor {
    accounting: Arc<Accounting>,
    config: WatchConfig,
    webhook: Option<Arc<Webhook>>,
    /// Per worker: the last share seen and the rate evidence as of that share.
    /// Evidence is frozen at the last share so a silence does not erode it.
    evidence: HashMap<Arc<str>, (i64, RateEvidence)>,
}

impl Monitor {
    /// A monitor of `accounting`'s workers, posting changes to `webhook`.
    pub fn new(
        accounting: Arc<Accounting>,
        config: WatchConfig,
        webhook: Option<Arc<Webhook>>,
    ) -> Monitor {
        Monitor {
            accounting,
            config,
            webhook,
            evidence: HashMap::new(),
        }
    }

    /// Checks every `check_interval` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    for event in self.check(now_ms()) {
                        if let Some(webhook) = &self.webhook {
                            webhook.send(event);
                        }
                    }
                }
            }
        }
    }

    /// Judges every worker at `now_ms`; returns the events of the status changes.
    pub fn check(&mut self, now_ms: i64) -> Vec<Value> {
        let mut events = Vec::new();
        for stats in self.accounting.all() {
            let sample = stats.sample(now_ms);
            let Some(last) = sample.last_share_ms else {
                continue;
            };
            let evidence = match self.evidence.get(&stats.name) {
                Some((seen, evidence)) if *seen == last => *evidence,
                _ => {
                    self.evidence
                        .insert(stats.name.clone(), (last, sample.evidence));
                    sample.evidence
                }
            };
            let quiet = (now_ms - last) as f64 / 1000.0;
            let alarm = self.config.false_alarm;
            let status = if offline_after(evidence, alarm).is_none() {
                Status::Waiting
            } else if is_offline(evidence, quiet, alarm) {
                Status::Offline
            } else if is_drop(
                sample.evidence.recent.shares,
                sample.evidence.hour,
                self.config.drop_fraction,
                alarm,
            ) {
                Status::Drop
            } else {
                Status::Online
            };
            let previous = stats.status();
            if status == previous {
                continue;
            }
            stats.set_status(status);
            let worker = &*stats.name;
            match status {
                Status::Offline | Status::Drop => tracing::warn!(
                    worker,
                    status = status.as_str(),
                    quiet_seconds = quiet.round(),
                    "worker status changed"
                ),
                Status::Online | Status::Waiting => tracing::info!(
                    worker,
                    status = status.as_str(),
                    previous = previous.as_str(),
                    "worker status changed"
                ),
            }
            // Becoming online for the first time is not news.
            if previous != Status::Waiting || status != Status::Online {
                events.push(json!({
                    "event": "worker_status",
                    "worker": worker,
                    "account": account_of(worker),
                    "status": status.as_str(),
                    "previous": previous.as_str(),
                    "time": rfc3339(now_ms),
                    "last_share": rfc3339(last),
                    "offline_after_seconds": offline_after(evidence, alarm),
                }));
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::Accounting;

    #[test]
    fn a_worker_goes_online_then_offline_then_back() {
        let accounting = Arc::new(Accounting::default());
        let worker = accounting.worker("dave.rig");
        accounting.set_difficulty(&worker, 1.0);
        let mut monitor = Monitor::new(accounting.clone(), WatchConfig::default(), None);
        // One share every 10 s for 20 minutes.
        let start = now_ms();
        let mut t = start;
        for _ in 0..120 {
            accounting.record_accept(&worker, 1.0, 1.0, t);
            assert!(monitor.check(t + 1).is_empty());
            t += 10_000;
        }
        assert_eq!(worker.status(), Status::Online);
        let last = t - 10_000;
        // Ten intervals of silence are plausible at this rate... (ln 1e4 ≈ 9.2)
        assert!(monitor.check(last + 60_000).is_empty());
        // ...but not five minutes.
        let events = monitor.check(last + 300_000);
        assert_eq!(worker.status(), Status::Offline);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["worker"], "dave.rig");
        assert_eq!(events[0]["status"], "offline");
        assert_eq!(events[0]["previous"], "online");
        // A share brings it back.
        accounting.record_accept(&worker, 1.0, 1.0, last + 301_000);
        let events = monitor.check(last + 302_000);
        assert_eq!(events[0]["status"], "online");
        assert_eq!(
            accounting.worker_view("dave.rig").map(|v| v.status),
            Some("online")
        );
    }
}
