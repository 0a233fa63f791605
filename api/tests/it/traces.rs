//! OpenTelemetry: the real binary exports spans over OTLP/HTTP to a small test collector
//! (wiremock). One request carrying a W3C `traceparent` yields one trace: HTTP ->
//! GraphQL operation -> command -> database transaction, each the parent of the next,
//! under the caller's span.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use till_domain::commands::Commands;
use till_domain::db::testing::TestDb;
use till_domain::types::Role;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{account_on, ok, ServerProcess};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[derive(Debug, Clone)]
struct Span {
    name: String,
    span_id: String,
    parent: String,
}

fn spans_of(body: &[u8]) -> Vec<(String, Span)> {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut out = Vec::new();
    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push((
                    s["traceId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    Span {
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        span_id: s["spanId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                        parent: s["parentSpanId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_ascii_lowercase(),
                    },
                ));
            }
        }
    }
    out
}

#[tokio::test]
async fn one_request_is_one_trace_from_http_to_the_database() {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&collector)
        .await;
    let db = TestDb::new().await;
    let commands = Commands::new(db.pool.clone());
    let (_, token) = account_on(&commands, "tracer@example.com", Role::Staff).await;
    let endpoint = collector.uri();
    let server = ServerProcess::start(
        &db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let base = &server.base;
    let http = reqwest::Client::new();

    let resp = ok(http
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({ "query": "mutation Shelf { createCategory(input: {slug: \"traced\", name: \"Traced\"}) { categoryId } }" }))
        .send()
        .await);
    assert_eq!(resp.status().as_u16(), 200);

    // Collect the trace's spans as the batch exporter sends them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans: HashMap<String, Span> = loop {
        let received = collector.received_requests().await.unwrap_or_default();
        let spans: HashMap<String, Span> = received
            .iter()
            .flat_map(|r| spans_of(&r.body))
            .filter(|(trace, _)| trace == TRACE_ID)
            .map(|(_, s)| (s.span_id.clone(), s))
            .collect();
        let commands: Vec<&str> = spans
            .values()
            .filter(|s| s.name == "command")
            .map(|s| s.span_id.as_str())
            .collect();
        if spans
            .values()
            .any(|s| s.name == "db.transaction" && commands.contains(&s.parent.as_str()))
            && spans.values().any(|s| s.parent == CALLER_SPAN)
        {
            break spans;
        }
        assert!(Instant::now() < deadline, "incomplete trace: {spans:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |pred: &dyn Fn(&Span) -> bool| spans.values().find(|s| pred(s)).cloned();
    let http_span =
        find(&|s| s.parent == CALLER_SPAN).unwrap_or_else(|| panic!("no HTTP span: {spans:?}"));
    assert!(http_span.name.contains("/graphql"), "{http_span:?}");
    let graphql = find(&|s| s.name == "mutation Shelf")
        .unwrap_or_else(|| panic!("no GraphQL span: {spans:?}"));
    assert_eq!(
        graphql.parent, http_span.span_id,
        "GraphQL under HTTP: {spans:?}"
    );
    let command = find(&|s| s.name == "command" && s.parent == graphql.span_id)
        .unwrap_or_else(|| panic!("no command span under GraphQL: {spans:?}"));
    // The command's transaction is under the command (the token's session check,
    // before GraphQL, reads under the HTTP span).
    assert!(
        spans
            .values()
            .any(|s| s.name == "db.transaction" && s.parent == command.span_id),
        "DB under the command: {spans:?}"
    );
    assert!(
        spans
            .values()
            .filter(|s| s.name == "db.transaction")
            .all(|s| s.parent == command.span_id || s.parent == http_span.span_id),
        "every DB span is in the request's trace: {spans:?}"
    );
}
