//! `ProviderStore` on the embedded store: provider settings per (tenant, kind), the sender
//! index for webhook routing, and the rolling messaging-tier quota.

use super::keys::Key;
use super::{get, put, EmbeddedStore};
use crate::model::*;
use crate::{Error, ProviderStore, Result};
use async_trait::async_trait;
use schemas::*;

fn kind_index(kind: ProviderKind) -> u32 {
    ProviderKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u32
}
fn provider_key(t: TenantId, kind: ProviderKind) -> Vec<u8> {
    Key::new().u64(t.0).u32(kind_index(kind)).build()
}
fn sender_key(kind: ProviderKind, sender: &str) -> Vec<u8> {
    Key::new().str("sender").u32(kind_index(kind)).str(sender).build()
}
fn verify_key(index: &[u8; 32]) -> Vec<u8> {
    let mut k = Key::new().str("verify").build();
    k.extend_from_slice(index);
    k
}
fn ledger_key(t: TenantId) -> Vec<u8> {
    Key::new().u64(t.0).str("ledger").build()
}
fn wait_key(t: TenantId, c: CampaignId) -> Vec<u8> {
    Key::new().u64(t.0).str("wait").u64(c.0).build()
}

/// The index entries a stored configuration owns: its global senders and its verify token.
fn index_keys(config: &ProviderConfig) -> Vec<Vec<u8>> {
    let kind = config.settings.kind();
    let mut keys = Vec::new();
    if kind.senders_are_global() {
        keys.extend(config.settings.senders().iter().map(|s| sender_key(kind, &s.id)));
    }
    keys.extend(config.verify_token_index.as_ref().map(verify_key));
    keys
}

impl EmbeddedStore {
    /// Removes the index entries of a stored config that still point at its tenant.
    fn unindex(&self, batch: &mut fjall::OwnedWriteBatch, old: &ProviderConfig) -> Result<()> {
        for key in index_keys(old) {
            if get::<TenantId>(&self.provider_index, &key)? == Some(old.tenant) {
                batch.remove(&self.provider_index, key);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ProviderStore for EmbeddedStore {
    async fn put_provider(&self, config: &ProviderConfig) -> Result<()> {
        // Check and write under one lock: two tenants racing for one sender cannot both win.
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let kind = config.settings.kind();
        if kind.senders_are_global() {
            for s in config.settings.senders() {
                let owner = get::<TenantId>(&self.provider_index, &sender_key(kind, &s.id))?;
                if owner.is_some_and(|o| o != config.tenant) {
                    return Err(Error::SenderTaken { sender: s.id.clone() });
                }
            }
        }
        let key = provider_key(config.tenant, kind);
        let mut batch = self.batch();
        if let Some(old) = get::<ProviderConfig>(&self.providers, &key)? {
            self.unindex(&mut batch, &old)?;
        }
        put(&mut batch, &self.providers, key, config)?;
        for k in index_keys(config) {
            put(&mut batch, &self.provider_index, k, &config.tenant)?;
        }
        Ok(batch.commit()?)
    }

    async fn get_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>> {
        get(&self.providers, &provider_key(tenant, kind))
    }

    async fn list_providers(&self, tenant: TenantId) -> Result<Vec<ProviderConfig>> {
        let mut out = Vec::new();
        for kind in ProviderKind::ALL {
            out.extend(self.get_provider(tenant, kind).await?);
        }
        Ok(out)
    }

    async fn delete_provider(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool> {
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = provider_key(tenant, kind);
        let Some(old) = get::<ProviderConfig>(&self.providers, &key)? else { return Ok(false) };
        let mut batch = self.batch();
        self.unindex(&mut batch, &old)?;
        batch.remove(&self.providers, key);
        batch.commit()?;
        Ok(true)
    }

    async fn find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>> {
        if !kind.senders_are_global() {
            return Ok(None);
        }
        get(&self.provider_index, &sender_key(kind, sender))
    }

    async fn find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>> {
        get(&self.provider_index, &verify_key(index))
    }

    async fn reserve_quota(
        &self,
        tenant: TenantId,
        limit: u64,
        window_ms: u64,
        want: u64,
        now_ms: u64,
    ) -> Result<QuotaGrant> {
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = ledger_key(tenant);
        let mut ledger: QuotaLedger = get(&self.quota, &key)?.unwrap_or_default();
        let grant = ledger.reserve(limit, window_ms, want, now_ms);
        let mut batch = self.batch();
        put(&mut batch, &self.quota, key, &ledger)?;
        batch.commit()?;
        Ok(grant)
    }

    async fn restamp_quota(&self, tenant: TenantId, n: u64, now_ms: u64) -> Result<()> {
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = ledger_key(tenant);
        let Some(mut ledger) = get::<QuotaLedger>(&self.quota, &key)? else { return Ok(()) };
        ledger.restamp(n, now_ms);
        let mut batch = self.batch();
        put(&mut batch, &self.quota, key, &ledger)?;
        Ok(batch.commit()?)
    }

    async fn set_quota_wait(&self, tenant: TenantId, campaign: CampaignId, resume_at_ms: Option<u64>) -> Result<()> {
        let key = wait_key(tenant, campaign);
        let mut batch = self.batch();
        match resume_at_ms {
            Some(at) => put(&mut batch, &self.quota, key, &at)?,
            None => batch.remove(&self.quota, key),
        }
        Ok(batch.commit()?)
    }

    async fn get_quota_wait(&self, tenant: TenantId, campaign: CampaignId) -> Result<Option<u64>> {
        get(&self.quota, &wait_key(tenant, campaign))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Sealed;

    fn whatsapp(tenant: u64, senders: &[&str]) -> ProviderConfig {
        ProviderConfig {
            tenant: TenantId(tenant),
            settings: ProviderSettings::WhatsApp {
                base_url: "http://x".into(),
                api_version: "v21.0".into(),
                senders: senders
                    .iter()
                    .map(|s| SenderSettings { id: s.to_string(), rate_limit_per_s: Some(80), burst: 8 })
                    .collect(),
                daily_unique_limit: None,
            },
            secrets: Sealed::default(),
            updated_ms: 0,
            verify_token_index: Some([tenant as u8; 32]),
        }
    }

    #[test]
    fn providers_index_senders_and_reindex_on_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            store.put_provider(&whatsapp(1, &["p1", "p2"])).await.unwrap();
            store.put_provider(&whatsapp(2, &["p3"])).await.unwrap();
            // A global sender has one owner: the second tenant is refused and nothing changes.
            let taken = store.put_provider(&whatsapp(2, &["p3", "p1"])).await;
            assert!(matches!(taken, Err(Error::SenderTaken { ref sender }) if sender == "p1"), "{taken:?}");
            assert_eq!(store.find_sender(ProviderKind::WhatsApp, "p3").await.unwrap(), Some(TenantId(2)));
            assert_eq!(store.find_verify_token(&[2; 32]).await.unwrap(), Some(TenantId(2)));
            assert_eq!(store.find_sender(ProviderKind::WhatsApp, "p2").await.unwrap(), Some(TenantId(1)));
            assert_eq!(store.find_sender(ProviderKind::Sms, "p2").await.unwrap(), None);
            store.put_provider(&whatsapp(1, &["p1"])).await.unwrap();
            assert_eq!(store.find_sender(ProviderKind::WhatsApp, "p2").await.unwrap(), None);
            assert_eq!(store.list_providers(TenantId(1)).await.unwrap().len(), 1);
            assert!(store.delete_provider(TenantId(1), ProviderKind::WhatsApp).await.unwrap());
            assert_eq!(store.find_sender(ProviderKind::WhatsApp, "p1").await.unwrap(), None);
            assert_eq!(store.find_verify_token(&[1; 32]).await.unwrap(), None);
            assert_eq!(store.find_sender(ProviderKind::WhatsApp, "p3").await.unwrap(), Some(TenantId(2)));
            store.put_provider(&whatsapp(3, &["p1"])).await.unwrap();
        });
    }

    #[test]
    fn webhook_and_email_senders_are_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let webhook = |tenant: u64| ProviderConfig {
            tenant: TenantId(tenant),
            settings: ProviderSettings::Webhook {
                url: "https://example.com/hook".into(),
                senders: vec![SenderSettings { id: "webhook".into(), rate_limit_per_s: None, burst: 0 }],
            },
            secrets: Sealed::default(),
            updated_ms: 0,
            verify_token_index: None,
        };
        rt.block_on(async {
            store.put_provider(&webhook(1)).await.unwrap();
            store.put_provider(&webhook(2)).await.unwrap();
            assert_eq!(store.find_sender(ProviderKind::Webhook, "webhook").await.unwrap(), None);
            assert_eq!(store.list_providers(TenantId(2)).await.unwrap().len(), 1);
        });
    }

    #[test]
    fn racing_tenants_cannot_both_take_a_sender() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(EmbeddedStore::open(dir.path(), Default::default()).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let won = rt.block_on(async {
            let tasks: Vec<_> = (1..=16u64)
                .map(|t| {
                    let store = store.clone();
                    tokio::spawn(async move { store.put_provider(&whatsapp(t, &["RACE"])).await.is_ok() })
                })
                .collect();
            let mut won = 0;
            for t in tasks {
                won += u32::from(t.await.unwrap());
            }
            won
        });
        assert_eq!(won, 1, "exactly one tenant may own a phone number id");
    }

    #[test]
    fn quota_grants_up_to_the_limit_and_frees_after_the_window() {
        let mut ledger = QuotaLedger::default();
        let window = 10_000;
        let g = ledger.reserve(100, window, 60, 1_000);
        assert_eq!((g.granted, g.resume_at_ms), (60, None));
        let g = ledger.reserve(100, window, 60, 2_000);
        assert_eq!(g.granted, 40);
        let resume = g.resume_at_ms.unwrap();
        assert!((11_000..=11_020).contains(&resume), "{resume}");
        assert_eq!(ledger.reserve(100, window, 1, resume - 1).granted, 0);
        // The first 60 expire; the 40 from t=2000 still count.
        assert_eq!(ledger.reserve(100, window, 100, resume).granted, 60);
    }

    #[test]
    fn restamped_counts_expire_from_the_send_time() {
        let mut ledger = QuotaLedger::default();
        let window = 10_000;
        assert_eq!(ledger.reserve(10, window, 10, 0).granted, 10);
        // Released at 0, sent at 5 s: they count until 15 s, not 10 s.
        ledger.restamp(10, 5_000);
        assert_eq!(ledger.reserve(10, window, 10, 12_000).granted, 0);
        assert_eq!(ledger.reserve(10, window, 10, 15_020).granted, 10);
    }
}
