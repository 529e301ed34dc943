//! Real providers: network code that turns a rendered message into a provider call and the
//! provider's answer into a [`SendResult`] with a [`FailureClass`].
//!
//! - [`whatsapp`]: WhatsApp Cloud API template messages (reqwest + rustls);
//!   [`whatsapp::status`]: its signed status webhooks.
//! - [`sms`]: a Twilio-shaped SMS API (form POST, basic auth, status callback URL);
//!   [`sms::status`]: its signed status callbacks.
//! - [`email`]: SMTP through `lettre` (STARTTLS / TLS / plain, `List-Unsubscribe`).
//! - [`webhook`]: JSON POST to a tenant URL with an HMAC-SHA256 signature header.
//!
//! Everything else Herald knows of a provider, by provider:
//!
//! | provider | settings (validated at `PUT`) | status endpoint | stand-in for tests |
//! |---|---|---|---|
//! | whatsapp | `api/src/routes/provider_settings.rs` (`WhatsAppBody`) | `api/src/routes/webhooks.rs` | `src/mock_provider` (WhatsApp API) |
//! | sms | `api/src/routes/provider_settings.rs` (`SmsBody`) | `api/src/routes/sms_callbacks.rs` | `src/mock_provider` (SMS API) |
//! | email | `api/src/routes/provider_settings.rs` (`EmailBody`) | none (the SMTP answer is final) | a local SMTP listener in `tests/providers_e2e.rs` |
//! | webhook | `api/src/routes/provider_settings.rs` (`WebhookBody`) | none (2xx is final) | `tests/common` (`FakeProvider`) |
//! | simulator | the engine's default provider ([`super::simulator`]) | receipts posted in process | itself |
//!
//! HTTP calls carry the deliver step's trace context (`traceparent`, [`traced`]), so a
//! provider (or the mock provider) that records it joins the campaign's trace.
//!
//! It is not: pacing or retrying (see `deliver::pacing` and `deliver`); a provider makes one
//! call and classifies its answer.

pub mod address;
pub mod email;
pub mod sms;
pub mod webhook;
pub mod whatsapp;

use super::provider::{FailureClass, ProviderError, SendResult};
use std::time::Duration;

/// `request` with the current span's trace context as W3C headers (none when tracing is off).
pub fn traced(mut request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    for (name, value) in pipeline::trace::current_headers().0 {
        request = request.header(name, value);
    }
    request
}

/// How long one HTTP provider call may take by default before it counts as a transient failure.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client providers share (connection pooling, rustls). Every connection goes
/// through the address guard, and redirects are never followed (a redirect to a private
/// address would bypass it).
pub fn http_client(timeout: Duration, policy: address::AddressPolicy) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(address::resolver(policy))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A call that produced no HTTP answer: connection refused, reset, timeout. Transient; unless
/// the connection was never made, the provider may have received it (`maybe_received`).
pub fn transport_failure(e: &reqwest::Error) -> SendResult {
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    // reqwest's message names the URL and the cause, never a response body.
    let mut error = ProviderError::new(FailureClass::Retry, code, e.to_string());
    error.maybe_received = !e.is_connect();
    SendResult::Failed(error)
}

/// The class of an HTTP status when the body says nothing more specific.
pub fn class_of_status(status: u16) -> FailureClass {
    match status {
        429 => FailureClass::Pace,
        408 | 500..=599 => FailureClass::Retry,
        _ => FailureClass::Permanent,
    }
}

/// `Retry-After` in seconds, if the provider sent one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    // Capped again by deliver at its maximum backoff.
    Some(Duration::from_secs(secs.min(3_600)))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn provider_calls_carry_the_steps_trace() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let client = reqwest::Client::new();
        let untraced = super::traced(client.post("http://127.0.0.1:9/")).build().unwrap();
        assert!(untraced.headers().get("traceparent").is_none(), "no trace, no header");

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let mut parent = schemas::envelope::Headers::default();
            parent.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            let span = pipeline::trace::step_span("deliver", 0, 1, &parent);
            let _entered = span.enter();
            let request = super::traced(client.post("http://127.0.0.1:9/")).build().unwrap();
            let header = request.headers().get("traceparent").expect("traceparent").to_str().unwrap();
            assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{header}");
        });
    }
}
