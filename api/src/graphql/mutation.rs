//! Mutation root: each resolver parses its input into domain types, runs one command
//! and returns a payload with a consistency token. The payload's entity is read from
//! the read model once it has caught up with the command (bounded wait).

use async_graphql::{Context, InputObject, Object, Result, ID};
use serde::de::DeserializeOwned;
use till_domain::commands::{NewCategory, NewProduct, OrderLineInput, Outcome, ProductPatch};
use till_domain::event_log::LogPoint;
use till_domain::types::{
    CategoryId, CustomerId, Description, Money as DomainMoney, Name, OrderId, ProductId, Quantity,
    Sku, Slug, StockDelta,
};
use till_read_models::views::OrderView;
use uuid::Uuid;

use super::error::{self, coded, Code};
use super::ids::{self, Kind};
use super::inputs::one_form;
use super::types::catalog::{Category, Product, ProductStatus};
use super::types::order::Order;
use super::{caught_up, command_context, state, Replay, StaffGuard};

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

/// Result of a category mutation.
pub struct CategoryPayload {
    at: LogPoint,
    id: Uuid,
}

/// Result of a category mutation.
#[Object]
impl CategoryPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the category (available at once, without waiting for the read model).
    async fn category_id(&self) -> ID {
        ids::id(Kind::Category, self.id)
    }
    /// The category after the change.
    async fn category(&self, ctx: &Context<'_>) -> Result<Option<Category>> {
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .category(self.id)
            .await
            .map_err(error::read)?
            .map(Category::from))
    }
}

/// Result of a product or inventory mutation.
pub struct ProductPayload {
    at: LogPoint,
    id: Uuid,
}

/// Result of a product or inventory mutation.
#[Object]
impl ProductPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the product (available at once, without waiting for the read model).
    async fn product_id(&self) -> ID {
        ids::id(Kind::Product, self.id)
    }
    /// The product after the change.
    async fn product(&self, ctx: &Context<'_>) -> Result<Option<Product>> {
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .product(self.id)
            .await
            .map_err(error::read)?
            .map(Product))
    }
}

/// Result of an order mutation.
pub struct OrderPayload {
    at: LogPoint,
    id: Uuid,
    /// The order as the command's own event makes it (`placeOrder`; None when the
    /// outcome is an idempotent replay, which reads the order as it is now).
    written: Option<std::sync::Arc<OrderView>>,
}

impl OrderPayload {
    /// The payload of a command on order `id` whose events end at `at`.
    pub(super) fn new(at: LogPoint, id: Uuid) -> Self {
        Self {
            at,
            id,
            written: None,
        }
    }
}

/// Result of an order mutation.
#[Object]
impl OrderPayload {
    /// Send as `X-Consistency-Token` to read your own write.
    async fn consistency_token(&self) -> String {
        self.at.to_token()
    }
    /// Global id of the order (available at once, without waiting for the read model).
    async fn order_id(&self) -> ID {
        ids::id(Kind::Order, self.id)
    }
    /// The order after the change.
    async fn order(&self, ctx: &Context<'_>) -> Result<Option<Order>> {
        if let Some(view) = &self.written {
            return Ok(Some(Order::written(view.clone(), self.at)));
        }
        let reads = caught_up(ctx, self.at).await?;
        Ok(reads
            .order(self.id)
            .await
            .map_err(error::read)?
            .map(Order::from))
    }
}

/// Runs a command, or, when a stored idempotent result is being rendered again,
/// returns the outcome it recorded without running anything.
pub(super) async fn perform<T, F>(ctx: &Context<'_>, command: F) -> Result<Outcome<T>>
where
    T: DeserializeOwned,
    F: std::future::Future<Output = std::result::Result<Outcome<T>, till_domain::DomainError>>,
{
    if let Some(Replay(stored)) = ctx.data_opt::<Replay>() {
        let at = stored["at"].as_str().and_then(LogPoint::from_token);
        let value = serde_json::from_value::<T>(stored["value"].clone()).ok();
        return match (at, value) {
            (Some(at), Some(value)) => Ok(Outcome { value, at }),
            _ => Err(error::domain(till_domain::DomainError::Internal(
                "a stored idempotent outcome does not decode".into(),
            ))),
        };
    }
    let out = command.await.map_err(error::domain)?;
    if let Ok(st) = state(ctx) {
        st.commits.committed(out.at.tx_id);
    }
    Ok(out)
}

fn parse<T>(r: std::result::Result<T, till_domain::DomainError>) -> Result<T> {
    r.map_err(error::domain)
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
