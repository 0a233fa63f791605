//! The projections' checkpoints and applier locks: where each projection stands, and
//! who applies it.

use super::*;

/// Takes the projection's applier lock for the rest of the transaction: one applier per
/// projection at a time across every process (taken before any write, so it does not
/// hold back the horizon). A rebuild's swap takes it too, to pause the projector.
pub(crate) async fn lock_applier(
    conn: &mut AsyncPgConnection,
    projection: Projection,
) -> Result<(), ReadError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('till.projection.' || $1))")
        .bind::<Text, _>(projection.name())
        .prepared()
        .execute(conn)
        .await?;
    Ok(())
}

/// The projection's stored checkpoint and the generation of its tables (the start of
/// the log and 0 before its first batch).
pub(crate) async fn checkpoint(
    conn: &mut AsyncPgConnection,
    projection: Projection,
) -> Result<(LogPoint, i64), ReadError> {
    let stored: Option<(i64, i64, i64)> = projection_checkpoints::table
        .find(projection.name())
        .select((
            projection_checkpoints::tx_id,
            projection_checkpoints::position,
            projection_checkpoints::generation,
        ))
        .first(conn)
        .await
        .optional()?;
    Ok(stored
        .map(|(tx_id, position, generation)| (LogPoint { tx_id, position }, generation))
        .unwrap_or_default())
}

/// The stored checkpoints and table generations of `projections`, in their order (the
/// start of the log and 0 for one that has none yet).
pub(super) async fn checkpoints(
    mut conn: &AsyncPgConnection,
    projections: &[Projection],
) -> Result<Vec<(LogPoint, i64)>, ReadError> {
    let names: Vec<&str> = projections.iter().map(|p| p.name()).collect();
    let stored: Vec<(String, i64, i64, i64)> = projection_checkpoints::table
        .filter(projection_checkpoints::projection.eq_any(&names))
        .select((
            projection_checkpoints::projection,
            projection_checkpoints::tx_id,
            projection_checkpoints::position,
            projection_checkpoints::generation,
        ))
        .load(&mut conn)
        .await?;
    Ok(names
        .iter()
        .map(|name| {
            stored
                .iter()
                .find(|(n, ..)| n == name)
                .map(|&(_, tx_id, position, generation)| (LogPoint { tx_id, position }, generation))
                .unwrap_or_default()
        })
        .collect())
}
