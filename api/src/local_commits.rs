//! When this process's commands committed, so that commit -> visible can be measured
//! from the commit itself for the writes this process made
//! (`till_projection_commit_visible_seconds`). The events' own timestamp is the start of
//! the writing transaction, which also counts the command's wait for locks and for the
//! CPU before its commit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Longest a commit is remembered: past this its events count as not this process's.
const KEEP: Duration = Duration::from_secs(60);

/// Most commits remembered (about 3 MiB at most): the oldest go first.
const MOST: usize = 100_000;

/// Commit instants of recent transactions, by the transaction id the event log records
/// (`events.tx_id`, the consistency token's first half). Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct CommitTimes {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    at: HashMap<i64, Instant>,
    order: VecDeque<(i64, Instant)>,
}

impl CommitTimes {
    /// Nothing remembered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Transaction `tx_id` has committed now (its command has the answer).
    pub fn committed(&self, tx_id: i64) {
        self.committed_at(tx_id, Instant::now());
    }

    fn committed_at(&self, tx_id: i64, now: Instant) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.at.insert(tx_id, now).is_none() {
            recent.order.push_back((tx_id, now));
        }
        while let Some(&(old, when)) = recent.order.front() {
            if recent.order.len() <= MOST && now.saturating_duration_since(when) <= KEEP {
                break;
            }
            recent.order.pop_front();
            if recent.at.get(&old) == Some(&when) {
                recent.at.remove(&old);
            }
        }
    }

    /// How long ago each of `tx_ids` that this process committed did so, as of `now`,
    /// in the order given; others are left out. The ids come from events in log order,
    /// where a transaction's events stand together: a run of one id counts once.
    pub fn since(&self, tx_ids: impl IntoIterator<Item = i64>, now: Instant) -> Vec<Duration> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let mut last = None;
        let mut out = Vec::new();
        for id in tx_ids {
            if last.replace(id) == Some(id) {
                continue;
            }
            if let Some(at) = recent.at.get(&id) {
                out.push(now.saturating_duration_since(*at));
            }
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .order
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_from_the_commit_each_transaction_once() {
        let times = CommitTimes::new();
        let start = Instant::now();
        times.committed_at(7, start);
        times.committed_at(9, start + Duration::from_millis(5));
        let later = start + Duration::from_millis(30);
        assert_eq!(
            times.since([7, 7, 7, 8, 9, 9], later),
            vec![Duration::from_millis(30), Duration::from_millis(25)]
        );
    }

    #[test]
    fn forgets_old_commits_and_stays_bounded() {
        let times = CommitTimes::new();
        let start = Instant::now();
        times.committed_at(1, start);
        times.committed_at(2, start + KEEP + Duration::from_secs(1));
        assert_eq!(times.len(), 1);
        assert!(times.since([1], start + KEEP * 2).is_empty());
        for id in 0..(MOST as i64 + 10) {
            times.committed_at(100 + id, start + KEEP + Duration::from_secs(2));
        }
        assert_eq!(times.len(), MOST);
        let now = start + KEEP + Duration::from_secs(3);
        assert!(times.since([100], now).is_empty());
        assert_eq!(times.since([100 + MOST as i64], now).len(), 1);
    }
}
