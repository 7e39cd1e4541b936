//! What can fail, named by what failed and where.

use std::path::PathBuf;
use std::sync::Arc;

/// Loading an audit key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Opening or writing the log. Any error from `append` means the record is
/// not in the log: the caller must not go on as if it were (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The end of the log is damaged beyond a torn last write; the writer
    /// will not guess where the chain continues.
    #[error("audit log {path}: {reason} (run `moat audit verify`)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("audit record could not be encoded: {0}")]
    Encode(Arc<serde_json::Error>),
    #[error("the audit log is closed")]
    Closed,
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Io {
            path,
            source: Arc::new(source),
        }
    }
}
