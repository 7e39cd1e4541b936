//! Enrollment: the one door without a client certificate. A second TLS
//! listener (no client authentication) serves exactly two calls, and
//! refuses everything else before any classification:
//!
//! - `GET /moat/v1/ca`: the CA certificate, which `moat login` checks
//!   against the pin the admin handed out with the token;
//! - `POST /moat/v1/enroll` `{"token", "csr"}`: the signer (a root process
//!   that alone reads the CA key, on a Unix socket) redeems the one-time
//!   token and signs the CSR's key for the token's user and groups.
//!
//! Failed attempts are limited per source address; every attempt is
//! audited. `POST /moat/v1/renew` (on the mutual-TLS port, for the
//! caller's own identity) goes to the same signer.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::body;
use crate::framing::Framing;
use crate::pipeline::{GatewayResponse, error_response, json_response};
use crate::record::{CallRecord, Outcome};
use crate::tls::Caller;

/// Failed enrollments allowed per source address per window.
const FAILURES_ALLOWED: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The largest enrollment request read.
const BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct EnrollConfig {
    pub listen: SocketAddr,
    /// The signer's Unix socket.
    pub signer: PathBuf,
}

/// The signer, from the gateway's side.
#[derive(Debug, Clone)]
pub struct Signer {
    socket: PathBuf,
}

impl Signer {
    pub fn new(socket: PathBuf) -> Signer {
        Signer { socket }
    }

    /// One request, one answer: the signer's JSON, or why there is none.
    /// An answer `{"error": ...}` comes back as `Err` with its message.
    pub async fn call(&self, request: &Value) -> Result<Value, SignerError> {
        let exchange = async {
            let mut stream = tokio::net::UnixStream::connect(&self.socket).await?;
            let mut line = request.to_string();
            line.push('\n');
            stream.write_all(line.as_bytes()).await?;
            let mut reader = BufReader::new(stream.take(256 * 1024));
            let mut answer = String::new();
            reader.read_line(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        let answer = tokio::time::timeout(Duration::from_secs(15), exchange)
            .await
            .map_err(|_| SignerError::Unavailable("the signer did not answer in time".into()))?
            .map_err(|e| SignerError::Unavailable(format!("{}: {e}", self.socket.display())))?;
        let value: Value = serde_json::from_str(answer.trim()).map_err(|e| {
            SignerError::Unavailable(format!("unreadable answer from the signer: {e}"))
        })?;
        match value.get("error").and_then(Value::as_str) {
            Some(message) => Err(SignerError::Refused(message.to_owned())),
            None => Ok(value),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("the enrollment signer is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
}

impl SignerError {
    pub fn status(&self) -> StatusCode {
        match self {
            SignerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SignerError::Refused(_) => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Recent failures per source address.
#[derive(Default)]
struct Failures(Mutex<HashMap<IpAddr, VecDeque<Instant>>>);

impl Failures {
    fn blocked(&self, ip: IpAddr) -> bool {
        let mut map = self.0.lock().expect("failures lock");
        let now = Instant::now();
        let entry = map.entry(ip).or_default();
        while entry
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            entry.pop_front();
        }
        let blocked = entry.len() >= FAILURES_ALLOWED;
        if entry.is_empty() {
            map.remove(&ip);
        }
        blocked
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self.0.lock().expect("failures lock");
        map.entry(ip).or_default().push_back(Instant::now());
        if map.len() > 65536 {
            map.clear();
        }
    }
}

pub struct Enrollment {
    pub signer: Signer,
    pub audit: moat_audit::AuditLog,
    pub ca_pem: String,
    /// The mutual-TLS port, for the `docker_host` a new user is told.
    pub main_port: u16,
    failures: Failures,
    ids: Mutex<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    token: String,
    csr: String,
}

impl Enrollment {
    pub fn new(
        signer: Signer,
        audit: moat_audit::AuditLog,
        ca_pem: String,
        main_port: u16,
    ) -> Enrollment {
        Enrollment {
            signer,
            audit,
            ca_pem,
            main_port,
            failures: Failures::default(),
            ids: Mutex::new(0),
        }
    }

    /// Accepts on `listener` with `tls` (no client authentication) until
    /// `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let slots = Arc::new(tokio::sync::Semaphore::new(256));
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let acceptor = acceptor.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.call(peer, request).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
            });
        }
    }

    async fn call(&self, peer: SocketAddr, request: Request<Incoming>) -> GatewayResponse {
        let id = {
            let mut next = self.ids.lock().expect("ids lock");
            *next += 1;
            format!("enroll-{}-{:x}", std::process::id(), *next)
        };
        let nobody = Caller {
            user: String::new(),
            groups: Vec::new(),
            auth: moat_audit::Auth::None,
            serial: None,
            fingerprint: None,
        };
        let target = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
        let user_agent = request
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let mut record = CallRecord::new(
            id,
            &nobody,
            &peer.to_string(),
            request.method().as_str(),
            &target,
            user_agent,
        );
        let (status, body, reason) = self.answer(peer, request, &target, &mut record).await;
        let outcome = Outcome {
            decision: if status.is_success() {
                moat_audit::Decision::Allow
            } else {
                moat_audit::Decision::Deny
            },
            reason: reason.clone(),
            status: status.as_u16(),
            bytes_out: body.len() as u64,
        };
        if self.audit.append(record.completed(&outcome)).await.is_err() {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "moat: the audit log cannot be written, so the call was refused",
            );
        }
        match reason {
            Some(message) if !status.is_success() => error_response(status, &message),
            _ => json_response(status, body),
        }
    }

    /// The status, the JSON body (on success) and the reason (on refusal).
    async fn answer(
        &self,
        peer: SocketAddr,
        request: Request<Incoming>,
        target: &str,
        record: &mut CallRecord,
    ) -> (StatusCode, Bytes, Option<String>) {
        let refuse = |status: StatusCode, message: &str| {
            (status, Bytes::new(), Some(format!("moat: {message}")))
        };
        let path = target.split('?').next().unwrap_or("");
        match (request.method(), path) {
            (&Method::GET, "/moat/v1/ca") => {
                let body = json!({ "ca": self.ca_pem }).to_string();
                (StatusCode::OK, Bytes::from(body), None)
            }
            (&Method::POST, "/moat/v1/enroll") => {
                record.action = Some(moat_api::Action::MoatEnroll);
                if self.failures.blocked(peer.ip()) {
                    return refuse(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed enrollments from this address; wait a minute",
                    );
                }
                let host = request
                    .headers()
                    .get(hyper::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(host_only)
                    .unwrap_or_else(|| "localhost".to_owned());
                if let Err(err) = body::check_framing(request.headers(), Framing::Clear) {
                    return refuse(StatusCode::BAD_REQUEST, &err.to_string());
                }
                let (parts, incoming) = request.into_parts();
                let bytes = match body::buffer(&parts.headers, incoming, BODY_LIMIT).await {
                    Ok(bytes) => bytes,
                    Err(err) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &err.to_string()),
                };
                record.bytes_in = bytes.len() as u64;
                let enroll: EnrollRequest = match serde_json::from_slice(&bytes) {
                    Ok(enroll) => enroll,
                    Err(err) => {
                        self.failures.failed(peer.ip());
                        return refuse(
                            StatusCode::BAD_REQUEST,
                            &format!("invalid enrollment request: {err}"),
                        );
                    }
                };
                let answer = self
                    .signer
                    .call(&json!({ "op": "enroll", "token": enroll.token, "csr": enroll.csr }))
                    .await;
                match answer {
                    Ok(mut issued) => {
                        record.user = issued["user"].as_str().unwrap_or_default().to_owned();
                        record.groups = issued["groups"]
                            .as_array()
                            .map(|g| {
                                g.iter()
                                    .filter_map(|v| v.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default();
                        record.serial = issued["serial"].as_str().map(str::to_owned);
                        issued["docker_host"] = json!(format!("tcp://{host}:{}", self.main_port));
                        (StatusCode::OK, Bytes::from(issued.to_string()), None)
                    }
                    Err(err) => {
                        if matches!(err, SignerError::Refused(_)) {
                            self.failures.failed(peer.ip());
                        }
                        refuse(err.status(), &format!("enrollment refused: {err}"))
                    }
                }
            }
            _ => refuse(
                StatusCode::FORBIDDEN,
                "only enrollment (GET /moat/v1/ca, POST /moat/v1/enroll) is served on this port",
            ),
        }
    }
}

/// `host:port` or `[v6]:port` → the host as a URL holds it.
fn host_only(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return format!("[{}]", rest.split(']').next().unwrap_or(""));
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned()
}

/// The path of a `unix://PATH` address.
pub fn unix_path(address: &str) -> Option<&Path> {
    address.strip_prefix("unix://").map(Path::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_after_the_allowance_and_per_address() {
        let failures = Failures::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..FAILURES_ALLOWED {
            assert!(!failures.blocked(a));
            failures.failed(a);
        }
        assert!(failures.blocked(a));
        assert!(!failures.blocked(b));
    }

    #[test]
    fn hosts_lose_their_ports() {
        assert_eq!(host_only("gw.example:2377"), "gw.example");
        assert_eq!(host_only("[::1]:2377"), "[::1]");
        assert_eq!(host_only("10.0.0.5"), "10.0.0.5");
    }
}
