//! The request timeout: a query that runs longer than the bound is cut short with
//! TIMEOUT (reads have no effects to leave half done). Mutations always run to the
//! end, so a client never has to guess whether a cut-short command committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, Variables};

use super::error::Code;

/// Extension factory: queries get at most this long.
pub struct QueryTimeout(pub Duration);

impl ExtensionFactory for QueryTimeout {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerRequest {
            limit: self.0,
            operations: Mutex::new(HashMap::new()),
        })
    }
}

struct PerRequest {
    limit: Duration,
    /// Operation name (None for an anonymous one) -> its type.
    operations: Mutex<HashMap<Option<String>, OperationType>>,
}

#[async_trait::async_trait]
impl Extension for PerRequest {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if let Ok(mut ops) = self.operations.lock() {
            for (name, op) in doc.operations.iter() {
                ops.insert(name.map(|n| n.to_string()), op.node.ty);
            }
        }
        Ok(doc)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let ty = self
            .operations
            .lock()
            .ok()
            .and_then(|ops| match operation_name {
                Some(name) => ops.get(&Some(name.to_owned())).copied(),
                None if ops.len() == 1 => ops.values().next().copied(),
                None => None,
            });
        if ty != Some(OperationType::Query) {
            return next.run(ctx, operation_name).await;
        }
        match tokio::time::timeout(self.limit, next.run(ctx, operation_name)).await {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(
                    ?operation_name,
                    limit_ms = self.limit.as_millis() as u64,
                    "query timed out"
                );
                let mut e = ServerError::new(
                    format!(
                        "the query ran longer than {} ms and was stopped; ask for less",
                        self.limit.as_millis()
                    ),
                    None,
                );
                let mut ext = async_graphql::ErrorExtensionValues::default();
                ext.set("code", Code::Timeout.as_str());
                e.extensions = Some(ext);
                Response::from_errors(vec![e])
            }
        }
    }
}
