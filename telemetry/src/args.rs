//! The settings of a process's logs and traces (its metrics address is each service's own,
//! beside its listen address).

#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct TelemetryArgs {
    /// Log filter in `tracing` syntax, e.g. `info` or `order_api=debug,info`. sqlx is quieted
    /// by default: it reports every migration check at INFO.
    #[arg(long, env = "ORDERFLOW_LOG", default_value = "info,sqlx=warn")]
    pub log: String,

    /// `pretty` (human-readable lines) or `json` (one object per line, with the current span
    /// and its parents, for log collectors).
    #[arg(long, env = "ORDERFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// OTLP/gRPC endpoint traces are exported to, e.g. `http://otel-collector:4317`; empty
    /// (the default) exports none. The other standard `OTEL_*` variables apply (see
    /// docs/operations.md).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Pretty,
    Json,
}
