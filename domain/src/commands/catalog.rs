//! Catalog commands: categories and products.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{on_unique, CommandContext, Commands, Outcome};
use crate::error::DomainError;
use crate::events::{DomainEvent, StockLevel};
use crate::schema::{categories, inventory, products};
use crate::types::{
    CategoryId, Description, Money, Name, ProductId, ProductStatus, Sku, Slug, StockDelta,
};

/// Input of `create_category`.
#[derive(Debug, Clone)]
pub struct NewCategory {
    /// URL-safe unique slug.
    pub slug: Slug,
    /// Display name.
    pub name: Name,
    /// Parent category, if any.
    pub parent: Option<CategoryId>,
}

/// Input of `create_product`.
#[derive(Debug, Clone)]
pub struct NewProduct {
    /// Unique SKU.
    pub sku: Sku,
    /// Display name.
    pub name: Name,
    /// Long text.
    pub description: Description,
    /// Category it belongs to.
    pub category: CategoryId,
    /// Unit price.
    pub price: Money,
    /// Initial status (DRAFT or ACTIVE).
    pub status: ProductStatus,
    /// Units on hand at creation.
    pub initial_stock: Option<StockDelta>,
}

/// Input of `update_product`: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProductPatch {
    /// New name.
    pub name: Option<Name>,
    /// New description.
    pub description: Option<Description>,
    /// New category.
    pub category: Option<CategoryId>,
    /// New price.
    pub price: Option<Money>,
    /// New status (DRAFT or ACTIVE; archiving has its own command).
    pub status: Option<ProductStatus>,
}

#[derive(Queryable)]
struct ProductRow {
    sku: String,
    name: String,
    description: String,
    category_id: uuid::Uuid,
    price_minor: i64,
    status: String,
    version: i32,
}

async fn category_exists(
    conn: &mut diesel_async::AsyncPgConnection,
    id: CategoryId,
) -> Result<bool, DomainError> {
    let found: Option<uuid::Uuid> = categories::table
        .find(id.0)
        .select(categories::id)
        .first(conn)
        .await
        .optional()?;
    Ok(found.is_some())
}

async fn lock_product(
    conn: &mut diesel_async::AsyncPgConnection,
    id: ProductId,
) -> Result<ProductRow, DomainError> {
    products::table
        .find(id.0)
        .select((
            products::sku,
            products::name,
            products::description,
            products::category_id,
            products::price_minor,
            products::status,
            products::version,
        ))
        .for_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| DomainError::not_found("product", id))
}

fn check_version(row: &ProductRow, expected: Option<i32>) -> Result<(), DomainError> {
    match expected {
        Some(v) if v != row.version => Err(DomainError::Conflict(format!(
            "product {} was changed meanwhile: expected version {v}, current version {}",
            row.sku, row.version
        ))),
        _ => Ok(()),
    }
}

impl Commands {
    /// Creates a category under an optional parent.
    #[tracing::instrument(name = "command", skip_all, fields(command = "create_category"))]
    pub async fn create_category(
        &self,
        ctx: &CommandContext,
        input: NewCategory,
    ) -> Result<Outcome<CategoryId>, DomainError> {
        ctx.require_staff()?;
        self.execute(ctx, async |conn| {
            if let Some(parent) = input.parent {
                if !category_exists(conn, parent).await? {
                    return Err(DomainError::not_found("category", parent));
                }
            }
            let id = CategoryId::new();
            diesel::insert_into(categories::table)
                .values((
                    categories::id.eq(id.0),
                    categories::slug.eq(input.slug.as_str()),
                    categories::name.eq(input.name.as_str()),
                    categories::parent_id.eq(input.parent.map(|p| p.0)),
                ))
                .execute(conn)
                .await
                .map_err(|e| {
                    on_unique(e, "categories_slug_key", || {
                        DomainError::Conflict(format!(
                            "a category with slug {} already exists",
                            input.slug.as_str()
                        ))
                    })
                })?;
            Ok((
                id,
                vec![DomainEvent::CategoryCreated {
                    category_id: id.0,
                    slug: input.slug.as_str().to_owned(),
                    name: input.name.as_str().to_owned(),
                    parent_id: input.parent.map(|p| p.0),
                }],
            ))
        })
        .await
    }

    /// Creates a product with its inventory row.
    #[tracing::instrument(name = "command", skip_all, fields(command = "create_product"))]
    pub async fn create_product(
        &self,
        ctx: &CommandContext,
        input: NewProduct,
    ) -> Result<Outcome<ProductId>, DomainError> {
        ctx.require_staff()?;
        if input.status == ProductStatus::Archived {
            return Err(DomainError::Validation {
                field: "status",
                message: "a new product is DRAFT or ACTIVE".into(),
            });
        }
        self.execute(ctx, async |conn| {
            if !category_exists(conn, input.category).await? {
                return Err(DomainError::not_found("category", input.category));
            }
            let id = ProductId::new();
            let now = Utc::now();
            diesel::insert_into(products::table)
                .values((
                    products::id.eq(id.0),
                    products::sku.eq(input.sku.as_str()),
                    products::name.eq(input.name.as_str()),
                    products::description.eq(input.description.as_str()),
                    products::category_id.eq(input.category.0),
                    products::price_minor.eq(input.price.minor()),
                    products::status.eq(input.status.as_str()),
                    products::version.eq(1),
                    products::created_at.eq(now),
                    products::updated_at.eq(now),
                ))
                .execute(conn)
                .await
                .map_err(|e| {
                    on_unique(e, "products_sku_key", || {
                        DomainError::Conflict(format!(
                            "a product with SKU {} already exists",
                            input.sku.as_str()
                        ))
                    })
                })?;
            let on_hand = input.initial_stock.map(StockDelta::get).unwrap_or(0);
            let inv_version = i64::from(on_hand > 0);
            diesel::insert_into(inventory::table)
                .values((
                    inventory::product_id.eq(id.0),
                    inventory::on_hand.eq(on_hand),
                    inventory::reserved.eq(0),
                    inventory::version.eq(inv_version),
                ))
                .execute(conn)
                .await?;
            let mut batch = vec![DomainEvent::ProductCreated {
                product_id: id.0,
                sku: input.sku.as_str().to_owned(),
                name: input.name.as_str().to_owned(),
                description: input.description.as_str().to_owned(),
                category_id: input.category.0,
                price_minor: input.price.minor(),
                status: input.status.as_str().to_owned(),
                version: 1,
                created_at: now,
            }];
            if on_hand > 0 {
                batch.push(DomainEvent::InventoryRestocked {
                    product_id: id.0,
                    quantity: on_hand,
                    stock: StockLevel {
                        on_hand,
                        reserved: 0,
                        version: inv_version,
                    },
                });
            }
            Ok((id, batch))
        })
        .await
    }

    /// Changes a product's fields; with `expected_version` it fails with CONFLICT when
    /// someone else changed the product first (optimistic concurrency).
    #[tracing::instrument(name = "command", skip_all, fields(command = "update_product"))]
    pub async fn update_product(
        &self,
        ctx: &CommandContext,
        id: ProductId,
        expected_version: Option<i32>,
        patch: ProductPatch,
    ) -> Result<Outcome<ProductId>, DomainError> {
        ctx.require_staff()?;
        if patch.status == Some(ProductStatus::Archived) {
            return Err(DomainError::Validation {
                field: "status",
                message: "use archiveProduct to archive a product".into(),
            });
        }
        self.execute(ctx, async |conn| {
            let row = lock_product(conn, id).await?;
            check_version(&row, expected_version)?;
            if row.status == ProductStatus::Archived.as_str() {
                return Err(DomainError::InvalidState(format!(
                    "product {} is archived and cannot be changed",
                    row.sku
                )));
            }
            if let Some(cat) = patch.category {
                if !category_exists(conn, cat).await? {
                    return Err(DomainError::not_found("category", cat));
                }
            }
            let name = patch
                .name
                .as_ref()
                .map(|n| n.as_str().to_owned())
                .unwrap_or(row.name);
            let description = patch
                .description
                .as_ref()
                .map(|d| d.as_str().to_owned())
                .unwrap_or(row.description);
            let category_id = patch.category.map(|c| c.0).unwrap_or(row.category_id);
            let price_minor = patch.price.map(Money::minor).unwrap_or(row.price_minor);
            let status = patch
                .status
                .map(|s| s.as_str().to_owned())
                .unwrap_or(row.status);
            let version = row.version + 1;
            diesel::update(products::table.find(id.0))
                .set((
                    products::name.eq(&name),
                    products::description.eq(&description),
                    products::category_id.eq(category_id),
                    products::price_minor.eq(price_minor),
                    products::status.eq(&status),
                    products::version.eq(version),
                    products::updated_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?;
            Ok((
                id,
                vec![DomainEvent::ProductUpdated {
                    product_id: id.0,
                    sku: row.sku,
                    name,
                    description,
                    category_id,
                    price_minor,
                    status,
                    version,
                }],
            ))
        })
        .await
    }

    /// Withdraws a product from sale (kept for order history).
    #[tracing::instrument(name = "command", skip_all, fields(command = "archive_product"))]
    pub async fn archive_product(
        &self,
        ctx: &CommandContext,
        id: ProductId,
        expected_version: Option<i32>,
    ) -> Result<Outcome<ProductId>, DomainError> {
        ctx.require_staff()?;
        self.execute(ctx, async |conn| {
            let row = lock_product(conn, id).await?;
            check_version(&row, expected_version)?;
            if row.status == ProductStatus::Archived.as_str() {
                return Err(DomainError::InvalidState(format!(
                    "product {} is already archived",
                    row.sku
                )));
            }
            let version = row.version + 1;
            diesel::update(products::table.find(id.0))
                .set((
                    products::status.eq(ProductStatus::Archived.as_str()),
                    products::version.eq(version),
                    products::updated_at.eq(Utc::now()),
                ))
                .execute(conn)
                .await?;
            Ok((
                id,
                vec![DomainEvent::ProductArchived {
                    product_id: id.0,
                    version,
                }],
            ))
        })
        .await
    }
}
