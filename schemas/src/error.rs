//! Errors of the schemas crate: only encoding and decoding can fail here.

/// What can go wrong while encoding or decoding a record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("encode failed: {0}")]
    Encode(String),
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("unsupported codec version {found} (expected {expected})")]
    Version { found: u8, expected: u8 },
    #[error("empty payload")]
    Empty,
}

pub type Result<T> = std::result::Result<T, Error>;
