//! The TLS side: the server configuration built from the PKI and swapped
//! atomically when the CA, the CRL or the server certificate changes on
//! disk, and the caller's identity read from the verified client
//! certificate.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use moat_certs::authority::{CA_CERT, CRL, SERVER_CERT, SERVER_KEY};
use moat_certs::tls::{ServerMaterial, ServerOptions, server_config};
use moat_certs::{CertSummary, Pki, PkiError};
use rustls::ServerConfig;

use crate::sessions::Sessions;

/// Who is calling, fixed for the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    pub auth: moat_audit::Auth,
    pub serial: Option<String>,
    pub fingerprint: Option<String>,
}

impl Caller {
    /// The identity of a verified client certificate: CN is the user, each
    /// O a group. A certificate without a CN names nobody and is refused.
    pub fn from_certificate(der: &[u8]) -> Result<Caller, String> {
        let summary = CertSummary::from_der(der)?;
        if summary.common_name.is_empty() {
            return Err("the client certificate has no common name".into());
        }
        Ok(Caller {
            user: summary.common_name,
            groups: summary.organizations,
            auth: moat_audit::Auth::Mtls,
            serial: Some(summary.serial),
            fingerprint: Some(summary.fingerprint),
        })
    }

    pub fn identity(&self) -> moat_policy::Identity {
        moat_policy::Identity::new(self.user.clone(), self.groups.clone())
    }
}

/// The current server configuration and the serials the current CRL
/// revokes, reloaded from the PKI directory when its files change.
pub struct TlsState {
    pki_dir: PathBuf,
    options: ServerOptions,
    config: ArcSwap<ServerConfig>,
    revoked: ArcSwap<HashSet<String>>,
    material: std::sync::Mutex<ServerMaterial>,
}

impl TlsState {
    pub fn load(pki_dir: &Path, options: ServerOptions) -> Result<TlsState, PkiError> {
        let material = Pki::open(pki_dir)?.server_material()?;
        let config = server_config(&material, &options)?;
        let revoked = revoked_set(&material.crl_pem)?;
        Ok(TlsState {
            pki_dir: pki_dir.to_owned(),
            options,
            config: ArcSwap::new(config),
            revoked: ArcSwap::from_pointee(revoked),
            material: std::sync::Mutex::new(material),
        })
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// The enrollment listener's configuration (no client authentication)
    /// and the CA certificate it hands out.
    pub fn enrollment(&self) -> Result<(Arc<ServerConfig>, String), PkiError> {
        let material = self.material.lock().expect("tls material lock").clone();
        let config = moat_certs::tls::enrollment_server_config(&material, &self.options)?;
        Ok((config, material.ca_pem))
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.load().contains(serial)
    }

    /// Reads the PKI files again and, if they changed and still make a
    /// working configuration, swaps it in. A broken file leaves the running
    /// configuration in place. The server key is read only when the server
    /// certificate changed. After the privilege drop the key file is not
    /// readable: then the enrollment signer (root), when there is one,
    /// hands over the pair it reads, and it must match the certificate on
    /// disk; without a signer the old pair stays and the error says to
    /// restart.
    pub async fn reload(&self, signer: Option<&crate::enroll::Signer>) -> Result<bool, String> {
        let read = |name: &str| {
            std::fs::read_to_string(self.pki_dir.join(name))
                .map_err(|e| format!("{}: {e}", self.pki_dir.join(name).display()))
        };
        let mut next = self.material.lock().expect("tls material lock").clone();
        next.ca_pem = read(CA_CERT)?;
        next.crl_pem = read(CRL)?;
        let cert_pem = read(SERVER_CERT)?;
        if cert_pem != next.cert_pem {
            next.key_pem = match (read(SERVER_KEY), signer) {
                (Ok(key), _) => key,
                (Err(e), None) => {
                    return Err(format!(
                        "the server certificate changed but its key is unreadable ({e}); restart the gateway to use it"
                    ));
                }
                (Err(_), Some(signer)) => {
                    let answer = signer
                        .call(&serde_json::json!({ "op": "server-key" }))
                        .await
                        .map_err(|e| {
                            format!(
                                "the server certificate changed; asking the signer for its key: {e}"
                            )
                        })?;
                    if answer["server_cert"].as_str() != Some(cert_pem.as_str()) {
                        return Err("the signer's server certificate is not the one on disk; keeping the running one".into());
                    }
                    answer["server_key"]
                        .as_str()
                        .ok_or("the signer's answer has no server key")?
                        .to_owned()
                }
            };
            next.cert_pem = cert_pem;
        }
        let mut current = self.material.lock().expect("tls material lock");
        if next.ca_pem == current.ca_pem
            && next.crl_pem == current.crl_pem
            && next.cert_pem == current.cert_pem
        {
            return Ok(false);
        }
        let config = server_config(&next, &self.options).map_err(|e| e.to_string())?;
        let revoked = revoked_set(&next.crl_pem).map_err(|e| e.to_string())?;
        self.config.store(config);
        self.revoked.store(Arc::new(revoked));
        *current = next;
        Ok(true)
    }

    /// Polls the PKI directory and reloads on change; after each reload,
    /// closes the open connections of certificates the new CRL revokes.
    pub async fn watch(
        self: Arc<Self>,
        sessions: Sessions,
        signer: Option<crate::enroll::Signer>,
        every: Duration,
    ) {
        let mut seen = stamp(&self.pki_dir);
        loop {
            tokio::time::sleep(every).await;
            let now = stamp(&self.pki_dir);
            if now == seen {
                continue;
            }
            seen = now;
            match self.reload(signer.as_ref()).await {
                Ok(true) => {
                    tracing::info!(
                        "reloaded the TLS configuration from {}",
                        self.pki_dir.display()
                    );
                    let closed = sessions.close_where(|s| {
                        s.caller
                            .as_ref()
                            .and_then(|c| c.serial.as_deref())
                            .is_some_and(|serial| self.is_revoked(serial))
                    });
                    if closed > 0 {
                        tracing::info!("closed {closed} connection(s) of revoked certificates");
                    }
                }
                Ok(false) => {}
                Err(err) => tracing::error!("keeping the running TLS configuration: {err}"),
            }
        }
    }
}

fn revoked_set(crl_pem: &str) -> Result<HashSet<String>, PkiError> {
    moat_certs::inspect::crl_revoked_serials(crl_pem)
        .map(|serials| serials.into_iter().collect())
        .map_err(|e| PkiError::Tls(format!("CRL: {e}")))
}

/// Modification times and sizes of the files a reload reads.
fn stamp(dir: &Path) -> Vec<Option<(SystemTime, u64)>> {
    [CA_CERT, CRL, SERVER_CERT]
        .iter()
        .map(|name| {
            std::fs::metadata(dir.join(name))
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}
