//! rustls configurations built from the PKI.
//!
//! The gateway's server side requires a client certificate signed by the CA,
//! checks it against the CRL (and refuses everything once the CRL has
//! expired: a stale CRL fails closed), and accepts only clientAuth
//! certificates. One crypto provider, aws-lc-rs, is named explicitly here so
//! the configuration never depends on a process-wide default.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::authority::{CA_CERT, CRL, SERVER_CERT, SERVER_KEY};
use crate::remembered::RememberingVerifier;
use crate::{Pki, PkiError, store};

/// The PEM material the gateway's TLS server is built from.
#[derive(Clone)]
pub struct ServerMaterial {
    pub ca_pem: String,
    pub crl_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMaterial").finish_non_exhaustive()
    }
}

/// Protocol choices for the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TLS 1.3 always; TLS 1.2 (AEAD suites only) when this is set.
    pub allow_tls12: bool,
    pub alpn: Vec<Vec<u8>>,
    /// Let a client without a certificate finish the handshake (it must
    /// then authenticate each request another way, e.g. a bearer token).
    /// Off unless bearer tokens are configured: then a certificate that is
    /// presented is still verified against the CA and the CRL.
    pub client_cert_optional: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            allow_tls12: true,
            alpn: vec![b"http/1.1".to_vec()],
            client_cert_optional: false,
        }
    }
}

/// The crypto provider used everywhere in moat.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider the gateway's servers use: the same, with the AES-128
/// suites first, for the server to choose (see `ignore_client_order`).
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(provider)
}

impl Pki {
    /// Reads what the gateway needs, checking the server key's permissions.
    pub fn server_material(&self) -> Result<ServerMaterial, PkiError> {
        let key_path = self.path(SERVER_KEY);
        store::check_key_file(&key_path)?;
        Ok(ServerMaterial {
            ca_pem: store::read_to_string(&self.path(CA_CERT))?,
            crl_pem: store::read_to_string(&self.path(CRL))?,
            cert_pem: store::read_to_string(&self.path(SERVER_CERT))?,
            key_pem: store::read_to_string(&key_path)?,
        })
    }
}

/// The gateway's TLS server: client certificates required and checked
/// against the CA and the CRL.
pub fn server_config(
    material: &ServerMaterial,
    options: &ServerOptions,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = server_provider();
    let verifier = Arc::new(client_verifier(material, options.client_cert_optional)?);
    let versions: &[&rustls::SupportedProtocolVersion] = if options.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&material.cert_pem)?, private_key(&material.key_pem)?)
        .map_err(|e| PkiError::Tls(format!("server certificate: {e}")))?;
    config.alpn_protocols = options.alpn.clone();
    // The server picks the suite: AES-128-GCM/SHA-256 first, the cheapest
    // key schedule (the docker CLI prefers it too; rustls clients ask for
    // AES-256/SHA-384 first).
    config.ignore_client_order = true;
    // One resumption ticket per handshake rather than two: resuming
    // clients need one, and the docker CLI does not resume.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// The check of a client's certificate: signed by the CA, valid, not on
/// the CRL (which must be current), remembered once it passed.
pub(crate) fn client_verifier(
    material: &ServerMaterial,
    optional: bool,
) -> Result<RememberingVerifier, PkiError> {
    let roots = Arc::new(root_store(&material.ca_pem)?);
    let crls = CertificateRevocationListDer::pem_slice_iter(material.crl_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Tls(format!("CRL: {e:?}")))?;
    if crls.is_empty() {
        return Err(PkiError::Tls("no CRL in the CRL file".into()));
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, server_provider())
        .with_crls(crls)
        .enforce_revocation_expiration();
    if optional {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| PkiError::Tls(format!("client verifier: {e}")))?;
    // A CRL without a readable next update: nothing is remembered.
    let crl_next_update = crate::inspect::crl_next_update(&material.crl_pem)
        .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0));
    Ok(RememberingVerifier::new(verifier, crl_next_update))
}

/// The gateway's enrollment listener: the same server certificate, and no
/// client authentication (a caller enrolling has no certificate yet).
pub fn enrollment_server_config(
    material: &ServerMaterial,
    options: &ServerOptions,
) -> Result<Arc<ServerConfig>, PkiError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if options.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&material.cert_pem)?, private_key(&material.key_pem)?)
        .map_err(|e| PkiError::Tls(format!("server certificate: {e}")))?;
    config.alpn_protocols = options.alpn.clone();
    Ok(Arc::new(config))
}

/// A client presenting `cert_pem`/`key_pem` and trusting only `ca_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ClientConfig>, PkiError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem)?, private_key(key_pem)?)
        .map_err(|e| PkiError::Tls(format!("client certificate: {e}")))?;
    Ok(Arc::new(config))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| PkiError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Tls(format!("certificate PEM: {e:?}")))?;
    if certs.is_empty() {
        return Err(PkiError::Tls("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Tls(format!("private key PEM: {e:?}")))
}
