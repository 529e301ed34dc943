//! Synthetic tenants, templates, audiences and campaigns for `herald demo` and `herald bench`.

use crate::engine::Engine;
use schemas::*;
use storage::*;

/// What to create for one synthetic tenant.
#[derive(Debug, Clone)]
pub struct SeedSpec {
    pub name: String,
    pub recipients: u64,
    pub rate_limit_per_s: Option<u32>,
    pub burst: u32,
    pub weight: u32,
}

/// Creates a tenant with an SMS template, an audience of `recipients` synthetic phone numbers
/// (attributes `name` and `code`) and a draft campaign. Returns (tenant, campaign).
pub async fn tenant_with_campaign(engine: &Engine, spec: &SeedSpec) -> storage::Result<(TenantId, CampaignId)> {
    let (store, ids) = (engine.store.as_ref(), engine.state.as_ref());
    let now = now_ms();
    let tenant = TenantId(ids.next_id("tenant").await?);
    store
        .put_tenant(&Tenant {
            id: tenant,
            name: spec.name.clone(),
            rate_limit_per_s: spec.rate_limit_per_s,
            burst: spec.burst,
            weight: spec.weight,
            created_ms: now,
            state: TenantState::Active,
        })
        .await?;
    let template = TemplateId(ids.next_id("template").await?);
    store
        .put_template(&Template {
            id: template,
            tenant,
            name: "welcome".into(),
            channel: Channel::Sms,
            body: Some("Hi {{ name }}, your Herald code is {{ code }}. Reply STOP to opt out.".into()),
            subject: None,
            html: None,
            whatsapp: None,
        })
        .await?;
    let audience = AudienceId(ids.next_id("audience").await?);
    store
        .put_audience(&Audience {
            id: audience,
            tenant,
            name: "synthetic".into(),
            recipient_count: 0,
            next_recipient_id: 0,
            created_ms: now,
        })
        .await?;
    let mut next = 0u64;
    while next < spec.recipients {
        let end = (next + 10_000).min(spec.recipients);
        let rows = (next..end)
            .map(|i| NewRecipient {
                address: format!("+1{:03}{:07}", 200 + tenant.0 % 700, i),
                attrs: vec![
                    ("name".into(), format!("Member {i}")),
                    ("code".into(), format!("{:06}", (i * 7919) % 1_000_000)),
                ],
            })
            .collect();
        store.add_recipients(tenant, audience, rows).await?;
        next = end;
    }
    let campaign = CampaignId(ids.next_id("campaign").await?);
    store
        .put_campaign(&Campaign {
            id: campaign,
            tenant,
            name: format!("{} launch", spec.name),
            template,
            audience,
            rate_limit_per_s: None,
            status: CampaignStatus::Draft,
            created_ms: now,
            triggered_ms: None,
            version: 0,
        })
        .await?;
    Ok((tenant, campaign))
}
