//! Appending to and reading from the event log. Appends run inside the command's own
//! transaction, so a change and its events commit (or roll back) together.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::prepared::Reuse;
use crate::error::DomainError;
use crate::events::{DomainEvent, StoredEvent};
use crate::schema::events;

/// A point in the log, in the projector's order: (transaction id, position).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct LogPoint {
    /// Transaction id of the writer.
    pub tx_id: i64,
    /// Position within the log.
    pub position: i64,
}

impl From<(i64, i64)> for LogPoint {
    /// From `(tx_id, position)` as selected from the log or a checkpoint.
    fn from((tx_id, position): (i64, i64)) -> Self {
        Self { tx_id, position }
    }
}

impl StoredEvent {
    /// Where the event stands in the log.
    pub fn point(&self) -> LogPoint {
        LogPoint {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

impl LogPoint {
    /// The opaque text form handed to clients as a consistency token.
    pub fn to_token(self) -> String {
        format!("{}.{}", self.tx_id, self.position)
    }

    /// Parses a consistency token.
    pub fn from_token(token: &str) -> Option<Self> {
        let (tx, pos) = token.trim().split_once('.')?;
        Some(Self {
            tx_id: tx.parse().ok().filter(|v: &i64| *v >= 0)?,
            position: pos.parse().ok().filter(|v: &i64| *v >= 0)?,
        })
    }
}

/// Who did it and which request it belongs to.
#[derive(Debug, Clone)]
pub struct EventMeta {
    /// `customer:<uuid>`, `staff:<uuid>`, `system:<job>`.
    pub actor: String,
    /// Correlates all events of one request.
    pub correlation_id: Uuid,
}

impl EventMeta {
    /// Metadata for work the system does on its own (seeding, jobs).
    pub fn system(what: &str) -> Self {
        Self {
            actor: format!("system:{what}"),
            correlation_id: Uuid::now_v7(),
        }
    }
}

/// Writes that commit in the same statement as the events they cause: data-modifying
/// common table expressions (`name AS (INSERT ...)`), each with its binds numbered from
/// `$1` up in the order they are added. PostgreSQL runs every one of them to completion,
/// and a command that folds its writes into its append needs one round trip for both.
pub struct Writes<'f> {
    query: BoxedSqlQuery<'f, Pg, SqlQuery>,
    binds: usize,
    /// SQL for each event's stored payload, where `t.payload` is the one given
    /// (`t.event_type` and `t.stream_id` are there too).
    payload: &'static str,
}

impl<'f> Writes<'f> {
    /// No writes besides the events.
    pub fn none() -> Self {
        Self {
            query: diesel::sql_query("WITH ").into_boxed(),
            binds: 0,
            payload: "t.payload",
        }
    }

    /// Stores each event's payload as `sql` computes it instead of as given: for
    /// values only the writes know (what an UPDATE's RETURNING saw), which the payload
    /// given holds a placeholder for. `sql` may read `t.payload`, `t.event_type`,
    /// `t.stream_id` and the CTEs added so far.
    pub fn payload(mut self, sql: &'static str) -> Self {
        self.payload = sql;
        self
    }

    /// Adds `name AS (body)`; its binds are numbered after those added so far.
    pub fn cte(mut self, name: &str, body: &str) -> Self {
        self.query = self.query.sql(format!("{name} AS ({body}), "));
        self
    }

    /// Adds the next bind (`$n` for the n-th call).
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        Pg: diesel::sql_types::HasSqlType<ST>,
        V: diesel::serialize::ToSql<ST, Pg> + Send + 'f,
        ST: Send + 'f,
    {
        self.query = self.query.bind::<ST, V>(value);
        self.binds += 1;
        self
    }
}

/// Appends events in one statement (one array per column, so any batch size fits in
/// the bind limit); returns the point of the last one (the
/// consistency token of the command). Positions follow the order of `batch`.
pub async fn append(
    conn: &mut AsyncPgConnection,
    meta: &EventMeta,
    batch: &[DomainEvent],
) -> Result<LogPoint, DomainError> {
    append_with(conn, meta, batch, Writes::none()).await
}

/// Like [`append`], in the same statement as `writes` (see [`Writes`]). The statement's
/// text depends only on the writes' text, so it stays prepared on the connection.
pub async fn append_with(
    mut conn: &AsyncPgConnection,
    meta: &EventMeta,
    batch: &[DomainEvent],
    writes: Writes<'_>,
) -> Result<LogPoint, DomainError> {
    use diesel::sql_types::{Array, Int2, Jsonb, Text, Uuid as SqlUuid};
    if batch.is_empty() {
        return Err(DomainError::Internal("a command appended no events".into()));
    }
    let EventColumns {
        types,
        versions,
        stream_types,
        stream_ids,
        payloads,
    } = EventColumns::of(batch.iter());
    let n = writes.binds;
    let arg = |i: usize| format!("${}", n + i);
    // No pg_notify here: a notifying transaction commits under a database-wide lock
    // (see `wakeups`); the command layer wakes the projectors after the commit.
    let sql = format!(
        "appended AS ( \
           INSERT INTO events (event_type, event_version, stream_type, stream_id, payload, actor, correlation_id) \
           SELECT t.event_type, t.event_version, t.stream_type, t.stream_id, {payload}, {actor}, {correlation} \
           FROM unnest({}::text[], {}::int2[], {}::text[], {}::uuid[], {}::jsonb[]) \
             WITH ORDINALITY AS t(event_type, event_version, stream_type, stream_id, payload, n) \
           ORDER BY t.n \
           RETURNING tx_id, position) \
         SELECT max(tx_id) AS tx_id, max(position) AS position FROM appended",
        arg(1),
        arg(2),
        arg(3),
        arg(4),
        arg(5),
        actor = arg(6),
        correlation = arg(7),
        payload = writes.payload,
    );
    let point: Point = writes
        .query
        .sql(sql)
        .bind::<Array<Text>, _>(types)
        .bind::<Array<Int2>, _>(versions)
        .bind::<Array<Text>, _>(stream_types)
        .bind::<Array<SqlUuid>, _>(stream_ids)
        .bind::<Array<Jsonb>, _>(payloads)
        .bind::<Text, _>(meta.actor.clone())
        .bind::<SqlUuid, _>(meta.correlation_id)
        .prepared()
        .get_result(&mut conn)
        .await?;
    crate::wakeups::appended();
    Ok(LogPoint {
        tx_id: point.tx_id,
        position: point.position,
    })
}

/// Events as one array per column of the log, for an `unnest` that inserts them all.
pub(crate) struct EventColumns {
    pub(crate) types: Vec<&'static str>,
    pub(crate) versions: Vec<i16>,
    pub(crate) stream_types: Vec<&'static str>,
    pub(crate) stream_ids: Vec<Uuid>,
    pub(crate) payloads: Vec<serde_json::Value>,
}

impl EventColumns {
    pub(crate) fn of<'e>(batch: impl ExactSizeIterator<Item = &'e DomainEvent>) -> Self {
        let n = batch.len();
        let mut columns = Self {
            types: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            stream_types: Vec::with_capacity(n),
            stream_ids: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
        };
        for e in batch {
            let (stream_type, stream_id) = e.stream();
            columns.types.push(e.event_type());
            columns.versions.push(e.schema_version());
            columns.stream_types.push(stream_type);
            columns.stream_ids.push(stream_id);
            columns.payloads.push(e.payload());
        }
        columns
    }
}

#[derive(QueryableByName)]
struct Point {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    tx_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    position: i64,
}

/// A jsonb value as the text PostgreSQL sends (binary format: a version byte, then the
/// JSON text), so an event is decoded once from it rather than through a
/// `serde_json::Value` first.
#[derive(diesel::deserialize::FromSqlRow)]
struct JsonbText(String);

impl diesel::deserialize::FromSql<diesel::sql_types::Jsonb, Pg> for JsonbText {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((1, text)) => Ok(Self(std::str::from_utf8(text)?.to_owned())),
            _ => Err("unsupported jsonb format version".into()),
        }
    }
}

#[derive(Queryable)]
struct EventRow {
    position: i64,
    tx_id: i64,
    event_type: String,
    event_version: i16,
    payload: JsonbText,
    actor: String,
    correlation_id: Uuid,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

/// Reads up to `limit` events after `after`, in (tx_id, position) order, but only
/// from transactions older than every transaction still in flight. A transaction that
/// commits late has a lower id than the horizon until it finishes, so the reader waits
/// for it instead of skipping past it.
///
/// Takes the connection shared, so the read can be sent together with other statements
/// of the same transaction (pipelined).
pub async fn read_after(
    mut conn: &AsyncPgConnection,
    after: LogPoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, DomainError> {
    let horizon = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    );
    let rows: Vec<EventRow> = events::table
        .filter(past(after))
        .filter(events::tx_id.lt(horizon))
        .order((events::tx_id.asc(), events::position.asc()))
        .limit(limit)
        .select((
            events::position,
            events::tx_id,
            events::event_type,
            events::event_version,
            events::payload,
            events::actor,
            events::correlation_id,
            events::occurred_at,
        ))
        .prepared()
        .load(&mut conn)
        .await?;
    rows.into_iter()
        .map(|r| {
            let event = DomainEvent::from_stored(&r.event_type, r.event_version, &r.payload.0)
                .map_err(|e| {
                    DomainError::Internal(format!(
                        "event {} ({}) does not decode: {e}",
                        r.position, r.event_type
                    ))
                })?;
            Ok(StoredEvent {
                position: r.position,
                tx_id: r.tx_id,
                event,
                actor: r.actor,
                correlation_id: r.correlation_id,
                occurred_at: r.occurred_at,
            })
        })
        .collect()
}

/// The point of the newest event after `after` that [`read_after`] could return now
/// (below the horizon), without reading any event: for a follower with nothing to do
/// with the events themselves.
pub async fn last_readable_after(
    conn: &mut AsyncPgConnection,
    after: LogPoint,
) -> Result<Option<LogPoint>, DomainError> {
    let horizon = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
    );
    let last: Option<(i64, i64)> = events::table
        .filter(past(after))
        .filter(events::tx_id.lt(horizon))
        .order((events::tx_id.desc(), events::position.desc()))
        .select((events::tx_id, events::position))
        .limit(1)
        .prepared()
        .get_result(conn)
        .await
        .optional()?;
    Ok(last.map(LogPoint::from))
}

/// Records that the log follower `name` (a projection, the webhook fan-out) has dealt
/// with everything up to `at`, in the caller's transaction; with `notify`, also sends
/// `name` on that channel (delivered at commit), in the same statement.
pub async fn save_checkpoint(
    conn: &AsyncPgConnection,
    name: &str,
    at: LogPoint,
    notify: Option<&str>,
) -> Result<(), DomainError> {
    save_checkpoints(conn, &[name], at, notify).await
}

/// [`save_checkpoint`] for several followers that reached the same point together (one
/// notification names them all, comma-separated).
pub async fn save_checkpoints(
    mut conn: &AsyncPgConnection,
    names: &[&str],
    at: LogPoint,
    notify: Option<&str>,
) -> Result<(), DomainError> {
    use diesel::sql_types::{Array, BigInt, Nullable, Text};
    diesel::sql_query(
        "WITH saved AS ( \
           INSERT INTO projection_checkpoints (projection, tx_id, position, updated_at) \
           SELECT name, $2, $3, now() FROM unnest($1::text[]) AS name \
           ON CONFLICT (projection) DO UPDATE \
           SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()) \
         SELECT pg_notify($4, array_to_string($1, ',')) WHERE $4::text IS NOT NULL",
    )
    .bind::<Array<Text>, _>(names)
    .bind::<BigInt, _>(at.tx_id)
    .bind::<BigInt, _>(at.position)
    .bind::<Nullable<Text>, _>(notify)
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// True when any event lies after `after` in the projector's order, visible or not yet
/// (its transaction still in flight would be ahead of the horizon).
pub async fn any_after(conn: &mut AsyncPgConnection, after: LogPoint) -> Result<bool, DomainError> {
    let next: Option<i64> = events::table
        .filter(past(after))
        .order((events::tx_id.asc(), events::position.asc()))
        .select(events::position)
        .limit(1)
        .prepared()
        .get_result(conn)
        .await
        .optional()?;
    Ok(next.is_some())
}

/// `(tx_id, position) > after`: a row comparison, which PostgreSQL turns into one range
/// of the (tx_id, position) index even in a prepared statement's generic plan (the
/// equivalent `tx_id > a OR (tx_id = a AND position > b)` is only a filter there, so a
/// generic plan walked the whole index from its start: 17 ms at 120k events).
fn past(
    after: LogPoint,
) -> Box<dyn BoxableExpression<events::table, Pg, SqlType = diesel::sql_types::Bool>> {
    Box::new(
        diesel::dsl::sql::<diesel::sql_types::Bool>("(events.tx_id, events.position) > (")
            .bind::<diesel::sql_types::BigInt, _>(after.tx_id)
            .sql(", ")
            .bind::<diesel::sql_types::BigInt, _>(after.position)
            .sql(")"),
    )
}

/// How many events lie after `after` in the projector's order, counting at most `cap`.
pub async fn count_after(
    conn: &mut AsyncPgConnection,
    after: LogPoint,
    cap: i64,
) -> Result<i64, DomainError> {
    let n: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM (SELECT 1 FROM events \
         WHERE (tx_id, position) > ($1, $2) LIMIT $3) AS lagging",
    )
    .bind::<diesel::sql_types::BigInt, _>(after.tx_id)
    .bind::<diesel::sql_types::BigInt, _>(after.position)
    .bind::<diesel::sql_types::BigInt, _>(cap)
    .prepared()
    .get_result::<Count>(conn)
    .await?
    .n;
    Ok(n)
}

/// Seconds since the oldest event after `after` was appended (0 when there is none):
/// how far behind a reader at `after` is, in time.
pub async fn age_after(conn: &mut AsyncPgConnection, after: LogPoint) -> Result<f64, DomainError> {
    #[derive(QueryableByName)]
    struct Age {
        #[diesel(sql_type = diesel::sql_types::Double)]
        age: f64,
    }
    let age = diesel::sql_query(
        "SELECT coalesce(extract(epoch FROM now() - min(occurred_at))::float8, 0) AS age \
         FROM (SELECT occurred_at FROM events WHERE (tx_id, position) > ($1, $2) \
               ORDER BY tx_id, position LIMIT 1) AS oldest",
    )
    .bind::<diesel::sql_types::BigInt, _>(after.tx_id)
    .bind::<diesel::sql_types::BigInt, _>(after.position)
    .prepared()
    .get_result::<Age>(conn)
    .await?
    .age;
    Ok(age.max(0.0))
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The newest point in the log (regardless of visibility), for lag reporting.
pub async fn head(conn: &mut AsyncPgConnection) -> Result<LogPoint, DomainError> {
    let row: Option<(i64, i64)> = events::table
        .order((events::tx_id.desc(), events::position.desc()))
        .select((events::tx_id, events::position))
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(LogPoint::from).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::LogPoint;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let p = LogPoint {
            tx_id: 812,
            position: 77,
        };
        assert_eq!(LogPoint::from_token(&p.to_token()), Some(p));
        assert_eq!(LogPoint::from_token("abc"), None);
        assert_eq!(LogPoint::from_token("1.-2"), None);
        assert!(
            LogPoint {
                tx_id: 2,
                position: 1
            } > LogPoint {
                tx_id: 1,
                position: 9
            }
        );
    }
}
