//! Payments and dead letters in the schema: `payOrder` (owner or staff), and the back
//! office's `deadLetters` with `retryDeadLetter` / `discardDeadLetter`.

use async_graphql::{Context, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use till_domain::jobs;
use till_domain::types::OrderId;

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use super::mutation::{perform, OrderPayload};
use super::types::connection::PageInfo;
use super::{command_context, state, StaffGuard};

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
        let n = i64::from(first.unwrap_or(20));
        if n < 1 || n > st.max_page_size {
            return Err(coded(
                Code::BadUserInput,
                format!("first: must be between 1 and {}", st.max_page_size),
            ));
        }
        let before = after
            .as_deref()
            .map(|a| a.parse::<i64>())
            .transpose()
            .map_err(|_| coded(Code::BadUserInput, "after: not a cursor from this list"))?;
        let mut rows = jobs::dead_letters(st.commands.pool(), queue.as_deref(), before, n + 1)
            .await
            .map_err(error::domain)?;
        let has_next = rows.len() as i64 > n;
        rows.truncate(n as usize);
        let edges: Vec<DeadLetterEdge> = rows
            .into_iter()
            .map(|d| DeadLetterEdge {
                cursor: d.id.to_string(),
                node: d.into(),
            })
            .collect();
        let cursors: Vec<&str> = edges.iter().map(|e| e.cursor.as_str()).collect();
        let page_info = PageInfo::new(&cursors, has_next, before.is_some());
        Ok(DeadLetterConnection { edges, page_info })
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
    /// subscription. With the built-in fake provider, `tok_ok` succeeds,
    /// `tok_declined` is declined and `tok_flaky` fails twice before succeeding.
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
    async fn retry_dead_letter(&self, ctx: &Context<'_>, id: ID) -> Result<DeadLetterPayload> {
        let queue = jobs::retry_dead(state(ctx)?.commands.pool(), job_id(&id)?)
            .await
            .map_err(error::domain)?;
        Ok(DeadLetterPayload {
            id,
            queue: Some(queue),
        })
    }

    /// Deletes a dead letter for good (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn discard_dead_letter(&self, ctx: &Context<'_>, id: ID) -> Result<DeadLetterPayload> {
        jobs::discard_dead(state(ctx)?.commands.pool(), job_id(&id)?)
            .await
            .map_err(error::domain)?;
        Ok(DeadLetterPayload { id, queue: None })
    }
}
