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
    fn from(e: Error) -> Self {
        StageError::retry(Duration::from_millis(250), e.to_string())
    }
}
