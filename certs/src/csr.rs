//! Certificate signing requests: parsed once, signature verified, and read
//! for the two things moat may take from them.
//!
//! Every path that signs a request (`moat certs sign`, enrollment with a
//! token, renewal) goes through [`Csr::parse`], so a request whose
//! signature does not verify (its holder does not have the key) is refused
//! the same way everywhere. Only `sign` honours the subject a request asks
//! for; enrollment and renewal take the subject from the token or the
//! certificate being renewed and use nothing but the public key.

use rcgen::SubjectPublicKeyInfo;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::PkiError;
use crate::names::Subject;

/// A request whose signature verifies.
pub(crate) struct Csr {
    der: Vec<u8>,
}

impl Csr {
    pub(crate) fn parse(csr_pem: &str) -> Result<Csr, PkiError> {
        let der = csr_der(csr_pem).map_err(PkiError::InvalidCsr)?;
        let csr = Csr { der };
        let request = csr.request()?;
        request
            .verify_signature()
            .map_err(|e| PkiError::InvalidCsr(format!("signature does not verify: {e}")))?;
        Ok(csr)
    }

    fn request(&self) -> Result<X509CertificationRequest<'_>, PkiError> {
        let (rest, request) = X509CertificationRequest::from_der(&self.der)
            .map_err(|e| PkiError::InvalidCsr(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::InvalidCsr(
                "trailing bytes after the request".into(),
            ));
        }
        Ok(request)
    }

    /// The public key the certificate will certify.
    pub(crate) fn public_key(&self) -> Result<SubjectPublicKeyInfo, PkiError> {
        let request = self.request()?;
        SubjectPublicKeyInfo::from_der(request.certification_request_info.subject_pki.raw)
            .map_err(|e| PkiError::InvalidCsr(format!("public key: {e}")))
    }

    /// The subject asked for: one CN (the user) and any number of O (the
    /// groups), each checked like any other name; any other attribute is
    /// refused rather than dropped, so nobody is surprised by what they got.
    pub(crate) fn subject(&self) -> Result<Subject, PkiError> {
        let request = self.request()?;
        let mut user = None;
        let mut groups = Vec::new();
        for attr in request.certification_request_info.subject.iter_attributes() {
            let value = attr
                .as_str()
                .map_err(|e| PkiError::InvalidCsr(format!("subject: {e}")))?
                .to_owned();
            let oid = attr.attr_type();
            if *oid == x509_parser::oid_registry::OID_X509_COMMON_NAME && user.is_none() {
                user = Some(value);
            } else if *oid == x509_parser::oid_registry::OID_X509_ORGANIZATION_NAME {
                groups.push(value);
            } else {
                return Err(PkiError::InvalidCsr(format!(
                    "subject attribute {oid} is not allowed (only one CN and any number of O)"
                )));
            }
        }
        let user = user.ok_or_else(|| PkiError::InvalidCsr("subject has no CN".into()))?;
        Subject::new(&user, &groups)
    }
}

/// The DER bytes of the first certificate signing request in `pem`.
fn csr_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::{CertificateSigningRequestDer, pem::PemObject};
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| format!("no PEM certificate request: {e:?}"))
}
