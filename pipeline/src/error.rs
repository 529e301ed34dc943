//! Errors of the pipeline crate. Every backend error says whether retrying can help.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend hiccup (connection lost, timeout, leader moved): retry.
    #[error("topic backend (transient): {0}")]
    Transient(String),
    /// Retrying cannot help (corrupt data, misconfiguration, a topic that does not exist).
    #[error("topic backend: {0}")]
    Fatal(String),
    #[error("codec: {0}")]
    Codec(#[from] schemas::Error),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("partition {partition} out of range for topic {topic:?}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("shutting down")]
    ShuttingDown,
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_) | Error::ShuttingDown)
    }
}

impl From<fjall::Error> for Error {
    fn from(e: fjall::Error) -> Self {
        // A local disk error: an I/O failure may pass (a full disk freed), corruption does not.
        match e {
            fjall::Error::Io(io) => Error::Transient(io.to_string()),
            other => Error::Fatal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Transient(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
