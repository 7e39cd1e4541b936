//! A client-certificate verifier that remembers which certificates passed.
//!
//! Checking a client certificate against the CA and the CRL costs a P-256
//! signature check, about a quarter of a full handshake's CPU on the
//! gateway; the same certificate comes back all the time (the docker CLI
//! opens three connections per `docker run`). The first check of a
//! certificate is the full one; after that, the same DER bytes (with the
//! same intermediates) pass without the signature check while the
//! current time is inside both the certificate's validity and the CRL's,
//! which were part of what passed.
//!
//! What is not remembered: the client's proof that it holds the key (the
//! TLS 1.3 CertificateVerify signature) is checked on every handshake.
//! Revocation needs no re-check: a new CRL or CA means a new verifier
//! (the gateway builds one per PKI reload), and its memory starts empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

/// Certificates remembered at most; past that the memory is emptied and
/// fills again (a bound on memory, not an eviction policy worth tuning).
const REMEMBERED: usize = 4096;

#[derive(Debug)]
pub(crate) struct RememberingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// When the CRL the inner verifier holds must be replaced: nothing it
    /// passed is remembered past this (seconds since the epoch).
    crl_next_update: u64,
    passed: Mutex<HashMap<[u8; 32], Validity>>,
}

/// The window in which a remembered certificate passes, in seconds since
/// the epoch: `not_before <= now < until`.
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: u64,
    until: u64,
}

impl RememberingVerifier {
    pub(crate) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        crl_next_update: u64,
    ) -> RememberingVerifier {
        RememberingVerifier {
            inner,
            crl_next_update,
            passed: Mutex::new(HashMap::new()),
        }
    }

    /// SHA-256 over the chain as presented, each certificate length-prefixed.
    fn key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for cert in std::iter::once(end_entity).chain(intermediates) {
            digest.update(&(cert.len() as u64).to_be_bytes());
            digest.update(cert);
        }
        let mut key = [0; 32];
        key.copy_from_slice(digest.finish().as_ref());
        key
    }

    fn passes(&self, key: &[u8; 32], now: u64) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        passed
            .get(key)
            .is_some_and(|v| v.not_before <= now && now < v.until)
    }

    fn remember(&self, key: [u8; 32], end_entity: &CertificateDer<'_>) {
        let Ok(summary) = crate::inspect::CertSummary::from_der(end_entity) else {
            return;
        };
        let seconds = |t: time::OffsetDateTime| u64::try_from(t.unix_timestamp()).unwrap_or(0);
        let validity = Validity {
            not_before: seconds(summary.not_before),
            until: seconds(summary.not_after).min(self.crl_next_update),
        };
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() >= REMEMBERED {
            passed.clear();
        }
        passed.insert(key, validity);
    }
}

impl ClientCertVerifier for RememberingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let key = Self::key(end_entity, intermediates);
        if self.passes(&key, now.as_secs()) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.remember(key, end_entity);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::UnixTime;
    use rustls_pki_types::pem::PemObject;
    use time::{Duration, OffsetDateTime};

    use super::*;
    use crate::Validity;
    use crate::testing::{developer, pki};

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn at(t: OffsetDateTime) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
    }

    /// A remembering verifier over `pki`'s CA and CRL.
    fn over(pki: &crate::Pki) -> RememberingVerifier {
        crate::tls::client_verifier(&pki.server_material().unwrap(), false).unwrap()
    }

    #[test]
    fn a_certificate_that_passed_passes_again_without_the_signature_check() {
        let (_tmp, pki) = pki();
        let alice = der(&pki
            .issue(&developer("alice"), Validity::from_now(Duration::hours(1)))
            .unwrap()
            .cert_pem);
        let verifier = over(&pki);
        let now = UnixTime::now();
        let key = RememberingVerifier::key(&alice, &[]);
        assert!(!verifier.passes(&key, now.as_secs()));
        verifier.verify_client_cert(&alice, &[], now).unwrap();
        // The next handshake with it returns before the inner check.
        assert!(verifier.passes(&key, now.as_secs()));
        verifier.verify_client_cert(&alice, &[], now).unwrap();
    }

    #[test]
    fn what_was_not_checked_is_not_taken_on_trust() {
        let (_tmp, pki) = pki();
        let alice = pki
            .issue(&developer("alice"), Validity::from_now(Duration::hours(1)))
            .unwrap();
        let verifier = over(&pki);
        let now = UnixTime::now();
        verifier
            .verify_client_cert(&der(&alice.cert_pem), &[], now)
            .unwrap();

        // The same subject from another CA: other bytes, a full check, refused.
        let (_other_tmp, other) = crate::testing::pki();
        let forged = der(&other
            .issue(&developer("alice"), Validity::from_now(Duration::hours(1)))
            .unwrap()
            .cert_pem);
        assert!(verifier.verify_client_cert(&forged, &[], now).is_err());

        // The remembered certificate once it has expired: checked, refused.
        let expired = OffsetDateTime::now_utc() + Duration::hours(2);
        assert!(
            verifier
                .verify_client_cert(&der(&alice.cert_pem), &[], at(expired))
                .is_err()
        );

        // Nothing remembered outlives the CRL's next update.
        let next =
            crate::inspect::crl_next_update(&pki.server_material().unwrap().crl_pem).unwrap();
        let long = der(&pki
            .issue(&developer("bob"), Validity::from_now(Duration::days(3650)))
            .unwrap()
            .cert_pem);
        verifier.verify_client_cert(&long, &[], now).unwrap();
        assert!(
            verifier
                .verify_client_cert(&long, &[], at(next + Duration::hours(1)))
                .is_err(),
            "a certificate passed on a CRL past its next update"
        );
    }

    #[test]
    fn a_revoked_certificate_is_refused_by_the_next_verifier() {
        let (_tmp, pki) = pki();
        let alice = pki
            .issue(&developer("alice"), Validity::from_now(Duration::hours(1)))
            .unwrap();
        let verifier = over(&pki);
        verifier
            .verify_client_cert(&der(&alice.cert_pem), &[], UnixTime::now())
            .unwrap();
        pki.revoke_serial(&alice.record.serial).unwrap();
        // A new CRL means a new verifier (as the gateway's reload makes),
        // which remembers nothing.
        let verifier = over(&pki);
        assert!(
            verifier
                .verify_client_cert(&der(&alice.cert_pem), &[], UnixTime::now())
                .is_err()
        );
    }
}
