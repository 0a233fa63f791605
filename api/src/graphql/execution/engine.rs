//! The one entry point of GraphQL execution: an operation or a batch of them, on the
//! schema that fits what is already known of its document.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::OperationType;
use async_graphql::Request;

use super::documents::{Documents, Operation, Parsed};
use super::fixed_cost::FirstSight;
use super::rate_limit::{self, charge_unpriced, Charged, CostLimiter};
use super::{observe, Checks, Limits};
use crate::graphql::error::{self, Code};
use crate::graphql::{RequestInfo, Shared, TillSchema};

/// Runs GraphQL operations for one process: its three schemas (see [`Checks`]), the
/// rate limiter, the time limit and the documents seen.
pub struct Engine {
    /// Every check: the schema a document runs on at first sight (and the one
    /// WebSocket subscriptions run on).
    pub schema: TillSchema,
    /// For queries whose document passed its full validation before: it repeats only
    /// what depends on the variables.
    pub known: TillSchema,
    /// The same again without the guard, for such queries whose cost is fixed: the
    /// engine charges, limits and counts them itself.
    pub priced: TillSchema,
    /// Longest a query may run (None: no bound).
    pub query_timeout: Option<Duration>,
    /// Rate limiting, when on.
    pub rate: Option<Arc<CostLimiter>>,
    /// Persisted and trusted documents, and the parsed forms of recent ones.
    pub documents: Documents,
}

impl Engine {
    /// The engine of a process serving `shared` state under `limits`, with federation's
    /// fields or without.
    pub fn new(shared: &Shared, limits: Limits, federation: bool, documents: Documents) -> Self {
        let serve = |limits, checks| {
            crate::graphql::build_serving(Some(shared), limits, checks, federation)
        };
        Self {
            query_timeout: limits.query_timeout,
            rate: limits.rate.clone(),
            schema: serve(limits.clone(), Checks::AllRules),
            known: serve(limits.clone(), Checks::CostAndDepth),
            priced: serve(limits, Checks::CostAndDepthUnguarded),
            documents,
        }
    }

    /// Runs one operation or a batch (concurrently, answered in order).
    pub async fn execute(
        &self,
        ops: Operations,
        info: &RequestInfo,
    ) -> async_graphql::BatchResponse {
        match ops {
            Operations::Single(op) => {
                async_graphql::BatchResponse::Single(self.execute_one(*op, info).await)
            }
            Operations::Batch(ops) => async_graphql::BatchResponse::Batch(
                futures_util::future::join_all(
                    ops.into_iter().map(|op| self.execute_one(op, info)),
                )
                .await,
            ),
        }
    }

    /// Executes one request with its per-request context; every error gets a code.
    ///
    /// A query whose document passed full validation before skips the rules that depend
    /// on the document alone:
    /// - when its cost depends on the variables, it runs on [`Engine::known`], which
    ///   repeats only that analysis (cost, depth) and the guard;
    /// - when its cost is fixed ([`super::fixed_cost`]), it runs on [`Engine::priced`],
    ///   with no extension: this function charges the cost noted on its first run, and
    ///   limits its time and counts it as the guard would.
    ///
    /// The one rule that also looks at variables checks their values against the arguments
    /// they feed; on those schemas a bad value is caught instead when the argument is read,
    /// as an error async-graphql raises without a code. Such a response is thrown away and
    /// the request runs again with full validation, so the client gets the same request
    /// error as on first sight (queries have no effects; the rate limit is charged and the
    /// operation counted once). A bad variable that is never read as an argument (only in
    /// `@skip`/`@include`, or below a null parent) is not caught this way
    /// (docs/security.md).
    pub async fn execute_one(&self, op: Operation, info: &RequestInfo) -> async_graphql::Response {
        let Operation { request, parsed } = op;
        let missing = parsed.as_ref().and_then(|p| {
            p.missing_variable(request.operation_name.as_deref(), &request.variables)
        });
        if let Some((name, ty)) = missing {
            let mut response = async_graphql::Response::from_errors(vec![error::request(
                Code::BadUserInput,
                format!("variable `${name}` of required type `{ty}` was not provided"),
            )]);
            if let Some(limiter) = &self.rate {
                charge_unpriced(limiter, info, &mut response);
            }
            return response;
        }
        let known = parsed
            .as_ref()
            .filter(|p| p.validated() && p.selects_query(request.operation_name.as_deref()));
        let response = match known {
            Some(parsed) => {
                let again = (
                    request.query.clone(),
                    request.operation_name.clone(),
                    request.variables.clone(),
                );
                let first = match parsed.fixed_cost() {
                    Some(cost) => self.run_priced(parsed, request, info, cost).await,
                    None => self.known.execute(with_context(request, info)).await,
                };
                if first.errors.iter().all(has_code) {
                    first
                } else {
                    let (query, operation_name, variables) = again;
                    let mut request = Request::new(query).variables(variables).data(Charged);
                    if let Some(name) = operation_name {
                        request = request.operation_name(name);
                    }
                    request.set_parsed_query(parsed.document().clone());
                    let mut full = self.schema.execute(with_context(request, info)).await;
                    if let Some(cost) = first.extensions.get("cost") {
                        full.extensions
                            .entry("cost".to_owned())
                            .or_insert_with(|| cost.clone());
                    }
                    full
                }
            }
            None => {
                let mut request = with_context(request, info);
                // Only a document kept parsed can remember its cost.
                let seen = parsed.as_ref().map(|_| Arc::new(FirstSight::default()));
                if let Some(seen) = &seen {
                    request = request.data(seen.clone());
                }
                let response = self.schema.execute(request).await;
                if response.errors.is_empty() {
                    if let Some(parsed) = &parsed {
                        parsed.mark_validated(seen.and_then(|s| s.fixed_cost()));
                    }
                }
                response
            }
        };
        let mut response = with_codes(response);
        if let Some(limiter) = &self.rate {
            charge_unpriced(limiter, info, &mut response);
        }
        response
    }

    /// Runs a validated query of fixed `cost` on the schema without the guard, doing the
    /// guard's work around it: the charge (refused with THROTTLED before anything runs), the
    /// time limit, and the operation's span and metrics. The alias and root-field limits
    /// held on its first run and depend on its text alone. The time limit, span and
    /// duration cover the request's preparation (fast validation) too, which the guard's
    /// execute hook did not: microseconds for a document kept parsed.
    async fn run_priced(
        &self,
        parsed: &Parsed,
        request: Request,
        info: &RequestInfo,
        cost: usize,
    ) -> async_graphql::Response {
        let charge = match &self.rate {
            Some(limiter) => match limiter.pay(info, cost) {
                (charge, Ok(())) => Some(charge),
                (charge, Err(refused)) => {
                    let mut response = async_graphql::Response::from_errors(vec![refused]);
                    rate_limit::report(&charge, &mut response);
                    return response;
                }
            },
            None => None,
        };
        let name = parsed
            .operation_name(request.operation_name.as_deref())
            .map(str::to_owned);
        let mut response = observe::observe(
            Some(OperationType::Query),
            name.as_deref(),
            self.query_timeout,
            true,
            self.priced.execute(with_context(request, info)),
        )
        .await;
        if let Some(charge) = charge {
            rate_limit::report(&charge, &mut response);
        }
        response
    }
}

fn with_context(request: Request, info: &RequestInfo) -> Request {
    request.data(info.clone())
}

/// True when an error carries a code: every error Till raises does; async-graphql's
/// own (input coercion, validation) do not.
fn has_code(e: &async_graphql::ServerError) -> bool {
    e.extensions
        .as_ref()
        .is_some_and(|x| x.get("code").is_some())
}

/// Gives every error a code: errors from parsing, validation and the depth and
/// complexity limits come without one from async-graphql; they are the client's.
fn with_codes(mut r: async_graphql::Response) -> async_graphql::Response {
    for e in &mut r.errors {
        if !has_code(e) {
            let code = if e.path.is_empty() {
                Code::BadUserInput
            } else {
                Code::Internal
            };
            e.extensions
                .get_or_insert_with(Default::default)
                .set("code", code.as_str());
        }
    }
    r
}

/// One operation, or a batch of them (run concurrently, answered in order).
pub enum Operations {
    /// One operation.
    Single(Box<Operation>),
    /// A batch.
    Batch(Vec<Operation>),
}
