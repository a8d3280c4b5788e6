//! W3C trace context (`traceparent`, `tracestate`) across process boundaries, so one trace
//! follows an order through every service: in gRPC metadata (orderflow-runtime's server layer
//! reads it, its gRPC client writes it) and in Kafka message headers (written by every
//! publish, read by the consume loop).
//!
//! With tracing off (no OTLP endpoint) no propagator is installed: nothing is written, and what
//! arrives is ignored.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces. Spans that only matter inside a trace (one per Redis
/// command, per SQL transaction) are created only then: the hot path pays nothing for them
/// otherwise.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

pub(crate) fn start_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// The context of the current `tracing` span, as the next hop's parent.
fn current() -> Context {
    tracing::Span::current().context()
}

/// Makes `span` a child of the trace whose context arrived with `parent`.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    // Fails only when the span is disabled or already started: nothing to join then.
    let _ = span.set_parent(parent);
}

/// Writes the current span's context into outgoing gRPC metadata.
pub fn inject_http(headers: &mut HeaderMap) {
    let context = current();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HttpInjector(headers));
    });
}

/// The trace context of an incoming gRPC call (empty if it carries none).
pub fn extract_http(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HttpExtractor(headers))
    })
}

/// The current span's context as text-map fields (`traceparent`, `tracestate`), for the headers
/// of a message about to be published (`orderflow_kafka::with_trace_context`); none when
/// tracing is off.
pub fn current_fields() -> Vec<(String, String)> {
    let context = current();
    let mut fields = KafkaInjector(Vec::new());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut fields);
    });
    fields.0
}

/// The current span's `traceparent`, to store with work done later (an outbox row); `None`
/// when tracing is off.
pub fn current_traceparent() -> Option<String> {
    current_fields()
        .into_iter()
        .find_map(|(key, value)| (key == TRACEPARENT).then_some(value))
}

/// The trace context a stored `traceparent` names.
pub fn from_traceparent(traceparent: &str) -> Context {
    let fields = [(
        TRACEPARENT.to_owned(),
        Some(traceparent.as_bytes().to_vec()),
    )];
    extract_kafka(&fields)
}

const TRACEPARENT: &str = "traceparent";

/// The trace context a consumed message was published in (empty if it carries none).
pub fn extract_kafka(headers: &[(String, Option<Vec<u8>>)]) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&KafkaExtractor(headers))
    })
}

struct HttpInjector<'a>(&'a mut HeaderMap);

impl Injector for HttpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HttpExtractor<'a>(&'a HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Collects the fields a propagator writes (message headers, a stored `traceparent`).
struct KafkaInjector(Vec<(String, String)>);

impl Injector for KafkaInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct KafkaExtractor<'a>(&'a [(String, Option<Vec<u8>>)]);

impl Extractor for KafkaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .and_then(|(_, value)| value.as_deref())
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_survives_kafka_headers_and_grpc_metadata() {
        let propagator = TraceContextPropagator::new();
        let kafka = vec![
            ("event-type".to_owned(), Some(b"x".to_vec())),
            (
                "traceparent".to_owned(),
                Some(TRACEPARENT.as_bytes().to_vec()),
            ),
        ];
        let context = propagator.extract(&KafkaExtractor(&kafka));
        let span = context.span();
        let span_context = span.span_context();
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_remote() && span_context.is_sampled());

        let mut headers = HeaderMap::new();
        propagator.inject_context(&context, &mut HttpInjector(&mut headers));
        assert_eq!(
            headers.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(TRACEPARENT)
        );
        let again = propagator.extract(&HttpExtractor(&headers));
        assert_eq!(again.span().span_context(), span_context);
    }

    #[test]
    fn without_a_propagator_nothing_is_written() {
        let mut headers = HeaderMap::new();
        inject_http(&mut headers);
        assert!(headers.is_empty());
        assert!(!extract_kafka(&[]).has_active_span());
    }
}
