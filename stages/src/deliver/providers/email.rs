//! Email over SMTP with `lettre` (pooled async transport; STARTTLS, implicit TLS or plain).
//! Every message carries `List-Unsubscribe` (+ `List-Unsubscribe-Post` for one-click) and a
//! `Message-ID` derived from Herald's message id, which is also the provider message id.
//! SMTP replies are classified by the reply code: 4xx transient (retry), 5xx permanent;
//! connection and TLS failures are transient.

use crate::deliver::provider::{FailureClass, Provider, ProviderError, SendResult};
use async_trait::async_trait;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemas::{Content, RenderedMessage};
use std::time::Duration;
use storage::SmtpTls;

/// How to reach one tenant's SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The checked address to connect to (see `address::AddressPolicy::resolve`).
    pub connect: String,
    /// The server's name (TLS certificate verification).
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `{{ address }}` is replaced by the recipient's address.
    pub list_unsubscribe: String,
}

/// One tenant's SMTP account.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    list_unsubscribe: String,
}

impl Email {
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        let tls = |host: &str| TlsParameters::new(host.to_string()).map_err(|e| format!("tls: {e}"));
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.connect.clone())
            .port(settings.port)
            .timeout(Some(Duration::from_secs(30)));
        builder = match settings.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::StartTls => builder.tls(Tls::Required(tls(&settings.host)?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(&settings.host)?)),
        };
        if let Some(user) = &settings.username {
            builder =
                builder.credentials(Credentials::new(user.clone(), settings.password.clone().unwrap_or_default()));
        }
        Ok(Self { transport: builder.build(), list_unsubscribe: settings.list_unsubscribe.clone() })
    }

    fn build(&self, from: &str, message: &RenderedMessage) -> Result<Message, ProviderError> {
        let permanent = |code: &str, e: String| ProviderError::new(FailureClass::Permanent, code, e);
        let Content::Email { subject, text, html } = &message.content else {
            return Err(permanent(
                "wrong_channel",
                format!("a {} message cannot go through email", message.content.channel().as_str()),
            ));
        };
        let from: Mailbox = from.parse().map_err(|e| permanent("invalid_from", format!("{from:?}: {e}")))?;
        let to: Mailbox =
            message.address.parse().map_err(|e| permanent("invalid_address", format!("{:?}: {e}", message.address)))?;
        let unsubscribe = self.list_unsubscribe.replace("{{ address }}", &message.address);
        let builder = Message::builder()
            .from(from)
            .to(to)
            .subject(subject.clone())
            .message_id(Some(format!("<{}@herald>", message.key.id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe"),
                format!("<{unsubscribe}>"),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                "List-Unsubscribe=One-Click".to_string(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Herald-Message-Id"),
                message.key.to_callback(),
            ));
        let built = match html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(text.clone(), html.clone())),
            None => builder.singlepart(SinglePart::plain(text.clone())),
        };
        built.map_err(|e| permanent("invalid_message", e.to_string()))
    }
}

#[async_trait]
impl Provider for Email {
    fn name(&self) -> &str {
        "email"
    }

    fn sends_receipts(&self) -> bool {
        false
    }

    async fn send(&self, from: &str, message: &RenderedMessage) -> SendResult {
        let email = match self.build(from, message) {
            Ok(m) => m,
            Err(e) => return SendResult::Failed(e),
        };
        match self.transport.send(email).await {
            Ok(_) => SendResult::Accepted { provider_message_id: format!("{}@herald", message.key.id) },
            Err(e) => {
                let code = e.status().map(|c| format!("smtp_{c}")).unwrap_or_else(|| "smtp_connection".into());
                let class = if e.is_permanent() { FailureClass::Permanent } else { FailureClass::Retry };
                SendResult::Failed(ProviderError::new(class, code, e.to_string()))
            }
        }
    }
}
