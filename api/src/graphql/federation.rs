//! Apollo Federation v2: the entities another subgraph may reference or extend, and
//! how a gateway's `_entities` call finds them.
//!
//! Each entity resolver answers as `node(id:)` does (same read models and cache, same
//! visibility: null for a product not for sale, another customer's order or account),
//! so a gateway that forwards the caller's `Authorization` header gets exactly what the
//! caller could read from Till directly. Keys: `Product` by `id` and by `sku`, `Order`,
//! `Customer` and `Category` by `id` (Relay global ids, as Till hands them out).
//!
//! The resolvers live in their own query object, merged into the root only when
//! `TILL_FEDERATION` is on: async-graphql adds `_service` and `_entities` to any schema
//! with an entity resolver, and the plain schema stays without them.

use async_graphql::{Context, MergedObject, Object, Result, ID};

use super::error;
use super::ids::{self, Kind};
#[cfg(doc)]
use super::query::Query;
use super::query::{find, is_visible, StoreQuery};
use super::types::catalog::{Category, Product};
use super::types::customer::Customer;
use super::types::node::Node;
use super::types::order::Order;
use super::{principal, reads};

/// The query root of the federated schema: the parts of [`Query`], and the entity
/// resolvers (named `Query` too: a gateway sees one query root).
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct FederatedQuery(
    StoreQuery,
    super::jobs::JobsQuery,
    super::projections::ProjectionsQuery,
    Entities,
);

/// The object a reference names by global id, when the caller may see it (as
/// `node(id:)`), and when it is of the referenced type.
async fn referenced<T>(
    ctx: &Context<'_>,
    kind: Kind,
    id: &ID,
    pick: impl FnOnce(Node) -> Option<T>,
) -> Result<Option<T>> {
    let uuid = ids::decode(kind, id, "id")?;
    Ok(find(ctx, kind, uuid).await?.and_then(pick))
}

/// Reference resolvers of the entities (`_entities` only, no fields of their own).
#[derive(Default)]
pub struct Entities;

#[Object]
impl Entities {
    /// A product referenced by its global id.
    #[graphql(entity)]
    async fn find_product_by_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(key)] id: ID,
    ) -> Result<Option<Product>> {
        referenced(ctx, Kind::Product, &id, |n| match n {
            Node::Product(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// A product referenced by its SKU.
    #[graphql(entity)]
    async fn find_product_by_sku(
        &self,
        ctx: &Context<'_>,
        #[graphql(key)] sku: String,
    ) -> Result<Option<Product>> {
        let view = reads(ctx)?
            .product_by_sku(sku.trim())
            .await
            .map_err(error::read)?;
        let me = principal(ctx)?;
        Ok(view.filter(|p| is_visible(&me, &p.status)).map(Product))
    }

    /// An order referenced by its global id (its customer's or staff's to see).
    #[graphql(entity)]
    async fn find_order_by_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(key)] id: ID,
    ) -> Result<Option<Order>> {
        referenced(ctx, Kind::Order, &id, |n| match n {
            Node::Order(o) => Some(o),
            _ => None,
        })
        .await
    }

    /// A customer account referenced by its global id (its own or staff's to see).
    #[graphql(entity)]
    async fn find_customer_by_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(key)] id: ID,
    ) -> Result<Option<Customer>> {
        referenced(ctx, Kind::Customer, &id, |n| match n {
            Node::Customer(c) => Some(c),
            _ => None,
        })
        .await
    }

    /// A category referenced by its global id.
    #[graphql(entity)]
    async fn find_category_by_id(
        &self,
        ctx: &Context<'_>,
        #[graphql(key)] id: ID,
    ) -> Result<Option<Category>> {
        referenced(ctx, Kind::Category, &id, |n| match n {
            Node::Category(c) => Some(c),
            _ => None,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::graphql::{build_serving, open_limits, Checks};

    async fn query_fields(federation: bool) -> Vec<String> {
        let schema = build_serving(None, open_limits(), Checks::AllRules, federation);
        let r = schema
            .execute("{ __type(name: \"Query\") { fields { name } } }")
            .await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let json = r.data.into_json().unwrap_or_default();
        let mut names: Vec<String> = json["__type"]["fields"]
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// `FederatedQuery` lists `Query`'s parts again: a part added to one and not the
    /// other fails here.
    #[tokio::test]
    async fn the_federated_root_has_every_query_and_the_federation_fields() {
        let plain = query_fields(false).await;
        assert!(plain.contains(&"products".to_owned()), "{plain:?}");
        let mut federated = query_fields(true).await;
        for field in ["_entities", "_service"] {
            let at = federated.iter().position(|f| f == field);
            assert!(at.is_some(), "{field} missing from {federated:?}");
            federated.retain(|f| f != field);
        }
        assert_eq!(plain, federated);
    }
}
