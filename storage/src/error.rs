//! Errors of the storage crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("stored value is corrupt: {0}")]
    Corrupt(#[from] schemas::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// A globally unique sender (a WhatsApp phone number id, an SMS number) owned by another
    /// tenant. Checked and written atomically by the store, so two tenants cannot both win.
    #[error("sender {sender:?} belongs to another tenant")]
    SenderTaken { sender: String },
    /// A write fenced by a lease that is no longer current (the writer lost its partition).
    #[error("lease {lease} is held by another worker now")]
    Fenced { lease: String },
    /// A networked backend (Redis, ScyllaDB) failed or could not be reached: retrying may help.
    #[error("{backend} unavailable: {message}")]
    Unavailable { backend: &'static str, message: String },
    /// Two messages whose ids share the 96 bits an embedded per-message key keeps (ids are
    /// 128-bit hashes: ~2^-70 for a campaign bucket of 10,000). Refused rather than confused.
    #[error("message {id} shares its stored key with another message of its campaign")]
    KeyCollision { id: String },
    /// A value the store's contract refuses (e.g. a tenant limit out of the platform's bounds).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether the same call may succeed later (a backend outage, a local I/O error).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Io(_))
    }
}
