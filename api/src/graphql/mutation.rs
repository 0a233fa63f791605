//! Mutation root: each resolver parses its input into domain types, runs one command
//! and returns a payload with a consistency token. The payload's entity is read from
//! the read model once it has caught up with the command (bounded wait).
//!
//! Why over 400 lines: the deprecated flat arguments double most signatures until they
//! go in the next release; each resolver itself is a few lines (parse, one command,
//! payload).

use async_graphql::{Context, InputObject, Object, Result, ID};
use till_domain::commands::{NewCategory, NewProduct, OrderLineInput, ProductPatch};
use till_domain::types::{
    CategoryId, CustomerId, Description, Money as DomainMoney, Name, OrderId, ProductId, Quantity,
    Sku, Slug, StockDelta,
};
use till_read_models::views::OrderView;

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use super::inputs::one_form;
use super::payloads::{parse, perform, CategoryPayload, OrderPayload, ProductPayload};
use super::types::catalog::ProductStatus;
use super::{command_context, state, StaffGuard};

/// Input of `archiveProduct`.
#[derive(Debug, InputObject)]
pub struct ArchiveProductInput {
    /// The product (global id).
    pub id: ID,
    /// Fail with CONFLICT unless the product is still at this version.
    pub expected_version: Option<i32>,
}

/// Input of `restockProduct`.
#[derive(Debug, InputObject)]
pub struct RestockProductInput {
    /// The product (global id).
    pub product_id: ID,
    /// Units arrived, 1 to 1000000.
    pub quantity: i32,
}

/// Input of `adjustInventory`.
#[derive(Debug, InputObject)]
pub struct AdjustInventoryInput {
    /// The product (global id).
    pub product_id: ID,
    /// Signed change of on-hand units, non-zero.
    pub delta: i32,
    /// Why (stock count, damage...), 1-200 characters.
    pub reason: String,
}

/// Input of `cancelOrder` and `shipOrder`: the order.
#[derive(Debug, InputObject)]
pub struct OrderRefInput {
    /// The order (global id).
    pub id: ID,
}

/// Input of `createCategory`.
#[derive(Debug, InputObject)]
pub struct CreateCategoryInput {
    /// URL-safe unique slug: lowercase words separated by dashes.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Parent category (global id), if any.
    pub parent_id: Option<ID>,
}

/// Input of `createProduct`.
#[derive(Debug, InputObject)]
pub struct CreateProductInput {
    /// Unique SKU: 1-64 letters, digits, '.', '_' or '-'.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Long description (default empty).
    pub description: Option<String>,
    /// Category (global id).
    pub category_id: ID,
    /// Unit price in minor units.
    pub price_minor: i64,
    /// DRAFT or ACTIVE (default ACTIVE).
    pub status: Option<ProductStatus>,
    /// Units on hand at creation (default 0).
    pub initial_stock: Option<i32>,
}

/// Input of `updateProduct`: omitted fields stay as they are.
#[derive(Debug, InputObject)]
pub struct UpdateProductInput {
    /// The product (global id).
    pub id: ID,
    /// Fail with CONFLICT unless the product is still at this version.
    pub expected_version: Option<i32>,
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New category (global id).
    pub category_id: Option<ID>,
    /// New unit price in minor units.
    pub price_minor: Option<i64>,
    /// New status (DRAFT or ACTIVE).
    pub status: Option<ProductStatus>,
}

/// One line of `placeOrder`.
#[derive(Debug, InputObject)]
#[graphql(name = "OrderLineInput")]
pub struct OrderLineInputGql {
    /// The product (global id).
    pub product_id: ID,
    /// Units, 1 to 10000.
    pub quantity: i32,
}

/// Input of `placeOrder`.
#[derive(Debug, InputObject)]
pub struct PlaceOrderInput {
    /// 1 to 50 lines; repeated products are merged.
    pub lines: Vec<OrderLineInputGql>,
    /// Order on behalf of this customer (staff only; default: the caller).
    pub customer_id: Option<ID>,
}

fn non_negative_stock(initial: Option<i32>) -> Result<Option<StockDelta>> {
    match initial {
        None | Some(0) => Ok(None),
        Some(n) if n < 0 => Err(coded(
            Code::BadUserInput,
            "initialStock: must not be negative",
        )),
        Some(n) => parse(StockDelta::restock(i64::from(n))).map(Some),
    }
}

/// All mutations: commerce and accounts, one `Mutation` type in the schema.
#[derive(async_graphql::MergedObject, Default)]
pub struct Mutation(
    CommerceMutation,
    super::accounts::AccountMutation,
    super::jobs::JobsMutation,
    super::projections::ProjectionsMutation,
);

/// Input of `payOrder`.
#[derive(Debug, InputObject)]
pub struct PayOrderInput {
    /// The order (global id).
    pub order_id: ID,
    /// The payment provider's payment method token.
    #[graphql(secret)]
    pub payment_method_token: String,
}

/// Changes to the catalog, inventory and orders.
#[derive(Default)]
pub struct CommerceMutation;

/// Changes to the catalog, inventory and orders. Each returns a `consistencyToken`.
#[Object]
impl CommerceMutation {
    /// Creates a category (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn create_category(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new category.")] input: CreateCategoryInput,
    ) -> Result<CategoryPayload> {
        let cmd = command_context(ctx)?;
        let new = NewCategory {
            slug: parse(Slug::parse(&input.slug))?,
            name: parse(Name::parse("name", &input.name))?,
            parent: input
                .parent_id
                .as_ref()
                .map(|p| ids::decode(Kind::Category, p, "parentId").map(CategoryId))
                .transpose()?,
        };
        let out = perform(ctx, state(ctx)?.commands.create_category(&cmd, new)).await?;
        Ok(CategoryPayload {
            at: out.at,
            id: out.value.0,
        })
    }

    /// Creates a product and its inventory (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new product, its category and its initial stock.")]
        input: CreateProductInput,
    ) -> Result<ProductPayload> {
        let cmd = command_context(ctx)?;
        let new = NewProduct {
            sku: parse(Sku::parse(&input.sku))?,
            name: parse(Name::parse("name", &input.name))?,
            description: parse(Description::parse(
                input.description.as_deref().unwrap_or(""),
            ))?,
            category: CategoryId(ids::decode(
                Kind::Category,
                &input.category_id,
                "categoryId",
            )?),
            price: parse(DomainMoney::price(input.price_minor))?,
            status: input.status.unwrap_or(ProductStatus::Active).into(),
            initial_stock: non_negative_stock(input.initial_stock)?,
        };
        let out = perform(ctx, state(ctx)?.commands.create_product(&cmd, new)).await?;
        Ok(ProductPayload {
            at: out.at,
            id: out.value.0,
        })
    }

    /// Changes a product's fields; pass `expectedVersion` for optimistic concurrency
    /// (CONFLICT when someone changed it first). Back office.
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The product, the fields to change, and optionally the version it must still be at."
        )]
        input: UpdateProductInput,
    ) -> Result<ProductPayload> {
        let cmd = command_context(ctx)?;
        let id = ProductId(ids::decode(Kind::Product, &input.id, "id")?);
        let patch = ProductPatch {
            name: input
                .name
                .as_deref()
                .map(|n| Name::parse("name", n))
                .transpose()
                .map_err(error::domain)?,
            description: input
                .description
                .as_deref()
                .map(Description::parse)
                .transpose()
                .map_err(error::domain)?,
            category: input
                .category_id
                .as_ref()
                .map(|c| ids::decode(Kind::Category, c, "categoryId").map(CategoryId))
                .transpose()?,
            price: input
                .price_minor
                .map(DomainMoney::price)
                .transpose()
                .map_err(error::domain)?,
            status: input.status.map(Into::into),
        };
        let out = perform(
            ctx,
            state(ctx)?
                .commands
                .update_product(&cmd, id, input.expected_version, patch),
        )
        .await?;
        Ok(ProductPayload {
            at: out.at,
            id: out.value.0,
        })
    }

    /// Withdraws a product from sale (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn archive_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product, and optionally the version it must still be at.")]
        input: Option<ArchiveProductInput>,
        #[graphql(
            desc = "The product (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        id: Option<ID>,
        #[graphql(
            desc = "Fail with CONFLICT unless the product is still at this version.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        expected_version: Option<i32>,
    ) -> Result<ProductPayload> {
        let any_flat = id.is_some() || expected_version.is_some();
        let flat = id.map(|id| ArchiveProductInput {
            id,
            expected_version,
        });
        let ArchiveProductInput {
            id,
            expected_version,
        } = one_form("archiveProduct", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let pid = ProductId(ids::decode(Kind::Product, &id, "id")?);
        let out = perform(
            ctx,
            state(ctx)?
                .commands
                .archive_product(&cmd, pid, expected_version),
        )
        .await?;
        Ok(ProductPayload {
            at: out.at,
            id: out.value.0,
        })
    }

    /// Adds arrived units to a product's stock (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn restock_product(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product and the units that arrived.")] input: Option<
            RestockProductInput,
        >,
        #[graphql(
            desc = "The product (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        product_id: Option<ID>,
        #[graphql(
            desc = "Units arrived, 1 to 1000000.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        quantity: Option<i32>,
    ) -> Result<ProductPayload> {
        let any_flat = product_id.is_some() || quantity.is_some();
        let flat = product_id
            .zip(quantity)
            .map(|(product_id, quantity)| RestockProductInput {
                product_id,
                quantity,
            });
        let RestockProductInput {
            product_id,
            quantity,
        } = one_form("restockProduct", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let pid = ProductId(ids::decode(Kind::Product, &product_id, "productId")?);
        let qty = parse(StockDelta::restock(i64::from(quantity)))?;
        let out = perform(ctx, state(ctx)?.commands.restock(&cmd, pid, qty)).await?;
        Ok(ProductPayload {
            at: out.at,
            id: pid.0,
        })
    }

    /// Corrects on-hand stock by a signed delta with a reason (back office). Refused
    /// when it would leave fewer units on hand than are reserved.
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn adjust_inventory(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The product, the change and why.")] input: Option<AdjustInventoryInput>,
        #[graphql(
            desc = "The product (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        product_id: Option<ID>,
        #[graphql(
            desc = "Signed change of on-hand units, non-zero.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        delta: Option<i32>,
        #[graphql(
            desc = "Why (stock count, damage...), 1-200 characters.",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        reason: Option<String>,
    ) -> Result<ProductPayload> {
        let any_flat = product_id.is_some() || delta.is_some() || reason.is_some();
        let flat = match (product_id, delta, reason) {
            (Some(product_id), Some(delta), Some(reason)) => Some(AdjustInventoryInput {
                product_id,
                delta,
                reason,
            }),
            _ => None,
        };
        let AdjustInventoryInput {
            product_id,
            delta,
            reason,
        } = one_form("adjustInventory", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let pid = ProductId(ids::decode(Kind::Product, &product_id, "productId")?);
        let delta = parse(StockDelta::adjustment(i64::from(delta)))?;
        let out = perform(
            ctx,
            state(ctx)?
                .commands
                .adjust_inventory(&cmd, pid, delta, &reason),
        )
        .await?;
        Ok(ProductPayload {
            at: out.at,
            id: pid.0,
        })
    }

    /// Places an order, reserving stock for every line at once: all lines or none
    /// (OUT_OF_STOCK names the product that is short).
    #[graphql(complexity = 10)]
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order's lines (a product at most once each).")]
        input: PlaceOrderInput,
    ) -> Result<OrderPayload> {
        let cmd = command_context(ctx)?;
        let me = super::principal(ctx)?
            .user_id()
            .ok_or_else(error::unauthenticated)?;
        let customer = match &input.customer_id {
            Some(c) => CustomerId(ids::decode(Kind::Customer, c, "customerId")?),
            None => me,
        };
        let lines = input
            .lines
            .iter()
            .map(|l| {
                Ok(OrderLineInput {
                    product: ProductId(ids::decode(
                        Kind::Product,
                        &l.product_id,
                        "lines.productId",
                    )?),
                    quantity: parse(Quantity::parse(i64::from(l.quantity)))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let st = state(ctx)?;
        let out = perform(
            ctx,
            st.commands.place_order(&cmd, customer, lines, &st.currency),
        )
        .await?;
        // The new order's view is a function of its OrderPlaced event alone: shown from
        // it, the payload waits for no projector batch (docs/architecture.md).
        let written = match out.value.event.as_ref().map(OrderView::placed) {
            Some(Ok(view)) => view.map(std::sync::Arc::new),
            Some(Err(e)) => return Err(error::read(e)),
            None => None,
        };
        Ok(OrderPayload {
            at: out.at,
            id: out.value.id.0,
            written,
        })
    }

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
        #[graphql(desc = "The order and the payment method.")] input: Option<PayOrderInput>,
        #[graphql(
            desc = "The order (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        order_id: Option<ID>,
        #[graphql(
            desc = "The provider's payment method token.",
            secret,
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        payment_method_token: Option<String>,
    ) -> Result<OrderPayload> {
        let any_flat = order_id.is_some() || payment_method_token.is_some();
        let flat = order_id
            .zip(payment_method_token)
            .map(|(order_id, payment_method_token)| PayOrderInput {
                order_id,
                payment_method_token,
            });
        let PayOrderInput {
            order_id,
            payment_method_token,
        } = one_form("payOrder", input, flat, any_flat)?;
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

    /// Cancels an unpaid order and releases its stock (its owner or staff). CONFLICT
    /// while a payment of the order is being captured: it becomes PAID or
    /// PAYMENT_FAILED within moments.
    #[graphql(complexity = 10)]
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order.")] input: Option<OrderRefInput>,
        #[graphql(
            desc = "The order (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        id: Option<ID>,
    ) -> Result<OrderPayload> {
        let any_flat = id.is_some();
        let flat = id.map(|id| OrderRefInput { id });
        let OrderRefInput { id } = one_form("cancelOrder", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let oid = OrderId(ids::decode(Kind::Order, &id, "id")?);
        let out = perform(ctx, state(ctx)?.commands.cancel_order(&cmd, oid)).await?;
        Ok(OrderPayload::new(out.at, out.value.0))
    }

    /// Marks a paid order as shipped (back office).
    #[graphql(guard = "StaffGuard", complexity = 10)]
    async fn ship_order(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The order.")] input: Option<OrderRefInput>,
        #[graphql(
            desc = "The order (global id).",
            deprecation = "use `input`; the flat arguments go in the next release"
        )]
        id: Option<ID>,
    ) -> Result<OrderPayload> {
        let any_flat = id.is_some();
        let flat = id.map(|id| OrderRefInput { id });
        let OrderRefInput { id } = one_form("shipOrder", input, flat, any_flat)?;
        let cmd = command_context(ctx)?;
        let oid = OrderId(ids::decode(Kind::Order, &id, "id")?);
        let out = perform(ctx, state(ctx)?.commands.ship_order(&cmd, oid)).await?;
        Ok(OrderPayload::new(out.at, out.value.0))
    }
}
