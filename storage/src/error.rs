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
}

pub type Result<T> = std::result::Result<T, Error>;
