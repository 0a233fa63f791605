//! Domain events: past-tense facts with a type name and a schema version, carrying the
//! values projections need so projections stay simple. Inventory and order events carry
//! the aggregate's version after the change, so a projection can apply them idempotently
//! and in any order within a stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One line of an order as the events record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineFact {
    /// The product bought.
    pub product_id: Uuid,
    /// Its SKU at placement.
    pub sku: String,
    /// Its name at placement.
    pub name: String,
    /// Units bought.
    pub quantity: i32,
    /// Unit price captured at placement, minor units.
    pub unit_price_minor: i64,
}

/// Stock levels of one product after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLevel {
    /// Units physically held.
    pub on_hand: i32,
    /// Units held for unpaid orders.
    pub reserved: i32,
    /// The inventory row's version after the change.
    pub version: i64,
}

/// Every fact Till records. The serde tag is the event type stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum DomainEvent {
    /// A category was created.
    CategoryCreated {
        /// New category.
        category_id: Uuid,
        /// Its slug.
        slug: String,
        /// Its name.
        name: String,
        /// Its parent, if any.
        parent_id: Option<Uuid>,
    },
    /// A product was created (with an empty inventory row).
    ProductCreated {
        /// New product.
        product_id: Uuid,
        /// Its SKU.
        sku: String,
        /// Its name.
        name: String,
        /// Its description.
        description: String,
        /// Its category.
        category_id: Uuid,
        /// Unit price, minor units.
        price_minor: i64,
        /// Initial status.
        status: String,
        /// Product version (1).
        version: i32,
        /// Creation time.
        created_at: DateTime<Utc>,
    },
    /// A product's fields changed; carries the full state after the change.
    ProductUpdated {
        /// The product.
        product_id: Uuid,
        /// SKU after.
        sku: String,
        /// Name after.
        name: String,
        /// Description after.
        description: String,
        /// Category after.
        category_id: Uuid,
        /// Price after, minor units.
        price_minor: i64,
        /// Status after.
        status: String,
        /// Version after.
        version: i32,
    },
    /// A product was withdrawn from sale.
    ProductArchived {
        /// The product.
        product_id: Uuid,
        /// Version after.
        version: i32,
    },
    /// Units arrived.
    InventoryRestocked {
        /// The product.
        product_id: Uuid,
        /// Units added.
        quantity: i32,
        /// Levels after.
        stock: StockLevel,
    },
    /// On-hand stock was corrected by staff (count, damage, loss).
    InventoryAdjusted {
        /// The product.
        product_id: Uuid,
        /// Signed change of on-hand units.
        delta: i32,
        /// Why, as given by staff.
        reason: String,
        /// Levels after.
        stock: StockLevel,
    },
    /// Units were reserved for an order.
    StockReserved {
        /// The product.
        product_id: Uuid,
        /// The order holding them.
        order_id: Uuid,
        /// Units reserved.
        quantity: i32,
        /// Levels after.
        stock: StockLevel,
    },
    /// Reserved units went back to available (order cancelled, expired or failed).
    StockReleased {
        /// The product.
        product_id: Uuid,
        /// The order that held them.
        order_id: Uuid,
        /// Units released.
        quantity: i32,
        /// Levels after.
        stock: StockLevel,
    },
    /// Reserved units left the warehouse's books (payment captured).
    StockCommitted {
        /// The product.
        product_id: Uuid,
        /// The paid order.
        order_id: Uuid,
        /// Units committed.
        quantity: i32,
        /// Levels after.
        stock: StockLevel,
    },
    /// An account was created.
    CustomerRegistered {
        /// The account.
        customer_id: Uuid,
        /// Its email.
        email: String,
        /// Its name.
        name: String,
        /// Its role.
        role: String,
    },
    /// An account's role was changed by an administrator.
    RoleGranted {
        /// The account.
        customer_id: Uuid,
        /// Its role before.
        from: String,
        /// Its role now.
        role: String,
    },
    /// Payment of an order was requested; a capture job was enqueued.
    PaymentRequested {
        /// The order.
        order_id: Uuid,
        /// Its customer.
        customer_id: Uuid,
        /// Amount to capture, minor units.
        amount_minor: i64,
    },
    /// The provider captured money for an order that could no longer be paid (it had
    /// failed, been cancelled or expired meanwhile): a refund job was enqueued.
    PaymentRefundRequested {
        /// The order.
        order_id: Uuid,
        /// Its customer.
        customer_id: Uuid,
        /// The provider's charge to refund.
        charge_id: String,
        /// Amount to refund, minor units.
        amount_minor: i64,
    },
    /// The provider refunded a charge of an order that could not be paid.
    PaymentRefunded {
        /// The order.
        order_id: Uuid,
        /// Its customer.
        customer_id: Uuid,
        /// The provider's refund id.
        refund_id: String,
        /// Amount refunded, minor units.
        amount_minor: i64,
    },
    /// An order was placed and its stock reserved.
    OrderPlaced {
        /// The order.
        order_id: Uuid,
        /// Who placed it.
        customer_id: Uuid,
        /// Their email at placement.
        customer_email: String,
        /// Their name at placement.
        customer_name: String,
        /// What was bought.
        lines: Vec<OrderLineFact>,
        /// Sum of the lines, minor units.
        total_minor: i64,
        /// Currency of all amounts.
        currency: String,
        /// When.
        placed_at: DateTime<Utc>,
        /// Order version (1).
        version: i32,
    },
    /// An order changed status (paid, shipped, cancelled, payment failed, expired).
    OrderStatusChanged {
        /// The order.
        order_id: Uuid,
        /// Its customer.
        customer_id: Uuid,
        /// Status before.
        from: String,
        /// Status after.
        to: String,
        /// The order's lines (so reports can reverse a cancelled sale).
        lines: Vec<OrderLineFact>,
        /// Order total, minor units.
        total_minor: i64,
        /// When the order was placed.
        placed_at: DateTime<Utc>,
        /// When the status changed.
        at: DateTime<Utc>,
        /// Order version after.
        version: i32,
    },
}

/// Every event type name (what webhook subscribers choose from).
pub const EVENT_TYPES: &[&str] = &[
    "CategoryCreated",
    "ProductCreated",
    "ProductUpdated",
    "ProductArchived",
    "InventoryRestocked",
    "InventoryAdjusted",
    "StockReserved",
    "StockReleased",
    "StockCommitted",
    "CustomerRegistered",
    "RoleGranted",
    "PaymentRequested",
    "PaymentRefundRequested",
    "PaymentRefunded",
    "OrderPlaced",
    "OrderStatusChanged",
];

impl DomainEvent {
    /// The event type stored in the log.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::CategoryCreated { .. } => "CategoryCreated",
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductUpdated { .. } => "ProductUpdated",
            Self::ProductArchived { .. } => "ProductArchived",
            Self::InventoryRestocked { .. } => "InventoryRestocked",
            Self::InventoryAdjusted { .. } => "InventoryAdjusted",
            Self::StockReserved { .. } => "StockReserved",
            Self::StockReleased { .. } => "StockReleased",
            Self::StockCommitted { .. } => "StockCommitted",
            Self::CustomerRegistered { .. } => "CustomerRegistered",
            Self::RoleGranted { .. } => "RoleGranted",
            Self::PaymentRequested { .. } => "PaymentRequested",
            Self::PaymentRefundRequested { .. } => "PaymentRefundRequested",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderStatusChanged { .. } => "OrderStatusChanged",
        }
    }

    /// The payload schema version of this event type. Bump it (and teach
    /// [`DomainEvent::from_stored`] to upcast) when a payload changes shape.
    pub fn schema_version(&self) -> i16 {
        1
    }

    /// The aggregate this event belongs to: (stream type, stream id).
    pub fn stream(&self) -> (&'static str, Uuid) {
        match self {
            Self::CategoryCreated { category_id, .. } => ("category", *category_id),
            Self::ProductCreated { product_id, .. }
            | Self::ProductUpdated { product_id, .. }
            | Self::ProductArchived { product_id, .. } => ("product", *product_id),
            Self::InventoryRestocked { product_id, .. }
            | Self::InventoryAdjusted { product_id, .. }
            | Self::StockReserved { product_id, .. }
            | Self::StockReleased { product_id, .. }
            | Self::StockCommitted { product_id, .. } => ("inventory", *product_id),
            Self::CustomerRegistered { customer_id, .. }
            | Self::RoleGranted { customer_id, .. } => ("customer", *customer_id),
            Self::OrderPlaced { order_id, .. }
            | Self::OrderStatusChanged { order_id, .. }
            | Self::PaymentRequested { order_id, .. }
            | Self::PaymentRefundRequested { order_id, .. }
            | Self::PaymentRefunded { order_id, .. } => ("order", *order_id),
        }
    }

    /// The payload as stored in `events.payload` (without the type tag).
    pub fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("data").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Rebuilds an event from a log row's type, version and payload (JSON text).
    pub fn from_stored(
        event_type: &str,
        version: i16,
        payload: &str,
    ) -> Result<Self, serde_json::Error> {
        use serde::de::value::MapDeserializer;
        use serde::Deserialize;
        use serde_json::value::RawValue;
        // Only version 1 exists so far; older versions would be upcast here.
        let _ = version;
        // The payload is decoded from its text straight into the variant: the tag is
        // given first (with the content first, serde buffers the whole payload before
        // decoding it), and no serde_json::Value is built on the way.
        let tag = RawValue::from_string(serde_json::to_string(event_type)?)?;
        let data: &RawValue = serde_json::from_str(payload)?;
        let entries = [("type", &*tag), ("data", data)];
        Self::deserialize(MapDeserializer::<_, serde_json::Error>::new(
            entries.into_iter(),
        ))
    }
}

/// An event as read back from the log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Append order in the log.
    pub position: i64,
    /// The writing transaction's id (the projector's primary order).
    pub tx_id: i64,
    /// The fact.
    pub event: DomainEvent,
    /// Who caused it (`customer:<id>`, `system:seed`...).
    pub actor: String,
    /// Correlates all events of one request.
    pub correlation_id: Uuid,
    /// When it was appended.
    pub occurred_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_through_the_log_shape() {
        let e = DomainEvent::InventoryRestocked {
            product_id: Uuid::nil(),
            quantity: 5,
            stock: StockLevel {
                on_hand: 5,
                reserved: 0,
                version: 1,
            },
        };
        let back =
            DomainEvent::from_stored(e.event_type(), e.schema_version(), &e.payload().to_string());
        assert_eq!(back.ok(), Some(e));
    }
}
