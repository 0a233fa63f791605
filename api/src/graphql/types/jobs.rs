//! The job queue and webhooks in the schema: dead letters, webhook subscriptions and
//! their deliveries, with their connections.

use async_graphql::{Enum, SimpleObject, ID};
use chrono::{DateTime, Utc};
use till_domain::{jobs, webhooks};

use super::connection::PageInfo;

/// The job queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum JobQueue {
    /// Payment captures against the provider.
    Payments,
    /// Refunds of captured payments (an order cancelled while its capture ran).
    Refunds,
    /// Signed deliveries to webhook subscribers.
    Webhooks,
}

impl JobQueue {
    /// The queue's name in the job tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payments => till_domain::commands::PAYMENTS_QUEUE,
            Self::Refunds => till_domain::commands::REFUNDS_QUEUE,
            Self::Webhooks => webhooks::WEBHOOKS_QUEUE,
        }
    }
}

/// The domain events a webhook subscriber can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum WebhookEventType {
    /// Every event type, including ones added later (`*`).
    All,
    /// A category was created.
    CategoryCreated,
    /// A product was created.
    ProductCreated,
    /// A product's fields changed.
    ProductUpdated,
    /// A product was withdrawn from sale.
    ProductArchived,
    /// Units arrived.
    InventoryRestocked,
    /// On-hand stock was corrected.
    InventoryAdjusted,
    /// An order reserved stock.
    StockReserved,
    /// Reserved stock was released (cancel, expiry, failed payment).
    StockReleased,
    /// Reserved stock left with a paid order.
    StockCommitted,
    /// An account was created.
    CustomerRegistered,
    /// An account's role changed.
    RoleGranted,
    /// A payment capture was requested.
    PaymentRequested,
    /// A refund was requested.
    PaymentRefundRequested,
    /// A refund went through.
    PaymentRefunded,
    /// An order was placed.
    OrderPlaced,
    /// An order's status changed.
    OrderStatusChanged,
}

impl WebhookEventType {
    /// The event type as the log and the deliveries name it (`*` for all).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "*",
            Self::CategoryCreated => "CategoryCreated",
            Self::ProductCreated => "ProductCreated",
            Self::ProductUpdated => "ProductUpdated",
            Self::ProductArchived => "ProductArchived",
            Self::InventoryRestocked => "InventoryRestocked",
            Self::InventoryAdjusted => "InventoryAdjusted",
            Self::StockReserved => "StockReserved",
            Self::StockReleased => "StockReleased",
            Self::StockCommitted => "StockCommitted",
            Self::CustomerRegistered => "CustomerRegistered",
            Self::RoleGranted => "RoleGranted",
            Self::PaymentRequested => "PaymentRequested",
            Self::PaymentRefundRequested => "PaymentRefundRequested",
            Self::PaymentRefunded => "PaymentRefunded",
            Self::OrderPlaced => "OrderPlaced",
            Self::OrderStatusChanged => "OrderStatusChanged",
        }
    }
}

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
