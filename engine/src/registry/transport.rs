//! HTTP/1.1 to registries: TCP, TLS (rustls with aws-lc-rs, the system's
//! CA bundle) or, for insecure registries only, TLS without certificate
//! checks or plain HTTP; a few idle connections kept per origin; timeouts
//! on connecting and on waiting for an answer.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::RegistryError;

/// A request or response body.
pub type Body = BoxBody<Bytes, io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an answer's headers (or the next piece of a body) may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
const IDLE_PER_ORIGIN: usize = 8;
/// Where Debian keeps the system's CA bundle.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Https,
    /// HTTPS without certificate checks: insecure registries only.
    HttpsUnverified,
    /// Plain HTTP: insecure registries only.
    Http,
}

/// Where requests go: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// `HOST[:PORT]` of a reference's domain, with `scheme`.
    pub fn new(scheme: Scheme, authority: &str) -> Result<Origin, RegistryError> {
        let default_port = match scheme {
            Scheme::Http => 80,
            _ => 443,
        };
        let (host, port) = split_authority(authority, default_port)
            .ok_or_else(|| RegistryError::BadRequest(format!("bad registry host {authority:?}")))?;
        Ok(Origin { scheme, host, port })
    }

    /// An absolute `http(s)://` URL (a redirect, a token realm): its origin
    /// and its path with query. `http` is only for hosts `allow_http`
    /// accepts; `https` keeps the unverified mode when `unverified`.
    pub fn parse_url(
        url: &str,
        unverified: bool,
        allow_http: &dyn Fn(&str) -> bool,
    ) -> Result<(Origin, String), RegistryError> {
        let bad = |reason: &str| RegistryError::protocol(format!("URL {url:?}"), reason);
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let authority = uri.authority().ok_or_else(|| bad("no host"))?.as_str();
        if authority.contains('@') {
            return Err(bad("user information in a URL"));
        }
        let scheme = match uri.scheme_str() {
            Some("https") if unverified => Scheme::HttpsUnverified,
            Some("https") => Scheme::Https,
            Some("http") if allow_http(authority) => Scheme::Http,
            Some("http") => return Err(bad("plain HTTP to a registry that is not insecure")),
            _ => return Err(bad("not an http(s) URL")),
        };
        let origin = Origin::new(scheme, authority)?;
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        Ok((origin, path))
    }

    /// `HOST[:PORT]` as the Host header wants it (no default port).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = match self.scheme {
            Scheme::Http => 80,
            _ => 443,
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            _ => "https",
        };
        format!("{scheme}://{}{path}", self.authority())
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url(""))
    }
}

/// `host`, `host:port`, `[v6]:port` → host and port.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Connections to registries.
pub struct Transport {
    verified: Arc<ClientConfig>,
    unverified: Arc<ClientConfig>,
    idle: Mutex<HashMap<Origin, Vec<SendRequest<Body>>>>,
}

impl Transport {
    /// TLS trusting the system's CA bundle (`SSL_CERT_FILE`, else
    /// Debian's), read once.
    pub fn new() -> Transport {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| SYSTEM_CA_BUNDLE.into());
        match CertificateDer::pem_file_iter(&bundle) {
            Ok(certs) => {
                let (added, _) = roots.add_parsable_certificates(certs.flatten());
                if added == 0 {
                    tracing::warn!(bundle = %bundle.display(), "no CA certificate in the bundle: HTTPS registries will fail");
                }
            }
            Err(e) => {
                tracing::warn!(bundle = %bundle.display(), error = %e, "no CA bundle: HTTPS registries will fail")
            }
        }
        let verified = client_config(&provider, |b| b.with_root_certificates(roots));
        let unverified = client_config(&provider, |b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
        });
        Transport {
            verified: Arc::new(verified),
            unverified: Arc::new(unverified),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends the request `make` builds (path and query only; the Host
    /// header is set here) on an idle connection to `origin`, or a new
    /// one. A request that fails on a reused connection (the registry may
    /// have closed it) is sent once more on a new one.
    pub async fn send(
        &self,
        origin: &Origin,
        make: &(dyn Fn() -> Request<Body> + Send + Sync),
    ) -> Result<Response<Incoming>, RegistryError> {
        if let Some(sender) = self.checkout(origin) {
            match self
                .send_on(origin, sender, make(), Some(ANSWER_TIMEOUT))
                .await
            {
                Ok(response) => return Ok(response),
                Err(e) => {
                    tracing::debug!(%origin, error = %e, "a reused connection failed; retrying")
                }
            }
        }
        let sender = self.connect(origin).await?;
        self.send_on(origin, sender, make(), Some(ANSWER_TIMEOUT))
            .await
    }

    /// Sends a request with a streamed body (an upload) on a new
    /// connection, giving up after `limit` (a registry that stops reading
    /// would otherwise hold the push forever).
    pub async fn send_streaming(
        &self,
        origin: &Origin,
        request: Request<Body>,
        limit: Duration,
    ) -> Result<Response<Incoming>, RegistryError> {
        let sender = self.connect(origin).await?;
        self.send_on(origin, sender, request, Some(limit)).await
    }

    fn checkout(&self, origin: &Origin) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.get_mut(origin)?;
        senders.retain(|s| !s.is_closed());
        let ready = senders.iter().position(SendRequest::is_ready)?;
        Some(senders.swap_remove(ready))
    }

    async fn send_on(
        &self,
        origin: &Origin,
        mut sender: SendRequest<Body>,
        mut request: Request<Body>,
        timeout: Option<Duration>,
    ) -> Result<Response<Incoming>, RegistryError> {
        let host = HeaderValue::from_str(&origin.authority())
            .map_err(|_| RegistryError::transport(origin.to_string(), "bad host"))?;
        request.headers_mut().insert(HOST, host);
        let sent = sender.send_request(request);
        let response = match timeout {
            Some(limit) => tokio::time::timeout(limit, sent)
                .await
                .map_err(|_| RegistryError::transport(origin.to_string(), "no answer in time"))?,
            None => sent.await,
        }
        .map_err(|e| RegistryError::transport(origin.to_string(), e))?;
        // The connection is ready again once this response's body is read;
        // until then `checkout` passes it by.
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let senders = idle.entry(origin.clone()).or_default();
        if senders.len() < IDLE_PER_ORIGIN {
            senders.push(sender);
        }
        Ok(response)
    }

    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Body>, RegistryError> {
        let fail = |reason: String| RegistryError::transport(origin.to_string(), reason);
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((origin.host.as_str(), origin.port)),
        )
        .await
        .map_err(|_| fail("connecting timed out".into()))?
        .map_err(|e| fail(format!("connecting: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let config = match origin.scheme {
            Scheme::Http => return handshake(origin, tcp).await,
            Scheme::Https => self.verified.clone(),
            Scheme::HttpsUnverified => self.unverified.clone(),
        };
        let name = ServerName::try_from(origin.host.clone())
            .map_err(|_| fail(format!("{:?} is not a valid TLS server name", origin.host)))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| fail("TLS handshake timed out".into()))?
        .map_err(|e| fail(format!("TLS: {e}")))?;
        handshake(origin, tls).await
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport::new()
    }
}

async fn handshake<S>(origin: &Origin, stream: S) -> Result<SendRequest<Body>, RegistryError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| RegistryError::transport(origin.to_string(), e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn client_config(
    provider: &Arc<CryptoProvider>,
    roots: impl FnOnce(
        rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>,
    ) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions");
    let mut config = roots(builder).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Accepts any certificate (the signatures of the handshake are still
/// checked): what dockerd does for an insecure registry served over TLS.
/// Also what `moat login` uses to fetch the CA it then checks against a
/// pin.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes and a
/// body that stalls.
pub async fn read_body(
    what: &str,
    response: Response<Incoming>,
    limit: usize,
) -> Result<Bytes, RegistryError> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(ANSWER_TIMEOUT, body.frame())
            .await
            .map_err(|_| RegistryError::protocol(what, "the answer stalled"))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| RegistryError::protocol(what, e))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(RegistryError::protocol(
                    what,
                    format!("more than {limit} bytes"),
                ));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.into())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_urls() {
        let o = Origin::new(Scheme::Https, "Registry.Example:5000").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("registry.example", 5000));
        assert_eq!(o.url("/v2/"), "https://registry.example:5000/v2/");
        let o = Origin::new(Scheme::Http, "[::1]:5000").unwrap();
        assert_eq!(o.authority(), "[::1]:5000");
        let o = Origin::new(Scheme::Https, "registry-1.docker.io").unwrap();
        assert_eq!(o.authority(), "registry-1.docker.io");

        let no_http = |_: &str| false;
        let (o, path) =
            Origin::parse_url("https://auth.docker.io/token?x=1", false, &no_http).unwrap();
        assert_eq!(
            (o.scheme, o.port, path.as_str()),
            (Scheme::Https, 443, "/token?x=1")
        );
        assert!(Origin::parse_url("http://evil.example/token", false, &no_http).is_err());
        assert!(Origin::parse_url("https://u:p@host/", false, &no_http).is_err());
        assert!(Origin::parse_url("ftp://host/", false, &no_http).is_err());
        let (o, _) = Origin::parse_url("http://127.0.0.1:5000/x", false, &|_| true).unwrap();
        assert_eq!(o.scheme, Scheme::Http);
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            encode("repository:team/app:pull,push"),
            "repository%3Ateam%2Fapp%3Apull%2Cpush"
        );
        assert_eq!(encode("a-b_c.d~"), "a-b_c.d~");
    }
}
