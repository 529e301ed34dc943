//! Which provider and senders a tenant's messages go through, built from the tenant's stored
//! provider settings (secrets opened with the engine's [`SecretKey`]) and cached.
//!
//! A channel goes to the tenant's provider of that kind (`whatsapp`, `sms`, `email`); without
//! one, to the tenant's `webhook` provider if configured; otherwise to the engine's default
//! provider (the simulator in the embedded default) through one unpaced sender. The tenant's
//! own `rate_limit_per_s` is a bucket above all its routes. Routes are rebuilt when settings
//! change and kept (with their AIMD state) while they do not; senders another worker stopped
//! (`SharedState::stopped_senders`) are marked stopped when the route is looked at again.

use super::pacing::{Route, Sender};
use super::provider::{FailureClass, Provider, ProviderError, SendResult};
use super::providers::address::AddressPolicy;
use super::providers::email::{Email, SmtpSettings};
use super::providers::{http_client, sms::Sms, webhook::Webhook, whatsapp::WhatsApp};
use async_trait::async_trait;
use schemas::{Channel, RenderedMessage, TenantId};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storage::secrets::{aad, SecretKey};
use storage::{Catalog, ProviderConfig, ProviderKind, ProviderSettings, SharedState};

/// A sender's state, for metrics and the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SenderView {
    pub tenant: u64,
    pub provider: String,
    pub sender: String,
    pub configured_rate: Option<f64>,
    pub current_rate: Option<f64>,
    pub stopped: bool,
    pub pace_signals: u64,
}

/// Cached routes with when they were loaded.
type RouteCache = HashMap<(TenantId, Channel), (Arc<Route>, Instant)>;

/// The route registry (one per engine).
pub struct Senders {
    catalog: Arc<dyn Catalog>,
    state: Arc<dyn SharedState>,
    secrets: Option<SecretKey>,
    default_provider: Arc<dyn Provider>,
    client: reqwest::Client,
    routes: Mutex<RouteCache>,
    ttl: Duration,
    policy: AddressPolicy,
}

/// A provider that cannot be built (no secrets key, bad settings): every call is a transient
/// failure naming why, so messages retry and then dead-letter for redrive after the fix.
struct Unavailable {
    name: String,
    reason: String,
}

#[async_trait]
impl Provider for Unavailable {
    fn name(&self) -> &str {
        &self.name
    }
    async fn send(&self, _: &str, _: &RenderedMessage) -> SendResult {
        SendResult::Failed(ProviderError::new(FailureClass::Retry, "provider_unavailable", self.reason.clone()))
    }
}

fn kind_of(channel: Channel) -> ProviderKind {
    match channel {
        Channel::WhatsApp => ProviderKind::WhatsApp,
        Channel::Sms => ProviderKind::Sms,
        Channel::Email => ProviderKind::Email,
    }
}

impl Senders {
    /// `call_timeout` bounds each HTTP provider call; `policy` says which addresses tenant
    /// providers may reach.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        state: Arc<dyn SharedState>,
        default_provider: Arc<dyn Provider>,
        secrets: Option<SecretKey>,
        call_timeout: Duration,
        policy: AddressPolicy,
    ) -> Self {
        Self {
            catalog,
            state,
            secrets,
            default_provider,
            client: http_client(call_timeout, policy),
            routes: Mutex::new(HashMap::new()),
            ttl: Duration::from_secs(5),
            policy,
        }
    }

    /// The route for a tenant's messages on `channel`.
    pub async fn route(&self, tenant: TenantId, channel: Channel) -> crate::Result<Arc<Route>> {
        if let Some((route, at)) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get(&(tenant, channel)) {
            if at.elapsed() < self.ttl {
                return Ok(route.clone());
            }
        }
        let settings = self.catalog.get_tenant(tenant).await?;
        let (rate, burst) = settings.map(|t| (t.rate_limit_per_s, t.burst)).unwrap_or((None, 0));
        let mut config = self.catalog.get_provider(tenant, kind_of(channel)).await?;
        if config.is_none() {
            config = self.catalog.get_provider(tenant, ProviderKind::Webhook).await?;
        }
        let stopped = self.state.stopped_senders(tenant).await?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (rate, burst, config.as_ref().map(|c| (c.tenant, c.settings.kind(), c.updated_ms))).hash(&mut hasher);
        let fingerprint = hasher.finish();

        let mark_stopped = |route: &Route| {
            for s in &route.senders {
                if stopped.iter().any(|(p, id)| p == route.provider.name() && *id == s.id) {
                    s.stop();
                }
            }
        };
        if let Some((route, at)) = self.routes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&(tenant, channel)) {
            if route.fingerprint == fingerprint {
                *at = Instant::now();
                mark_stopped(route);
                return Ok(route.clone());
            }
        }
        let limit = rate.map(|r| (r, burst));
        let route = Arc::new(match config {
            None => {
                let name = self.default_provider.name().to_string();
                Route::new(
                    self.default_provider.clone(),
                    vec![Arc::new(Sender::new(tenant, &name, format!("tenant-{tenant}"), None, 0))],
                    tenant,
                    limit,
                    fingerprint,
                )
            }
            Some(config) => {
                let provider = self.provider(&config).await;
                let name = provider.name().to_string();
                let senders = config
                    .settings
                    .senders()
                    .iter()
                    .map(|s| Arc::new(Sender::new(tenant, &name, s.id.clone(), s.rate_limit_per_s, s.burst)))
                    .collect();
                let mut route = Route::new(provider, senders, tenant, limit, fingerprint);
                if let ProviderSettings::WhatsApp { daily_unique_limit, .. } = &config.settings {
                    route.quota = *daily_unique_limit;
                }
                route
            }
        });
        mark_stopped(&route);
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((tenant, channel), (route.clone(), Instant::now()));
        Ok(route)
    }

    async fn provider(&self, config: &ProviderConfig) -> Arc<dyn Provider> {
        let kind = config.settings.kind().as_str();
        let unavailable = |reason: String| -> Arc<dyn Provider> {
            tracing::error!(tenant = %config.tenant, provider = kind, %reason, "provider unavailable");
            Arc::new(Unavailable { name: kind.to_string(), reason })
        };
        let secrets: BTreeMap<String, String> = match &self.secrets {
            Some(key) => match key.open(&aad(config.tenant, kind), &config.secrets) {
                Ok(s) => s,
                Err(e) => return unavailable(e.to_string()),
            },
            None => return unavailable("no secrets key configured".into()),
        };
        let secret = |name: &str| secrets.get(name).cloned().unwrap_or_default();
        // A literal IP never passes the connection-time resolver guard: check it here.
        let url = match &config.settings {
            ProviderSettings::WhatsApp { base_url, .. } | ProviderSettings::Sms { base_url, .. } => Some(base_url),
            ProviderSettings::Webhook { url, .. } => Some(url),
            ProviderSettings::Email { .. } => None,
        };
        if let Some(host) = url.and_then(|u| reqwest::Url::parse(u).ok()).and_then(|u| u.host_str().map(String::from)) {
            if let Err(e) = self.policy.check_literal(&host) {
                return unavailable(e.to_string());
            }
        }
        match &config.settings {
            ProviderSettings::WhatsApp { base_url, api_version, .. } => {
                Arc::new(WhatsApp::new(self.client.clone(), base_url, api_version, secret("access_token")))
            }
            ProviderSettings::Sms { base_url, account_sid, status_callback_url, .. } => Arc::new(Sms::new(
                self.client.clone(),
                base_url,
                account_sid,
                secret("auth_token"),
                status_callback_url.as_deref(),
                config.tenant,
            )),
            ProviderSettings::Email { host, port, tls, username, list_unsubscribe, .. } => {
                // lettre connects by name on its own: resolve and check first, connect to that.
                let connect = match self.policy.resolve(host, *port).await {
                    Ok(addr) => addr.ip().to_string(),
                    Err(e) => return unavailable(e.to_string()),
                };
                let settings = SmtpSettings {
                    connect,
                    host: host.clone(),
                    port: *port,
                    tls: *tls,
                    username: username.clone(),
                    password: secrets.get("password").cloned(),
                    list_unsubscribe: list_unsubscribe.clone(),
                };
                match Email::new(&settings) {
                    Ok(e) => Arc::new(e),
                    Err(e) => unavailable(e),
                }
            }
            ProviderSettings::Webhook { url, .. } => {
                Arc::new(Webhook::new(self.client.clone(), url, secret("signing_secret")))
            }
        }
    }

    /// Every cached sender's state as metrics samples (pacing, AIMD rate, stopped).
    pub fn samples(&self) -> Vec<pipeline::Sample> {
        use pipeline::Sample;
        let mut out = Vec::new();
        for s in self.snapshot() {
            let labelled = |sample: Sample| {
                sample
                    .label("tenant", s.tenant.to_string())
                    .label("provider", s.provider.clone())
                    .label("sender", s.sender.clone())
            };
            if let (Some(configured), Some(current)) = (s.configured_rate, s.current_rate) {
                let help = "sender call rate (configured, and current after AIMD)";
                out.push(
                    labelled(Sample::gauge("herald_sender_rate_per_s", help, configured)).label("kind", "configured"),
                );
                out.push(labelled(Sample::gauge("herald_sender_rate_per_s", help, current)).label("kind", "current"));
            }
            let help = "provider 'too fast' answers";
            out.push(labelled(Sample::counter("herald_sender_pace_signals_total", help, s.pace_signals as f64)));
            let help = "1 when the provider stopped the sender (alert)";
            out.push(labelled(Sample::gauge("herald_sender_stopped", help, f64::from(u8::from(s.stopped)))));
        }
        out
    }

    /// Every cached sender's state.
    pub fn snapshot(&self) -> Vec<SenderView> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<SenderView> = routes
            .iter()
            .flat_map(|((tenant, _), (route, _))| {
                route.senders.iter().map(move |s| {
                    let rates = s.rates();
                    SenderView {
                        tenant: tenant.0,
                        provider: route.provider.name().to_string(),
                        sender: s.id.clone(),
                        configured_rate: rates.map(|r| r.0),
                        current_rate: rates.map(|r| r.1),
                        stopped: s.is_stopped(),
                        pace_signals: s.pace_signals.load(std::sync::atomic::Ordering::Relaxed),
                    }
                })
            })
            .collect();
        out.sort_by(|a, b| (a.tenant, &a.provider, &a.sender).cmp(&(b.tenant, &b.provider, &b.sender)));
        out.dedup_by(|a, b| a.tenant == b.tenant && a.provider == b.provider && a.sender == b.sender);
        out
    }
}
