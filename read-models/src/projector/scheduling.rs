//! When the projector runs: each group of projections on its own loop, woken by
//! NOTIFY or a poll, pacing its batches, waiting out the horizon and backing off a
//! failing projection without holding the others back.

use super::*;

impl Projector {
    /// Runs every group of [`ROUNDS`] on its own loop: a group's next batch waits for
    /// its own last one only, not for the slower group's.
    pub(super) async fn run(&self, wake: watch::Receiver<u64>, shutdown: watch::Receiver<bool>) {
        futures_util::future::join_all(
            ROUNDS
                .iter()
                .map(|group| self.run_group(group, wake.clone(), shutdown.clone())),
        )
        .await;
    }

    async fn run_group(
        &self,
        group: &'static [Projection],
        mut wake: watch::Receiver<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry = Retry::new(group.len());
        let mut horizon = HorizonWait::new(&self.settings);
        loop {
            if *shutdown.borrow() {
                return;
            }
            wake.borrow_and_update();
            let started = tokio::time::Instant::now();
            let idle = match self.step(group, &mut retry).await {
                Step::Applied(n, checkpoint) => {
                    horizon.reset();
                    if i64::try_from(n).unwrap_or(i64::MAX) >= self.settings.batch_size {
                        // A full batch: more may be waiting, go on at once.
                        continue;
                    }
                    // Let the next events gather, the longer the busier.
                    let pause = self.settings.pause_after(n);
                    tokio::select! {
                        _ = tokio::time::sleep_until(started + pause) => {}
                        _ = shutdown.changed() => {}
                    }
                    if wake.has_changed().unwrap_or(true) {
                        continue;
                    }
                    // Nothing committed since the batch began: only events the horizon
                    // hid from it can be waiting (one query instead of an empty batch).
                    match self.waiting_behind_horizon(checkpoint).await {
                        Ok(false) => self.settings.poll_interval,
                        _ => horizon.next(),
                    }
                }
                Step::Idle(checkpoint) => match self.waiting_behind_horizon(checkpoint).await {
                    Ok(true) => horizon.next(),
                    _ => {
                        horizon.reset();
                        self.settings.poll_interval
                    }
                },
                // Retried when its backoff ends, not only when woken.
                Step::Failed(backoff) => backoff,
            };
            tokio::select! {
                // New events committed: the holder of the horizon may have been one of
                // them, look now.
                _ = wake.changed() => horizon.reset(),
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// One turn for `group`: one batch for all its projections together when they stand
    /// at one point, else (after a failure, or while one catches up after a rebuild or
    /// another process's batches) one batch for each on its own, so that a projection
    /// that fails holds back no other. Under a steady flow of events the ones behind
    /// catch up (their batches are full) and they stand together again.
    async fn step(&self, group: &'static [Projection], retry: &mut Retry) -> Step {
        if retry.together_due() {
            match self.run_round(group).await {
                Ok(Some(out)) => {
                    retry.together_ok();
                    return if out.applied > 0 {
                        Step::Applied(out.applied, out.checkpoint)
                    } else {
                        Step::Idle(out.checkpoint)
                    };
                }
                Ok(None) => {}
                Err(e) => {
                    let backoff = retry.together_failed();
                    tracing::warn!(error = %e, ?backoff, "batch of projections together failed; applying each alone");
                }
            }
        }
        let due: Vec<(usize, Projection)> = group
            .iter()
            .copied()
            .enumerate()
            .filter(|(i, _)| retry.due(*i))
            .collect();
        let results =
            futures_util::future::join_all(due.iter().map(|(_, p)| self.run_batch(*p))).await;
        let mut applied = 0;
        let mut lowest: Option<LogPoint> = None;
        for ((i, p), result) in due.into_iter().zip(results) {
            match result {
                Ok(out) => {
                    retry.ok(i);
                    applied = applied.max(out.applied);
                    lowest = Some(lowest.map_or(out.checkpoint, |l| l.min(out.checkpoint)));
                }
                Err(e) => {
                    let backoff = retry.failed(i);
                    tracing::warn!(projection = p.name(), error = %e, ?backoff, "projection batch failed");
                }
            }
        }
        match lowest {
            Some(at) if applied > 0 => Step::Applied(applied, at),
            // One of the group waits out a backoff: look again then, not only when woken.
            Some(_) if retry.any_failing() => Step::Failed(retry.soonest()),
            Some(at) => Step::Idle(at),
            None => Step::Failed(retry.soonest()),
        }
    }

    /// True when committed events exist past `checkpoint` that the horizon still hides
    /// (an older transaction is in flight): worth looking again very soon.
    async fn waiting_behind_horizon(&self, checkpoint: LogPoint) -> Result<bool, ReadError> {
        let mut conn = self.pool.get().await?;
        Ok(event_log::any_after(&mut conn, checkpoint).await?)
    }
}

/// The groups of projections the runner applies, each in one transaction per batch,
/// side by side, each group at its own pace. The product view has the heaviest
/// statements (every stock change rewrites a row, and popularity follows to its own
/// indexed table), so it runs on its own connection and loop beside the others instead
/// of holding their visibility back; the other three share a transaction.
pub(super) const ROUNDS: [&[Projection]; 2] = [
    &[Projection::ProductView],
    &[
        Projection::OrderView,
        Projection::CustomerSummary,
        Projection::Sales,
    ],
];

/// How long the runner waits before looking again while committed events stay hidden
/// behind the horizon (a transaction older than them still in flight): the first look
/// comes soon, since most holders are commands that commit within milliseconds, and
/// later ones back off exponentially, so a long holder (a bulk load, an open session)
/// does not have every projector of every replica poll the database every few
/// milliseconds for as long as it lasts. Progress and wake-ups start it over.
#[derive(Debug)]
pub(super) struct HorizonWait {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl HorizonWait {
    fn new(settings: &ProjectorSettings) -> Self {
        Self {
            first: settings.horizon_retry,
            max: settings.horizon_retry_max.max(settings.horizon_retry),
            next: settings.horizon_retry,
        }
    }

    /// The wait before the next look, doubling the one after it.
    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(self.max);
        wait
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

/// What a turn of the runner did.
pub(super) enum Step {
    /// Applied this many events at most to one projection; the group's projections
    /// that ran stand at this point or past it.
    Applied(usize, LogPoint),
    /// Nothing to apply past this point.
    Idle(LogPoint),
    /// Every batch tried failed; try again after this long.
    Failed(Duration),
}

/// When the runner tries a group again after failures: the batch of the group together,
/// and each projection on its own (so one that keeps failing is retried with backoff
/// while the others go on at their pace).
pub(super) struct Retry {
    together: Backoff,
    alone: Vec<Backoff>,
}

#[derive(Default, Clone, Copy)]
pub(super) struct Backoff {
    failures: u32,
    until: Option<tokio::time::Instant>,
}

impl Backoff {
    fn due(&self) -> bool {
        self.until.is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = Duration::from_millis(100u64 << self.failures.min(4));
        self.until = Some(tokio::time::Instant::now() + wait);
        wait
    }
}

impl Retry {
    fn new(projections: usize) -> Self {
        Self {
            together: Backoff::default(),
            alone: vec![Backoff::default(); projections],
        }
    }

    fn together_due(&self) -> bool {
        self.together.due()
    }

    fn together_ok(&mut self) {
        self.together = Backoff::default();
    }

    fn together_failed(&mut self) -> Duration {
        self.together.failed()
    }

    /// Whether the group's `i`-th projection may be tried on its own now.
    fn due(&self, i: usize) -> bool {
        self.alone.get(i).is_none_or(Backoff::due)
    }

    fn ok(&mut self, i: usize) {
        if let Some(b) = self.alone.get_mut(i) {
            *b = Backoff::default();
        }
    }

    fn failed(&mut self, i: usize) -> Duration {
        self.alone
            .get_mut(i)
            .map_or(Duration::from_millis(100), Backoff::failed)
    }

    /// Whether some projection of the group failed its last batch on its own.
    fn any_failing(&self) -> bool {
        self.alone.iter().any(|b| b.failures > 0)
    }

    /// How long until some projection may be tried again.
    fn soonest(&self) -> Duration {
        let now = tokio::time::Instant::now();
        self.alone
            .iter()
            .filter_map(|b| b.until)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_behind_a_held_horizon_back_off_up_to_the_cap_and_start_over() {
        let mut wait = HorizonWait::new(&ProjectorSettings {
            horizon_retry: Duration::from_millis(5),
            horizon_retry_max: Duration::from_millis(50),
            ..ProjectorSettings::default()
        });
        let waits: Vec<u128> = (0..7).map(|_| wait.next().as_millis()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 50, 50, 50]);
        wait.reset();
        assert_eq!(wait.next(), Duration::from_millis(5));
    }

    #[test]
    fn the_pause_after_a_batch_grows_with_its_size_up_to_the_pace() {
        let settings = ProjectorSettings {
            pace: Duration::from_millis(25),
            pace_full_at: 50,
            ..ProjectorSettings::default()
        };
        let pauses: Vec<Duration> = [0, 1, 3, 25, 49, 50, 51, 499]
            .into_iter()
            .map(|n| settings.pause_after(n))
            .collect();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        assert_eq!(
            pauses,
            [
                ms(0),
                us(500),
                us(1500),
                us(12_500),
                us(24_500),
                ms(25),
                ms(25),
                ms(25)
            ]
        );
        let no_share = ProjectorSettings {
            pace_full_at: 0,
            ..settings
        };
        assert_eq!(
            no_share.pause_after(1),
            ms(25),
            "0 means always the whole pace"
        );
    }
}
