//! Logs (`tracing`, filtered by `HERALD_LOG`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//! OpenTelemetry traces exported over OTLP/HTTP (the standard `OTEL_*` variables apply).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Keeps the trace pipeline alive; flushes pending spans when shut down.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber. Returns an error only for a bad OTLP configuration.
    pub fn init() -> anyhow::Result<Self> {
        let filter = EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
        let Some(endpoint) = endpoint else {
            tracing_subscriber::registry().with(logs).init();
            return Ok(Self { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP exporter for {endpoint}: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("herald").build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let traces = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("herald"))
            .with_filter(EnvFilter::new("info,h2=off,hyper=off,reqwest=off"));
        tracing_subscriber::registry().with(logs).with(traces).init();
        Ok(Self { provider: Some(provider) })
    }

    /// Exports what is still buffered (call before exit).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("herald: flushing traces failed: {e}");
            }
        }
    }
}
