//! Payments, dead letters and webhooks in the schema: `payOrder` (owner or staff), and
//! the back office's `deadLetters` with `retryDeadLetter` / `discardDeadLetter`, and
//! outbound webhook subscriptions with their delivery history.

use async_graphql::{Context, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use till_domain::types::OrderId;
use till_domain::{jobs, webhooks};

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use super::mutation::{perform, OrderPayload};
use super::types::connection::PageInfo;
use super::{command_context, state, AdminGuard, StaffGuard};

/// A job that ran out of attempts.
#[derive(SimpleObject)]
pub struct DeadLetter {
    /// Id (pass to `retryDeadLetter` / `discardDeadLetter`).
    pub id: ID,
    /// Its queue (`payments`, ...).
    pub queue: String,
    /// Attempts made.
    pub attempts: i32,
    /// The last attempt's error.
    pub error: Option<String>,
    /// The payload, compact JSON, cut at 500 characters.
    pub payload_summary: String,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it was given up.
    pub dead_at: Option<DateTime<Utc>>,
}

impl From<jobs::DeadLetter> for DeadLetter {
    fn from(d: jobs::DeadLetter) -> Self {
        let payload = d.payload.to_string();
        Self {
            id: ID(d.id.to_string()),
            queue: d.queue,
            attempts: d.attempts,
            error: d.last_error,
            payload_summary: payload.chars().take(500).collect(),
            created_at: d.created_at,
            dead_at: d.dead_at,
        }
    }
}

/// A dead letter in a page.
#[derive(SimpleObject)]
pub struct DeadLetterEdge {
    /// Pass as `after` to continue after it.
    pub cursor: String,
    /// The dead letter.
    pub node: DeadLetter,
}

/// A page of dead letters, newest first.
#[derive(SimpleObject)]
pub struct DeadLetterConnection {
    /// The dead letters with their cursors.
    pub edges: Vec<DeadLetterEdge>,
    /// Where this page sits.
    pub page_info: PageInfo,
}

/// Result of `retryDeadLetter` / `discardDeadLetter`.
#[derive(SimpleObject)]
pub struct DeadLetterPayload {
    /// The dead letter acted on.
    pub id: ID,
    /// Its queue.
    pub queue: Option<String>,
}

/// A subscriber URL for outbound webhooks.
#[derive(SimpleObject)]
pub struct WebhookSubscription {
    /// Id.
    pub id: ID,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Event types delivered (`*` for all).
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub active: bool,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

impl From<webhooks::Subscription> for WebhookSubscription {
    fn from(s: webhooks::Subscription) -> Self {
        Self {
            id: ID(s.id.to_string()),
            url: s.url,
            event_types: s.event_types,
            active: s.active,
            created_at: s.created_at,
        }
    }
}

/// Result of `registerWebhook`.
#[derive(SimpleObject)]
pub struct RegisterWebhookPayload {
    /// The subscription.
    pub subscription: WebhookSubscription,
    /// The signing secret, shown only here: verify `Till-Signature` with it.
    pub secret: String,
}

/// One delivery of one event to one subscriber.
#[derive(SimpleObject)]
pub struct WebhookDelivery {
    /// Id.
    pub id: ID,
    /// The event id (also sent as `Till-Event-Id`).
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// PENDING, DELIVERED or FAILED.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// The subscriber's last HTTP status.
    pub response_status: Option<i32>,
    /// The last failure.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it succeeded.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery in a page.
#[derive(SimpleObject)]
pub struct WebhookDeliveryEdge {
    /// Pass as `after` to continue after it.
    pub cursor: String,
    /// The delivery.
    pub node: WebhookDelivery,
}

/// A page of deliveries, newest first.
#[derive(SimpleObject)]
pub struct WebhookDeliveryConnection {
    /// The deliveries with their cursors.
    pub edges: Vec<WebhookDeliveryEdge>,
    /// Where this page sits.
    pub page_info: PageInfo,
}

fn parse_subscription_id(id: &ID) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(id.as_str()).map_err(|_| {
        coded(
            Code::BadUserInput,
            "subscriptionId: not a webhook subscription id",
        )
    })
}

fn page_args(
    ctx: &Context<'_>,
    first: Option<i32>,
    after: Option<&str>,
) -> Result<(i64, Option<i64>)> {
    let max = state(ctx)?.max_page_size;
    let n = i64::from(first.unwrap_or(20));
    if n < 1 || n > max {
        return Err(coded(
            Code::BadUserInput,
            format!("first: must be between 1 and {max}"),
        ));
    }
    let before = after
        .map(|a| a.parse::<i64>())
        .transpose()
        .map_err(|_| coded(Code::BadUserInput, "after: not a cursor from this list"))?;
    Ok((n, before))
}

/// Cuts a fetch of `n + 1` rows (newest first, by id) to a page: the rows with their id
/// cursors, and where the page sits.
fn id_page<T>(
    mut rows: Vec<T>,
    n: i64,
    before: Option<i64>,
    id: impl Fn(&T) -> i64,
) -> (Vec<(String, T)>, PageInfo) {
    let has_next = rows.len() as i64 > n;
    rows.truncate(usize::try_from(n).unwrap_or(0));
    let rows: Vec<(String, T)> = rows.into_iter().map(|r| (id(&r).to_string(), r)).collect();
    let cursors: Vec<&str> = rows.iter().map(|(c, _)| c.as_str()).collect();
    let page_info = PageInfo::new(&cursors, has_next, before.is_some());
    (rows, page_info)
}

fn job_id(id: &ID) -> Result<i64> {
    id.parse::<i64>()
        .map_err(|_| coded(Code::BadUserInput, "id: not a dead letter id"))
}

/// Back-office reads of the job queue.
#[derive(Default)]
pub struct JobsQuery;

/// Back-office reads of the job queue.
#[Object]
impl JobsQuery {
    /// Jobs that ran out of attempts, newest first (back office).
    #[graphql(
        guard = "StaffGuard",
        complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1"
    )]
    async fn dead_letters(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this queue.")] queue: Option<String>,
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
    ) -> Result<DeadLetterConnection> {
        let st = state(ctx)?;
        let (n, before) = page_args(ctx, first, after.as_deref())?;
        let rows = jobs::dead_letters(st.commands.pool(), queue.as_deref(), before, n + 1)
            .await
            .map_err(error::domain)?;
        let (rows, page_info) = id_page(rows, n, before, |d| d.id);
        let edges = rows
            .into_iter()
            .map(|(cursor, d)| DeadLetterEdge {
                cursor,
                node: d.into(),
            })
            .collect();
        Ok(DeadLetterConnection { edges, page_info })
    }

    /// Outbound webhook subscribers, newest first (back office).
    #[graphql(guard = "StaffGuard", complexity = 50)]
    async fn webhook_subscriptions(&self, ctx: &Context<'_>) -> Result<Vec<WebhookSubscription>> {
        Ok(webhooks::subscriptions(state(ctx)?.commands.pool())
            .await
            .map_err(error::domain)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// A subscriber's delivery history, newest first (back office).
    #[graphql(
        guard = "StaffGuard",
        complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1"
    )]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The subscription.")] subscription_id: ID,
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
    ) -> Result<WebhookDeliveryConnection> {
        let sub = parse_subscription_id(&subscription_id)?;
        let (n, before) = page_args(ctx, first, after.as_deref())?;
        let rows = webhooks::deliveries(state(ctx)?.commands.pool(), sub, before, n + 1)
            .await
            .map_err(error::domain)?;
        let (rows, page_info) = id_page(rows, n, before, |d| d.id);
        let edges = rows
            .into_iter()
            .map(|(cursor, d)| WebhookDeliveryEdge {
                cursor,
                node: WebhookDelivery {
                    id: ID(d.id.to_string()),
                    event_id: till_domain::event_log::LogPoint {
                        tx_id: d.event_tx_id,
                        position: d.event_position,
                    }
                    .to_token(),
                    event_type: d.event_type,
                    status: d.status.to_ascii_uppercase(),
                    attempts: d.attempts,
                    response_status: d.response_status,
                    error: d.last_error,
                    created_at: d.created_at,
                    delivered_at: d.delivered_at,
                },
            })
            .collect();
        Ok(WebhookDeliveryConnection { edges, page_info })
    }
}

/// Payments and the job queue.
#[derive(Default)]
pub struct JobsMutation;

/// Payments and the job queue.
#[Object]
impl JobsMutation {
    /// Pays an unpaid order with a payment method token (its owner or staff). The
    /// capture runs in the background: the order becomes PAID, or PAYMENT_FAILED with
    /// its stock released; follow it with `order(id:)` or the `orderStatusChanged`
    /// subscription. While the capture runs the order cannot be cancelled (CONFLICT).
    /// With the built-in fake provider, `tok_ok` succeeds, `tok_slow` succeeds after
    /// half a second, `tok_declined` is declined and `tok_flaky` fails twice before
    /// succeeding.
    #[graphql(complexity = 10)]
    async fn pay_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order (global id).")] order_id: ID,
        #[graphql(desc = "The provider's payment method token.", secret)]
        payment_method_token: String,
    ) -> Result<OrderPayload> {
        let cmd = command_context(ctx)?;
        let id = OrderId(ids::decode(Kind::Order, &order_id, "orderId")?);
        let st = state(ctx)?;
        let attempts = st.payment_max_attempts;
        let out = perform(
            ctx,
            st.commands
                .request_payment(&cmd, id, &payment_method_token, attempts),
        )
        .await?;
        Ok(OrderPayload::new(out.at, out.value.0))
    }

    /// Puts a dead letter back on its queue with fresh attempts (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn retry_dead_letter(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The dead letter (its id from `deadLetters`).")] id: ID,
    ) -> Result<DeadLetterPayload> {
        let queue = state(ctx)?
            .commands
            .retry_dead_letter(job_id(&id)?)
            .await
            .map_err(error::domain)?;
        Ok(DeadLetterPayload {
            id,
            queue: Some(queue),
        })
    }

    /// Registers a subscriber URL for event types (`*` for all); deliveries are
    /// signed with the returned secret (ADMIN only: it decides where Till sends data).
    /// The URL must be https in production and may not name an internal address
    /// (loopback, private, link-local, metadata...); a host name is checked when each
    /// delivery connects.
    #[graphql(guard = "AdminGuard", complexity = 10)]
    async fn register_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "https URL that receives POSTs (http outside production).")] url: String,
        #[graphql(desc = "Event types, e.g. [\"OrderStatusChanged\"], or [\"*\"].")]
        event_types: Vec<String>,
    ) -> Result<RegisterWebhookPayload> {
        let st = state(ctx)?;
        let (sub, secret) =
            webhooks::subscribe(st.commands.pool(), &url, &event_types, st.webhook_urls)
                .await
                .map_err(error::domain)?;
        Ok(RegisterWebhookPayload {
            subscription: sub.into(),
            secret,
        })
    }

    /// Pauses or resumes deliveries to a subscriber (ADMIN only).
    #[graphql(guard = "AdminGuard", complexity = 10)]
    async fn set_webhook_active(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The subscription.")] subscription_id: ID,
        #[graphql(desc = "true resumes deliveries, false pauses them (queued ones wait).")]
        active: bool,
    ) -> Result<WebhookSubscription> {
        let id = parse_subscription_id(&subscription_id)?;
        Ok(
            webhooks::set_active(state(ctx)?.commands.pool(), id, active)
                .await
                .map_err(error::domain)?
                .into(),
        )
    }

    /// Deletes a dead letter for good (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn discard_dead_letter(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The dead letter (its id from `deadLetters`).")] id: ID,
    ) -> Result<DeadLetterPayload> {
        jobs::discard_dead(state(ctx)?.commands.pool(), job_id(&id)?)
            .await
            .map_err(error::domain)?;
        Ok(DeadLetterPayload { id, queue: None })
    }
}
