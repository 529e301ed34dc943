//! Errors of the pipeline crate.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic storage: {0}")]
    Storage(#[from] fjall::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("codec: {0}")]
    Codec(#[from] schemas::Error),
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("partition {partition} out of range for topic {topic:?}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("shutting down")]
    ShuttingDown,
}

pub type Result<T> = std::result::Result<T, Error>;
