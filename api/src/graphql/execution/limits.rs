//! Query limits beyond depth and complexity (which async-graphql checks itself): the
//! number of aliases in a document and of root fields in an operation. Both are
//! counted on the parsed document, before validation and execution, without
//! expanding fragments (so fragment cycles cannot make counting expensive).
//!
//! Federation's `_entities` is bounded too: at most [`MAX_REPRESENTATIONS`] entity
//! references in one request, and the request's cost is its static cost (which counts
//! one reference) times the references (see `guard`).

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensions, Pos, ServerError, ServerResult, Value, Variables};

use crate::graphql::error::Code;

/// The alias and root-field limits, from config.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// Most aliased fields in one document.
    pub max_aliases: usize,
    /// Most fields at the root of one operation.
    pub max_root_fields: usize,
    /// Highest complexity (async-graphql checks the static one; the guard checks it again
    /// once `_entities` is priced per reference).
    pub max_complexity: usize,
}

fn count_aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some()) + count_aliases(&f.node.selection_set.node)
            }
            Selection::InlineFragment(i) => count_aliases(&i.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

fn root_fields(doc: &ExecutableDocument, set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(i) => i.node.selection_set.node.items.len(),
            Selection::FragmentSpread(spread) => doc
                .fragments
                .get(&spread.node.fragment_name.node)
                .map(|f| f.node.selection_set.node.items.len())
                .unwrap_or(0),
        })
        .sum()
}

/// Most entity references (`_entities(representations:)`) in one request: as many as
/// the largest page of a connection.
pub const MAX_REPRESENTATIONS: usize = 100;

/// The entity references a document asks for: the length of every root `_entities`
/// field's `representations` (a list in the text or a variable). Root fields only, as the
/// field exists only on the query root; fragments spread at the root count once each.
pub(super) fn representations(doc: &ExecutableDocument, variables: &Variables) -> usize {
    let count = |set: &SelectionSet| -> usize {
        set.items
            .iter()
            .filter_map(|s| match &s.node {
                Selection::Field(f) if f.node.name.node == "_entities" => Some(&f.node),
                _ => None,
            })
            .map(|f| {
                let value = f.get_argument("representations").and_then(|v| {
                    v.node
                        .clone()
                        .into_const_with(|name| variables.get(&name).cloned().ok_or(()))
                        .ok()
                });
                match value {
                    Some(Value::List(items)) => items.len(),
                    _ => 0,
                }
            })
            .sum()
    };
    let roots = doc
        .operations
        .iter()
        .map(|(_, op)| count(&op.node.selection_set.node));
    let spread = doc.operations.iter().flat_map(|(_, op)| {
        op.node
            .selection_set
            .node
            .items
            .iter()
            .map(|s| match &s.node {
                Selection::InlineFragment(i) => count(&i.node.selection_set.node),
                Selection::FragmentSpread(spread) => doc
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .map(|f| count(&f.node.selection_set.node))
                    .unwrap_or(0),
                Selection::Field(_) => 0,
            })
    });
    roots.chain(spread).fold(0, usize::saturating_add)
}

fn limit_error(what: &'static str, message: String) -> ServerError {
    async_graphql::Error::new(message)
        .extend_with(|_, e| {
            e.set("code", Code::BadUserInput.as_str());
            e.set("limit", what);
        })
        .into_server_error(Pos::default())
}

impl DocumentLimits {
    /// Refuses a document with too many entity references (BAD_USER_INPUT).
    pub(super) fn check_representations(n: usize) -> ServerResult<()> {
        if n > MAX_REPRESENTATIONS {
            return Err(limit_error(
                "representations",
                format!(
                    "the request references {n} entities; at most {MAX_REPRESENTATIONS} are allowed"
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a cost over the complexity limit, once `_entities` is priced per
    /// reference (BAD_USER_INPUT).
    pub(super) fn check_complexity(&self, complexity: usize) -> Result<(), ServerError> {
        if complexity > self.max_complexity {
            return Err(limit_error(
                "complexity",
                format!(
                    "the request's complexity is {complexity}; at most {} is allowed",
                    self.max_complexity
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a document with too many aliases or root fields (BAD_USER_INPUT).
    pub(super) fn check(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let aliases: usize = doc
            .operations
            .iter()
            .map(|(_, op)| count_aliases(&op.node.selection_set.node))
            .chain(
                doc.fragments
                    .values()
                    .map(|f| count_aliases(&f.node.selection_set.node)),
            )
            .sum();
        if aliases > self.max_aliases {
            return Err(limit_error(
                "aliases",
                format!(
                    "the document has {aliases} aliases; at most {} are allowed",
                    self.max_aliases
                ),
            ));
        }
        for (_, op) in doc.operations.iter() {
            let n = root_fields(doc, &op.node.selection_set.node);
            if n > self.max_root_fields {
                return Err(limit_error(
                    "rootFields",
                    format!(
                        "an operation selects {n} root fields; at most {} are allowed",
                        self.max_root_fields
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str) -> Result<(), String> {
        let limits = DocumentLimits {
            max_aliases: 3,
            max_root_fields: 2,
            max_complexity: 100,
        };
        assert!(limits.check_complexity(100).is_ok());
        assert!(limits.check_complexity(101).is_err());
        let doc = async_graphql::parser::parse_query(query).map_err(|e| e.to_string())?;
        limits.check(&doc).map_err(|e| e.message)
    }

    fn references(query: &str, variables: serde_json::Value) -> usize {
        match async_graphql::parser::parse_query(query) {
            Ok(doc) => representations(&doc, &Variables::from_json(variables)),
            Err(e) => panic!("{query}: {e}"),
        }
    }

    #[test]
    fn entity_references_are_counted_in_text_variables_and_fragments() {
        let reps = serde_json::json!({ "r": [{ "__typename": "Product", "sku": "A" }, {}, {}] });
        let q = "query($r: [_Any!]!) { _entities(representations: $r) { __typename } }";
        assert_eq!(references(q, reps.clone()), 3);
        assert_eq!(
            references(
                "{ a: _entities(representations: [{}, {}]) { __typename } \
                 ...F } fragment F on Query { _entities(representations: [{}]) { __typename } }",
                serde_json::json!({})
            ),
            3
        );
        assert_eq!(
            references("{ categories { slug } }", serde_json::json!({})),
            0
        );
        assert!(DocumentLimits::check_representations(MAX_REPRESENTATIONS).is_ok());
        assert!(DocumentLimits::check_representations(MAX_REPRESENTATIONS + 1).is_err());
    }

    #[test]
    fn aliases_and_root_fields_are_counted() {
        assert!(check("{ a: categories { slug } b: categories { slug } }").is_ok());
        assert!(check("{ a: me { b: email c: name d: id } }").is_err());
        assert!(check("{ categories { slug } me { id } products { edges { cursor } } }").is_err());
        assert!(check(
            "{ ...F } fragment F on Query { categories { slug } me { id } x: me { id } }"
        )
        .is_err());
    }
}
