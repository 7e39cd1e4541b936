//! The PKI's one error type: each variant names what failed and the path,
//! name or serial involved, so the CLI can print it as is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already holds a CA; refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    #[error("{0} holds no CA (run `moat certs init` first)")]
    NotInitialized(PathBuf),
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} has mode {mode:04o}; {expected}")]
    BadPermissions {
        path: PathBuf,
        mode: u32,
        expected: &'static str,
    },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid TTL {value:?}: {reason}")]
    InvalidTtl { value: String, reason: String },
    #[error("TTL {requested} is over the maximum of {maximum}")]
    TtlOverMaximum { requested: String, maximum: String },
    #[error("no certificate with serial {0} in the index")]
    UnknownSerial(String),
    #[error("no unrevoked certificate issued to user {0:?}")]
    UnknownUser(String),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("certificate {serial} cannot be renewed: {reason}")]
    NotRenewable {
        serial: String,
        reason: &'static str,
    },
    // The token's own value is never part of a message: messages are logged.
    #[error("unknown enrollment token (ask your admin for a new one)")]
    UnknownToken,
    #[error("the enrollment token expired at {0} (ask your admin for a new one)")]
    TokenExpired(String),
    #[error("the enrollment token was already used at {0} (ask your admin for a new one)")]
    TokenUsed(String),
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    #[error("invalid host name {0:?} for the server certificate")]
    InvalidHost(String),
    #[error("the server certificate needs at least one --host or --ip")]
    NoServerNames,
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PkiError {
        let path = path.into();
        move |source| PkiError::Io { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> PkiError {
        PkiError::Corrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
