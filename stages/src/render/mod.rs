//! render: campaign.chunks → messages.rendered (+ outcomes for suppressed / unrenderable).
//!
//! Compiles a campaign's template once and caches it, then renders every recipient of a chunk
//! for the template's channel (SMS text; email subject/text/html; WhatsApp template parameters).
//! Each message gets its deterministic `MessageId` from (tenant, campaign, recipient, channel).
//! Suppressed recipients are not rendered: they become `Suppressed` outcomes. A recipient
//! missing a variable becomes a `Failed { code: "missing_variable" }` outcome — one message
//! fails, never the stage. A campaign whose template is missing or invalid fails all its
//! messages with a reason instead of stalling.
//!
//! Output is bounded per channel ([`SMS_MAX_CHARS`], [`WHATSAPP_PARAMETER_MAX_CHARS`],
//! [`EMAIL_MAX_BYTES`]): rendering stops as soon as a message passes its bound and that message
//! fails `rendered_too_large`, so one tenant's oversized template cannot exhaust memory for
//! everyone. Recipient values in an email's HTML part are HTML-escaped.
//!
//! It is not: a throttle or a sender; it never calls a provider.

use crate::control::CampaignControl;
pub mod template;

use pipeline::{topics, Emitter, Input, Lane, Stage, StageError, Step};
use schemas::helpers::TtlCache;
use schemas::*;
use std::result::Result;
use std::sync::Arc;
use std::time::Duration;
use storage::Catalog;
use template::{Escape, RenderError, Template as Compiled};

/// A campaign's template, compiled for its channel.
#[derive(Debug, Clone)]
pub enum CompiledTemplate {
    Sms { text: Compiled },
    Email { subject: Compiled, text: Compiled, html: Option<Compiled> },
    WhatsApp { template_name: String, language: String, components: Vec<(String, Vec<Compiled>)> },
}

impl CompiledTemplate {
    /// Compiles a stored template; errors name the field at fault.
    pub fn compile(template: &storage::Template) -> Result<Self, String> {
        let field = |name: &str, src: &Option<String>| -> Result<Compiled, String> {
            let src = src
                .as_deref()
                .ok_or_else(|| format!("{name} is required for {} templates", template.channel.as_str()))?;
            Compiled::compile(src).map_err(|e| format!("{name}: {e}"))
        };
        Ok(match template.channel {
            Channel::Sms => CompiledTemplate::Sms { text: field("body", &template.body)? },
            Channel::Email => CompiledTemplate::Email {
                subject: field("subject", &template.subject)?,
                text: field("body", &template.body)?,
                html: template.html.as_ref().map(|_| field("html", &template.html)).transpose()?,
            },
            Channel::WhatsApp => {
                let wa = template.whatsapp.as_ref().ok_or("whatsapp is required for whatsapp templates")?;
                let mut components = Vec::with_capacity(wa.components.len());
                for c in &wa.components {
                    let params = c
                        .parameters
                        .iter()
                        .map(|p| Compiled::compile(p).map_err(|e| format!("whatsapp.{}: {e}", c.kind)))
                        .collect::<Result<Vec<_>, _>>()?;
                    components.push((c.kind.clone(), params));
                }
                CompiledTemplate::WhatsApp {
                    template_name: wa.template_name.clone(),
                    language: wa.language.clone(),
                    components,
                }
            }
        })
    }

    pub fn channel(&self) -> Channel {
        match self {
            CompiledTemplate::Sms { .. } => Channel::Sms,
            CompiledTemplate::Email { .. } => Channel::Email,
            CompiledTemplate::WhatsApp { .. } => Channel::WhatsApp,
        }
    }

    /// Renders for one recipient, within the channel's bounds. Variables: the recipient's
    /// attributes, plus `address`.
    pub fn render(&self, recipient: &Recipient) -> Result<Content, RenderError> {
        let lookup = |name: &str| -> Option<&str> {
            if name == "address" {
                return Some(recipient.address.as_str());
            }
            recipient.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        };
        // Character limits are checked on output bounded in bytes first (a char is ≤ 4 bytes).
        let chars = |t: &Compiled, max_chars: usize| -> Result<String, RenderError> {
            let out = t.render_bounded(lookup, Escape::None, max_chars * 4)?;
            if out.chars().count() > max_chars {
                return Err(RenderError::TooLarge);
            }
            Ok(out)
        };
        Ok(match self {
            CompiledTemplate::Sms { text } => Content::Sms { text: chars(text, SMS_MAX_CHARS)? },
            CompiledTemplate::Email { subject, text, html } => {
                let mut left = EMAIL_MAX_BYTES;
                let mut part = |t: &Compiled, escape| -> Result<String, RenderError> {
                    let out = t.render_bounded(lookup, escape, left)?;
                    left -= out.len();
                    Ok(out)
                };
                Content::Email {
                    subject: part(subject, Escape::None)?,
                    text: part(text, Escape::None)?,
                    html: html.as_ref().map(|h| part(h, Escape::Html)).transpose()?,
                }
            }
            CompiledTemplate::WhatsApp { template_name, language, components } => Content::WhatsApp {
                template_name: template_name.clone(),
                language: language.clone(),
                components: components
                    .iter()
                    .map(|(kind, params)| {
                        let params =
                            params.iter().map(|p| chars(p, WHATSAPP_PARAMETER_MAX_CHARS)).collect::<Result<_, _>>()?;
                        Ok((kind.clone(), params))
                    })
                    .collect::<Result<_, RenderError>>()?,
            },
        })
    }
}

/// The longest SMS Herald renders (10 concatenated segments of 160 GSM characters).
pub const SMS_MAX_CHARS: usize = 1_600;
/// The longest WhatsApp template parameter.
pub const WHATSAPP_PARAMETER_MAX_CHARS: usize = 1_024;
/// The largest email (subject, text and HTML parts together).
pub const EMAIL_MAX_BYTES: usize = 1 << 20;

/// A compiled template, or why the campaign cannot render.
type CompiledOrReason = Arc<Result<CompiledTemplate, String>>;

/// The render stage.
pub struct Render {
    catalog: Arc<dyn Catalog>,
    control: Arc<CampaignControl>,
    /// Compiled templates per campaign (`Err`: why the campaign cannot render). A campaign's
    /// template is fixed once it is sent, so entries never go stale; the bound keeps memory
    /// in check (recompiling is cheap next to a chunk).
    cache: TtlCache<(TenantId, CampaignId), CompiledOrReason>,
}

impl Render {
    pub fn new(catalog: Arc<dyn Catalog>, control: Arc<CampaignControl>) -> Self {
        Self { catalog, control, cache: TtlCache::new(Duration::from_secs(3_600), 4_096) }
    }

    async fn template(&self, tenant: TenantId, campaign: CampaignId) -> crate::Result<CompiledOrReason> {
        if let Some(t) = self.cache.get(&(tenant, campaign)) {
            return Ok(t);
        }
        let compiled = match self.catalog.get_campaign(tenant, campaign).await? {
            None => Err(format!("campaign {campaign} not found")),
            Some(c) => match self.catalog.get_template(tenant, c.template).await? {
                None => Err(format!("template {} not found", c.template)),
                Some(t) => CompiledTemplate::compile(&t),
            },
        };
        let compiled = Arc::new(compiled);
        self.cache.insert((tenant, campaign), compiled.clone());
        Ok(compiled)
    }

    /// Renders one chunk into a message batch and the outcomes of recipients not sent.
    pub async fn render_chunk(&self, chunk: schemas::Chunk) -> crate::Result<(MessageBatch, Vec<OutcomeEvent>)> {
        let (tenant, campaign) = (chunk.tenant, chunk.campaign);
        let template = self.template(tenant, campaign).await?;
        let addresses: Vec<&str> = chunk.recipients.iter().map(|r| r.address.as_str()).collect();
        let suppressed = self.catalog.suppressed(tenant, &addresses).await?;
        let cancelled = self.control.status(tenant, campaign).await? == storage::CampaignStatus::Cancelled;
        let channel = template.as_ref().as_ref().map(CompiledTemplate::channel).unwrap_or(Channel::Sms);
        let now = now_ms();
        let mut messages = Vec::with_capacity(chunk.recipients.len());
        let mut outcomes = Vec::new();
        for (recipient, suppressed) in chunk.recipients.into_iter().zip(suppressed) {
            let key = MessageKey {
                tenant,
                campaign,
                bucket: recipient.bucket,
                id: MessageId::derive(tenant, campaign, recipient.id, channel),
            };
            let kind = match (suppressed, template.as_ref()) {
                (true, _) => OutcomeKind::Suppressed,
                (false, _) if cancelled => OutcomeKind::Cancelled,
                (false, Err(reason)) => OutcomeKind::Failed { code: "template_invalid".into(), reason: reason.clone() },
                (false, Ok(t)) => match t.render(&recipient) {
                    Ok(content) => {
                        messages.push(RenderedMessage {
                            key,
                            recipient: recipient.id,
                            address: recipient.address,
                            content,
                            trigger_ms: chunk.trigger_ms,
                            attempt: 0,
                        });
                        continue;
                    }
                    Err(RenderError::Missing(missing)) => {
                        OutcomeKind::Failed { code: "missing_variable".into(), reason: missing.to_string() }
                    }
                    Err(RenderError::TooLarge) => OutcomeKind::Failed {
                        code: "rendered_too_large".into(),
                        reason: format!(
                            "the rendered {} message is over the channel's limit (SMS {SMS_MAX_CHARS} characters, \
                             WhatsApp parameter {WHATSAPP_PARAMETER_MAX_CHARS} characters, email {EMAIL_MAX_BYTES} bytes)",
                            channel.as_str()
                        ),
                    },
                },
            };
            outcomes.push(OutcomeEvent::Message(Outcome {
                key,
                recipient: recipient.id,
                address: recipient.address,
                kind,
                attempts: 0,
                at_ms: now,
                trigger_ms: chunk.trigger_ms,
            }));
        }
        Ok((MessageBatch { tenant, campaign, messages }, outcomes))
    }
}

impl Stage for Render {
    type In = schemas::Chunk;

    fn name(&self) -> &'static str {
        topics::RENDER.name
    }

    fn lane(&self, chunk: &schemas::Chunk) -> Lane {
        Lane::campaign(chunk.tenant, chunk.campaign)
    }

    fn lane_of_encoded(&self, bytes: &[u8]) -> Option<Lane> {
        schemas::campaign_of_encoded(bytes).map(|(tenant, campaign)| Lane::campaign(tenant, campaign))
    }

    async fn process(
        &self,
        batch: Vec<Input<schemas::Chunk>>,
        out: &mut Emitter,
    ) -> Result<Step<schemas::Chunk>, StageError> {
        for input in batch {
            let tenant = input.value.tenant;
            let (messages, outcomes) = self.render_chunk(input.value).await?;
            if !messages.messages.is_empty() {
                out.emit(&topics::RENDERED, &messages).map_err(crate::Error::from)?;
            }
            if !outcomes.is_empty() {
                out.emit(&topics::OUTCOMES, &OutcomeBatch { tenant, events: outcomes }).map_err(crate::Error::from)?;
            }
        }
        Ok(Step::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(name: &str) -> Recipient {
        Recipient {
            id: RecipientId(1),
            bucket: 0,
            address: "a@example.com".into(),
            attrs: vec![("name".into(), name.into())],
        }
    }

    fn email(html: &str) -> CompiledTemplate {
        let template = storage::Template {
            id: TemplateId(1),
            tenant: TenantId(1),
            name: "t".into(),
            channel: Channel::Email,
            body: Some("Hi {{ name }}".into()),
            subject: Some("For {{ name }}".into()),
            html: Some(html.into()),
            whatsapp: None,
        };
        CompiledTemplate::compile(&template).unwrap()
    }

    #[test]
    fn html_email_escapes_recipient_values_and_text_parts_do_not() {
        let t = email("<p>Hi {{ name }}</p>");
        let Content::Email { subject, text, html } = t.render(&recipient("<img src=x onerror=alert(1)>")).unwrap()
        else {
            panic!("not an email")
        };
        assert_eq!(html.as_deref(), Some("<p>Hi &lt;img src=x onerror=alert(1)&gt;</p>"));
        assert_eq!(text, "Hi <img src=x onerror=alert(1)>");
        assert_eq!(subject, "For <img src=x onerror=alert(1)>");
    }

    #[test]
    fn output_over_the_channel_bound_fails_without_building_it() {
        let t = email(&"{{ name }}".repeat(6_000));
        // 6,000 x 4 KiB would be 24 MiB; the email's bound is 1 MiB.
        assert_eq!(t.render(&recipient(&"x".repeat(4_096))), Err(RenderError::TooLarge));
        let sms = CompiledTemplate::Sms { text: template::Template::compile("{{ name }}").unwrap() };
        assert!(sms.render(&recipient(&"é".repeat(SMS_MAX_CHARS))).is_ok(), "characters, not bytes");
        assert_eq!(sms.render(&recipient(&"é".repeat(SMS_MAX_CHARS + 1))), Err(RenderError::TooLarge));
    }
}
