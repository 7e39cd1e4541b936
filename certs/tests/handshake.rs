//! The gateway's TLS server configuration, driven through real rustls
//! handshakes: a good client certificate gets in; a revoked, expired,
//! foreign, server-only or absent one does not.

use std::sync::Arc;

use moat_certs::tls::{self, ServerOptions};
use moat_certs::{Pki, PkiConfig, Subject, Validity};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

struct Fixture {
    _tmp: tempfile::TempDir,
    pki: Pki,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let config = PkiConfig {
        server_hosts: vec!["localhost".into()],
        server_ips: vec!["127.0.0.1".parse().unwrap()],
        ..PkiConfig::default()
    };
    let pki = Pki::init(&tmp.path().join("pki"), config).unwrap();
    Fixture { _tmp: tmp, pki }
}

fn server(pki: &Pki) -> Arc<ServerConfig> {
    tls::server_config(&pki.server_material().unwrap(), &ServerOptions::default()).unwrap()
}

fn client_for(pki: &Pki, user: &str, validity: Validity) -> Arc<ClientConfig> {
    let subject = Subject::new(user, &["developer".to_owned(), "ops".to_owned()]).unwrap();
    let issued = pki.issue(&subject, validity).unwrap();
    tls::client_config(
        &issued.ca_pem,
        &issued.cert_pem,
        issued.key_pem.as_deref().unwrap(),
    )
    .unwrap()
}

fn fresh() -> Validity {
    Validity::from_now(Duration::hours(1))
}

/// Runs a handshake in memory; returns the server's verdict.
fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<(), rustls::Error> {
    connect(server, client).map(drop)
}

/// Runs a handshake in memory and returns the server's side of it.
fn connect(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<ServerConnection, rustls::Error> {
    let mut server = ServerConnection::new(server).unwrap();
    let mut client =
        ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
        }
        server.process_new_packets()?;
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        client
            .process_new_packets()
            .map_err(|e| rustls::Error::General(format!("client side: {e}")))?;
        if !server.is_handshaking() && !client.is_handshaking() {
            return Ok(server);
        }
    }
    panic!("handshake did not finish");
}

fn assert_refused(result: Result<(), rustls::Error>, what: &str) {
    match result {
        Err(rustls::Error::InvalidCertificate(_)) | Err(rustls::Error::NoCertificatesPresented) => {
        }
        other => panic!("{what}: expected the server to refuse the certificate, got {other:?}"),
    }
}

#[test]
fn good_client_certificate_is_accepted() {
    let f = fixture();
    handshake(server(&f.pki), client_for(&f.pki, "alice", fresh())).unwrap();
}

#[test]
fn the_verified_peer_is_the_issued_identity() {
    let f = fixture();
    let conn = connect(server(&f.pki), client_for(&f.pki, "alice", fresh())).unwrap();
    let peer = conn.peer_certificates().unwrap();
    let summary = moat_certs::CertSummary::from_der(&peer[0]).unwrap();
    assert_eq!(summary.common_name, "alice");
    assert_eq!(summary.organizations, vec!["developer", "ops"]);
    assert!(summary.client_auth && !summary.server_auth);
}

#[test]
fn revoked_certificate_is_refused() {
    let f = fixture();
    let subject = Subject::new("mallory", &[]).unwrap();
    let issued = f.pki.issue(&subject, fresh()).unwrap();
    let client = tls::client_config(
        &issued.ca_pem,
        &issued.cert_pem,
        issued.key_pem.as_deref().unwrap(),
    )
    .unwrap();
    handshake(server(&f.pki), client.clone()).expect("accepted before revocation");
    f.pki.revoke_serial(&issued.record.serial).unwrap();
    assert_refused(handshake(server(&f.pki), client), "revoked");
    // Revoking one certificate leaves the others working.
    handshake(server(&f.pki), client_for(&f.pki, "alice", fresh())).unwrap();
}

#[test]
fn expired_certificate_is_refused() {
    let f = fixture();
    let now = OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - Duration::hours(2),
        not_after: now - Duration::minutes(1),
    };
    assert_refused(
        handshake(server(&f.pki), client_for(&f.pki, "alice", expired)),
        "expired",
    );
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let f = fixture();
    let other = fixture();
    // The client trusts our server; only its certificate comes from elsewhere.
    let issued_elsewhere = other
        .pki
        .issue(&Subject::new("alice", &[]).unwrap(), fresh())
        .unwrap();
    let client = tls::client_config(
        &f.pki.ca_pem().unwrap(),
        &issued_elsewhere.cert_pem,
        issued_elsewhere.key_pem.as_deref().unwrap(),
    )
    .unwrap();
    assert_refused(handshake(server(&f.pki), client), "foreign CA");
}

#[test]
fn server_auth_only_certificate_is_refused() {
    let f = fixture();
    // The gateway's own certificate is signed by the same CA but is serverAuth only.
    let cert = std::fs::read_to_string(f.pki.path("server-cert.pem")).unwrap();
    let key = std::fs::read_to_string(f.pki.path("server-key.pem")).unwrap();
    let client = tls::client_config(&f.pki.ca_pem().unwrap(), &cert, &key).unwrap();
    assert_refused(handshake(server(&f.pki), client), "serverAuth only");
}

#[test]
fn no_client_certificate_is_refused() {
    let f = fixture();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(f.pki.ca_pem().unwrap().as_bytes())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert_refused(
        handshake(server(&f.pki), Arc::new(client)),
        "no certificate",
    );
}

#[test]
fn tls12_can_be_switched_off() {
    let f = fixture();
    let options = ServerOptions {
        allow_tls12: false,
        ..ServerOptions::default()
    };
    let server = tls::server_config(&f.pki.server_material().unwrap(), &options).unwrap();
    let subject = Subject::new("alice", &[]).unwrap();
    let issued = f.pki.issue(&subject, fresh()).unwrap();
    let mut roots = RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(issued.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls12_only = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                .map(Result::unwrap)
                .collect(),
            rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.unwrap().as_bytes())
                .unwrap(),
        )
        .unwrap();
    assert!(handshake(server, Arc::new(tls12_only)).is_err());
}
