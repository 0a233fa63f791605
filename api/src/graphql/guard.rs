//! The one async-graphql extension Till installs, carrying every per-request concern:
//! document limits (`limits`), cost-based rate limiting (`cost`), and operation metrics
//! with the query timeout (`operations`).
//!
//! One extension rather than one per concern: with any extension installed,
//! async-graphql runs every field and list item through each extension's resolve hook (a
//! boxed future per extension, plus a registry lookup). With three, that chain made
//! `product(id:)` 22% and `myOrders` 28% slower (17.3k vs 22.0k and 3.9k vs 5.4k req/s in
//! back-to-back runs); none of the three needs the per-field hook.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

use super::cost::{CostLimiter, RequestCharge};
use super::limits::DocumentLimits;
use super::operations::OperationScope;

/// Builds each request's guard.
pub struct Guard {
    /// Alias and root-field limits.
    pub limits: DocumentLimits,
    /// Cost-based rate limiting, when on.
    pub rate: Option<Arc<CostLimiter>>,
    /// Longest a query may run (None: no bound).
    pub query_timeout: Option<Duration>,
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestGuard {
            limits: self.limits,
            charge: self.rate.clone().map(RequestCharge::new),
            operations: OperationScope::new(self.query_timeout),
        })
    }
}

struct RequestGuard {
    limits: DocumentLimits,
    charge: Option<RequestCharge>,
    operations: OperationScope,
}

#[async_trait::async_trait]
impl Extension for RequestGuard {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        if let Some(charge) = &self.charge {
            charge.report(&mut response);
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        self.limits.check(&doc)?;
        self.operations.note(&doc);
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(charge) = &self.charge {
            charge.pay(ctx, &result)?;
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.operations.execute(ctx, operation_name, next).await
    }
}
