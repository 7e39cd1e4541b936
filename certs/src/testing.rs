//! Fixtures the crate's unit tests share.

use crate::enroll::key_and_csr;
use crate::{Pki, PkiConfig, Subject};

/// A fresh PKI (server certificate for 127.0.0.1) in a temporary directory.
pub fn pki() -> (tempfile::TempDir, Pki) {
    let tmp = tempfile::tempdir().unwrap();
    let config = PkiConfig {
        server_ips: vec!["127.0.0.1".parse().unwrap()],
        ..PkiConfig::default()
    };
    let pki = Pki::init(&tmp.path().join("pki"), config).unwrap();
    (tmp, pki)
}

/// A CSR for a new key (its subject is a placeholder).
pub fn csr() -> String {
    key_and_csr().unwrap().1
}

/// `user` in the group developer.
pub fn developer(user: &str) -> Subject {
    Subject::new(user, &["developer".to_owned()]).unwrap()
}
