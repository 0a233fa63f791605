//! Per-operation concerns: metrics (count, outcome and latency by bounded operation
//! name and type) and the request timeout: a query that runs longer than the bound is
//! cut short with TIMEOUT (reads have no effects to leave half done). Mutations always
//! run to the end, so a client never has to guess whether a cut-short command
//! committed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_graphql::extensions::{ExtensionContext, NextExecute};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::Response;
use tracing::Instrument;

use crate::graphql::error::Code;

/// One request's operations: their types (noted at parse), metrics and the timeout
/// around execution.
pub(super) struct OperationScope {
    limit: Option<Duration>,
    /// Operation name (None for an anonymous one) -> its type.
    operations: Mutex<HashMap<Option<String>, OperationType>>,
}

impl OperationScope {
    /// Queries get at most `limit` (None: no bound).
    pub(super) fn new(limit: Option<Duration>) -> Self {
        Self {
            limit,
            operations: Mutex::new(HashMap::new()),
        }
    }

    /// Notes each operation's type from the parsed document.
    pub(super) fn note(&self, doc: &ExecutableDocument) {
        if let Ok(mut ops) = self.operations.lock() {
            for (name, op) in doc.operations.iter() {
                ops.insert(name.map(|n| n.to_string()), op.node.ty);
            }
        }
    }

    /// Runs the operation through [`observe`]. A request run again after its first
    /// run raised an input error (marked `Charged`, see `http::graphql`) was counted by
    /// that first run and is not counted again.
    pub(super) async fn execute(
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
        let counted = ctx.data_opt::<super::rate_limit::Charged>().is_none();
        observe(
            ty,
            operation_name,
            self.limit,
            counted,
            next.run(ctx, operation_name),
        )
        .await
    }
}

/// Runs an operation in its span, cut short after `limit` when it is a query, and (when
/// `counted`) records its count, outcome and duration.
pub async fn observe(
    ty: Option<OperationType>,
    operation_name: Option<&str>,
    limit: Option<Duration>,
    counted: bool,
    run: impl std::future::Future<Output = Response>,
) -> Response {
    let started = std::time::Instant::now();
    let kind = match ty {
        Some(OperationType::Query) => "query",
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        None => "unknown",
    };
    let name = crate::metrics::operation_label(operation_name);
    let span = tracing::info_span!(
        "graphql.operation",
        otel.name = %format!("{kind} {name}"),
        graphql.operation.name = %name,
        graphql.operation.type = kind,
    );
    let response = async {
        match (ty, limit) {
            (Some(OperationType::Query), Some(limit)) => {
                match tokio::time::timeout(limit, run).await {
                    Ok(response) => response,
                    Err(_) => timed_out(operation_name, limit),
                }
            }
            _ => run.await,
        }
    }
    .instrument(span)
    .await;
    if counted {
        let outcome = if response.errors.is_empty() {
            "ok"
        } else {
            "error"
        };
        metrics::counter!("till_graphql_operations_total", "operation" => name.clone(), "type" => kind, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("till_graphql_operation_duration_seconds", "operation" => name, "type" => kind)
            .record(started.elapsed().as_secs_f64());
    }
    response
}

fn timed_out(operation_name: Option<&str>, limit: Duration) -> Response {
    tracing::warn!(
        ?operation_name,
        limit_ms = limit.as_millis() as u64,
        "query timed out"
    );
    Response::from_errors(vec![crate::graphql::error::request(
        Code::Timeout,
        format!(
            "the query ran longer than {} ms and was stopped; ask for less",
            limit.as_millis()
        ),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptySubscription, Object, Schema};

    struct Q;
    #[Object]
    impl Q {
        async fn slow(&self) -> i32 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            1
        }
        async fn fast(&self) -> i32 {
            2
        }
    }

    struct M;
    #[Object]
    impl M {
        async fn slow_change(&self) -> i32 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            3
        }
    }

    #[tokio::test]
    async fn slow_queries_stop_and_mutations_finish() {
        let schema = Schema::build(Q, M, EmptySubscription)
            .extension(crate::graphql::execution::guard::Guard::new(
                crate::graphql::execution::limits::DocumentLimits {
                    max_aliases: 10,
                    max_root_fields: 10,
                    max_complexity: usize::MAX,
                },
                None,
                Some(Duration::from_millis(50)),
            ))
            .finish();
        let r = schema.execute("{ slow }").await;
        let code = r
            .errors
            .first()
            .and_then(|e| e.extensions.as_ref())
            .and_then(|x| x.get("code").cloned());
        assert_eq!(
            code,
            Some(async_graphql::Value::from("TIMEOUT")),
            "{:?}",
            r.errors
        );
        assert!(schema.execute("{ fast }").await.errors.is_empty());
        let r = schema.execute("mutation { slowChange }").await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let r = schema
            .execute(
                async_graphql::Request::new("query A { fast } mutation B { slowChange }")
                    .operation_name("B"),
            )
            .await;
        assert!(
            r.errors.is_empty(),
            "named mutation runs to the end: {:?}",
            r.errors
        );
    }
}
