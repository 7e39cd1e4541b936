//! The issued-certificate index: every certificate the CA signed, so that an
//! admin can list them and revoke by user, and the CRL can be rebuilt from it.
//!
//! The index is the source of truth for revocation; `crl.pem` is derived
//! from it (and `moat certs crl` re-derives it).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::inspect::normalize_serial;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    Client,
    Server,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    pub serial: String,
    pub kind: CertKind,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CertStatus {
    Valid,
    Expired,
    Revoked,
}

impl IssuedCert {
    pub fn status(&self, now: OffsetDateTime) -> CertStatus {
        if self.revoked_at.is_some() {
            CertStatus::Revoked
        } else if now > self.not_after {
            CertStatus::Expired
        } else {
            CertStatus::Valid
        }
    }

    pub fn has_serial(&self, serial: &str) -> bool {
        normalize_serial(&self.serial).as_deref() == normalize_serial(serial).as_deref()
    }
}

/// The index file: the certificates, and the number of the last CRL signed
/// (CRL numbers must only ever grow).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub crl_number: u64,
    pub certs: Vec<IssuedCert>,
}

impl Index {
    pub fn find(&self, serial: &str) -> Option<usize> {
        self.certs.iter().position(|c| c.has_serial(serial))
    }
}
