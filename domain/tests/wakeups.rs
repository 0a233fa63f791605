//! The projectors' wake-up: sent after a command's events commit, from outside the
//! command's transaction (a notifying transaction commits under a database-wide lock).

// Tests: a failed unwrap is the failure wanted, with the error's Debug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use till_domain::channels::{EVENTS_CHANNEL, JOBS_CHANNEL};
use till_domain::commands::{CommandContext, Commands, NewCategory};
use till_domain::db::listen::listen;
use till_domain::db::testing::TestDb;
use till_domain::db::transactions;
use till_domain::event_log::{self, EventMeta};
use till_domain::events::DomainEvent;
use till_domain::jobs::{self, NewJob};
use till_domain::types::{Name, Slug};
use till_domain::wakeups::{self, Announcer, Wakes};
use till_domain::DomainError;
use tokio::sync::watch;

/// A LISTEN on the events channel; the receiver changes on every notification.
struct Listener {
    wake: watch::Receiver<u64>,
    _stop: watch::Sender<bool>,
}

impl Listener {
    async fn new(db: &TestDb) -> Self {
        Self::on(db, &[EVENTS_CHANNEL]).await
    }

    async fn on(db: &TestDb, channels: &'static [&'static str]) -> Self {
        let (wake_tx, mut wake) = watch::channel(0u64);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(listen(db.url.clone(), channels, wake_tx, stopped));
        // The listener bumps the counter once LISTEN is in place.
        tokio::time::timeout(Duration::from_secs(10), wake.wait_for(|n| *n >= 1))
            .await
            .unwrap_or_else(|e| panic!("LISTEN never started: {e}"))
            .unwrap();
        wake.borrow_and_update();
        Self { wake, _stop: stop }
    }

    /// Whether a notification arrives within `within` (marks everything seen).
    async fn notified(&mut self, within: Duration) -> bool {
        let got = tokio::time::timeout(within, self.wake.changed())
            .await
            .is_ok();
        self.wake.borrow_and_update();
        got
    }

    /// Waits until no notification has come for `quiet`.
    async fn settle(&mut self, quiet: Duration) {
        while self.notified(quiet).await {}
    }
}

fn category(slug: &str) -> NewCategory {
    NewCategory {
        slug: Slug::parse(slug).unwrap(),
        name: Name::parse("name", slug).unwrap(),
        parent: None,
    }
}

#[tokio::test]
async fn a_command_wakes_the_projectors_once_its_events_commit() {
    let db = TestDb::new().await;
    let mut listener = Listener::new(&db).await;
    let commands = Commands::new(db.pool.clone());
    commands
        .create_category(&CommandContext::system("test"), category("woken"))
        .await
        .unwrap();
    assert!(listener.notified(Duration::from_secs(10)).await);
}

/// What keeps order transactions from committing one at a time: appending events
/// sends no notification from the writing transaction.
#[tokio::test]
async fn appending_events_notifies_nobody_from_the_writing_transaction() {
    let db = TestDb::new().await;
    let mut listener = Listener::new(&db).await;
    let mut conn = db.pool.get().await.unwrap();
    transactions::transaction(&mut conn, async |conn| {
        let event = DomainEvent::CategoryCreated {
            category_id: uuid::Uuid::now_v7(),
            slug: "quiet".into(),
            name: "quiet".into(),
            parent_id: None,
        };
        event_log::append(conn, &EventMeta::system("test"), &[event]).await?;
        Ok::<_, DomainError>(())
    })
    .await
    .unwrap();
    assert!(!listener.notified(Duration::from_millis(500)).await);
}

#[tokio::test]
async fn commands_that_append_nothing_wake_nobody() {
    let db = TestDb::new().await;
    let mut listener = Listener::new(&db).await;
    let commands = Commands::new(db.pool.clone());
    commands.purge_refresh_tokens(10).await.unwrap();
    assert!(!listener.notified(Duration::from_millis(500)).await);
}

/// Commits racing with a send in flight are folded into one more send after it: a
/// burst costs a few notifications, and none is lost after the last commit.
#[tokio::test]
async fn the_announcer_folds_bursts_and_loses_no_wake_up() {
    let db = TestDb::new().await;
    let mut listener = Listener::new(&db).await;
    let announcer = Announcer::new(db.pool.clone());

    let before = *listener.wake.borrow();
    let burst: Vec<_> = (0..20)
        .map(|_| {
            let a = announcer.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    a.committed();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in burst {
        t.await.unwrap();
    }
    listener.settle(Duration::from_millis(300)).await;
    let sent = *listener.wake.borrow() - before;
    assert!(sent >= 1, "the burst woke the projectors");
    assert!(
        sent < 100,
        "1,000 commits folded into a few sends, not {sent}"
    );

    // Every commit is followed by a wake-up, however it meets the sending task.
    for round in 0..50 {
        // Nothing from the previous round may answer for this one.
        listener.settle(Duration::from_millis(30)).await;
        let (a, b) = (announcer.clone(), announcer.clone());
        let racing = tokio::spawn(async move { a.committed() });
        b.committed();
        racing.await.unwrap();
        assert!(
            listener.notified(Duration::from_secs(10)).await,
            "round {round}: no wake-up after the last commit"
        );
    }
}

/// Jobs enqueued by a command wake the workers after it commits, not from its
/// transaction; enqueued outside a command (the webhook fan-out), the transaction
/// itself notifies them at commit.
#[tokio::test]
async fn enqueued_jobs_wake_the_workers_after_the_command_commits() {
    let db = TestDb::new().await;
    let mut workers = Listener::on(&db, &[JOBS_CHANNEL]).await;
    let announcer = Announcer::new(db.pool.clone());

    let mut conn = db.pool.get().await.unwrap();
    let (result, wakes) = wakeups::track(enqueue_two(&mut conn)).await;
    result.unwrap();
    assert_eq!(
        wakes,
        Wakes {
            events: false,
            jobs: true
        }
    );
    assert!(
        !workers.notified(Duration::from_millis(500)).await,
        "the enqueuing transaction notified"
    );
    announcer.wake(wakes);
    assert!(workers.notified(Duration::from_secs(10)).await);

    enqueue_two(&mut conn).await.unwrap();
    assert!(
        workers.notified(Duration::from_secs(10)).await,
        "outside a command the transaction wakes the workers"
    );
}

async fn enqueue_two(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), DomainError> {
    let job = || NewJob {
        queue: "probe",
        payload: serde_json::json!({}),
        max_attempts: 1,
    };
    let jobs = vec![job(), job()];
    transactions::transaction(conn, async |conn| {
        jobs::enqueue(conn, &jobs).await?;
        Ok::<_, DomainError>(())
    })
    .await
}

/// One LISTEN connection serves every follower of a process: each follower's counter
/// moves on notifications of its own channels only.
#[tokio::test]
async fn one_listener_wakes_each_follower_for_its_channels() {
    use diesel_async::RunQueryDsl;
    use till_domain::channels::PROJECTED_CHANNEL;
    use till_domain::db::listen::Listener as Shared;

    let db = TestDb::new().await;
    let shared = Shared::new(db.url.clone());
    let mut events = shared.subscribe(&[EVENTS_CHANNEL]);
    let mut jobs = shared.subscribe(&[JOBS_CHANNEL]);
    let mut both = shared.subscribe(&[EVENTS_CHANNEL, PROJECTED_CHANNEL]);
    let (stop, stopped) = watch::channel(false);
    let task = shared.spawn(stopped);
    for rx in [&mut events, &mut jobs, &mut both] {
        // Every counter moves once LISTEN is in place.
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n >= 1))
            .await
            .unwrap_or_else(|e| panic!("LISTEN never started: {e}"))
            .unwrap();
        rx.borrow_and_update();
    }
    let mut conn = db.pool.get().await.unwrap();
    let listening: i64 = diesel::dsl::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    ))
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(listening, 1, "one LISTEN session for three followers");

    // Notifies `channel`, waits until the follower of both channels wakes, and a moment
    // more for the others.
    async fn notify(
        conn: &mut diesel_async::AsyncPgConnection,
        channel: &'static str,
        both: &mut watch::Receiver<u64>,
    ) {
        diesel::sql_query("SELECT pg_notify($1, '')")
            .bind::<diesel::sql_types::Text, _>(channel)
            .execute(conn)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), both.changed())
            .await
            .unwrap_or_else(|e| panic!("no wake-up: {e}"))
            .unwrap();
        both.borrow_and_update();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let moved = |rx: &mut watch::Receiver<u64>| rx.has_changed().unwrap_or(false);
    notify(&mut conn, EVENTS_CHANNEL, &mut both).await;
    assert!(moved(&mut events), "the events follower was not woken");
    assert!(!moved(&mut jobs), "the jobs follower was woken by events");
    events.borrow_and_update();

    notify(&mut conn, PROJECTED_CHANNEL, &mut both).await;
    assert!(
        !moved(&mut events),
        "the events follower was woken by another channel"
    );
    assert!(!moved(&mut jobs));

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|e| panic!("the listener did not stop: {e}"))
        .unwrap();
}

/// A process's own commits wake its followers through its listener at once, before
/// and besides the NOTIFY: here the process's listener never connects, and a
/// command's commit still bumps the projector's and the workers' counters (jobs only
/// for commits that enqueued), while the database's NOTIFY still reaches a LISTEN
/// session of another process.
#[tokio::test]
async fn a_commit_wakes_this_process_followers_without_the_round_trip() {
    let db = TestDb::new().await;
    let mut other_process = Listener::new(&db).await;
    let local = till_domain::db::listen::Listener::new(db.url.clone());
    let mut projector = local.subscribe(&[EVENTS_CHANNEL]);
    let mut workers = local.subscribe(&[JOBS_CHANNEL]);
    let commands = Commands::new(db.pool.clone());
    commands.wake_locally(&local);

    commands
        .create_category(
            &CommandContext::system("local-wake"),
            category("local-wake"),
        )
        .await
        .unwrap();
    assert!(
        projector.has_changed().unwrap_or(false),
        "the commit did not wake this process's projector"
    );
    assert!(
        !workers.has_changed().unwrap_or(true),
        "a commit that enqueued nothing woke the workers"
    );
    assert!(
        other_process.notified(Duration::from_secs(10)).await,
        "the other processes were not notified"
    );
    projector.borrow_and_update();
    workers.borrow_and_update();
}
