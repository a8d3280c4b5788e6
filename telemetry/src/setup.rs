//! Logs and traces. Logs go to stderr, filtered by `--log` / `ORDERFLOW_LOG`, as lines for people
//! or JSON for log collectors (`--log-format`). Traces are off unless an OTLP endpoint is
//! configured (`--otlp-endpoint`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): then every `tracing` span is also an OpenTelemetry span,
//! exported over OTLP/gRPC in batches, W3C trace context crosses gRPC calls and Kafka messages
//! ([`crate::trace_context`]), and every log line carries its `trace_id` and `span_id`.
//!
//! The SDK reads the other standard variables itself: `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES` (resource), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_BSP_*` (batching), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, ...;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn tracing off.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::{LogFormat, TelemetryArgs, TelemetryError};

/// Keeps the trace exporter running; dropping it (at the end of `main`) exports the spans still
/// buffered, so the last moments of a process are not lost from its traces.
#[must_use = "traces stop being exported when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Shutting down waits for the last export, which runs on this runtime's I/O.
            let shutdown = || provider.shutdown();
            let result = match tokio::runtime::Handle::try_current() {
                Ok(_) => tokio::task::block_in_place(shutdown),
                Err(_) => shutdown(),
            };
            if let Err(error) = result {
                eprintln!("exporting the last spans failed: {error}");
            }
        }
    }
}

/// Installs logging, and tracing when an OTLP endpoint is configured, for the process
/// `service` (its OpenTelemetry `service.name` unless `OTEL_SERVICE_NAME` says otherwise).
/// Must run inside the Tokio runtime: the exporter's gRPC connection lives on it.
pub fn init(args: &TelemetryArgs, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = args.filter()?;
    let provider = if args.traces_enabled() {
        Some(tracer_provider(args, service)?)
    } else {
        None
    };
    // Traces have their own filter: `--log error` must not cut the spans of a trace short.
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(traces)
        .with(log_layer(args.log_format, std::io::stderr).with_filter(filter))
        .try_init()
        .map_err(|error| TelemetryError::Setup(error.to_string()))?;
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        crate::trace_context::start_exporting();
        tracing::info!(service, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

impl TelemetryArgs {
    /// The settings without starting anything (`--check-config`): the log filter parses, the
    /// OTLP endpoint is an http(s) URL.
    pub fn check(&self) -> Result<(), TelemetryError> {
        self.filter()?;
        match self.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
            None => Ok(()),
            Some(endpoint) => match endpoint.parse::<tonic::codegen::http::Uri>() {
                Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) => Ok(()),
                _ => Err(TelemetryError::Setup(format!(
                    "--otlp-endpoint {endpoint:?}: expected an http:// or https:// URL"
                ))),
            },
        }
    }

    fn filter(&self) -> Result<EnvFilter, TelemetryError> {
        EnvFilter::try_new(&self.log)
            .map_err(|error| TelemetryError::Setup(format!("--log {:?}: {error}", self.log)))
    }

    /// Whether an endpoint is configured and no standard variable turns tracing off.
    pub fn traces_enabled(&self) -> bool {
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
        let is = |name: &str, value: &str| {
            std::env::var(name).is_ok_and(|found| found.trim().eq_ignore_ascii_case(value))
        };
        let endpoint = self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        endpoint && !is("OTEL_SDK_DISABLED", "true") && !is("OTEL_TRACES_EXPORTER", "none")
    }
}

fn tracer_provider(
    args: &TelemetryArgs,
    service: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    // Without it the exporter reads OTEL_EXPORTER_OTLP_TRACES_ENDPOINT itself.
    if let Some(endpoint) = args.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .map_err(|error| TelemetryError::Setup(format!("OTLP exporter: {error}")))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build())
}

/// The standard detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), our service name
/// where they found none, and the version of this build.
fn resource(service: &'static str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::new("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}

/// Log lines in `format`, each with its trace and span ids, written to `writer`.
fn log_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Pretty => logs.event_format(WithTraceIds::pretty()).boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .map_event_format(WithTraceIds::json)
            .boxed(),
    }
}

/// Puts the OpenTelemetry trace and span ids of the current span into every log line (nothing
/// when tracing is off): first on a pretty line, as fields of the object in JSON.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl WithTraceIds<tracing_subscriber::fmt::format::Format> {
    fn pretty() -> Self {
        Self {
            inner: tracing_subscriber::fmt::format::Format::default(),
            json: false,
        }
    }
}

impl<F> WithTraceIds<F> {
    fn json(inner: F) -> Self {
        Self { inner, json: true }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

fn current_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    use opentelemetry::trace::TraceContextExt;
    let span = ctx.lookup_current()?;
    // No extension of the span may be borrowed while the context is looked up.
    let context = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
    })?;
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;

    type Buffer = Arc<Mutex<Vec<u8>>>;

    #[test]
    fn the_log_filter_and_the_otlp_endpoint_are_checked() {
        let args = |log: &str, endpoint: Option<&str>| TelemetryArgs {
            log: log.into(),
            log_format: LogFormat::Json,
            otlp_endpoint: endpoint.map(Into::into),
        };
        assert!(args("info,sqlx=warn", Some("http://otel:4317"))
            .check()
            .is_ok());
        assert!(args("info", Some("")).check().is_ok());
        let filter = args("info,[", None).check().expect_err("bad filter");
        assert!(filter.to_string().contains("--log"), "{filter}");
        let endpoint = args("info", Some("otel:4317"))
            .check()
            .expect_err("no scheme");
        assert!(
            endpoint.to_string().contains("--otlp-endpoint"),
            "{endpoint}"
        );
    }

    struct SharedBuffer(Buffer);

    impl std::io::Write for SharedBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("the log buffer")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn writer(buffer: &Buffer) -> impl Fn() -> SharedBuffer + Send + Sync + 'static {
        let buffer = Arc::clone(buffer);
        move || SharedBuffer(Arc::clone(&buffer))
    }

    fn line_with(buffer: &Buffer, needle: &str) -> String {
        let text = String::from_utf8(buffer.lock().expect("the log buffer").clone())
            .expect("UTF-8 log lines");
        text.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {text}"))
            .to_owned()
    }

    /// The only test of this crate that installs a global subscriber, as the binaries do: the
    /// formatter finds the span's OpenTelemetry context through the global dispatcher.
    #[test]
    fn log_lines_carry_the_trace_and_span_ids() {
        let (pretty, json) = (Buffer::default(), Buffer::default());
        let provider = SdkTracerProvider::builder().build();
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(log_layer(LogFormat::Pretty, writer(&pretty)))
            .with(log_layer(LogFormat::Json, writer(&json)))
            .try_init()
            .expect("the only global subscriber of these tests");
        let span = tracing::info_span!("work", order_id = "o-1");
        let entered = span.enter();
        tracing::info!(sku = "TEA-1", "reserved in a traced span");
        drop(entered);
        let context = span.context();
        let otel_span = context.span();
        let ids = otel_span.span_context();
        let (trace_id, span_id) = (ids.trace_id().to_string(), ids.span_id().to_string());

        let line = line_with(&pretty, "reserved in a traced span");
        assert!(
            line.starts_with(&format!("trace_id={trace_id} span_id={span_id} ")),
            "{line}"
        );
        let line: serde_json::Value =
            serde_json::from_str(&line_with(&json, "reserved in a traced span"))
                .expect("one JSON object per line");
        assert_eq!(line["trace_id"], trace_id.as_str());
        assert_eq!(line["span_id"], span_id.as_str());
        assert_eq!(line["span"]["order_id"], "o-1");

        tracing::info!("outside any span");
        assert!(!line_with(&pretty, "outside any span").contains("trace_id="));
        assert!(!line_with(&json, "outside any span").contains("trace_id"));
    }
}
