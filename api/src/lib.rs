//! Herald's control plane (axum) — not built yet.
//!
//! The control API (tenants, templates, audiences with CSV import, campaign lifecycle, message
//! log, DLQ, receipt webhooks, JWT) is the next issue. Until then the engine is driven by
//! `herald demo` and `herald bench`, which call the same store and topics the API will.
//!
//! It is not: usable yet; this crate exists so the workspace layout matches the design.
