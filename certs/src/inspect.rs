//! Reading a certificate back: who it names, its serial and fingerprint.
//!
//! The gateway builds a connection's identity from this, and the index and
//! `moat certs list` show the same fields, so there is one reading of a
//! certificate in the whole project.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What moat needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Common name: the user, for a client certificate.
    pub common_name: String,
    /// Organization values: the groups, for a client certificate.
    pub organizations: Vec<String>,
    /// Serial in upper-case hex without separators, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// `sha256:` and the lower-case hex SHA-256 of the DER encoding.
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth: bool,
    pub server_auth: bool,
    pub is_ca: bool,
}

impl CertSummary {
    pub fn from_der(der: &[u8]) -> Result<CertSummary, String> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let attr_strings = |iter: &mut dyn Iterator<
            Item = &x509_parser::x509::AttributeTypeAndValue<'_>,
        >|
         -> Result<Vec<String>, String> {
            iter.map(|a| a.as_str().map(str::to_owned).map_err(|e| e.to_string()))
                .collect()
        };
        let subject = cert.subject();
        let common_names = attr_strings(&mut subject.iter_common_name())?;
        let organizations = attr_strings(&mut subject.iter_organization())?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| e.to_string())?
            .map(|e| e.value.clone());
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| e.to_string())?
            .is_some_and(|bc| bc.value.ca);
        let time = |t: &x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| e.to_string())
        };
        Ok(CertSummary {
            common_name: common_names.into_iter().next().unwrap_or_default(),
            organizations,
            serial: serial_hex(cert.raw_serial()),
            fingerprint: fingerprint(der),
            not_before: time(&cert.validity().not_before)?,
            not_after: time(&cert.validity().not_after)?,
            client_auth: eku.as_ref().is_some_and(|e| e.client_auth || e.any),
            server_auth: eku.as_ref().is_some_and(|e| e.server_auth || e.any),
            is_ca,
        })
    }
}

/// `sha256:<hex>` of some DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    format!("sha256:{}", hex_lower(digest.as_ref()))
}

/// A serial's bytes as upper-case hex, with DER's sign-padding zero dropped.
pub fn serial_hex(bytes: &[u8]) -> String {
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    };
    hex_lower(trimmed).to_ascii_uppercase()
}

/// Normalizes a serial typed by a person: case-insensitive, `:` allowed.
pub fn normalize_serial(input: &str) -> Option<String> {
    let hex: String = input.chars().filter(|c| *c != ':').collect();
    if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex.trim_start_matches('0').to_ascii_uppercase()).filter(|s| !s.is_empty())
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The serials (as [`serial_hex`] writes them) a PEM CRL revokes. The
/// gateway compares them with its open connections after a CRL reload.
pub fn crl_revoked_serials(crl_pem: &str) -> Result<Vec<String>, String> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let mut serials = Vec::new();
    for block in pem::parse_many(crl_pem).map_err(|e| e.to_string())? {
        let (_, crl) =
            CertificateRevocationList::from_der(block.contents()).map_err(|e| e.to_string())?;
        serials.extend(
            crl.iter_revoked_certificates()
                .map(|revoked| serial_hex(revoked.raw_serial())),
        );
    }
    Ok(serials)
}

/// When a PEM CRL says the next one is due: after that, the gateway
/// refuses every client until the CRL is re-signed.
pub fn crl_next_update(crl_pem: &str) -> Result<OffsetDateTime, String> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let block = pem::parse(crl_pem).map_err(|e| e.to_string())?;
    let (_, crl) =
        CertificateRevocationList::from_der(block.contents()).map_err(|e| e.to_string())?;
    let next = crl
        .next_update()
        .ok_or_else(|| "the CRL has no next update".to_owned())?;
    OffsetDateTime::from_unix_timestamp(next.timestamp()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_like_openssl() {
        assert_eq!(serial_hex(&[0x00, 0x9a, 0x01]), "9A01");
        assert_eq!(serial_hex(&[0x7f]), "7F");
        assert_eq!(normalize_serial("9a:01").as_deref(), Some("9A01"));
        assert_eq!(normalize_serial("009A01").as_deref(), Some("9A01"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
    }
}
