//! The webhook provider: POSTs each message as JSON to a tenant URL, signed with
//! `X-Herald-Signature: sha256=<hex HMAC-SHA256(body, signing secret)>` and carrying
//! `X-Herald-Message-Id` so the receiver can drop a retried delivery. 2xx accepts; 429 paces;
//! 408/5xx/transport errors retry; other 4xx fail permanently.

use super::{class_of_status, retry_after, transport_failure};
use crate::deliver::provider::{Provider, ProviderError, SendResult};
use async_trait::async_trait;
use schemas::helpers::sign_sha256_hex;
use schemas::RenderedMessage;
use serde_json::json;

/// One tenant's webhook endpoint.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: String,
}

impl Webhook {
    pub fn new(client: reqwest::Client, url: &str, secret: String) -> Self {
        Self { client, url: url.to_string(), secret }
    }
}

#[async_trait]
impl Provider for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn sends_receipts(&self) -> bool {
        false
    }

    async fn send(&self, sender: &str, message: &RenderedMessage) -> SendResult {
        let body = json!({
            "message_id": message.key.id.to_string(),
            "callback": message.key.to_callback(),
            "tenant": message.key.tenant.0,
            "campaign": message.key.campaign.0,
            "recipient": message.recipient.0,
            "sender": sender,
            "to": message.address,
            "channel": message.content.channel().as_str(),
            "content": message.content,
        })
        .to_string();
        let response = match super::traced(self.client.post(&self.url))
            .header("content-type", "application/json")
            .header("x-herald-signature", sign_sha256_hex(self.secret.as_bytes(), body.as_bytes()))
            .header("x-herald-message-id", message.key.to_callback())
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return transport_failure(&e),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return SendResult::Accepted { provider_message_id: message.key.to_callback() };
        }
        let wait = retry_after(response.headers());
        // The receiver's body is its own business: never echoed into the message log.
        let text = format!("the webhook answered HTTP {status}");
        let mut e = ProviderError::new(class_of_status(status), format!("http_{status}"), text);
        e.retry_after = wait;
        SendResult::Failed(e)
    }
}
