//! The API replicas alive now, from a heartbeat table: each serving process upserts its
//! row every second and counts the rows seen within a window. What it is for: sharing
//! per-client budgets among replicas without a shared store of their own.

use std::time::Duration;

use diesel::sql_types::{BigInt, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::db::prepared::Reuse;
use crate::db::PgPool;
use crate::error::DomainError;

/// Rows not seen for this long are deleted.
const FORGET_AFTER_MS: i64 = 60_000;

#[derive(QueryableByName)]
struct Alive {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Records that replica `me` is alive; returns how many replicas (itself included)
/// were seen within `window`.
pub async fn heartbeat(pool: &PgPool, me: Uuid, window: Duration) -> Result<u32, DomainError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO api_replicas (id, seen_at) VALUES ($1, now()) \
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
    )
    .bind::<SqlUuid, _>(me)
    .prepared()
    .execute(&mut conn)
    .await?;
    diesel::sql_query(
        "DELETE FROM api_replicas WHERE seen_at < now() - $1 * interval '1 millisecond'",
    )
    .bind::<BigInt, _>(FORGET_AFTER_MS)
    .prepared()
    .execute(&mut conn)
    .await?;
    let alive: Alive = diesel::sql_query(
        "SELECT count(*) AS n FROM api_replicas WHERE seen_at > now() - $1 * interval '1 millisecond'",
    )
    .bind::<BigInt, _>(i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
    .prepared()
    .get_result(&mut conn)
    .await?;
    Ok(u32::try_from(alive.n.max(1)).unwrap_or(u32::MAX))
}

/// Removes replica `me` (on shutdown), so the others count it out at once.
pub async fn leave(pool: &PgPool, me: Uuid) -> Result<(), DomainError> {
    let mut conn = pool.get().await?;
    diesel::sql_query("DELETE FROM api_replicas WHERE id = $1")
        .bind::<SqlUuid, _>(me)
        .prepared()
        .execute(&mut conn)
        .await?;
    Ok(())
}
