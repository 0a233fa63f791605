//! Persisted documents. In trusted-documents mode only operations from a manifest
//! registered at deploy time run (by hash, or by full text whose hash is listed);
//! otherwise Automatic Persisted Queries (Apollo's protocol: `extensions.persistedQuery
//! { version: 1, sha256Hash }`) let clients send a hash instead of the document once
//! the server has seen it. The APQ store is bounded by bytes.
//!
//! Parsed documents are cached by their text (bounded by weight), so a storefront that
//! sends the same few operations does not pay the parser on every request; only
//! documents that parse are kept, and the limits that look at a document (depth,
//! aliases, root fields, complexity) still run on every request, except the alias and
//! root-field limits of fixed-cost queries seen before, which depend on the text alone. An entry also
//! remembers whether its document once passed full validation, so that queries sent
//! again skip the rules that depend on the document alone, and the document's cost when
//! that does not depend on the variables (see [`super::engine`]).
//!
//! Why over 400 lines: a quarter of it is its unit tests.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
};
use async_graphql::{Request, Variables};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::graphql::error::Code;

/// Where documents come from, and the parsed forms of recent ones.
pub struct Documents {
    source: Source,
    parsed: moka::sync::Cache<String, Arc<Parsed>>,
}

/// A parsed document, whether it has passed full validation, and its cost when that
/// does not depend on the variables.
pub struct Parsed {
    document: ExecutableDocument,
    validated: AtomicBool,
    fixed_cost: OnceLock<usize>,
}

impl Parsed {
    /// True once a request running this document passed full validation: every rule
    /// that looks at the document alone holds (the schema does not change while the
    /// process runs).
    pub fn validated(&self) -> bool {
        self.validated.load(Ordering::Acquire)
    }

    /// Records that the document passed full validation, with its cost when that is
    /// fixed (see [`super::fixed_cost`]).
    pub fn mark_validated(&self, fixed_cost: Option<usize>) {
        if let Some(cost) = fixed_cost {
            let _ = self.fixed_cost.set(cost);
        }
        self.validated.store(true, Ordering::Release);
    }

    /// The cost of a validated document whose cost does not depend on the variables.
    pub fn fixed_cost(&self) -> Option<usize> {
        self.fixed_cost.get().copied()
    }

    /// The name of the operation a request selects, as the executor resolves it: the
    /// requested one, else the only one when it is named.
    pub fn operation_name<'a>(&'a self, requested: Option<&'a str>) -> Option<&'a str> {
        match (&self.document.operations, requested) {
            (_, Some(name)) => Some(name),
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                ops.keys().next().map(|n| n.as_str())
            }
            _ => None,
        }
    }

    /// The operation a request selects (by `operation_name`), if the document has it.
    fn selected(&self, operation_name: Option<&str>) -> Option<&OperationDefinition> {
        let op = match (&self.document.operations, operation_name) {
            (DocumentOperations::Single(op), None) => Some(op),
            // The executor refuses a name for an unnamed operation.
            (DocumentOperations::Single(_), Some(_)) => None,
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
            (DocumentOperations::Multiple(_), None) => None,
        };
        op.map(|op| &op.node)
    }

    /// True when the operation a request selects (by `operation_name`) is a query.
    pub fn selects_query(&self, operation_name: Option<&str>) -> bool {
        self.selected(operation_name)
            .is_some_and(|op| op.ty == OperationType::Query)
    }

    /// The first variable of the selected operation that is required (non-null, no
    /// default) but missing from `variables`: its name and type. The spec makes that a
    /// request error; async-graphql only notices when an argument reads it, as an error
    /// on that field.
    pub fn missing_variable(
        &self,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<(String, String)> {
        self.selected(operation_name)?
            .variable_definitions
            .iter()
            .map(|d| &d.node)
            .find(|d| {
                !d.var_type.node.nullable
                    && d.default_value.is_none()
                    && !variables.contains_key(&d.name.node)
            })
            .map(|d| (d.name.node.to_string(), d.var_type.node.to_string()))
    }

    /// The parsed document.
    pub fn document(&self) -> &ExecutableDocument {
        &self.document
    }
}

/// A request ready to run, with its cached parse when its document parses.
pub struct Operation {
    /// The async-graphql request (carrying a copy of the parsed document).
    pub request: Request,
    /// The cache entry of its document.
    pub parsed: Option<Arc<Parsed>>,
}

impl Operation {
    /// Adds request data.
    pub fn data<D: std::any::Any + Send + Sync>(mut self, data: D) -> Self {
        self.request = self.request.data(data);
        self
    }
}

enum Source {
    /// Only these (hash -> document) run.
    Trusted(HashMap<String, Arc<str>>),
    /// Any document; hashes of documents seen before resolve from this cache.
    Automatic(moka::sync::Cache<String, Arc<str>>),
}

/// Weight bound of the parsed-document cache: a parsed document is counted as
/// [`PARSED_WEIGHT_PER_BYTE`] times its text.
const PARSED_MAX_WEIGHT: u64 = 32 * 1024 * 1024;
const PARSED_WEIGHT_PER_BYTE: usize = 16;

/// Why a request's document could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// Error code.
    pub code: Code,
    /// Message for the client.
    pub message: String,
}

fn refused(code: Code, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// Lowercase hex SHA-256 of a document.
pub fn sha256_hex(document: &str) -> String {
    Sha256::digest(document.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Documents {
    /// Automatic Persisted Queries holding at most `max_bytes` of documents.
    pub fn automatic(max_bytes: u64) -> Self {
        Self::from_source(Source::Automatic(
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Arc<str>| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
        ))
    }

    fn from_source(source: Source) -> Self {
        Self {
            source,
            parsed: moka::sync::Cache::builder()
                .max_capacity(PARSED_MAX_WEIGHT)
                .weigher(|k: &String, _: &Arc<Parsed>| {
                    u32::try_from(k.len().saturating_mul(PARSED_WEIGHT_PER_BYTE))
                        .unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// A request running `query`, carrying its parsed form when the document parses
    /// (from the cache when it was seen before). A document that does not parse is left
    /// to the executor, which reports the syntax error as usual.
    pub fn request(&self, query: String) -> Operation {
        let cached = self.parsed.get(query.as_str());
        let parsed = match cached {
            Some(parsed) => Some(parsed),
            None => match async_graphql::parser::parse_query(&query) {
                Ok(document) => {
                    let parsed = Arc::new(Parsed {
                        document,
                        validated: AtomicBool::new(false),
                        fixed_cost: OnceLock::new(),
                    });
                    self.parsed.insert(query.clone(), parsed.clone());
                    Some(parsed)
                }
                Err(_) => None,
            },
        };
        let mut request = Request::new(query);
        if let Some(parsed) = &parsed {
            request.set_parsed_query(parsed.document.clone());
        }
        Operation { request, parsed }
    }

    /// Reads a manifest: a JSON object mapping each document's SHA-256 (hex) to its
    /// text. Every hash is checked.
    pub fn trusted(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("trusted documents {}: {e}", path.display()))?;
        let map: HashMap<String, String> = serde_json::from_str(&text).map_err(|e| {
            format!(
                "trusted documents {}: expected {{\"<sha256>\": \"<document>\"}}: {e}",
                path.display()
            )
        })?;
        let mut docs = HashMap::with_capacity(map.len());
        for (hash, doc) in map {
            let hash = hash.strip_prefix("sha256:").unwrap_or(&hash).to_lowercase();
            if sha256_hex(&doc) != hash {
                return Err(format!(
                    "trusted documents {}: {hash} is not the SHA-256 of its document",
                    path.display()
                ));
            }
            docs.insert(hash, Arc::from(doc));
        }
        Ok(Self::from_source(Source::Trusted(docs)))
    }

    /// The document a request runs: its `query`, or the one its persisted-query hash
    /// names.
    pub fn resolve(
        &self,
        query: Option<String>,
        extensions: Option<&Value>,
    ) -> Result<String, Refused> {
        let persisted = extensions.and_then(|e| e.get("persistedQuery"));
        let hash = match persisted {
            None => None,
            Some(p) => {
                if p.get("version").and_then(Value::as_i64) != Some(1) {
                    return Err(refused(
                        Code::BadUserInput,
                        "persistedQuery.version must be 1",
                    ));
                }
                let h = p
                    .get("sha256Hash")
                    .and_then(Value::as_str)
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| {
                        refused(
                            Code::BadUserInput,
                            "persistedQuery.sha256Hash must be 64 hex digits",
                        )
                    })?;
                Some(h.to_ascii_lowercase())
            }
        };
        if let (Some(q), Some(h)) = (&query, &hash) {
            if sha256_hex(q) != *h {
                return Err(refused(
                    Code::BadUserInput,
                    "provided sha does not match query",
                ));
            }
        }
        match &self.source {
            Source::Trusted(docs) => {
                let h = match (&hash, &query) {
                    (Some(h), _) => h.clone(),
                    (None, Some(q)) => sha256_hex(q),
                    (None, None) => return Err(refused(Code::BadUserInput, "`query` is required")),
                };
                match docs.get(&h) {
                    Some(doc) => Ok(doc.to_string()),
                    None if query.is_some() => Err(refused(
                        Code::Forbidden,
                        "this server only runs trusted documents, and this one is not registered",
                    )),
                    None => Err(refused(
                        Code::PersistedQueryNotFound,
                        "PersistedQueryNotFound",
                    )),
                }
            }
            Source::Automatic(cache) => match (query, hash) {
                (Some(q), Some(h)) => {
                    cache.insert(h, Arc::from(q.as_str()));
                    Ok(q)
                }
                (Some(q), None) => Ok(q),
                (None, Some(h)) => cache
                    .get(&h)
                    .map(|d| d.to_string())
                    .ok_or_else(|| refused(Code::PersistedQueryNotFound, "PersistedQueryNotFound")),
                (None, None) => Err(refused(Code::BadUserInput, "`query` is required")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DOC: &str = "{ categories { name } }";

    fn ext(hash: &str) -> Value {
        json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
    }

    #[test]
    fn automatic_persisted_queries_register_then_resolve() {
        let docs = Documents::automatic(1024 * 1024);
        let h = sha256_hex(DOC);
        assert_eq!(
            docs.resolve(None, Some(&ext(&h))).err().map(|r| r.code),
            Some(Code::PersistedQueryNotFound)
        );
        assert_eq!(
            docs.resolve(Some(DOC.into()), Some(&ext(&h)))
                .ok()
                .as_deref(),
            Some(DOC)
        );
        assert_eq!(
            docs.resolve(None, Some(&ext(&h))).ok().as_deref(),
            Some(DOC)
        );
        // A hash that is not the document's cannot poison the store.
        let other = sha256_hex("{ __typename }");
        assert_eq!(
            docs.resolve(Some(DOC.into()), Some(&ext(&other)))
                .err()
                .map(|r| r.code),
            Some(Code::BadUserInput)
        );
    }

    #[test]
    fn trusted_mode_runs_only_the_manifest() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("till-docs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("manifest.json");
        let manifest = json!({ sha256_hex(DOC): DOC }).to_string();
        std::fs::write(&path, manifest).map_err(|e| e.to_string())?;
        let docs = Documents::trusted(&path)?;
        let h = sha256_hex(DOC);
        assert_eq!(
            docs.resolve(None, Some(&ext(&h))).ok().as_deref(),
            Some(DOC)
        );
        assert_eq!(
            docs.resolve(Some(DOC.into()), None).ok().as_deref(),
            Some(DOC)
        );
        assert_eq!(
            docs.resolve(Some("{ __schema { types { name } } }".into()), None)
                .err()
                .map(|r| r.code),
            Some(Code::Forbidden)
        );
        std::fs::write(&path, json!({ "00": DOC }).to_string()).map_err(|e| e.to_string())?;
        assert!(Documents::trusted(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[tokio::test]
    async fn parsed_documents_are_reused_and_syntax_errors_still_reported() -> Result<(), String> {
        let docs = Documents::automatic(1024 * 1024);
        let mut first = docs.request(DOC.to_owned()).request;
        assert!(first.parsed_query().is_ok());
        docs.parsed.run_pending_tasks();
        assert_eq!(docs.parsed.entry_count(), 1);
        let _again = docs.request(DOC.to_owned());
        docs.parsed.run_pending_tasks();
        assert_eq!(docs.parsed.entry_count(), 1, "the same text is one entry");

        // A document that does not parse is not cached, and the executor still says why.
        let broken = docs.request("{ categories { name }".to_owned());
        assert!(broken.parsed.is_none());
        let broken = broken.request;
        docs.parsed.run_pending_tasks();
        assert_eq!(docs.parsed.entry_count(), 1);
        let response = Probe::schema().execute(broken).await;
        let message = response
            .errors
            .first()
            .map(|e| e.message.clone())
            .ok_or("no syntax error")?;
        assert!(message.contains("expected"), "{message}");
        Ok(())
    }

    struct Probe;

    #[async_graphql::Object]
    impl Probe {
        async fn categories(&self) -> Vec<i32> {
            Vec::new()
        }
    }

    impl Probe {
        fn schema() -> async_graphql::Schema<
            Probe,
            async_graphql::EmptyMutation,
            async_graphql::EmptySubscription,
        > {
            async_graphql::Schema::new(
                Probe,
                async_graphql::EmptyMutation,
                async_graphql::EmptySubscription,
            )
        }
    }
}
