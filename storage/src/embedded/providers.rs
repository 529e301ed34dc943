//! Provider settings on the embedded store: settings per (tenant, kind), the global sender
//! index for webhook routing and the verify-token index (used by the `Catalog` impl).

use super::keys::Key;
use super::{get, put, EmbeddedStore};
use crate::model::*;
use crate::{Error, Result};
use schemas::*;

fn provider_key(t: TenantId, kind: ProviderKind) -> Vec<u8> {
    Key::new().u64(t.0).u32(kind.ordinal()).build()
}
fn sender_key(kind: ProviderKind, sender: &str) -> Vec<u8> {
    Key::new().str("sender").u32(kind.ordinal()).str(sender).build()
}
fn verify_key(index: &[u8; 32]) -> Vec<u8> {
    let mut k = Key::new().str("verify").build();
    k.extend_from_slice(index);
    k
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
    fn unindex(&self, batch: &mut pipeline::embedded::Batch, old: &ProviderConfig) -> Result<()> {
        for key in index_keys(old) {
            if get::<TenantId>(&self.provider_index, &key)? == Some(old.tenant) {
                batch.remove(&self.provider_index, key);
            }
        }
        Ok(())
    }
}

impl EmbeddedStore {
    pub(super) fn provider_put(&self, config: &ProviderConfig) -> Result<()> {
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

    pub(super) fn provider_get(&self, tenant: TenantId, kind: ProviderKind) -> Result<Option<ProviderConfig>> {
        get(&self.providers, &provider_key(tenant, kind))
    }

    pub(super) fn provider_delete(&self, tenant: TenantId, kind: ProviderKind) -> Result<bool> {
        let _guard = self.sequence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = provider_key(tenant, kind);
        let Some(old) = get::<ProviderConfig>(&self.providers, &key)? else { return Ok(false) };
        let mut batch = self.batch();
        self.unindex(&mut batch, &old)?;
        batch.remove(&self.providers, key);
        batch.commit()?;
        Ok(true)
    }

    pub(super) fn provider_find_sender(&self, kind: ProviderKind, sender: &str) -> Result<Option<TenantId>> {
        if !kind.senders_are_global() {
            return Ok(None);
        }
        get(&self.provider_index, &sender_key(kind, sender))
    }

    pub(super) fn provider_find_verify_token(&self, index: &[u8; 32]) -> Result<Option<TenantId>> {
        get(&self.provider_index, &verify_key(index))
    }
}
