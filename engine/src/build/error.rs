//! What can go wrong in a build. Errors of a step name the Dockerfile
//! line; the API layer sends the message as Docker's `errorDetail`.

use super::dockerfile::ParseError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The request: a parameter the engine does not take, or refuses.
    #[error("{0}")]
    Request(String),

    /// The context tar: malformed, too large, no Dockerfile.
    #[error("{0}")]
    Context(String),

    #[error(transparent)]
    Parse(#[from] ParseError),

    /// A step failed: `Dockerfile line 7 (RUN make): ...`.
    #[error("Dockerfile line {line} ({instruction}): {message}")]
    Step {
        line: usize,
        instruction: String,
        message: String,
    },

    /// The engine's own trouble (disk, store, runtime).
    #[error("{0}")]
    Engine(String),

    /// The client went away: the build stops.
    #[error("the build was cancelled: the client went away")]
    Cancelled,
}

impl BuildError {
    pub fn context(message: impl Into<String>) -> BuildError {
        BuildError::Context(message.into())
    }

    /// Whether the request itself was wrong (400) rather than the engine.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, BuildError::Engine(_))
    }
}

impl From<crate::images::ImageError> for BuildError {
    fn from(e: crate::images::ImageError) -> BuildError {
        BuildError::Engine(e.to_string())
    }
}

impl From<crate::error::EngineError> for BuildError {
    fn from(e: crate::error::EngineError) -> BuildError {
        BuildError::Engine(e.to_string())
    }
}
