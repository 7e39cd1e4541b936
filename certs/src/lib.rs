//! moat's PKI: everything a team admin would otherwise do with a page of
//! `openssl` commands, in a form that cannot get it wrong.
//!
//! A [`Pki`] is one directory holding the certificate authority, the
//! gateway's server certificate, the gateway's Ed25519 audit-signing key, the
//! certificate revocation list and the index of every certificate issued.
//! Client certificates carry the identity the gateway enforces: the common
//! name is the user, each organization is a group.
//!
//! - [`authority`]: the [`Pki`] itself: init, issue, sign, renew, revoke,
//!   re-sign the CRL.
//! - [`tokens`]: one-time enrollment tokens, stored hashed.
//! - [`enroll`]: the signer's protocol (enroll with a token, renew with a
//!   valid certificate) and the client's key, CSR and CA pin.
//! - `csr`: certificate signing requests, parsed and verified once for all.
//! - [`names`]: which user and group names may go into a subject.
//! - [`index`]: the issued-certificate index.
//! - [`inspect`]: reading a certificate back (subject, serial, fingerprint).
//! - [`tls`]: the rustls configurations built from the PKI (the gateway's
//!   server side, and a client side for tools and tests).
//! - `der`: the few DER operations rcgen does not do (several `O` values).
//! - [`store`]: crash-safe file writes and permission checks.
//! - [`ttl`]: durations such as `12h` or `30d`.

pub mod authority;
mod csr;
mod der;
pub mod enroll;
pub mod error;
pub mod index;
pub mod inspect;
pub mod names;
mod remembered;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod ttl;

#[cfg(test)]
mod testing;

pub use authority::{Bundle, Issued, Pki, PkiConfig, Validity};
pub use error::PkiError;
pub use index::{CertKind, CertStatus, IssuedCert};
pub use inspect::CertSummary;
pub use names::Subject;
