//! Just enough HTTPS for the remote commands (`moat login`, `moat whoami`):
//! one JSON request per connection to the gateway, over rustls.
//!
//! Three trust settings, from weakest to strongest, each used for exactly
//! one thing:
//! - [`any_server`]: no server authentication at all. Used only to fetch the
//!   CA certificate before enrolling, and that certificate is then compared
//!   with the pin the admin handed over, so the channel does not matter.
//! - [`trusting`]: the server must hold a certificate from the pinned CA
//!   (enrollment, where the client has no certificate yet).
//! - `moat_certs::tls::client_config`: mutual TLS with the saved bundle
//!   (renewal, whoami).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, RootCertStore};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The answers are small JSON documents (a certificate or two).
const MAX_ANSWER: usize = 1 << 20;

/// Where a server is: `https://HOST:PORT` or `tcp://HOST:PORT` (DOCKER_HOST's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `SCHEME://HOST[:PORT][/]` for one of `schemes`; an IPv6
    /// address in brackets. Paths, queries and user names are refused.
    pub fn parse(url: &str, schemes: &[&str], default_port: u16) -> Result<Endpoint> {
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("{url:?} is not a URL (expected {}://HOST:PORT)", schemes[0]);
        };
        if !schemes.contains(&scheme) {
            bail!("{url:?}: expected {}://HOST:PORT", schemes.join(":// or "));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            bail!("{url:?}: expected {scheme}://HOST:PORT and nothing more");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .with_context(|| format!("{url:?}: unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .with_context(|| format!("{url:?}: bad port {port:?}"))?,
            None => default_port,
        };
        if host.is_empty() {
            bail!("{url:?}: no host");
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }

    /// `HOST:PORT`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn server_name(&self) -> Result<ServerName<'static>> {
        ServerName::try_from(self.host.clone())
            .with_context(|| format!("{:?} is not a host name or IP address", self.host))
    }
}

/// An HTTP answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON of type `T` when the status is 200; otherwise an
    /// error carrying the server's `message` (the gateway's and Docker's
    /// error shape).
    pub fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        if self.status != 200 {
            let message = serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).trim().to_owned());
            // The gateway words its refusals "moat: enrollment refused: ...".
            let message = message.strip_prefix("moat: ").unwrap_or(&message);
            let message = message
                .strip_prefix(&format!("{what} refused: "))
                .unwrap_or(message);
            bail!("{what} refused ({}): {message}", self.status);
        }
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{what}: the server's answer is not what moat expects"))
    }
}

/// One request on a new TLS connection.
pub fn request(
    endpoint: &Endpoint,
    config: Arc<ClientConfig>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Answer> {
    let address = endpoint.authority();
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .collect();
    let mut tcp = None;
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(tcp) = tcp else {
        return Err(match last_error {
            Some(e) => anyhow::Error::new(e).context(format!("connecting to {address}")),
            None => anyhow::anyhow!("{address} resolves to no address"),
        });
    };
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let connection =
        rustls::ClientConnection::new(config, endpoint.server_name()?).context("starting TLS")?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);

    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: moat/{}\r\n\
         Accept: application/json\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.write_all(body.as_bytes()))
        .and_then(|()| tls.flush())
        .with_context(|| format!("{method} https://{address}{path}"))?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(answer) = parse_answer(&raw)? {
            return Ok(answer);
        }
        if raw.len() > MAX_ANSWER {
            bail!("the answer from {address} is too large");
        }
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A server that closes without close_notify: what arrived is
            // judged by its framing below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("{method} https://{address}{path}"))
                );
            }
        }
    }
    match parse_answer_at_eof(&raw)? {
        Some(answer) => Ok(answer),
        None => bail!("{address} closed the connection without a complete answer"),
    }
}

/// A complete answer in `raw`, if it is framed by Content-Length or chunks.
fn parse_answer(raw: &[u8]) -> Result<Option<Answer>> {
    let Some((status, headers, body)) = split_head(raw)? else {
        return Ok(None);
    };
    if chunked(&headers) {
        return Ok(dechunk(body).map(|body| Answer { status, body }));
    }
    match content_length(&headers)? {
        Some(len) if body.len() >= len => Ok(Some(Answer {
            status,
            body: body[..len].to_vec(),
        })),
        _ => Ok(None),
    }
}

/// At the end of the stream, an answer without a length ends there.
fn parse_answer_at_eof(raw: &[u8]) -> Result<Option<Answer>> {
    let Some((status, headers, body)) = split_head(raw)? else {
        return Ok(None);
    };
    if chunked(&headers) || content_length(&headers)?.is_some() {
        return parse_answer(raw);
    }
    Ok(Some(Answer {
        status,
        body: body.to_vec(),
    }))
}

type Head<'a> = (u16, Vec<(String, String)>, &'a [u8]);

fn split_head(raw: &[u8]) -> Result<Option<Head<'_>>> {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some((status, headers, &raw[end + 4..])))
}

fn chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>> {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| {
            v.parse()
                .with_context(|| format!("bad Content-Length {v:?}"))
        })
        .transpose()
}

/// The body of a complete chunked encoding, or `None` if more must come.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(moat_certs::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")
}

/// Trusts servers with a certificate from `ca_pem`; no client certificate.
pub fn trusting(ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("the CA certificate's PEM")?)
            .context("the CA certificate")?;
    }
    let mut config = builder()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Mutual TLS with a saved bundle.
pub fn with_bundle(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<ClientConfig>> {
    Ok(moat_certs::tls::client_config(ca_pem, cert_pem, key_pem)?)
}

/// Accepts any server certificate. Only for fetching the CA certificate,
/// which is then checked against the pin: see the module comment.
pub fn any_server() -> Result<Arc<ClientConfig>> {
    let provider = moat_certs::tls::provider();
    let mut config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            moat_engine::registry::transport::AnyCertificate(provider),
        ))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let https = &["https"];
        assert_eq!(
            Endpoint::parse("https://moat.example.com:2377", https, 2377).unwrap(),
            Endpoint {
                host: "moat.example.com".into(),
                port: 2377
            }
        );
        assert_eq!(
            Endpoint::parse("https://10.0.0.5/", https, 2377).unwrap(),
            Endpoint {
                host: "10.0.0.5".into(),
                port: 2377
            }
        );
        let v6 = Endpoint::parse("tcp://[::1]:2376", &["tcp", "https"], 2376).unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:2376");
        for bad in [
            "moat.example.com:2377",
            "http://moat:2377",
            "https://moat:2377/moat/v1/ca",
            "https://user@moat:2377",
            "https://:2377",
            "https://moat:port",
        ] {
            assert!(Endpoint::parse(bad, https, 2377).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_by_length_chunks_or_end_of_stream() {
        let by_length = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(by_length).unwrap().unwrap().body, b"{}");
        assert!(
            parse_answer(&by_length[..by_length.len() - 1])
                .unwrap()
                .is_none()
        );
        let chunks = b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        let answer = parse_answer(chunks).unwrap().unwrap();
        assert_eq!((answer.status, &answer.body[..]), (401, &b"{\"a\"}"[..]));
        let unframed = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert!(parse_answer(unframed).unwrap().is_none());
        assert_eq!(
            parse_answer_at_eof(unframed).unwrap().unwrap().body,
            b"hello"
        );
        assert!(parse_answer(b"SSH-2.0\r\n\r\n").is_err());
    }
}
