//! The certificate authority and everything it signs.
//!
//! Layout of a PKI directory (mode 0700):
//!
//! | file              | mode | what                                        |
//! |-------------------|------|---------------------------------------------|
//! | `ca.pem`          | 0644 | the CA certificate (ECDSA P-256, 10 years)   |
//! | `ca-key.pem`      | 0600 | the CA key                                  |
//! | `server-cert.pem` | 0644 | the gateway's certificate (serverAuth)      |
//! | `server-key.pem`  | 0600 | the gateway's key                           |
//! | `audit-key.pem`   | 0600 | the gateway's Ed25519 audit-signing key     |
//! | `audit-pub.pem`   | 0644 | its public half, for `moat audit verify`    |
//! | `crl.pem`         | 0644 | the CRL, signed by the CA                   |
//! | `issued.json`     | 0600 | the issued-certificate index                |
//! | `config.json`     | 0644 | server names and TTL limits chosen at init  |
//! | `tokens.json`     | 0600 | enrollment tokens, hashed (`tokens`)        |

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::csr::Csr;
use crate::index::{CertKind, CertStatus, Index, IssuedCert};
use crate::inspect::{CertSummary, normalize_serial};
use crate::names::{self, Subject};
use crate::store::{self, DirLock, KEY_MODE, PUBLIC_MODE};
use crate::{PkiError, der, ttl};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server-cert.pem";
pub const SERVER_KEY: &str = "server-key.pem";
pub const AUDIT_KEY: &str = "audit-key.pem";
pub const AUDIT_PUB: &str = "audit-pub.pem";
pub const CRL: &str = "crl.pem";
pub const INDEX: &str = "issued.json";
pub const CONFIG: &str = "config.json";

/// How far back not-before is set, so a client whose clock is a little
/// behind can use a certificate the moment it is issued.
const CLOCK_SKEW: Duration = Duration::minutes(5);
const CA_LIFETIME: Duration = Duration::days(3650);

/// Choices made at `init` and kept for later commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkiConfig {
    /// DNS names for the gateway's certificate.
    pub server_hosts: Vec<String>,
    /// IP addresses for the gateway's certificate.
    pub server_ips: Vec<IpAddr>,
    pub default_client_ttl_secs: i64,
    pub max_client_ttl_secs: i64,
    pub server_ttl_secs: i64,
    /// How long a CRL stays valid; re-sign with `moat certs crl` before then.
    pub crl_validity_secs: i64,
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            server_hosts: Vec::new(),
            server_ips: Vec::new(),
            default_client_ttl_secs: Duration::hours(12).whole_seconds(),
            max_client_ttl_secs: Duration::days(30).whole_seconds(),
            server_ttl_secs: Duration::days(365).whole_seconds(),
            crl_validity_secs: Duration::days(30).whole_seconds(),
        }
    }
}

impl PkiConfig {
    fn check_server_names(&self) -> Result<(), PkiError> {
        if self.server_hosts.is_empty() && self.server_ips.is_empty() {
            return Err(PkiError::NoServerNames);
        }
        for host in &self.server_hosts {
            let valid = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !valid || host.parse::<IpAddr>().is_ok() {
                return Err(PkiError::InvalidHost(host.clone()));
            }
        }
        Ok(())
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From now (less a few minutes for clock skew) for `ttl`.
    pub fn from_now(ttl: Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + ttl,
        }
    }
}

/// A freshly signed certificate with everything needed to use it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// The private key, unless the holder generated it (CSR signing).
    pub key_pem: Option<String>,
    pub ca_pem: String,
    pub record: IssuedCert,
}

/// The files a Docker client reads from `DOCKER_CERT_PATH`.
pub struct Bundle;

impl Bundle {
    /// Writes `ca.pem`, `cert.pem` and (when known) `key.pem` into `dir`.
    pub fn write(dir: &Path, issued: &Issued) -> Result<(), PkiError> {
        store::create_private_dir(dir)?;
        store::write_atomic(&dir.join("ca.pem"), issued.ca_pem.as_bytes(), PUBLIC_MODE)?;
        store::write_atomic(
            &dir.join("cert.pem"),
            issued.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        if let Some(key) = &issued.key_pem {
            store::write_atomic(&dir.join("key.pem"), key.as_bytes(), KEY_MODE)?;
        }
        Ok(())
    }
}

/// An open PKI directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    config: PkiConfig,
}

impl Pki {
    /// Creates a new CA, server certificate, audit key and empty CRL in `dir`.
    /// Refuses when `dir` already holds a CA. Nothing is written unless every
    /// input is valid.
    pub fn init(dir: &Path, config: PkiConfig) -> Result<Pki, PkiError> {
        config.check_server_names()?;
        if config.default_client_ttl_secs <= 0
            || config.max_client_ttl_secs < config.default_client_ttl_secs
        {
            return Err(PkiError::InvalidTtl {
                value: ttl::format(Duration::seconds(config.max_client_ttl_secs)),
                reason: "the maximum TTL must be at least the default TTL".into(),
            });
        }
        if dir.join(CA_CERT).exists() {
            return Err(PkiError::AlreadyInitialized(dir.to_path_buf()));
        }
        if dir.exists() {
            store::check_private_dir(dir)?;
        }
        store::create_private_dir(dir)?;
        let _lock = DirLock::acquire(dir)?;
        if dir.join(CA_CERT).exists() {
            return Err(PkiError::AlreadyInitialized(dir.to_path_buf()));
        }

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "moat CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "moat");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let validity = Validity::from_now(CA_LIFETIME);
        ca_params.not_before = validity.not_before;
        ca_params.not_after = validity.not_after;
        ca_params.serial_number = Some(random_serial()?);
        ca_params.key_identifier_method = KeyIdMethod::Sha256;
        let ca_cert = ca_params.self_signed(&ca_key)?;

        let audit_key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;

        let pki = Pki {
            dir: dir.to_path_buf(),
            config,
        };
        let issuer = Issuer::new(ca_params, &ca_key);
        let mut index = Index::default();
        let server = pki.sign_server(&issuer, &ca_cert.pem())?;
        index.certs.push(server.record.clone());
        let crl = pki.sign_crl(&issuer, &mut index)?;

        // ca.pem goes last: until it exists, a crashed init can simply be re-run.
        pki.write_json(CONFIG, &pki.config, PUBLIC_MODE)?;
        store::write_atomic(
            &dir.join(CA_KEY),
            ca_key.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        store::write_atomic(
            &dir.join(SERVER_KEY),
            server.key_pem.as_deref().unwrap_or_default().as_bytes(),
            KEY_MODE,
        )?;
        store::write_atomic(
            &dir.join(SERVER_CERT),
            server.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        store::write_atomic(
            &dir.join(AUDIT_KEY),
            audit_key.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        store::write_atomic(
            &dir.join(AUDIT_PUB),
            audit_key.public_key_pem().as_bytes(),
            PUBLIC_MODE,
        )?;
        store::write_atomic(&dir.join(CRL), crl.as_bytes(), PUBLIC_MODE)?;
        pki.write_json(INDEX, &index, KEY_MODE)?;
        store::write_atomic(&dir.join(CA_CERT), ca_cert.pem().as_bytes(), PUBLIC_MODE)?;
        Ok(pki)
    }

    /// Opens an existing PKI, checking that it is complete and private.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        if !dir.join(CA_CERT).exists() {
            return Err(PkiError::NotInitialized(dir.to_path_buf()));
        }
        store::check_private_dir(dir)?;
        let config_path = dir.join(CONFIG);
        let config: PkiConfig = serde_json::from_str(&store::read_to_string(&config_path)?)
            .map_err(|e| PkiError::corrupt(&config_path, e))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            config,
        };
        pki.ca_summary()?;
        Ok(pki)
    }

    /// Whether `dir` holds a CA at all.
    pub fn exists(dir: &Path) -> bool {
        fs::metadata(dir.join(CA_CERT)).is_ok()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &PkiConfig {
        &self.config
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn ca_pem(&self) -> Result<String, PkiError> {
        store::read_to_string(&self.path(CA_CERT))
    }

    pub fn crl_pem(&self) -> Result<String, PkiError> {
        store::read_to_string(&self.path(CRL))
    }

    pub fn ca_summary(&self) -> Result<CertSummary, PkiError> {
        let path = self.path(CA_CERT);
        let der = cert_der(&self.ca_pem()?).map_err(|e| PkiError::corrupt(&path, e))?;
        let summary = CertSummary::from_der(&der).map_err(|e| PkiError::corrupt(&path, e))?;
        if !summary.is_ca {
            return Err(PkiError::corrupt(&path, "not a CA certificate"));
        }
        Ok(summary)
    }

    /// The validity for a client certificate of `ttl` (the configured default
    /// when `None`), refused when over the configured maximum.
    pub fn client_validity(&self, ttl: Option<Duration>) -> Result<Validity, PkiError> {
        let ttl = ttl.unwrap_or(Duration::seconds(self.config.default_client_ttl_secs));
        let max = Duration::seconds(self.config.max_client_ttl_secs);
        if ttl > max {
            return Err(PkiError::TtlOverMaximum {
                requested: ttl::format(ttl),
                maximum: ttl::format(max),
            });
        }
        Ok(Validity::from_now(ttl))
    }

    /// Issues a client certificate with a new key, and records it.
    pub fn issue(&self, subject: &Subject, validity: Validity) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let lock = DirLock::acquire(&self.dir)?;
        let mut issued = self.sign_client(&lock, subject, validity, &key)?;
        issued.key_pem = Some(key.serialize_pem());
        Ok(issued)
    }

    /// Signs a certificate signing request: the key never leaves the user's
    /// machine. Only the CSR's public key and subject (CN and O, checked like
    /// any other name) are used; every extension it asks for is ignored.
    pub fn sign_csr(&self, csr_pem: &str, validity: Validity) -> Result<Issued, PkiError> {
        let csr = Csr::parse(csr_pem)?;
        let subject = csr.subject()?;
        let lock = DirLock::acquire(&self.dir)?;
        self.sign_client(&lock, &subject, validity, &csr.public_key()?)
    }

    /// Renews a client certificate: the certificate with `serial` must be in
    /// the index, unrevoked and unexpired; the new one certifies the CSR's
    /// key for the same user and groups (the CSR's subject is ignored), for
    /// the default client TTL. The old certificate stays valid until it
    /// expires or is revoked.
    pub fn renew(&self, serial: &str, csr_pem: &str) -> Result<Issued, PkiError> {
        let csr = Csr::parse(csr_pem)?;
        let validity = self.client_validity(None)?;
        // One lock from the check to the new index entry, so a revocation
        // cannot slip in between.
        let lock = DirLock::acquire(&self.dir)?;
        let index = self.load_index()?;
        let record = index
            .find(serial)
            .map(|i| &index.certs[i])
            .ok_or_else(|| PkiError::UnknownSerial(serial.to_owned()))?;
        let refuse = |reason: &'static str| PkiError::NotRenewable {
            serial: record.serial.clone(),
            reason,
        };
        if record.kind != CertKind::Client {
            return Err(refuse("it is not a client certificate"));
        }
        match record.status(OffsetDateTime::now_utc()) {
            CertStatus::Valid => {}
            CertStatus::Revoked => return Err(refuse("it is revoked")),
            CertStatus::Expired => return Err(refuse("it has expired")),
        }
        let subject = Subject::new(&record.user, &record.groups)?;
        self.sign_client(&lock, &subject, validity, &csr.public_key()?)
    }

    /// Signs and records a client certificate. The caller holds the
    /// directory lock (flock on a second descriptor in the same process
    /// would wait for itself), so a check it made under the lock still holds.
    pub(crate) fn sign_client(
        &self,
        _lock: &DirLock,
        subject: &Subject,
        validity: Validity,
        public_key: &impl PublicKeyData,
    ) -> Result<Issued, PkiError> {
        names::validate("user name", &subject.user)?;
        let (issuer, ca_pem) = self.issuer()?;
        for group in &subject.groups {
            names::validate("group name", group)?;
        }
        let mut params = leaf_params(validity)?;
        params
            .distinguished_name
            .push(DnType::CommonName, subject.user.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let draft = params.signed_by(public_key, &issuer)?;
        let der = der::with_subject(
            draft.der(),
            &der::subject_name(&subject.user, &subject.groups),
            issuer.key(),
        )
        .map_err(PkiError::Tls)?;
        let record = self.record(CertKind::Client, &der)?;
        let mut index = self.load_index()?;
        index.certs.push(record.clone());
        self.write_json(INDEX, &index, KEY_MODE)?;
        Ok(Issued {
            cert_pem: pem_encode("CERTIFICATE", &der),
            key_pem: None,
            ca_pem,
            record,
        })
    }

    /// Replaces the gateway's certificate and key, optionally with new names.
    pub fn renew_server(
        &mut self,
        hosts: Option<Vec<String>>,
        ips: Option<Vec<IpAddr>>,
    ) -> Result<Issued, PkiError> {
        let mut config = self.config.clone();
        if let Some(hosts) = hosts {
            config.server_hosts = hosts;
        }
        if let Some(ips) = ips {
            config.server_ips = ips;
        }
        config.check_server_names()?;
        let _lock = DirLock::acquire(&self.dir)?;
        let (issuer, ca_pem) = self.issuer()?;
        let previous = self.config.clone();
        self.config = config;
        let server = match self.sign_server(&issuer, &ca_pem) {
            Ok(server) => server,
            Err(e) => {
                self.config = previous;
                return Err(e);
            }
        };
        let mut index = self.load_index()?;
        index.certs.push(server.record.clone());
        self.write_json(INDEX, &index, KEY_MODE)?;
        self.write_json(CONFIG, &self.config, PUBLIC_MODE)?;
        store::write_atomic(
            &self.path(SERVER_KEY),
            server.key_pem.as_deref().unwrap_or_default().as_bytes(),
            KEY_MODE,
        )?;
        store::write_atomic(
            &self.path(SERVER_CERT),
            server.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        Ok(server)
    }

    /// Revokes one certificate by serial and re-signs the CRL.
    pub fn revoke_serial(&self, serial: &str) -> Result<IssuedCert, PkiError> {
        if normalize_serial(serial).is_none() {
            return Err(PkiError::UnknownSerial(serial.to_owned()));
        }
        let _lock = DirLock::acquire(&self.dir)?;
        let mut index = self.load_index()?;
        let i = index
            .find(serial)
            .ok_or_else(|| PkiError::UnknownSerial(serial.to_owned()))?;
        if index.certs[i].revoked_at.is_some() {
            return Err(PkiError::AlreadyRevoked(index.certs[i].serial.clone()));
        }
        index.certs[i].revoked_at = Some(OffsetDateTime::now_utc());
        let revoked = index.certs[i].clone();
        self.commit_revocation(index)?;
        Ok(revoked)
    }

    /// Revokes every unrevoked client certificate of `user`.
    pub fn revoke_user(&self, user: &str) -> Result<Vec<IssuedCert>, PkiError> {
        names::validate("user name", user)?;
        let _lock = DirLock::acquire(&self.dir)?;
        let mut index = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for cert in &mut index.certs {
            if cert.kind == CertKind::Client && cert.user == user && cert.revoked_at.is_none() {
                cert.revoked_at = Some(now);
                revoked.push(cert.clone());
            }
        }
        if revoked.is_empty() {
            return Err(PkiError::UnknownUser(user.to_owned()));
        }
        self.commit_revocation(index)?;
        Ok(revoked)
    }

    /// Re-signs the CRL from the index (run before the old one expires).
    pub fn resign_crl(&self) -> Result<OffsetDateTime, PkiError> {
        let _lock = DirLock::acquire(&self.dir)?;
        let index = self.load_index()?;
        self.commit_revocation(index)?;
        Ok(OffsetDateTime::now_utc() + Duration::seconds(self.config.crl_validity_secs))
    }

    /// Every certificate issued, oldest first.
    pub fn list(&self) -> Result<Vec<IssuedCert>, PkiError> {
        Ok(self.load_index()?.certs)
    }

    /// The index is written first: it is the source of truth, and a crash
    /// between the two writes is mended by `moat certs crl`.
    fn commit_revocation(&self, mut index: Index) -> Result<(), PkiError> {
        let (issuer, _) = self.issuer()?;
        let crl = self.sign_crl(&issuer, &mut index)?;
        self.write_json(INDEX, &index, KEY_MODE)?;
        store::write_atomic(&self.path(CRL), crl.as_bytes(), PUBLIC_MODE)
    }

    fn sign_crl(
        &self,
        issuer: &Issuer<'_, impl rcgen::SigningKey>,
        index: &mut Index,
    ) -> Result<String, PkiError> {
        index.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::seconds(self.config.crl_validity_secs),
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs: index
                .certs
                .iter()
                .filter_map(|c| {
                    let revoked_at = c.revoked_at?;
                    Some(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&serial_bytes(&c.serial)?),
                        revocation_time: revoked_at,
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(issuer)?.pem()?)
    }

    fn sign_server(
        &self,
        issuer: &Issuer<'_, impl rcgen::SigningKey>,
        ca_pem: &str,
    ) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(Validity::from_now(Duration::seconds(
            self.config.server_ttl_secs,
        )))?;
        let common_name = self
            .config
            .server_hosts
            .first()
            .cloned()
            .or_else(|| self.config.server_ips.first().map(IpAddr::to_string))
            .unwrap_or_default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "moat");
        for host in &self.config.server_hosts {
            let name = host
                .as_str()
                .try_into()
                .map_err(|_| PkiError::InvalidHost(host.clone()))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        for ip in &self.config.server_ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, issuer)?;
        let record = self.record(CertKind::Server, cert.der())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: Some(key.serialize_pem()),
            ca_pem: ca_pem.to_owned(),
            record,
        })
    }

    fn record(&self, kind: CertKind, der: &[u8]) -> Result<IssuedCert, PkiError> {
        let summary = CertSummary::from_der(der).map_err(PkiError::Tls)?;
        Ok(IssuedCert {
            serial: summary.serial,
            kind,
            user: summary.common_name,
            groups: summary.organizations,
            not_before: summary.not_before,
            not_after: summary.not_after,
            fingerprint: summary.fingerprint,
            issued_at: OffsetDateTime::now_utc(),
            revoked_at: None,
        })
    }

    /// The CA as an rcgen issuer, with its key checked for safe permissions.
    fn issuer(&self) -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
        let key_path = self.path(CA_KEY);
        store::check_key_file(&key_path)?;
        let key = KeyPair::from_pem(&store::read_to_string(&key_path)?)
            .map_err(|e| PkiError::corrupt(&key_path, e))?;
        let ca_pem = self.ca_pem()?;
        let ca_path = self.path(CA_CERT);
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| PkiError::corrupt(&ca_path, e))?;
        let ca_der = cert_der(&ca_pem).map_err(|e| PkiError::corrupt(&ca_path, e))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| PkiError::corrupt(&ca_path, e))?;
        if ca.public_key().raw != issuer.key().subject_public_key_info().as_slice() {
            return Err(PkiError::corrupt(&key_path, "does not match ca.pem"));
        }
        Ok((issuer, ca_pem))
    }

    pub(crate) fn load_index(&self) -> Result<Index, PkiError> {
        let path = self.path(INDEX);
        serde_json::from_str(&store::read_to_string(&path)?)
            .map_err(|e| PkiError::corrupt(&path, e))
    }

    pub(crate) fn write_json(
        &self,
        file: &str,
        value: &impl Serialize,
        mode: u32,
    ) -> Result<(), PkiError> {
        let mut json = serde_json::to_vec_pretty(value).expect("PKI state serializes");
        json.push(b'\n');
        store::write_atomic(&self.path(file), &json, mode)
    }
}

fn leaf_params(validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    Ok(params)
}

/// 128 random bits with the first byte in 0x10..=0x7f: positive in DER and
/// printed without a leading zero, so every tool shows it the same way.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Tls("no randomness".into()))?;
    bytes[0] = 0x10 + bytes[0] % 0x70;
    Ok(SerialNumber::from_slice(&bytes))
}

fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    let hex = normalize_serial(hex)?;
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The DER bytes of the first certificate in `pem`.
pub(crate) fn cert_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|d| d.to_vec())
        .map_err(|e| format!("no PEM certificate: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{csr, developer, pki};

    #[test]
    fn renewal_keeps_the_subject_and_takes_the_default_ttl() {
        let (_tmp, pki) = pki();
        let short = Validity::from_now(Duration::minutes(10));
        let old = pki.issue(&developer("alice"), short).unwrap();
        let new = pki.renew(&old.record.serial, &csr()).unwrap();
        assert_ne!(new.record.serial, old.record.serial);
        assert_eq!(new.record.user, "alice");
        assert_eq!(new.record.groups, ["developer"]);
        assert!(new.record.not_after - OffsetDateTime::now_utc() > Duration::hours(11));
        assert_eq!(pki.list().unwrap().len(), 3);
    }

    #[test]
    fn renewal_needs_a_valid_client_certificate() {
        let (_tmp, pki) = pki();
        let now = OffsetDateTime::now_utc();
        let expired = pki
            .issue(
                &developer("carol"),
                Validity {
                    not_before: now - Duration::hours(2),
                    not_after: now - Duration::hours(1),
                },
            )
            .unwrap();
        let err = pki.renew(&expired.record.serial, &csr()).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");

        let revoked = pki
            .issue(&developer("dave"), pki.client_validity(None).unwrap())
            .unwrap();
        pki.revoke_serial(&revoked.record.serial).unwrap();
        let err = pki.renew(&revoked.record.serial, &csr()).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");

        let server = pki
            .list()
            .unwrap()
            .into_iter()
            .find(|c| c.kind == CertKind::Server)
            .unwrap();
        let err = pki.renew(&server.serial, &csr()).unwrap_err();
        assert!(err.to_string().contains("not a client"), "{err}");

        let err = pki.renew("ABCDEF", &csr()).unwrap_err();
        assert!(matches!(err, PkiError::UnknownSerial(_)), "{err}");
    }

    #[test]
    fn a_request_whose_signature_does_not_verify_is_refused() {
        let (_tmp, pki) = pki();
        let good = pki
            .issue(&developer("erin"), pki.client_validity(None).unwrap())
            .unwrap();
        let block = pem::parse(csr()).unwrap();
        let mut der = block.contents().to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let err = pki.renew(&good.record.serial, &forged).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr(_)), "{err}");
        let token = pki
            .create_token(&developer("erin"), Duration::minutes(5))
            .unwrap();
        let err = pki.redeem_token(&token, &forged).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCsr(_)), "{err}");
    }
}
