//! Acknowledging one channel's shares in order. `SubmitShares.Success` says that
//! every share up to `last_sequence_number` not refused by its own error was
//! accepted, so a share whose commit finished is reported only once every earlier
//! accepted share of the channel has finished too: commits complete in batches, and
//! a later batch may wake the session before an earlier one's last waiter.

use std::collections::BTreeSet;

/// A channel's accepted shares between judgement and acknowledgement.
#[derive(Default)]
pub(super) struct Acks {
    /// Accepted shares whose commit is under way, by sequence number.
    in_flight: BTreeSet<u32>,
    /// Committed and not yet reported: sequence number and work.
    ready: Vec<(u32, u64)>,
}

/// One `SubmitShares.Success`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Report {
    pub last: u32,
    pub count: u32,
    pub sum: u64,
}

impl Acks {
    /// Share `sequence` was accepted and goes to the ledger.
    pub fn judged(&mut self, sequence: u32) {
        self.in_flight.insert(sequence);
    }

    /// Share `sequence`'s commit finished: stored, with `work` to report, or not
    /// (`None`; it is answered with an error of its own).
    pub fn settled(&mut self, sequence: u32, work: Option<u64>) {
        self.in_flight.remove(&sequence);
        if let Some(work) = work {
            self.ready.push((sequence, work));
        }
    }

    /// The shares that can be reported now: every committed one below the first
    /// still in flight.
    pub fn report(&mut self) -> Option<Report> {
        let bound = self.in_flight.first().copied();
        let mut report: Option<Report> = None;
        self.ready.retain(|&(sequence, work)| {
            if bound.is_some_and(|bound| sequence > bound) {
                return true;
            }
            let r = report.get_or_insert(Report {
                last: sequence,
                count: 0,
                sum: 0,
            });
            r.last = r.last.max(sequence);
            r.count += 1;
            r.sum += work;
            false
        });
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_finishing_out_of_order_are_reported_in_order() {
        let mut acks = Acks::default();
        for sequence in 1..=5 {
            acks.judged(sequence);
        }
        // 4 and 5 finish first: nothing can be said while 1..=3 are in flight.
        acks.settled(4, Some(1));
        acks.settled(5, Some(2));
        assert_eq!(acks.report(), None);
        acks.settled(1, Some(1));
        assert_eq!(
            acks.report(),
            Some(Report {
                last: 1,
                count: 1,
                sum: 1
            })
        );
        // 2 failed to store (answered by its own error); 3 finishes: all of it goes.
        acks.settled(2, None);
        acks.settled(3, Some(4));
        assert_eq!(
            acks.report(),
            Some(Report {
                last: 5,
                count: 3,
                sum: 7
            })
        );
        assert_eq!(acks.report(), None);
    }

    #[test]
    fn shares_in_order_are_reported_at_once() {
        let mut acks = Acks::default();
        acks.judged(7);
        acks.judged(9);
        acks.settled(7, Some(1));
        acks.judged(10);
        assert_eq!(
            acks.report(),
            Some(Report {
                last: 7,
                count: 1,
                sum: 1
            })
        );
        acks.settled(9, Some(1));
        acks.settled(10, Some(1));
        assert_eq!(
            acks.report(),
            Some(Report {
                last: 10,
                count: 2,
                sum: 2
            })
        );
    }
}
