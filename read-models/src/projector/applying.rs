//! Applying a batch: reading the events after the checkpoints, sending every
//! projection's statements, and moving the checkpoints in the same transaction.

use super::*;

/// One projection's batch, in a transaction that holds its applier lock.
pub(super) async fn apply_batch(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    limit: i64,
) -> Result<(BatchOutcome, Vec<Change>, Vec<StoredEvent>), ReadError> {
    let (from, generation) = checkpoint(conn, projection).await?;
    let (batch, mut changes, checkpoint) = apply_next(conn, projection, from, limit).await?;
    changes.dedup();
    if !batch.is_empty() {
        // Moving the checkpoint also wakes the other processes' projectors and
        // followers (the notification is delivered at commit).
        event_log::save_checkpoint(conn, projection.name(), checkpoint, Some(PROJECTED_CHANNEL))
            .await?;
    }
    Ok((
        BatchOutcome {
            applied: batch.len(),
            from,
            checkpoint,
            generation,
        },
        changes,
        batch,
    ))
}

/// Simple-query SQL taking the applier locks of `projections` (the same locks as
/// [`lock_applier`]), in the order given; every caller gives them in
/// [`Projection::ALL`]'s order, so two rounds never wait on each other in a cycle.
pub(super) fn lock_sql(projections: &[Projection]) -> String {
    let locks: Vec<String> = projections
        .iter()
        .map(|p| {
            format!(
                "pg_advisory_xact_lock(hashtext('till.projection.{}'))",
                p.name()
            )
        })
        .collect();
    format!("SELECT {}", locks.join(", "))
}

/// A round's work, for publishing after its commit.
pub(super) struct RoundBatch {
    /// Events other processes applied since this one last looked.
    pub(super) missed: Vec<StoredEvent>,
    /// Events this round applied.
    pub(super) batch: Vec<StoredEvent>,
    /// What each projection's part changed, in the group's order.
    pub(super) changes: Vec<Vec<Change>>,
    /// The generation of each projection's tables, in the same order.
    pub(super) generations: Vec<i64>,
    /// Where every projection now stands.
    pub(super) checkpoint: LogPoint,
}

/// The body of a round, under the group's applier locks: reads their checkpoints and
/// the events after `from` (this process's view of where they all stand) together,
/// then sends every projection's statements and the checkpoints' move together. None
/// when the stored checkpoints do not stand at one point, or when the read cannot see
/// past where another process got (more than `limit` events ahead).
pub(super) async fn apply_round(
    conn: &mut AsyncPgConnection,
    group: &[Projection],
    from: LogPoint,
    limit: i64,
) -> Result<Option<RoundBatch>, ReadError> {
    let shared: &AsyncPgConnection = conn;
    let (stored, mut events) = futures_util::try_join!(checkpoints(shared, group), async {
        Ok(event_log::read_after(shared, from, limit).await?)
    },)?;
    let Some(&(at, _)) = <[_]>::first(&stored) else {
        return Ok(None);
    };
    if stored.iter().any(|(p, _)| *p != at) || at < from {
        return Ok(None);
    }
    if at > from && events.last().is_none_or(|e| e.point() < at) {
        return Ok(None);
    }
    let split = events.partition_point(|e| e.point() <= at);
    let batch = events.split_off(split);
    let missed = events;
    let generations: Vec<i64> = stored.iter().map(|(_, g)| *g).collect();
    let Some(last) = batch.last() else {
        return Ok(Some(RoundBatch {
            missed,
            batch,
            changes: vec![Vec::new(); group.len()],
            generations,
            checkpoint: at,
        }));
    };
    let checkpoint = last.point();
    let mut changes = vec![Vec::new(); group.len()];
    let names: Vec<&str> = group.iter().map(|p| p.name()).collect();
    // Each projection sends its statements one after another; the projections and the
    // checkpoints' move go out side by side. PostgreSQL runs them in the order they
    // arrive, all in this transaction.
    let applies = group
        .iter()
        .copied()
        .zip(changes.iter_mut())
        .map(|(p, mine)| p.apply_batch(shared, &batch, mine));
    let (applied, saved) = futures_util::join!(
        futures_util::future::join_all(applies),
        event_log::save_checkpoints(shared, &names, checkpoint, Some(PROJECTED_CHANNEL)),
    );
    for result in applied {
        result?;
    }
    saved?;
    for mine in &mut changes {
        mine.dedup();
    }
    Ok(Some(RoundBatch {
        missed,
        batch,
        changes,
        generations,
        checkpoint,
    }))
}

/// Reads up to `limit` events after `from` and applies them to whatever tables the
/// connection's search path resolves (the live ones, or a rebuild's copies). Returns the
/// events, what they changed and the point after them (`from` when there were none).
pub(crate) async fn apply_next(
    conn: &mut AsyncPgConnection,
    projection: Projection,
    from: LogPoint,
    limit: i64,
) -> Result<(Vec<StoredEvent>, Vec<Change>, LogPoint), ReadError> {
    let batch = event_log::read_after(conn, from, limit).await?;
    let mut changes = Vec::new();
    projection.apply_batch(conn, &batch, &mut changes).await?;
    let next = batch.last().map_or(from, StoredEvent::point);
    Ok((batch, changes, next))
}

/// The events in (`from`, `to`], or None when there are more than
/// [`MAX_MISSED_EVENTS`].
pub(super) async fn read_range(
    conn: &mut AsyncPgConnection,
    from: LogPoint,
    to: LogPoint,
) -> Result<Option<Vec<StoredEvent>>, ReadError> {
    let mut out = Vec::new();
    let mut cursor = from;
    while cursor < to {
        let page = event_log::read_after(conn, cursor, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.point();
        out.extend(page.into_iter().filter(|e| e.point() <= to));
        if out.len() > MAX_MISSED_EVENTS {
            return Ok(None);
        }
    }
    Ok(Some(out))
}
