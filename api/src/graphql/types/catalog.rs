//! Products and categories.

use std::sync::Arc;

use async_graphql::{ComplexObject, Context, Enum, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use till_read_models::views::{CategoryRef, CategoryView, ProductView};

use super::money::Money;
use super::scalars::BigInt;
use crate::graphql::ids::{self, Kind};
use crate::graphql::{error, principal, state};

/// Lifecycle of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ProductStatus {
    /// Not yet for sale (visible to staff only).
    Draft,
    /// For sale.
    Active,
    /// Withdrawn from sale (visible to staff only).
    Archived,
}

impl From<ProductStatus> for till_domain::types::ProductStatus {
    fn from(s: ProductStatus) -> Self {
        match s {
            ProductStatus::Draft => Self::Draft,
            ProductStatus::Active => Self::Active,
            ProductStatus::Archived => Self::Archived,
        }
    }
}

impl ProductStatus {
    fn from_view(s: &str) -> Self {
        match s {
            "DRAFT" => Self::Draft,
            "ARCHIVED" => Self::Archived,
            _ => Self::Active,
        }
    }
}

/// Orderings of `products`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Default)]
pub enum ProductSortBy {
    /// Cheapest first.
    Price,
    /// Alphabetical by name.
    Name,
    /// Newest first.
    #[default]
    Newest,
    /// Most units sold first.
    Popular,
}

impl From<ProductSortBy> for till_read_models::queries::ProductSort {
    fn from(s: ProductSortBy) -> Self {
        match s {
            ProductSortBy::Price => Self::Price,
            ProductSortBy::Name => Self::Name,
            ProductSortBy::Newest => Self::Newest,
            ProductSortBy::Popular => Self::Popular,
        }
    }
}

/// Something for sale, with its category path, available stock and popularity.
pub struct Product(pub Arc<ProductView>);

/// A product in the catalog.
#[Object]
impl Product {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::id(Kind::Product, self.0.id)
    }
    /// Stock keeping unit, unique.
    async fn sku(&self) -> &str {
        &self.0.sku
    }
    /// Display name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Long description.
    async fn description(&self) -> &str {
        &self.0.description
    }
    /// Unit price.
    async fn price(&self, ctx: &Context<'_>) -> Result<Money> {
        Ok(Money::new(
            self.0.price_minor,
            state(ctx)?.currency.as_str(),
        ))
    }
    /// Unit price in minor units (shortcut for `price.amountMinor`).
    #[graphql(deprecation = "a 32-bit Int; use `price { minorUnits }`")]
    async fn price_minor(&self) -> i64 {
        self.0.price_minor
    }
    /// Lifecycle status.
    async fn status(&self) -> ProductStatus {
        ProductStatus::from_view(&self.0.status)
    }
    /// The category it belongs to.
    async fn category(&self) -> Option<Category> {
        self.0
            .category_path
            .last()
            .map(|c| Category::from_ref(c, &self.0.category_path))
    }
    /// Categories from the root down to this product's category.
    async fn category_path(&self) -> Vec<Category> {
        self.0
            .category_path
            .iter()
            .enumerate()
            .map(|(i, c)| Category::from_ref(c, &self.0.category_path[..=i]))
            .collect()
    }
    /// Units that can be ordered now.
    async fn available(&self) -> i32 {
        self.0.available
    }
    /// Whether any unit can be ordered now.
    async fn in_stock(&self) -> bool {
        self.0.available > 0
    }
    /// Units physically held (staff only).
    async fn on_hand(&self, ctx: &Context<'_>) -> Result<i32> {
        staff_only(ctx)?;
        Ok(self.0.on_hand)
    }
    /// Units reserved for unpaid orders (staff only).
    async fn reserved(&self, ctx: &Context<'_>) -> Result<i32> {
        staff_only(ctx)?;
        Ok(self.0.reserved)
    }
    /// Units sold (placed orders, net of cancelled, expired and failed ones).
    #[graphql(deprecation = "a 32-bit Int; use `unitsSold`")]
    async fn popularity(&self) -> i64 {
        self.0.popularity
    }
    /// Units sold over all time (placed orders, net of cancelled, expired and failed
    /// ones); `sortBy: POPULAR` orders by it.
    async fn units_sold(&self) -> BigInt {
        BigInt(self.0.popularity)
    }
    /// Version for optimistic concurrency (`updateProduct(expectedVersion:)`).
    async fn version(&self) -> i32 {
        self.0.version
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

fn staff_only(ctx: &Context<'_>) -> Result<()> {
    let p = principal(ctx)?;
    if p.is_staff() {
        Ok(())
    } else if p.user_id().is_none() {
        Err(error::unauthenticated())
    } else {
        Err(error::forbidden())
    }
}

/// A node of the category tree.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct Category {
    #[graphql(skip)]
    pub(crate) uuid: uuid::Uuid,
    /// URL-safe unique slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    #[graphql(skip)]
    pub(crate) path: Vec<CategoryRef>,
}

impl Category {
    fn from_ref(c: &CategoryRef, path: &[CategoryRef]) -> Self {
        Self {
            uuid: c.id,
            slug: c.slug.clone(),
            name: c.name.clone(),
            path: path.to_vec(),
        }
    }
}

impl From<CategoryView> for Category {
    fn from(v: CategoryView) -> Self {
        Self {
            uuid: v.id,
            slug: v.slug,
            name: v.name,
            path: v.path,
        }
    }
}

#[ComplexObject]
impl Category {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::id(Kind::Category, self.uuid)
    }
    /// The parent category, if any.
    async fn parent(&self) -> Option<Category> {
        let n = self.path.len();
        (n >= 2).then(|| Category::from_ref(&self.path[n - 2], &self.path[..n - 1]))
    }
    /// Categories from the root down to this one.
    async fn path(&self) -> Vec<Category> {
        self.path
            .iter()
            .enumerate()
            .map(|(i, c)| Category::from_ref(c, &self.path[..=i]))
            .collect()
    }
}
