//! Outbound webhooks: subscriptions, the fan-out of events to deliveries (each a job
//! on [`WEBHOOKS_QUEUE`]) and the delivery history.
//!
//! The fan-out follows the event log like a projection: under an advisory lock, it
//! reads events after its checkpoint (below the visibility horizon, so none is
//! skipped), inserts one delivery per matching subscription and enqueues its job, and
//! moves the checkpoint, all in one transaction: each event is fanned out exactly once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use diesel::sql_types::{
    Array, BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use rand::RngCore;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::db::prepared::Reuse;
use crate::db::transactions;
use crate::db::PgPool;
use crate::error::DomainError;
use crate::event_log::{self, LogPoint};
use crate::jobs::{self, NewJob};

/// The queue of delivery jobs.
pub const WEBHOOKS_QUEUE: &str = "webhooks";
/// The fan-out's checkpoint name.
const CHECKPOINT: &str = "webhooks";

/// A subscriber.
#[derive(Debug, Clone, QueryableByName)]
pub struct Subscription {
    /// Id.
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    /// Where deliveries are POSTed.
    #[diesel(sql_type = Text)]
    pub url: String,
    /// Event types delivered (`*` for all).
    #[diesel(sql_type = Array<Text>)]
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub active: bool,
    /// When it was registered.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// One delivery attempt record.
#[derive(Debug, Clone, QueryableByName)]
pub struct Delivery {
    /// Id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The subscriber.
    #[diesel(sql_type = SqlUuid)]
    pub subscription_id: Uuid,
    /// The event's log point, as a token (`tx.position`, also the delivery's event id).
    #[diesel(sql_type = BigInt)]
    pub event_tx_id: i64,
    /// The event's position.
    #[diesel(sql_type = BigInt)]
    pub event_position: i64,
    /// The event type.
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// pending, delivered or failed.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Attempts made.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// The subscriber's last HTTP status.
    #[diesel(sql_type = Nullable<Integer>)]
    pub response_status: Option<i32>,
    /// The last failure.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// When it was created.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When it succeeded.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// What a delivery job sends.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The delivery.
    pub delivery_id: i64,
    /// Where to.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The JSON body.
    pub body: Value,
    /// The event id (`tx.position`).
    pub event_id: String,
}

/// What subscriber URLs may be, from the deployment's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Only `https` URLs (production).
    pub require_https: bool,
    /// Internal addresses (loopback, private, link-local...) may be named; only for
    /// development and tests whose subscriber runs on the same machine.
    pub allow_private: bool,
}

impl UrlPolicy {
    /// The strictest policy: https to public addresses only.
    pub const STRICT: Self = Self {
        require_https: true,
        allow_private: false,
    };
}

/// Whether `host` (of a parsed URL) is an IP address that `policy` forbids. A host name
/// is not judged here: what it resolves to is checked when a delivery connects.
pub fn forbidden_host(host: &url::Host<&str>, policy: UrlPolicy) -> bool {
    let ip = match host {
        url::Host::Domain(_) => return false,
        url::Host::Ipv4(ip) => std::net::IpAddr::V4(*ip),
        url::Host::Ipv6(ip) => std::net::IpAddr::V6(*ip),
    };
    !policy.allow_private && !crate::net::is_public(ip)
}

fn validate(url: &str, event_types: &[String], policy: UrlPolicy) -> Result<(), DomainError> {
    let bad = |field: &'static str, m: &str| DomainError::Validation {
        field,
        message: m.to_owned(),
    };
    if url.len() > 2048 {
        return Err(bad("url", "must be at most 2048 characters"));
    }
    // Parsed as the delivery's HTTP client parses it (WHATWG rules), so a host written
    // as `2130706433`, `0x7f.1` or `[::ffff:127.0.0.1]` is seen as the address it is.
    let parsed = url::Url::parse(url).map_err(|_| bad("url", "must be an absolute URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if !policy.require_https => {}
        "http" => return Err(bad("url", "must be an https URL")),
        _ => return Err(bad("url", "must be an http(s) URL")),
    }
    let Some(host) = parsed.host() else {
        return Err(bad("url", "must name a host"));
    };
    if forbidden_host(&host, policy) {
        return Err(bad(
            "url",
            "names an address that is not public (loopback, private, link-local, \
             metadata or reserved); subscribers must be reachable on the internet",
        ));
    }
    if event_types.is_empty() || event_types.len() > 50 {
        return Err(bad("eventTypes", "give 1 to 50 event types (or \"*\")"));
    }
    if event_types
        .iter()
        .any(|t| t != "*" && !crate::events::EVENT_TYPES.contains(&t.as_str()))
    {
        return Err(bad(
            "eventTypes",
            &format!(
                "unknown event type; known: {}",
                crate::events::EVENT_TYPES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Registers a subscriber whose URL `policy` allows; returns it and its signing secret
/// (shown once).
pub async fn subscribe(
    pool: &PgPool,
    url: &str,
    event_types: &[String],
    policy: UrlPolicy,
) -> Result<(Subscription, String), DomainError> {
    validate(url, event_types, policy)?;
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = format!("whsec_{}", URL_SAFE_NO_PAD.encode(raw));
    let mut conn = pool.get().await?;
    let sub: Subscription = diesel::sql_query(
        "INSERT INTO webhook_subscriptions (id, url, event_types, secret) VALUES ($1, $2, $3, $4) \
         RETURNING id, url, event_types, active, created_at",
    )
    .bind::<SqlUuid, _>(Uuid::now_v7())
    .bind::<Text, _>(url)
    .bind::<Array<Text>, _>(event_types)
    .bind::<Text, _>(&secret)
    .prepared()
    .get_result(&mut conn)
    .await?;
    Ok((sub, secret))
}

/// Every subscriber, newest first.
pub async fn subscriptions(pool: &PgPool) -> Result<Vec<Subscription>, DomainError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT id, url, event_types, active, created_at FROM webhook_subscriptions ORDER BY created_at DESC LIMIT 500",
    )
    .prepared()
    .load(&mut conn)
    .await?)
}

/// Turns a subscriber on or off.
pub async fn set_active(
    pool: &PgPool,
    id: Uuid,
    active: bool,
) -> Result<Subscription, DomainError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "UPDATE webhook_subscriptions SET active = $2 WHERE id = $1 \
         RETURNING id, url, event_types, active, created_at",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<diesel::sql_types::Bool, _>(active)
    .prepared()
    .get_result(&mut conn)
    .await
    .map_err(|e| match e {
        diesel::result::Error::NotFound => DomainError::not_found("webhook subscription", id),
        e => e.into(),
    })
}

/// A subscriber's deliveries, newest first, before the cursor `before` (an id).
pub async fn deliveries(
    pool: &PgPool,
    subscription: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>, DomainError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "SELECT id, subscription_id, event_tx_id, event_position, event_type, status, attempts, \
           response_status, last_error, created_at, delivered_at FROM webhook_deliveries \
         WHERE subscription_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind::<SqlUuid, _>(subscription)
    .bind::<Nullable<BigInt>, _>(before)
    .bind::<BigInt, _>(limit)
    .prepared()
    .load(&mut conn)
    .await?)
}

/// Fans out up to `limit` events to deliveries; returns how many events it read (none
/// when there is no active subscriber: it then only moves past what is readable).
pub async fn fan_out(pool: &PgPool, limit: i64, max_attempts: i32) -> Result<usize, DomainError> {
    let mut conn = pool.get().await?;
    transactions::transaction(&mut conn, async |conn| {
        fan_out_batch(conn, limit, max_attempts).await
    })
    .await
}

#[derive(QueryableByName)]
struct Point {
    #[diesel(sql_type = BigInt)]
    tx_id: i64,
    #[diesel(sql_type = BigInt)]
    position: i64,
}

async fn fan_out_batch(
    conn: &mut AsyncPgConnection,
    limit: i64,
    max_attempts: i32,
) -> Result<usize, DomainError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('till.webhooks.fanout'))")
        .prepared()
        .execute(conn)
        .await?;
    let stored: Option<Point> = diesel::sql_query(
        "SELECT tx_id, position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind::<Text, _>(CHECKPOINT)
    .prepared()
    .get_result(conn)
    .await
    .optional()?;
    let from = match stored {
        Some(p) => LogPoint {
            tx_id: p.tx_id,
            position: p.position,
        },
        None => {
            // First run: deliver from now on, not the whole history. "Now" is the
            // gap-safe horizon, not the log's head: a transaction still in flight may
            // hold a lower id than the head's and commit later, and its events are new.
            let start = event_log::last_readable_after(conn, LogPoint::default())
                .await?
                .unwrap_or_default();
            event_log::save_checkpoint(conn, CHECKPOINT, start, None).await?;
            return Ok(0);
        }
    };
    let subs = active_subscriptions(conn).await?;
    if subs.is_empty() {
        // Nobody to deliver to: move past what is readable now without reading the
        // events themselves. A subscriber registered later receives what follows.
        if let Some(last) = event_log::last_readable_after(conn, from).await? {
            event_log::save_checkpoint(conn, CHECKPOINT, last, None).await?;
        }
        return Ok(0);
    }
    let events = event_log::read_after(conn, from, limit).await?;
    let Some(last) = events.last() else {
        return Ok(0);
    };
    let last = last.point();
    for ev in &events {
        let ty = ev.event.event_type();
        for (sub, types) in &subs {
            if !types.iter().any(|t| t == "*" || t == ty) {
                continue;
            }
            #[derive(QueryableByName)]
            struct Id {
                #[diesel(sql_type = BigInt)]
                id: i64,
            }
            let created: Vec<Id> = diesel::sql_query(
                "INSERT INTO webhook_deliveries (subscription_id, event_tx_id, event_position, event_type) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind::<SqlUuid, _>(sub)
            .bind::<BigInt, _>(ev.tx_id)
            .bind::<BigInt, _>(ev.position)
            .bind::<Text, _>(ty)
            .prepared()
            .load(conn)
            .await?;
            let jobs: Vec<NewJob> = created
                .iter()
                .map(|d| NewJob {
                    queue: WEBHOOKS_QUEUE,
                    payload: json!({ "deliveryId": d.id }),
                    max_attempts,
                })
                .collect();
            jobs::enqueue(conn, &jobs).await?;
        }
    }
    event_log::save_checkpoint(conn, CHECKPOINT, last, None).await?;
    Ok(events.len())
}

/// Every active subscriber with the event types it takes.
async fn active_subscriptions(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(Uuid, Vec<String>)>, DomainError> {
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = Array<Text>)]
        event_types: Vec<String>,
    }
    let rows: Vec<S> =
        diesel::sql_query("SELECT id, event_types FROM webhook_subscriptions WHERE active")
            .prepared()
            .load(conn)
            .await?;
    Ok(rows.into_iter().map(|s| (s.id, s.event_types)).collect())
}

/// What a delivery job must send (None when the subscriber is gone or inactive).
pub async fn outgoing(pool: &PgPool, delivery_id: i64) -> Result<Option<Outgoing>, DomainError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        url: String,
        #[diesel(sql_type = Text)]
        secret: String,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        active: bool,
        #[diesel(sql_type = BigInt)]
        tx_id: i64,
        #[diesel(sql_type = BigInt)]
        position: i64,
        #[diesel(sql_type = Text)]
        event_type: String,
        #[diesel(sql_type = Jsonb)]
        payload: Value,
        #[diesel(sql_type = Timestamptz)]
        occurred_at: DateTime<Utc>,
    }
    let mut conn = pool.get().await?;
    let row: Option<Row> = diesel::sql_query(
        "SELECT s.url, s.secret, s.active, e.tx_id, e.position, e.event_type, e.payload, e.occurred_at \
         FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
         JOIN events e ON e.position = d.event_position \
         WHERE d.id = $1",
    )
    .bind::<BigInt, _>(delivery_id)
    .prepared()
    .get_result(&mut conn)
    .await
    .optional()?;
    Ok(row.filter(|r| r.active).map(|r| {
        let event_id = LogPoint {
            tx_id: r.tx_id,
            position: r.position,
        }
        .to_token();
        Outgoing {
            delivery_id,
            url: r.url,
            secret: r.secret,
            body: json!({
                "id": event_id,
                "type": r.event_type,
                "occurredAt": r.occurred_at,
                "data": r.payload,
            }),
            event_id,
        }
    }))
}

/// Records one attempt's result.
pub async fn record_attempt(
    pool: &PgPool,
    delivery_id: i64,
    delivered: bool,
    final_attempt: bool,
    response_status: Option<i32>,
    error: Option<&str>,
) -> Result<(), DomainError> {
    let status = match (delivered, final_attempt) {
        (true, _) => "delivered",
        (false, true) => "failed",
        (false, false) => "pending",
    };
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2, response_status = $3, \
           last_error = $4, delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(delivery_id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Integer>, _>(response_status)
    .bind::<Nullable<Text>, _>(error.map(|e| e.chars().take(1000).collect::<String>()))
    .prepared()
    .execute(&mut conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: UrlPolicy = UrlPolicy {
        require_https: false,
        allow_private: false,
    };

    fn check(url: &str, policy: UrlPolicy) -> Result<(), DomainError> {
        validate(url, &["*".to_owned()], policy)
    }

    #[test]
    fn internal_addresses_are_refused_in_every_spelling() {
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1:8080/x",
            "http://[::1]/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fd00::1]/",
            "http://[fe80::1%25eth0]/",
            "https://user:pass@192.168.0.10/",
        ] {
            assert!(
                matches!(
                    check(url, DEV),
                    Err(DomainError::Validation { field: "url", .. })
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn names_and_public_addresses_pass_and_private_ones_when_allowed() {
        for url in [
            "https://hooks.example.com/till",
            "http://localhost:8080/hook",
            "https://8.8.8.8/hook",
            "https://[2606:4700:4700::1111]/hook",
        ] {
            assert!(check(url, DEV).is_ok(), "{url}");
        }
        let local = UrlPolicy {
            require_https: false,
            allow_private: true,
        };
        assert!(check("http://127.0.0.1:9/hook", local).is_ok());
    }

    #[test]
    fn production_takes_https_only() {
        assert!(check("https://hooks.example.com/till", UrlPolicy::STRICT).is_ok());
        for url in [
            "http://hooks.example.com/till",
            "ftp://hooks.example.com/till",
            "hooks.example.com/till",
            "https://",
            "data:text/plain,hi",
        ] {
            assert!(check(url, UrlPolicy::STRICT).is_err(), "{url}");
        }
    }
}
