//! Dead letters and webhooks in the schema: the back office's `deadLetters` with
//! `retryDeadLetter` / `discardDeadLetter`, and outbound webhook subscriptions with
//! their delivery history.

use async_graphql::{Context, InputObject, Object, Result, ID};
use till_domain::{jobs, webhooks};

use super::error::{self, coded, Code};
use super::inputs::one_form;
use super::payloads::{DeadLetterPayload, RegisterWebhookPayload, WebhookSubscriptionPayload};
use super::types::connection::PageInfo;
use super::types::jobs::{
    DeadLetterConnection, DeadLetterEdge, JobQueue, WebhookDelivery, WebhookDeliveryConnection,
    WebhookDeliveryEdge, WebhookEventType, WebhookSubscription,
};
use super::{state, AdminGuard, StaffGuard};

/// Filters of `deadLetters`; all given filters must match.
#[derive(Debug, Default, InputObject)]
pub struct DeadLetterFilter {
    /// Only this queue's.
    pub queue: Option<JobQueue>,
}

/// Input of `retryDeadLetter` and `discardDeadLetter`: the dead letter.
#[derive(Debug, InputObject)]
pub struct DeadLetterRefInput {
    /// The dead letter (its id from `deadLetters`).
    pub id: ID,
}

/// Input of `registerWebhook`.
#[derive(Debug, InputObject)]
pub struct RegisterWebhookInput {
    /// https URL that receives POSTs (http outside production).
    pub url: String,
    /// The events to deliver (1 to 50; `ALL` for every type).
    pub event_types: Vec<WebhookEventType>,
}

/// Input of `updateWebhookSubscription`.
#[derive(Debug, InputObject)]
pub struct UpdateWebhookSubscriptionInput {
    /// The subscription.
    pub subscription_id: ID,
    /// true resumes deliveries, false pauses them (queued ones wait).
    pub active: bool,
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
        #[graphql(desc = "Only dead letters matching every given filter.")] filter: Option<
            DeadLetterFilter,
        >,
        #[graphql(
            desc = "Only this queue.",
            deprecation = "use `filter: {queue: ...}` (a `JobQueue`); this goes in the next release"
        )]
        queue: Option<String>,
        #[graphql(desc = "Page size (default 20).")] first: Option<i32>,
        #[graphql(desc = "Cursor after which the page starts.")] after: Option<String>,
    ) -> Result<DeadLetterConnection> {
        let by_filter = filter.and_then(|f| f.queue).map(|q| q.as_str().to_owned());
        let queue = match (by_filter, queue) {
            (Some(_), Some(_)) => {
                return Err(coded(
                    Code::BadUserInput,
                    "give `filter.queue` or the deprecated `queue`, not both",
                ))
            }
            (by_filter, queue) => by_filter.or(queue),
        };
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

/// The job queue and webhook subscriptions.
#[derive(Default)]
pub struct JobsMutation;

/// The job queue and webhook subscriptions.
#[Object]
impl JobsMutation {
    /// Puts a dead letter back on its queue with fresh attempts (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn retry_dead_letter(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The dead letter.")] input: Option<DeadLetterRefInput>,
        #[graphql(
            desc = "The dead letter (its id from `deadLetters`).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        id: Option<ID>,
    ) -> Result<DeadLetterPayload> {
        let any_flat = id.is_some();
        let flat = id.map(|id| DeadLetterRefInput { id });
        let DeadLetterRefInput { id } = one_form("retryDeadLetter", input, flat, any_flat)?;
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
        #[graphql(desc = "The subscriber's URL and the events it receives.")] input: Option<
            RegisterWebhookInput,
        >,
        #[graphql(
            desc = "https URL that receives POSTs (http outside production).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        url: Option<String>,
        #[graphql(
            desc = "Event types, e.g. [\"OrderStatusChanged\"], or [\"*\"].",
            deprecation = "use `input` (event types as `WebhookEventType`); the flat arguments go in the next release"
        )]
        event_types: Option<Vec<String>>,
    ) -> Result<RegisterWebhookPayload> {
        let any_flat = url.is_some() || event_types.is_some();
        let input = input.map(|i| {
            let types: Vec<String> = i
                .event_types
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect();
            (i.url, types)
        });
        let (url, event_types) =
            one_form("registerWebhook", input, url.zip(event_types), any_flat)?;
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
    async fn update_webhook_subscription(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The subscription and whether it delivers.")]
        input: UpdateWebhookSubscriptionInput,
    ) -> Result<WebhookSubscriptionPayload> {
        let id = parse_subscription_id(&input.subscription_id)?;
        let subscription = webhooks::set_active(state(ctx)?.commands.pool(), id, input.active)
            .await
            .map_err(error::domain)?
            .into();
        Ok(WebhookSubscriptionPayload { subscription })
    }

    /// Pauses or resumes deliveries to a subscriber (ADMIN only).
    #[graphql(
        guard = "AdminGuard",
        complexity = 10,
        deprecation = "use `updateWebhookSubscription`, which returns a payload; this goes in the next release"
    )]
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
        #[graphql(desc = "The dead letter.")] input: Option<DeadLetterRefInput>,
        #[graphql(
            desc = "The dead letter (its id from `deadLetters`).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        id: Option<ID>,
    ) -> Result<DeadLetterPayload> {
        let any_flat = id.is_some();
        let flat = id.map(|id| DeadLetterRefInput { id });
        let DeadLetterRefInput { id } = one_form("discardDeadLetter", input, flat, any_flat)?;
        jobs::discard_dead(state(ctx)?.commands.pool(), job_id(&id)?)
            .await
            .map_err(error::domain)?;
        Ok(DeadLetterPayload { id, queue: None })
    }
}

#[cfg(test)]
mod tests {
    use super::WebhookEventType;

    /// The enum names the queues the domain enqueues on.
    #[test]
    fn job_queues_are_the_domains() {
        use super::JobQueue;
        use async_graphql::resolver_utils::EnumType;
        let ours: Vec<&str> = JobQueue::items().iter().map(|i| i.value.as_str()).collect();
        assert_eq!(ours, ["payments", "refunds", "webhooks"]);
    }

    /// The enum names every event type of the log, and `*`.
    #[test]
    fn webhook_event_types_are_the_logs() {
        use async_graphql::resolver_utils::EnumType;
        let ours: Vec<&str> = WebhookEventType::items()
            .iter()
            .map(|i| i.value.as_str())
            .collect();
        let mut expected = vec!["*"];
        expected.extend_from_slice(till_domain::events::EVENT_TYPES);
        assert_eq!(ours, expected);
    }
}
