//! One module per resource, each exposing `routes()`; merged in `crate::router`.

pub mod audiences;
pub mod campaigns;
pub mod dlq;
pub mod import;
pub mod ops;
pub mod providers;
pub mod sms_callbacks;
pub mod suppressions;
pub mod templates;
pub mod tenants;
pub mod webhooks;

/// A page of items with the cursor of the next page.
#[derive(serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
