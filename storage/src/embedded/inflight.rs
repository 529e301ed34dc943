//! Claims of calls in flight: held in memory, written one row per call group.
//!
//! Deliver claims a message `InFlight` right before its call and settles it (`Done`,
//! `Retrying`) right after, so nearly every in-flight claim lives for one provider call. Written
//! as its own row of `claims_short`, each cost a memtable insert for a value overwritten a
//! few milliseconds later. Here the in-flight claims that one compare-and-set batch writes go
//! into one row of the `inflight` keyspace, keyed `(tenant, group)` (16 bytes), whose value is
//! every claim of that group still in flight. A batch that replaces some of them rewrites the
//! row with the rest, or removes it when none is left.
//!
//! **Exactness.** A live group entry *is* the message's claim, whatever `claims_short`
//! holds for it (an older, settled claim): every write that replaces an in-flight claim takes it
//! out of its group in the same atomic batch, so a row never holds a replaced claim, and no
//! message is in two groups. [`InFlightClaims`] is the whole keyspace in memory, loaded at open
//! (its size is the calls in flight plus what a crash left in doubt, never the audience), read
//! and changed under the store's `cas_lock`, and changed only after the batch that writes its
//! rows is committed ([`InFlightClaims::plan`], then [`InFlightClaims::apply`]).
//!
//! It is not: a cache (absent here means not in flight), nor used by the distributed state.

use super::keys::{self, Key};
use crate::model::Claim;
use crate::Result;
use schemas::{codec, CampaignId, MessageKey, TenantId};
// foldhash: these maps are looked up once or more per message sent (SipHash was ~1.7% of the
// engine's CPU samples here); its seed is random per process, and the keys are store-assigned.
use foldhash::HashMap;

/// A claim's identity (the bucket follows from the recipient, so it is not part of it).
type ClaimId = (TenantId, CampaignId, u128);
/// A group row's identity: its tenant and its number.
type GroupId = (TenantId, u64);
/// What a group row holds: its claims still in flight.
pub(super) type Members = Vec<(MessageKey, Claim)>;

fn id(key: &MessageKey) -> ClaimId {
    (key.tenant, key.campaign, key.id.0)
}

/// A group row's key: `(tenant, group)`, tenant first so a purge removes a tenant's groups.
pub(super) fn row_key(group: GroupId) -> Vec<u8> {
    Key::new().u64(group.0 .0).u64(group.1).build()
}

/// See the module docs.
#[derive(Default)]
pub(super) struct InFlightClaims {
    next_group: u64,
    /// Each in-flight claim and the group holding it.
    claims: HashMap<ClaimId, (u64, Claim)>,
    /// Each group's messages: exactly those whose entry in `claims` names the group (a batch
    /// that takes members out rewrites the group).
    groups: HashMap<GroupId, Vec<MessageKey>>,
}

/// What one batch of compare-and-sets changes: the rows to write (no members: remove the row),
/// applied to memory once the batch is committed.
#[derive(Default)]
pub(super) struct Plan {
    /// Claims the batch replaced or wrote, each with its newest value.
    written: HashMap<ClaimId, Claim>,
    /// Their keys, in the order first written.
    order: Vec<MessageKey>,
    pub rows: Vec<(GroupId, Members)>,
}

impl Plan {
    /// The claim this batch last wrote at `key`, which later writes in the batch compare with.
    pub fn get(&self, key: &MessageKey) -> Option<&Claim> {
        self.written.get(&id(key))
    }

    /// Records a write of `claim` at `key`.
    pub fn write(&mut self, key: &MessageKey, claim: Claim) {
        if self.written.insert(id(key), claim).is_none() {
            self.order.push(*key);
        }
    }
}

impl InFlightClaims {
    /// Loads every group row of `ks`.
    pub fn load(ks: &fjall::Keyspace) -> Result<Self> {
        let mut this = Self::default();
        for guard in ks.iter() {
            let (key, value) = guard.into_inner()?;
            let group = (TenantId(keys::read_u64(&key, 0)), keys::read_u64(&key, 8));
            let members: Members = codec::decode(&value)?;
            this.next_group = this.next_group.max(group.1 + 1);
            this.insert(group, members);
        }
        Ok(this)
    }

    /// The in-flight claim at `key`, if any.
    pub fn get(&self, key: &MessageKey) -> Option<&Claim> {
        self.claims.get(&id(key)).map(|(_, claim)| claim)
    }

    /// How many claims are in flight.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Adds to `plan` the group rows a batch writing its claims must write: groups that lose
    /// members are rewritten with the rest (or removed), and the new in-flight claims go into
    /// one new group per tenant.
    pub fn plan(&mut self, mut plan: Plan) -> Plan {
        let mut touched: Vec<GroupId> = Vec::new();
        for key in &plan.order {
            if let Some((group, _)) = self.claims.get(&id(key)) {
                touched.push((key.tenant, *group));
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for group in touched {
            let members = self.groups.get(&group).map(Vec::as_slice).unwrap_or_default();
            let rest = members
                .iter()
                .filter(|k| !plan.written.contains_key(&id(k)))
                // The group check only matters for rows loaded at open that broke the invariant.
                .filter_map(|k| match self.claims.get(&id(k)) {
                    Some((g, claim)) if *g == group.1 => Some((*k, claim.clone())),
                    _ => None,
                })
                .collect();
            plan.rows.push((group, rest));
        }
        let mut fresh: Vec<(TenantId, Members)> = Vec::new();
        for key in &plan.order {
            let claim = &plan.written[&id(key)];
            if !matches!(claim, Claim::InFlight { .. }) {
                continue;
            }
            match fresh.iter_mut().find(|(t, _)| *t == key.tenant) {
                Some((_, members)) => members.push((*key, claim.clone())),
                None => fresh.push((key.tenant, vec![(*key, claim.clone())])),
            }
        }
        for (tenant, members) in fresh {
            plan.rows.push(((tenant, self.next_group), members));
            self.next_group += 1;
        }
        plan
    }

    /// Makes memory what the committed `plan` wrote.
    pub fn apply(&mut self, plan: Plan) {
        for claim in plan.written.keys() {
            self.claims.remove(claim);
        }
        for (group, members) in plan.rows {
            self.groups.remove(&group);
            self.insert(group, members);
        }
    }

    fn insert(&mut self, group: GroupId, members: Members) {
        if members.is_empty() {
            return;
        }
        let mut keys = Vec::with_capacity(members.len());
        for (key, claim) in members {
            self.claims.insert(id(&key), (group.1, claim));
            keys.push(key);
        }
        self.groups.insert(group, keys);
    }

    /// Forgets the groups whose rows were removed behind this map's back (a tenant's purge);
    /// `removed` are their row keys.
    pub fn forget_rows(&mut self, removed: &[fjall::UserKey]) {
        for key in removed {
            let group = (TenantId(keys::read_u64(key, 0)), keys::read_u64(key, 8));
            for member in self.groups.remove(&group).unwrap_or_default() {
                if self.claims.get(&id(&member)).is_some_and(|(g, _)| *g == group.1) {
                    self.claims.remove(&id(&member));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::MessageId;

    fn key(tenant: u64, n: u32) -> MessageKey {
        MessageKey { tenant: TenantId(tenant), campaign: CampaignId(2), bucket: 0, id: MessageId(u128::from(n)) }
    }

    fn in_flight(attempt: u32) -> Claim {
        Claim::InFlight { attempt, at_ms: 1 }
    }

    fn done(attempt: u32) -> Claim {
        Claim::Retrying { attempt, due_ms: 9 }
    }

    /// Plans `writes` and applies the plan as if committed; returns its rows.
    fn write(c: &mut InFlightClaims, writes: &[(MessageKey, Claim)]) -> Vec<(GroupId, Members)> {
        let mut plan = Plan::default();
        for (k, claim) in writes {
            plan.write(k, claim.clone());
        }
        let plan = c.plan(plan);
        let rows = plan.rows.clone();
        c.apply(plan);
        rows
    }

    #[test]
    fn a_group_row_holds_exactly_its_claims_still_in_flight() {
        let mut c = InFlightClaims::default();
        let rows = write(&mut c, &[(key(1, 1), in_flight(1)), (key(1, 2), in_flight(1)), (key(2, 3), in_flight(1))]);
        assert_eq!(rows.len(), 2, "one new group per tenant");
        assert_eq!(rows[0], ((TenantId(1), 0), vec![(key(1, 1), in_flight(1)), (key(1, 2), in_flight(1))]));
        assert_eq!(rows[1], ((TenantId(2), 1), vec![(key(2, 3), in_flight(1))]));

        // Settling one rewrites its group with the other; settling that one removes the row.
        let rows = write(&mut c, &[(key(1, 1), done(1))]);
        assert_eq!(rows, vec![((TenantId(1), 0), vec![(key(1, 2), in_flight(1))])]);
        assert_eq!(c.get(&key(1, 1)), None);
        assert_eq!(c.get(&key(1, 2)), Some(&in_flight(1)));
        let rows = write(&mut c, &[(key(1, 2), done(1))]);
        assert_eq!(rows, vec![((TenantId(1), 0), vec![])]);

        // Claimed again in flight: it leaves its old group for a new one in the same batch.
        let rows = write(&mut c, &[(key(2, 3), in_flight(2))]);
        assert_eq!(rows, vec![((TenantId(2), 1), vec![]), ((TenantId(2), 2), vec![(key(2, 3), in_flight(2))])]);
        assert_eq!(c.get(&key(2, 3)), Some(&in_flight(2)));
        assert_eq!(c.len(), 1);

        // Written twice in one batch: the last value counts.
        let rows = write(&mut c, &[(key(1, 5), in_flight(1)), (key(1, 5), done(1))]);
        assert_eq!(rows, vec![]);
        assert_eq!(c.get(&key(1, 5)), None);

        write(&mut c, &[(key(1, 6), in_flight(1))]);
        c.forget_rows(&[row_key((TenantId(2), 2)).into()]);
        assert_eq!((c.get(&key(2, 3)), c.get(&key(1, 6))), (None, Some(&in_flight(1))), "only the purged row's claims");
        assert_eq!(c.groups.len(), 1);
    }

    #[test]
    fn a_plan_not_applied_changes_nothing() {
        let mut c = InFlightClaims::default();
        write(&mut c, &[(key(1, 1), in_flight(1))]);
        let mut plan = Plan::default();
        plan.write(&key(1, 1), done(1));
        let _failed_commit = c.plan(plan);
        assert_eq!(c.get(&key(1, 1)), Some(&in_flight(1)));
    }
}
