//! Which documents cost the same whatever their variables.
//!
//! A field's cost depends on the request only through a complexity function (the
//! connections' `first.unwrap_or(20) * child_complexity + 1`), and only when one of its
//! arguments is a variable; every other part of a document's cost, and its depth, is
//! fixed by its text. A document with one operation and no such argument is priced once,
//! on its first full run, and later runs of it are charged that cost and skip the
//! guard extension (see [`super::engine::Engine::execute_one`]).
//!
//! The check is by field name across every type, so a field is taken as priced by its
//! arguments when a field of that name is anywhere in the schema: it may call a fixed
//! document variable, never the other way round.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::registry::{MetaType, Registry};

/// Names of the fields, on any type, whose cost is computed by a function (which may
/// read their arguments).
pub fn priced_by_arguments(registry: &Registry) -> HashSet<String> {
    registry
        .types
        .values()
        .filter_map(|t| match t {
            MetaType::Object { fields, .. } | MetaType::Interface { fields, .. } => Some(fields),
            _ => None,
        })
        .flat_map(|fields| fields.values())
        .filter(|f| f.compute_complexity.is_some())
        .map(|f| f.name.clone())
        // Federation's `_entities` is priced by its references (see `guard`).
        .chain(std::iter::once("_entities".to_owned()))
        .collect()
}

/// True when `doc` has one operation and no field in it (or in its fragments) that is
/// priced by its arguments takes a variable.
pub fn is_fixed(doc: &ExecutableDocument, priced: &HashSet<String>) -> bool {
    let one = match &doc.operations {
        DocumentOperations::Single(_) => true,
        DocumentOperations::Multiple(ops) => ops.len() == 1,
    };
    one && doc
        .operations
        .iter()
        .all(|(_, op)| fixed(&op.node.selection_set.node, priced))
        && doc
            .fragments
            .values()
            .all(|f| fixed(&f.node.selection_set.node, priced))
}

fn fixed(set: &SelectionSet, priced: &HashSet<String>) -> bool {
    set.items.iter().all(|s| match &s.node {
        Selection::Field(f) => {
            let field = &f.node;
            (!priced.contains(field.name.node.as_str())
                || field
                    .arguments
                    .iter()
                    // No variable in it (first sight only: this clones the value).
                    .all(|(_, v)| v.node.clone().into_const().is_some()))
                && fixed(&field.selection_set.node, priced)
        }
        Selection::FragmentSpread(_) => true,
        Selection::InlineFragment(i) => fixed(&i.node.selection_set.node, priced),
    })
}

/// Request data of a document's first full run: the guard notes here whether the
/// document's cost is fixed and, after validation, what it is.
#[derive(Debug, Default)]
pub struct FirstSight {
    fixed: AtomicBool,
    cost: OnceLock<usize>,
}

impl FirstSight {
    /// The document's cost, when it does not depend on the variables and was computed.
    pub fn fixed_cost(&self) -> Option<usize> {
        self.cost.get().copied()
    }

    pub(super) fn note_fixed(&self) {
        self.fixed.store(true, Ordering::Relaxed);
    }

    pub(super) fn note_cost(&self, cost: usize) {
        if self.fixed.load(Ordering::Relaxed) {
            let _ = self.cost.set(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn priced() -> HashSet<String> {
        ["products", "myOrders"].map(String::from).into()
    }

    fn check(doc: &str) -> bool {
        match parse_query(doc) {
            Ok(d) => is_fixed(&d, &priced()),
            Err(e) => panic!("{doc}: {e}"),
        }
    }

    #[test]
    fn variables_outside_priced_fields_leave_the_cost_fixed() {
        assert!(check("query P($id: ID!) { product(id: $id) { id name } }"));
        assert!(check("{ products(first: 20) { edges { node { id } } } }"));
        assert!(check(
            "query O($c: ID) { myOrders(first: 10) { edges { node { product(id: $c) { id } } } } }"
        ));
        assert!(check(
            "query P($s: Boolean!) { product(id: \"x\") @skip(if: $s) { id } }"
        ));
    }

    #[test]
    fn a_variable_in_a_priced_field_makes_the_cost_vary() {
        assert!(!check(
            "query P($n: Int) { products(first: $n) { edges { node { id } } } }"
        ));
        assert!(!check(
            "query P($c: ID) { products(first: 5, filter: { category: $c }) { edges { node { id } } } }"
        ));
        assert!(!check(
            "query P($c: [ID!]) { products(filter: { ids: [\"a\", $c] }) { edges { node { id } } } }"
        ));
        // Inside an inline fragment, and inside a named fragment (even one that only
        // another operation would use).
        assert!(!check(
            "query P($n: Int) { ... on Query { products(first: $n) { edges { node { id } } } } }"
        ));
        assert!(!check(
            "query P($n: Int) { ...F } fragment F on Query { myOrders(first: $n) { edges { node { id } } } }"
        ));
    }

    #[test]
    fn documents_with_several_operations_are_not_fixed() {
        assert!(!check(
            "query A { product(id: \"1\") { id } } query B { categories { id } }"
        ));
    }

    #[test]
    fn the_cost_is_kept_only_for_a_fixed_document() {
        let seen = FirstSight::default();
        seen.note_cost(12);
        assert_eq!(seen.fixed_cost(), None);
        let seen = FirstSight::default();
        seen.note_fixed();
        seen.note_cost(12);
        assert_eq!(seen.fixed_cost(), Some(12));
    }

    #[tokio::test]
    async fn the_guard_prices_a_fixed_document_on_first_sight() {
        // The real schema's registry: connections are priced by their arguments,
        // `product(id:)` is not. (No resolver state: execution fails after validation.)
        let schema = crate::graphql::build(None, crate::graphql::open_limits());
        let run = |doc: &'static str, variables: serde_json::Value| {
            let schema = schema.clone();
            async move {
                let seen = std::sync::Arc::new(FirstSight::default());
                let request = async_graphql::Request::new(doc)
                    .variables(async_graphql::Variables::from_json(variables))
                    .data(seen.clone());
                let _ = schema.execute(request).await;
                seen.fixed_cost()
            }
        };
        let product = "query P($id: ID!) { product(id: $id) { id name price { amount } } }";
        let cost = run(product, serde_json::json!({ "id": "x" })).await;
        assert_eq!(cost, Some(5));
        let literal = "{ products(first: 3) { edges { node { id } } } }";
        assert!(run(literal, serde_json::json!({})).await.is_some());
        let by_variable = "query P($n: Int) { products(first: $n) { edges { node { id } } } }";
        assert_eq!(run(by_variable, serde_json::json!({ "n": 3 })).await, None);
        let orders = "query O($n: Int) { myOrders(first: $n) { edges { node { id } } } }";
        assert_eq!(run(orders, serde_json::json!({ "n": 3 })).await, None);
    }
}
