//! Errors of the stages crate.

use pipeline::StageError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    #[error("pipeline: {0}")]
    Pipeline(#[from] pipeline::Error),
    #[error("invalid template: {0}")]
    Template(#[from] crate::render::template::TemplateError),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for StageError {
    /// Storage and topic failures are transient from a stage's point of view: retry the batch.
    /// A write fenced by a lost partition lease is not: the worker must let the partition go.
    fn from(e: Error) -> Self {
        match e {
            Error::Storage(storage::Error::Fenced { .. }) => StageError::abandon(e.to_string()),
            Error::Storage(ref s) if s.is_transient() => StageError::outage(Duration::from_millis(250), e.to_string()),
            Error::Pipeline(ref p) if p.is_transient() => StageError::outage(Duration::from_millis(250), e.to_string()),
            e => StageError::retry(Duration::from_millis(250), e.to_string()),
        }
    }
}
