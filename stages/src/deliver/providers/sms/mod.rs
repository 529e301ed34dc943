//! SMS over HTTP in the shape of Twilio's Messages API:
//! `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, form fields `To`, `From`, `Body`,
//! `StatusCallback`, HTTP basic auth (account sid, auth token). The status callback URL
//! carries our message key (`?cb=`), so callbacks reconcile without the provider-id index;
//! the index still resolves callbacks that lost it. Callbacks are verified by
//! `api::routes::webhooks` with Twilio's `X-Twilio-Signature` scheme.

pub mod status;

use super::{class_of_status, retry_after, transport_failure};
use crate::deliver::provider::{FailureClass, Provider, ProviderError, SendResult};
use async_trait::async_trait;
use schemas::{Content, RenderedMessage, TenantId};
use serde::Deserialize;

/// One tenant's SMS account.
pub struct Sms {
    client: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: String,
    /// `{herald public url}` the callbacks go to, if any.
    callback_base: Option<String>,
    tenant: TenantId,
}

impl Sms {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        account_sid: &str,
        auth_token: String,
        callback_base: Option<&str>,
        tenant: TenantId,
    ) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token,
            callback_base: callback_base.map(|b| b.trim_end_matches('/').to_string()),
            tenant,
        }
    }
}

/// Where a message's status callbacks go.
pub fn callback_url(base: &str, tenant: TenantId, message: &RenderedMessage) -> String {
    format!("{base}/webhooks/sms/{tenant}?cb={}", message.key.to_callback())
}

/// What the engine does with a Twilio-style error code.
pub fn classify(code: i64, http_status: u16) -> FailureClass {
    match code {
        // Too many requests / queue overflow: slow this sender.
        20429 | 30001 => FailureClass::Pace,
        // Invalid or unreachable "To", unsubscribed recipient, body too long: never succeeds.
        21211 | 21214 | 21408 | 21610 | 21614 | 21617 | 30003 | 30005 | 30006 => FailureClass::Permanent,
        // The from-number cannot send (unverified, blocked): stop this sender.
        21606 | 21612 | 30007 => FailureClass::StopSender,
        _ => class_of_status(http_status),
    }
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}
#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[async_trait]
impl Provider for Sms {
    fn name(&self) -> &str {
        "sms"
    }

    async fn send(&self, from: &str, message: &RenderedMessage) -> SendResult {
        let Content::Sms { text } = &message.content else {
            return SendResult::Failed(ProviderError::new(
                FailureClass::Permanent,
                "wrong_channel",
                format!("a {} message cannot go through SMS", message.content.channel().as_str()),
            ));
        };
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", self.base_url, self.account_sid);
        let mut form = vec![("To", message.address.clone()), ("From", from.to_string()), ("Body", text.clone())];
        if let Some(base) = &self.callback_base {
            form.push(("StatusCallback", callback_url(base, self.tenant, message)));
        }
        let response = match super::traced(self.client.post(&url))
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
        {
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
            let sid =
                serde_json::from_slice::<Created>(&bytes).map(|c| c.sid).unwrap_or_else(|_| message.key.to_callback());
            return SendResult::Accepted { provider_message_id: sid };
        }
        // Only the provider's own code and message fields; never the raw body.
        let error = serde_json::from_slice::<ApiError>(&bytes)
            .unwrap_or(ApiError { code: 0, message: format!("HTTP {status} without an API error") });
        let code = if error.code == 0 { format!("http_{status}") } else { error.code.to_string() };
        let mut e = ProviderError::new(classify(error.code, status), code, error.message);
        e.retry_after = wait;
        SendResult::Failed(e)
    }
}
