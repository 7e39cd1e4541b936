//! Enrollment and renewal: the signer's protocol, and the client's half.
//!
//! The gateway runs without root and cannot read the CA key, so it does not
//! sign. It forwards each enrollment (a token and a CSR) and each renewal (a
//! CSR, with the serial, user and groups of the caller's verified
//! certificate) to the signer, a small root process on a Unix socket, in
//! one JSON line per connection; the signer answers in one JSON line:
//!
//! ```text
//! {"op":"enroll","token":"...","csr":"<PEM>"}
//! {"op":"renew","serial":"HEX","user":"alice","groups":["developer"],"csr":"<PEM>"}
//! → {"cert":"<PEM>","ca":"<PEM>","user":"alice","groups":["developer"],"serial":"HEX","not_after":"RFC3339"}
//! → {"error":"<message for the user>"}
//! ```
//!
//! The signer signs only for an outstanding token, or for the holder of a
//! valid, unrevoked certificate renewing it for the same subject: a gateway
//! taken over can mint nothing else.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Issued, Pki, PkiError};

/// The largest request line the signer reads: a CSR is well under 2 KiB.
pub const MAX_REQUEST: usize = 64 * 1024;

/// One request to the signer. Deliberately not `Debug`: it carries a token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum SignerRequest {
    /// A certificate for whoever the token was made for.
    Enroll { token: String, csr: String },
    /// A new certificate for the caller, who authenticated with the
    /// certificate `serial` naming `user` and `groups`.
    Renew {
        serial: String,
        user: String,
        #[serde(default)]
        groups: Vec<String>,
        csr: String,
    },
    /// The gateway's current server certificate and key, for a gateway
    /// that dropped root and sees `server-cert.pem` renewed on disk.
    #[serde(rename = "server-key")]
    ServerKey {},
}

impl SignerRequest {
    pub fn op(&self) -> &'static str {
        match self {
            SignerRequest::Enroll { .. } => "enroll",
            SignerRequest::Renew { .. } => "renew",
            SignerRequest::ServerKey {} => "server-key",
        }
    }
}

/// A certificate the signer issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub cert: String,
    pub ca: String,
    pub user: String,
    pub groups: Vec<String>,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl From<Issued> for Signed {
    fn from(issued: Issued) -> Signed {
        Signed {
            cert: issued.cert_pem,
            ca: issued.ca_pem,
            user: issued.record.user,
            groups: issued.record.groups,
            serial: issued.record.serial,
            not_after: issued.record.not_after,
        }
    }
}

/// The answer to [`SignerRequest::ServerKey`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKey {
    pub server_cert: String,
    pub server_key: String,
}

/// The signer's answer line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignerAnswer {
    Signed(Signed),
    Refused { error: String },
}

/// Decides one request.
pub fn sign(pki: &Pki, request: &SignerRequest) -> Result<Issued, PkiError> {
    match request {
        SignerRequest::Enroll { token, csr } => pki.redeem_token(token, csr),
        SignerRequest::ServerKey {} => Err(PkiError::InvalidCsr(
            "server-key is answered by the signer itself, not signed".into(),
        )),
        SignerRequest::Renew {
            serial,
            user,
            groups,
            csr,
        } => {
            // The gateway says who verified; the index must agree, so a
            // confused or compromised gateway cannot renew into someone else.
            let record = pki
                .list()?
                .into_iter()
                .find(|c| c.has_serial(serial))
                .ok_or_else(|| PkiError::UnknownSerial(serial.clone()))?;
            let mut asked = groups.clone();
            let mut recorded = record.groups.clone();
            asked.sort();
            recorded.sort();
            if record.user != *user || asked != recorded {
                return Err(PkiError::NotRenewable {
                    serial: record.serial,
                    reason: "the caller's user and groups are not the certificate's",
                });
            }
            pki.renew(serial, csr)
        }
    }
}

/// A new P-256 key and a CSR for it, made where the key will live. The
/// subject is a placeholder: the signer takes the subject from the token
/// or from the certificate being renewed.
pub fn key_and_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "moat login");
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// Whether the first certificate of `ca_pem` has the SHA-256 fingerprint
/// `pin` (`sha256:HEX`, or bare hex; case and `:` separators ignored).
pub fn pin_matches(ca_pem: &str, pin: &str) -> Result<bool, PkiError> {
    let der = crate::authority::cert_der(ca_pem).map_err(PkiError::Tls)?;
    let pin: String = pin
        .strip_prefix("sha256:")
        .unwrap_or(pin)
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let actual = crate::inspect::fingerprint(&der);
    Ok(actual.strip_prefix("sha256:") == Some(pin.as_str()))
}

#[cfg(test)]
mod tests {
    use crate::testing::{csr, developer, pki};
    use time::Duration;

    use super::*;

    fn parse(line: &str) -> SignerRequest {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn the_wire_format_is_the_documented_one() {
        let enroll = parse(r#"{"op":"enroll","token":"t","csr":"c"}"#);
        assert_eq!(enroll.op(), "enroll");
        let renew = parse(r#"{"op":"renew","serial":"AB","user":"a","groups":["g"],"csr":"c"}"#);
        assert_eq!(renew.op(), "renew");
        for bad in [
            r#"{"op":"issue","user":"root"}"#,
            r#"{"op":"enroll","token":"t"}"#,
            r#"{"op":"enroll","token":"t","csr":"c","user":"admin"}"#,
        ] {
            assert!(serde_json::from_str::<SignerRequest>(bad).is_err(), "{bad}");
        }
        let refused = SignerAnswer::Refused { error: "no".into() };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"error":"no"}"#
        );
    }

    #[test]
    fn enroll_then_renew_as_the_same_subject() {
        let (_tmp, pki) = pki();
        let token = pki
            .create_token(&developer("alice"), Duration::minutes(5))
            .unwrap();
        let first: Signed = sign(&pki, &SignerRequest::Enroll { token, csr: csr() })
            .unwrap()
            .into();
        assert_eq!(first.user, "alice");

        let renew = |user: &str, groups: &[&str]| {
            sign(
                &pki,
                &SignerRequest::Renew {
                    serial: first.serial.clone(),
                    user: user.into(),
                    groups: groups.iter().map(|g| g.to_string()).collect(),
                    csr: csr(),
                },
            )
        };
        let second: Signed = renew("alice", &["developer"]).unwrap().into();
        assert_eq!(
            (second.user.as_str(), &second.groups[..]),
            ("alice", &["developer".to_owned()][..])
        );
        assert_ne!(second.serial, first.serial);

        // What the gateway says must be what the index says.
        for (user, groups) in [("bob", &["developer"][..]), ("alice", &["admin"][..])] {
            let err = renew(user, groups).unwrap_err();
            assert!(matches!(err, PkiError::NotRenewable { .. }), "{err}");
        }
    }

    #[test]
    fn the_pin_is_the_ca_fingerprint() {
        let (_tmp, pki) = pki();
        let ca = pki.ca_pem().unwrap();
        let fingerprint = pki.ca_summary().unwrap().fingerprint;
        assert!(pin_matches(&ca, &fingerprint).unwrap());
        assert!(
            pin_matches(
                &ca,
                &fingerprint.to_ascii_uppercase().replace("SHA256:", "")
            )
            .unwrap()
        );
        let mut wrong = fingerprint.clone();
        wrong.replace_range(
            wrong.len() - 1..,
            if fingerprint.ends_with('0') { "1" } else { "0" },
        );
        assert!(!pin_matches(&ca, &wrong).unwrap());
        assert!(!pin_matches(&ca, "sha256:").unwrap());
    }
}
