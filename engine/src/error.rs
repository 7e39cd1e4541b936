//! The engine's errors. A [`ConfigError`] is the caller's fault and names
//! the field; the others carry the path or id involved.

use std::path::PathBuf;

/// A container configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ConfigError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: {reason}")]
    Runtime { id: String, reason: String },
    #[error("user namespaces: {0}")]
    UserNamespace(String),
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.into();
        move |source| EngineError::Io { path, source }
    }

    pub(crate) fn runtime(id: &str, reason: impl ToString) -> EngineError {
        EngineError::Runtime {
            id: id.to_owned(),
            reason: reason.to_string(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
