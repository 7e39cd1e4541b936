//! The gateway's admin API (`/moat/v1/...`, docs/gateway.md), called with
//! an admin's client certificate: one HTTP/1.1 request per connection,
//! over rustls with the bundle `moat certs issue --out` writes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

/// A whole call may take this long, connection and TLS handshake included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A gateway, and who we are to it.
pub struct Gateway {
    /// As given, for messages.
    url: String,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
}

/// An answer that is not a success: the HTTP status and the gateway's
/// message (`{"message": "moat: ..."}`).
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.status)
    }
}

impl std::error::Error for Refused {}

impl Gateway {
    /// `https://HOST:PORT` (or `tcp://HOST:PORT`, as in `DOCKER_HOST`; the
    /// port defaults to 2376), with `ca.pem`, `cert.pem` and `key.pem`
    /// from `cert_path`.
    pub fn new(url: &str, cert_path: &Path) -> Result<Gateway> {
        let (host, port) = host_port(url)?;
        let read = |name: &str| {
            let path = cert_path.join(name);
            std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (--cert-path: a directory with ca.pem, cert.pem and key.pem)",
                    path.display()
                )
            })
        };
        let tls = moat_certs::tls::client_config(
            &read("ca.pem")?,
            &read("cert.pem")?,
            &read("key.pem")?,
        )?;
        Ok(Gateway {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method path` with an optional JSON body and returns the JSON
    /// answer. A non-2xx answer is an error whose source is [`Refused`].
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the client runtime")?;
        let (status, bytes) = runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, self.exchange(method, path, body))
                .await
                .map_err(|_| anyhow!("{}: no answer within {TIMEOUT:?}", self.url))?
        })?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !(200..300).contains(&status) {
            let message = json
                .as_ref()
                .and_then(|j| j["message"].as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            return Err(anyhow::Error::new(Refused { status, message }))
                .with_context(|| format!("{} {method} {path}", self.url));
        }
        json.with_context(|| format!("{} {method} {path}: the answer is not JSON", self.url))
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes)> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}", self.url))?;
        let name = ServerName::try_from(self.host.clone())
            .with_context(|| format!("{:?} is not a host name or an address", self.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.url))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(connection);
        let body = body.map(Value::to_string).unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(
                USER_AGENT,
                concat!("moat-policy/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{} {method} {path}", self.url))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// `https://HOST:PORT`, `tcp://HOST:PORT`, `HOST:PORT` or `HOST`, with
/// `[v6]` for an IPv6 address.
fn host_port(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url);
    if url.starts_with("http://") {
        bail!("{url}: the gateway speaks HTTPS only (https://HOST:PORT)");
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("{url}: unclosed ["))?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    if host.is_empty() || host.contains('/') {
        bail!("{url}: expected https://HOST:PORT");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("{url}: {p:?} is not a port"))?,
        None => 2376,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gateway_addresses() {
        for (url, host, port) in [
            ("https://moat.example.com:2376", "moat.example.com", 2376),
            ("https://127.0.0.1:40000/", "127.0.0.1", 40000),
            ("tcp://10.0.0.5:2376", "10.0.0.5", 2376),
            ("moat.example.com", "moat.example.com", 2376),
            ("https://[::1]:9000", "::1", 9000),
        ] {
            assert_eq!(host_port(url).unwrap(), (host.to_owned(), port), "{url}");
        }
        for bad in ["http://x:1", "https://:1", "https://x:port", "https://x/y"] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }
}
