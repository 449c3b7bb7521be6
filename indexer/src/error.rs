//! The indexer's errors.

use std::path::PathBuf;

pub type Result<T, E = IndexerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// Bad arguments: exit code 2.
    #[error("{0}")]
    Config(String),
    #[error("cannot read corpus {}: {source}", path.display())]
    Corpus {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index: {0}")]
    Index(#[from] leaf::LeafError),
    #[error("pipeline: {0}")]
    Pipeline(String),
}

impl IndexerError {
    /// The process exit code: 2 for bad input, 1 for a failed build.
    pub fn exit_code(&self) -> u8 {
        match self {
            IndexerError::Config(_) | IndexerError::Corpus { .. } => 2,
            IndexerError::Output { .. } => 2,
            IndexerError::Index(_) | IndexerError::Pipeline(_) => 1,
        }
    }

    pub(crate) fn output(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IndexerError {
        let path = path.into();
        move |source| IndexerError::Output { path, source }
    }
}
