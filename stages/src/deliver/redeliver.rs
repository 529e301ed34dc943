//! redeliver: delivery.retry → the same steps as deliver. Retries arrive due at their backoff
//! (the runner holds each record until its due time: nothing here sleeps), and DLQ redrives
//! (`redrive: true`) may send a message whose claim says its last attempt failed.

use super::Deliver;
use pipeline::{topics, Emitter, Input, Lane, Stage, StageError, Step};
use schemas::RetryBatch;
use std::result::Result;
use std::sync::Arc;

/// The retry side of deliver (consumes `delivery.retry`: retries, due at their backoff, and
/// DLQ redrives). The runner holds each record until it is due.
pub struct Redeliver {
    deliver: Arc<Deliver>,
}

impl Redeliver {
    pub fn new(deliver: Arc<Deliver>) -> Self {
        Self { deliver }
    }
}

impl Stage for Redeliver {
    type In = RetryBatch;

    fn name(&self) -> &'static str {
        topics::REDELIVER.name
    }

    fn lane(&self, batch: &RetryBatch) -> Lane {
        Lane::campaign(batch.tenant, batch.campaign)
    }

    fn lane_of_encoded(&self, bytes: &[u8]) -> Option<Lane> {
        schemas::campaign_of_encoded(bytes).map(|(tenant, campaign)| Lane::campaign(tenant, campaign))
    }

    async fn process(&self, batch: Vec<Input<RetryBatch>>, out: &mut Emitter) -> Result<Step<RetryBatch>, StageError> {
        for (i, input) in batch.into_iter().enumerate() {
            let RetryBatch { tenant, campaign, redrive, messages } = input.value;
            let lease = input.lease.as_deref();
            if let Some((messages, until_ms)) =
                self.deliver.deliver(tenant, campaign, redrive, messages, lease, out).await?
            {
                let replacement = Some(RetryBatch { tenant, campaign, redrive, messages });
                return Ok(Step::Wait { from: i, replacement, until_ms });
            }
        }
        Ok(Step::Done)
    }
}
