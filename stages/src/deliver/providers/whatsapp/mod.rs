//! WhatsApp Cloud API: template messages, `POST {base}/{version}/{phone_number_id}/messages`
//! with a bearer token. `biz_opaque_callback_data` carries the message key so status webhooks
//! reconcile without a lookup. Errors are classified by the error envelope's `code` (never the
//! HTTP status or title), per the reference table (`shared/reference/whatsapp-cloud-api.md`).

pub mod status;

use super::{class_of_status, retry_after, transport_failure};
use crate::deliver::provider::{FailureClass, Provider, ProviderError, SendResult};
use async_trait::async_trait;
use schemas::{Content, RenderedMessage};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// One tenant's WhatsApp Cloud API account.
pub struct WhatsApp {
    client: reqwest::Client,
    base_url: String,
    api_version: String,
    access_token: String,
}

impl WhatsApp {
    pub fn new(client: reqwest::Client, base_url: &str, api_version: &str, access_token: String) -> Self {
        let version = api_version.trim_start_matches('v');
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_version: format!("v{version}"),
            access_token,
        }
    }
}

/// The request body for one template message.
pub fn body(message: &RenderedMessage) -> Option<Value> {
    let Content::WhatsApp { template_name, language, components } = &message.content else { return None };
    let components: Vec<Value> = components
        .iter()
        .map(|(kind, params)| {
            let parameters: Vec<Value> = params.iter().map(|p| json!({"type": "text", "text": p})).collect();
            // Buttons are stored as "button:<sub_type>:<index>".
            match kind.split(':').collect::<Vec<_>>().as_slice() {
                ["button", sub_type, index] => {
                    json!({"type": "button", "sub_type": sub_type, "index": index, "parameters": parameters})
                }
                _ => json!({"type": kind, "parameters": parameters}),
            }
        })
        .collect();
    Some(json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.address.trim_start_matches('+'),
        "type": "template",
        "biz_opaque_callback_data": message.key.to_callback(),
        "template": {"name": template_name, "language": {"code": language}, "components": components},
    }))
}

/// What the engine does with a WhatsApp error `code` (the reference table).
pub fn classify(code: i64, http_status: u16) -> (FailureClass, Option<Duration>) {
    match code {
        130429 | 80007 | 4 => (FailureClass::Pace, None),
        131048 => (FailureClass::SlowDown, None),
        131056 => (FailureClass::RecipientBackoff, None),
        131049 => (FailureClass::RetryLater, Some(Duration::from_secs(24 * 3_600))),
        131057 => (FailureClass::Retry, Some(Duration::from_secs(10))),
        131026 | 132000 | 132001 => (FailureClass::Permanent, None),
        368 => (FailureClass::StopSender, None),
        // Expired or revoked access token: nothing sends until an operator fixes it, so retry
        // (bounded) and dead-letter for redrive rather than failing the message for good.
        190 => (FailureClass::Retry, None),
        131000 | 1 | 2 => (FailureClass::Retry, None),
        _ => (class_of_status(http_status), None),
    }
}

#[derive(Deserialize)]
struct Success {
    #[serde(default)]
    messages: Vec<SentMessage>,
}
#[derive(Deserialize)]
struct SentMessage {
    id: String,
}
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}
#[derive(Deserialize)]
struct ErrorBody {
    code: i64,
    #[serde(default)]
    message: String,
}

#[async_trait]
impl Provider for WhatsApp {
    fn name(&self) -> &str {
        "whatsapp"
    }

    async fn send(&self, phone_number_id: &str, message: &RenderedMessage) -> SendResult {
        let Some(body) = body(message) else {
            return SendResult::Failed(ProviderError::new(
                FailureClass::Permanent,
                "wrong_channel",
                format!("a {} message cannot go through WhatsApp", message.content.channel().as_str()),
            ));
        };
        let url = format!("{}/{}/{}/messages", self.base_url, self.api_version, phone_number_id);
        let response =
            match super::traced(self.client.post(&url)).bearer_auth(&self.access_token).json(&body).send().await {
                Ok(r) => r,
                Err(e) => return transport_failure(&e),
            };
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return transport_failure(&e),
        };
        if (200..300).contains(&status) {
            return match serde_json::from_slice::<Success>(&bytes).ok().and_then(|s| s.messages.into_iter().next()) {
                Some(m) => SendResult::Accepted { provider_message_id: m.id },
                // A 2xx without a message id is still accepted; receipts find it by callback data.
                None => SendResult::Accepted { provider_message_id: message.key.to_callback() },
            };
        }
        // Only the envelope's own code and message are kept; a body that is not the envelope
        // (a proxy's error page, whatever a hostile endpoint returns) is never echoed.
        let (code, text) = match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => (0, format!("HTTP {status} without a Graph API error")),
        };
        let (class, after) = classify(code, status);
        let code = if code == 0 { format!("http_{status}") } else { code.to_string() };
        let mut error = ProviderError::new(class, code, text);
        error.retry_after = after.or(wait);
        SendResult::Failed(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_reference_table_has_its_outcome() {
        use FailureClass::*;
        let day = Some(Duration::from_secs(24 * 3_600));
        for (code, class, after) in [
            (130429, Pace, None),
            (80007, Pace, None),
            (4, Pace, None),
            (131056, RecipientBackoff, None),
            (131048, SlowDown, None),
            (131049, RetryLater, day),
            (131057, Retry, Some(Duration::from_secs(10))),
            (131026, Permanent, None),
            (132000, Permanent, None),
            (132001, Permanent, None),
            (368, StopSender, None),
        ] {
            // Branch on the code, never on the HTTP status.
            for status in [400, 429, 500] {
                assert_eq!(classify(code, status), (class, after), "code {code} with HTTP {status}");
            }
        }
        assert_eq!(classify(0, 503).0, Retry, "5xx without an envelope is transient");
        assert_eq!(classify(0, 429).0, Pace);
        assert_eq!(classify(100, 400).0, Permanent, "an unknown 4xx code is not retried");
    }

    #[test]
    fn template_body_carries_callback_data_and_parameters() {
        let key = schemas::MessageKey::from_callback("h1.3.4.0.0123456789abcdef0123456789abcdef").unwrap();
        let message = RenderedMessage {
            key,
            recipient: schemas::RecipientId(5),
            address: "+12015550123".into(),
            content: Content::WhatsApp {
                template_name: "order_update_v1".into(),
                language: "en_US".into(),
                components: vec![("body".into(), vec!["Alex".into()]), ("button:url:0".into(), vec!["A12345".into()])],
            },
            trigger_ms: 0,
            attempt: 0,
        };
        let b = body(&message).unwrap();
        assert_eq!(b["to"], "12015550123");
        assert_eq!(b["biz_opaque_callback_data"], key.to_callback());
        assert_eq!(b["template"]["language"]["code"], "en_US");
        assert_eq!(
            b["template"]["components"][0],
            serde_json::json!({"type": "body", "parameters": [{"type": "text", "text": "Alex"}]})
        );
        assert_eq!(
            b["template"]["components"][1],
            serde_json::json!({"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": "A12345"}]})
        );
    }
}
