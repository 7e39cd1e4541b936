//! What can go wrong talking to a registry, named so the API layer answers
//! with a fitting status and the docker CLI shows a useful line.

use crate::images::ImageError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused the credentials (or wants some); the message
    /// says how (`unauthorized: authentication required`).
    #[error("{registry}: {message}")]
    Unauthorized { registry: String, message: String },

    /// An image the store does not have (Docker's wording, complete).
    #[error("{0}")]
    NoLocalImage(String),

    /// A manifest or repository the registry does not have.
    #[error("{what} not found: {message}")]
    NotFound { what: String, message: String },

    /// Any other answer the operation cannot go on with.
    #[error("{registry}: {what}: {status}: {message}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        message: String,
    },

    /// The registry could not be reached, or the connection failed.
    #[error("{registry}: {reason}")]
    Transport { registry: String, reason: String },

    /// An answer that breaks the distribution spec (a bad manifest, a
    /// missing header, a blob of the wrong size or digest).
    #[error("{what}: {reason}")]
    Protocol { what: String, reason: String },

    /// Something moat does not do (schema1 manifests, zstd layers, ...).
    #[error("{0}")]
    Unsupported(String),

    /// The caller's input (reference, platform, credentials header).
    #[error("{0}")]
    BadRequest(String),

    #[error(transparent)]
    Image(#[from] ImageError),
}

impl RegistryError {
    /// The HTTP status this error is answered with before any progress has
    /// been streamed.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::Unauthorized { .. } => 401,
            RegistryError::NotFound { .. } | RegistryError::NoLocalImage(_) => 404,
            RegistryError::BadRequest(_) => 400,
            RegistryError::Unsupported(_) => 400,
            RegistryError::Image(e) => e.status(),
            RegistryError::Status { .. }
            | RegistryError::Transport { .. }
            | RegistryError::Protocol { .. } => 500,
        }
    }

    pub(crate) fn protocol(what: impl Into<String>, reason: impl ToString) -> RegistryError {
        RegistryError::Protocol {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn transport(registry: impl Into<String>, reason: impl ToString) -> RegistryError {
        RegistryError::Transport {
            registry: registry.into(),
            reason: reason.to_string(),
        }
    }
}

/// The message of a registry's error body (`{"errors": [{"code",
/// "message"}]}`), as Docker shows it: `unauthorized: authentication
/// required`.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errors = value.get("errors")?.as_array()?;
    let parts: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e["code"].as_str().unwrap_or_default().to_ascii_lowercase();
            let message = e["message"].as_str().unwrap_or_default();
            match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{}: {message}", code.replace('_', " ")),
                (false, true) => code.replace('_', " "),
                _ => message.to_owned(),
            }
        })
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_error_bodies_read_like_docker() {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
        assert_eq!(
            error_message(body).unwrap(),
            "unauthorized: authentication required"
        );
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(
            error_message(body).unwrap(),
            "manifest unknown: manifest unknown"
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
