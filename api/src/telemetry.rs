//! Logs and traces.
//!
//! Logs: human-readable by default, JSON with `RUST_LOG_FORMAT=json`; the level filter
//! comes from `RUST_LOG` (default `info`). Request spans carry the request id (and,
//! with tracing on, the trace id), and every JSON line lists the spans it happened in,
//! so each line names its request and trace. Each request ends with one line (the
//! request span closing) giving method, route, status and time.
//!
//! Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are exported over OTLP/HTTP
//! (protobuf; `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` for JSON) by a batch exporter,
//! with W3C trace context taken from incoming `traceparent` headers and injected into
//! outgoing provider and webhook calls. Spans: HTTP request, GraphQL operation,
//! command, database transaction, projection batch, job.

use std::collections::HashMap;
use std::sync::OnceLock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

fn tracer_provider() -> Option<SdkTracerProvider> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())?;
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => Protocol::HttpJson,
        _ => Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|e| eprintln!("OTLP exporter not started: {e}"))
        .ok()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "till".to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Some(provider)
}

/// Installs the global subscriber (once, at start-up).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("RUST_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let otel = tracer_provider().map(|provider| {
        let tracer = provider.tracer("till");
        let _ = PROVIDER.set(provider);
        tracing_opentelemetry::layer().with_tracer(tracer)
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_span_events(FmtSpan::CLOSE)
                    .with_current_span(false)
                    .with_span_list(true)
                    .flatten_event(true),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}

/// Flushes and stops the trace exporter (at exit).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            eprintln!("OTLP exporter shutdown: {e}");
        }
    }
}

/// The W3C trace-context headers of the current span, for an outgoing request.
pub fn trace_headers() -> HashMap<String, String> {
    let mut headers = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers
}

/// Where tracing-actix-web's request span is declared: its target, for filters.
const REQUEST_SPAN_TARGET: &str = "tracing_actix_web::root_span_builder";

/// The HTTP request span: tracing-actix-web's own, built only when the level filter
/// lets it through. Its fields (connection info, route pattern, incoming trace context)
/// are worked out before the span is created, a visible share of a cached
/// `product(id:)` even with the span filtered out (`RUST_LOG=warn`; benches/HISTORY.md).
///
/// The filter is asked by level and target (`RUST_LOG=warn,tracing_actix_web=info`
/// turns request spans on); directives that select spans by name or field
/// (`[HTTP request]=info`) do not turn them on.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        if tracing::enabled!(target: REQUEST_SPAN_TARGET, tracing::Level::INFO) {
            DefaultRootSpanBuilder::on_request_start(request)
        } else {
            tracing::Span::none()
        }
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, web, App};
    use tracing_actix_web::{RootSpan, TracingLogger};

    /// (disabled?, name and target) of the request span a request gets under the
    /// `RUST_LOG` directives `filter`.
    async fn span_under(filter: &str) -> String {
        let subscriber = tracing_subscriber::registry().with(EnvFilter::new(filter));
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(App::new().wrap(TracingLogger::<RequestSpan>::new()).route(
            "/",
            web::get().to(|span: RootSpan| async move {
                let span: tracing::Span = span.into();
                let meta = span.metadata().map(|m| (m.name(), m.target()));
                format!("{} {meta:?}", span.is_disabled())
            }),
        ))
        .await;
        let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
        String::from_utf8_lossy(&test::read_body(response).await).into_owned()
    }

    #[actix_web::test]
    async fn the_request_span_is_built_only_when_its_level_is_on() {
        let built = format!("false Some((\"HTTP request\", \"{REQUEST_SPAN_TARGET}\"))");
        for on in [
            "info",
            "warn,tracing_actix_web=info",
            "warn,tracing_actix_web=debug",
        ] {
            assert_eq!(span_under(on).await, built, "{on}");
        }
        for off in ["warn", "info,tracing_actix_web=warn", "off"] {
            assert_eq!(span_under(off).await, "true None", "{off}");
        }
    }
}
