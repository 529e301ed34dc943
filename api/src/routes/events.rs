//! Live campaign progress as Server-Sent Events, for the console and for REST clients:
//! `GET /v1/campaigns/{id}/events` (one campaign) and `GET /v1/campaigns/events` (the tenant's
//! campaigns that are not finished). Each `progress` event is the same JSON as
//! `GET /v1/campaigns/{id}/progress` (plus `id` on the tenant stream), sent when it changed,
//! checked every second. A campaign's stream ends after its terminal event (`completed`,
//! `cancelled`), and any stream ends after [`MAX_STREAM`] (`EventSource` reconnects).
//!
//! A tenant may hold [`MAX_STREAMS_PER_TENANT`] streams at once (429 `too_many_streams`
//! beyond): each costs a store read per campaign per second, and one tenant must not turn that
//! into load on everyone.
//!
//! It is not: a change feed. Events are snapshots; a client that misses one loses nothing.

use super::campaigns::{owned, progress_of, Progress};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Caller};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use schemas::{CampaignId, TenantId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Streams one tenant may hold open at once.
pub const MAX_STREAMS_PER_TENANT: usize = 16;
/// The longest one stream lasts.
pub const MAX_STREAM: Duration = Duration::from_secs(300);
/// Campaigns the tenant stream follows (the newest unfinished ones).
pub const MAX_FOLLOWED: usize = 100;
const TICK: Duration = Duration::from_secs(1);

/// Open streams per tenant.
#[derive(Default)]
pub struct Streams(Arc<Mutex<HashMap<TenantId, usize>>>);

/// One open stream; dropping it frees the slot.
pub struct Slot {
    streams: Arc<Mutex<HashMap<TenantId, usize>>>,
    tenant: TenantId,
}

impl Streams {
    fn open(&self, tenant: TenantId) -> ApiResult<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(tenant).or_default();
        if *n >= MAX_STREAMS_PER_TENANT {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!("this tenant already has {MAX_STREAMS_PER_TENANT} event streams open"),
            ));
        }
        *n += 1;
        Ok(Slot { streams: self.0.clone(), tenant })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

fn finished(p: &Progress) -> bool {
    matches!(p.status, "completed" | "cancelled")
}

fn progress_event(value: serde_json::Value) -> Event {
    Event::default().event("progress").data(value.to_string())
}

type Events = axum::response::Response;

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Events {
    use axum::response::IntoResponse;
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[utoipa::path(get, path = "/v1/campaigns/{id}/events", tag = "campaigns",
    params(("id" = u64, Path, description = "Campaign id")),
    responses((status = 200, description = "`text/event-stream`: a `progress` event (the JSON of `GET /v1/campaigns/{id}/progress`) whenever it changes, checked every second; the stream ends after a `completed` or `cancelled` event, or after 300 s", content_type = "text/event-stream", body = String)),
    security(("bearer" = [])))]
pub(crate) async fn campaign(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Events> {
    let c = owned(&state, &caller, &id).await?;
    let slot = state.streams.open(c.tenant)?;
    let start = Instant::now();
    let stream = async_stream(move |tx| async move {
        let _slot = slot;
        let mut last: Option<Progress> = None;
        while start.elapsed() < MAX_STREAM {
            // The campaign may be gone (its tenant deleted): the stream ends.
            let Ok(Some(now)) = state.store.get_campaign(c.tenant, c.id).await else { break };
            if let Ok(p) = progress_of(&state, &now).await {
                if last.as_ref() != Some(&p) {
                    let done = finished(&p);
                    let value = serde_json::to_value(&p).unwrap_or_default();
                    if tx.send(progress_event(value)).await.is_err() || done {
                        break;
                    }
                    last = Some(p);
                }
            }
            tokio::time::sleep(TICK).await;
        }
    });
    Ok(sse(stream))
}

#[utoipa::path(get, path = "/v1/campaigns/events", tag = "campaigns",
    responses((status = 200, description = "`text/event-stream`: a `progress` event (the JSON of `GET /v1/campaigns/{id}/progress` plus `id`) for each of the tenant's 100 newest unfinished campaigns whenever it changes (including its final `completed` or `cancelled`), checked every second; the stream ends after 300 s", content_type = "text/event-stream", body = String)),
    security(("bearer" = [])))]
pub(crate) async fn tenant(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Events> {
    let tenant = caller.tenant()?;
    let slot = state.streams.open(tenant)?;
    let start = Instant::now();
    let stream = async_stream(move |tx| async move {
        let _slot = slot;
        let mut last: HashMap<CampaignId, Progress> = HashMap::new();
        while start.elapsed() < MAX_STREAM {
            let Ok(mut campaigns) = state.store.list_campaigns(tenant).await else {
                tokio::time::sleep(TICK).await;
                continue;
            };
            campaigns.sort_by_key(|c| std::cmp::Reverse(c.id.0));
            let mut followed = 0;
            for c in campaigns {
                // Finished campaigns are followed only until their final event was sent.
                let seen_final = last.get(&c.id).is_some_and(finished);
                if seen_final || followed >= MAX_FOLLOWED {
                    continue;
                }
                let Ok(p) = progress_of(&state, &c).await else { continue };
                followed += 1;
                if last.get(&c.id) != Some(&p) {
                    let mut value = serde_json::to_value(&p).unwrap_or_default();
                    value["id"] = c.id.0.into();
                    if tx.send(progress_event(value)).await.is_err() {
                        return;
                    }
                    last.insert(c.id, p);
                }
            }
            tokio::time::sleep(TICK).await;
        }
    });
    Ok(sse(stream))
}

/// A stream fed by a task: the task ends when the client goes away (its sends fail).
pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/v1/campaigns/events", axum::routing::get(tenant))
        .route("/v1/campaigns/{id}/events", axum::routing::get(campaign))
}

fn async_stream<F, Fut>(task: F) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(task(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_share_of_streams_and_slots_come_back() {
        let streams = Streams::default();
        let held: Vec<Slot> = (0..MAX_STREAMS_PER_TENANT).map(|_| streams.open(TenantId(1)).unwrap()).collect();
        let refused = streams.open(TenantId(1)).err().unwrap();
        assert_eq!((refused.status, refused.code), (StatusCode::TOO_MANY_REQUESTS, "too_many_streams"));
        // Another tenant is not affected.
        let _other = streams.open(TenantId(2)).unwrap();
        drop(held);
        assert!(streams.open(TenantId(1)).is_ok());
    }
}
