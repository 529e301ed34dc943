//! Headers that travel beside every topic record.
//!
//! Kept as an ordered list of (name, value) pairs, like Fluvio/Kafka record headers, so W3C
//! `traceparent`/`tracestate` can be carried from the API through every stage.

use serde::{Deserialize, Serialize};

/// The W3C trace-context header name.
pub const TRACEPARENT: &str = "traceparent";

/// Record headers. Small (usually 0–2 entries), so a `Vec` beats a map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value stored under `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets `name`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_and_get_finds() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.set(TRACEPARENT, "00-a-b-01");
        h.set(TRACEPARENT, "00-c-d-01");
        h.set("tracestate", "x=1");
        assert_eq!(h.get(TRACEPARENT), Some("00-c-d-01"));
        assert_eq!(h.0.len(), 2);
        assert_eq!(h.get("missing"), None);
    }
}
