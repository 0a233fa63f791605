//! Inventory commands: restock and adjust.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{CommandContext, Commands, Outcome};
use crate::db::prepared::Reuse;
use crate::error::DomainError;
use crate::events::{DomainEvent, StockLevel};
use crate::schema::inventory;
use crate::types::{ProductId, StockDelta};

/// Stock of one product after a command.
pub type StockOutcome = Outcome<StockLevel>;

impl Commands {
    /// Adds arrived units to on-hand stock.
    #[tracing::instrument(name = "command", skip_all, fields(command = "restock"))]
    pub async fn restock(
        &self,
        ctx: &CommandContext,
        product: ProductId,
        quantity: StockDelta,
    ) -> Result<StockOutcome, DomainError> {
        ctx.require_staff()?;
        if quantity.get() <= 0 {
            return Err(DomainError::Validation {
                field: "quantity",
                message: "a restock adds at least one unit".into(),
            });
        }
        self.change_on_hand(ctx, product, quantity.get(), None)
            .await
    }

    /// Corrects on-hand stock by a signed delta (stock count, damage, loss). Fails when
    /// it would leave fewer units on hand than are reserved for orders.
    #[tracing::instrument(name = "command", skip_all, fields(command = "adjust_inventory"))]
    pub async fn adjust_inventory(
        &self,
        ctx: &CommandContext,
        product: ProductId,
        delta: StockDelta,
        reason: &str,
    ) -> Result<StockOutcome, DomainError> {
        ctx.require_staff()?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 200 {
            return Err(DomainError::Validation {
                field: "reason",
                message: "give a reason of 1 to 200 characters".into(),
            });
        }
        self.change_on_hand(ctx, product, delta.get(), Some(reason.to_owned()))
            .await
    }

    async fn change_on_hand(
        &self,
        ctx: &CommandContext,
        product: ProductId,
        delta: i32,
        reason: Option<String>,
    ) -> Result<StockOutcome, DomainError> {
        self.execute(ctx, async |conn| {
            let current: Option<(i32, i32)> = inventory::table
                .find(product.0)
                .select((inventory::on_hand, inventory::reserved))
                .for_update()
                .first(conn)
                .await
                .optional()?;
            let (on_hand, reserved) =
                current.ok_or_else(|| DomainError::not_found("product", product))?;
            let new_on_hand = i64::from(on_hand) + i64::from(delta);
            if new_on_hand < i64::from(reserved) {
                return Err(DomainError::InvalidState(format!(
                    "adjusting by {delta} would leave {new_on_hand} units on hand but {reserved} are reserved for orders"
                )));
            }
            if new_on_hand > i64::from(i32::MAX) {
                return Err(DomainError::Validation {
                    field: "quantity",
                    message: "on-hand stock would overflow".into(),
                });
            }
            let (on_hand, reserved, version): (i32, i32, i64) =
                diesel::update(inventory::table.find(product.0))
                    .set((
                        inventory::on_hand.eq(inventory::on_hand + delta),
                        inventory::version.eq(inventory::version + 1),
                    ))
                    .returning((inventory::on_hand, inventory::reserved, inventory::version))
                    .prepared()
                    .get_result(conn)
                    .await?;
            let stock = StockLevel {
                on_hand,
                reserved,
                version,
            };
            let event = match reason.clone() {
                None => DomainEvent::InventoryRestocked {
                    product_id: product.0,
                    quantity: delta,
                    stock,
                },
                Some(reason) => DomainEvent::InventoryAdjusted {
                    product_id: product.0,
                    delta,
                    reason,
                    stock,
                },
            };
            Ok((stock, vec![event]))
        })
        .await
    }
}
