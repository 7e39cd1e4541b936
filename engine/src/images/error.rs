//! What can go wrong in the image store, sorted so the API layer can answer
//! with Docker's status codes: a missing image is 404, an image in use or a
//! tag that needs force is 409, a bad reference or archive is 400, and
//! anything else (the disk, a corrupt store) is 500.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Docker's wording, which the CLI shows as is.
    #[error("No such image: {reference}")]
    NotFound { reference: String },

    /// A short id that more than one image starts with.
    #[error("{reference}: ambiguous image id prefix, give more characters")]
    Ambiguous { reference: String },

    /// Docker's `conflict: unable to ...` messages, complete.
    #[error("conflict: {reason}")]
    Conflict { reference: String, reason: String },

    #[error("invalid reference format: {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// An archive, layer or change that cannot be used: `what` names the
    /// archive member, layer entry or field.
    #[error("{what}: {reason}")]
    BadInput { what: String, reason: String },

    /// Content whose sha256 is not the one it was announced with.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("layer {layer}: layer too large: {reason}")]
    LayerTooLarge { layer: String, reason: String },

    /// The store's own files are not what it wrote: a bug or tampering.
    #[error("image store: {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The HTTP status Docker answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            ImageError::NotFound { .. } => 404,
            ImageError::Conflict { .. } => 409,
            ImageError::Ambiguous { .. }
            | ImageError::InvalidReference { .. }
            | ImageError::BadInput { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::LayerTooLarge { .. } => 400,
            ImageError::Corrupt { .. } | ImageError::Io { .. } => 500,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }

    pub(crate) fn not_found(reference: impl Into<String>) -> ImageError {
        ImageError::NotFound {
            reference: reference.into(),
        }
    }

    pub(crate) fn bad_input(what: impl Into<String>, reason: impl ToString) -> ImageError {
        ImageError::BadInput {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl ToString) -> ImageError {
        ImageError::Corrupt {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

impl From<moat_api::image_ref::ReferenceError> for ImageError {
    fn from(e: moat_api::image_ref::ReferenceError) -> ImageError {
        ImageError::InvalidReference {
            reference: e.reference,
            reason: e.reason,
        }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
