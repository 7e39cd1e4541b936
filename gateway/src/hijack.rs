//! Hijacked calls (attach, exec start): the engine's `101 Switching
//! Protocols` is passed on, then both upgraded connections are spliced
//! with half-close. When the client finishes sending (the docker CLI
//! half-closes when stdin is not attached), writing toward the engine is
//! shut down and the container's output keeps flowing until the engine
//! ends it. Closing the session (revoked certificate, locked user) ends
//! the stream.

use std::sync::Arc;

use hyper::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::body::{self, GatewayBody};
use crate::engine::EngineUnavailable;
use crate::pipeline::{Gateway, GatewayResponse};
use crate::record::{CallRecord, Decision, Outcome};
use crate::sessions::{self, Registration};

pub async fn forward(
    gateway: Arc<Gateway>,
    conn: Arc<Registration>,
    request: hyper::Request<GatewayBody>,
    client_upgrade: OnUpgrade,
    record: &CallRecord,
) -> Result<GatewayResponse, EngineUnavailable> {
    let mut response = gateway.engine.send_streaming(request).await?;
    let status = response.status();
    let record = record.clone();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // An answer without an upgrade (an error, or an old client that
        // did not ask for one): passed on as a plain stream.
        let audit = gateway.audit.clone();
        let (head, incoming) = response.into_parts();
        let counted = body::Counted::new(incoming, move |bytes_out, _| {
            let outcome = Outcome {
                decision: Decision::Allow,
                reason: None,
                status: status.as_u16(),
                bytes_out,
            };
            let completed = record.completed(&outcome);
            tokio::spawn(async move {
                if let Err(err) = audit.append(completed).await {
                    tracing::error!("audit: could not complete a call: {err}");
                }
            });
        });
        let mut answer = hyper::Response::new(http_body_util::BodyExt::boxed(counted));
        *answer.status_mut() = head.status;
        *answer.headers_mut() = head.headers;
        return Ok(answer);
    }
    let engine_upgrade = hyper::upgrade::on(&mut response);
    let mut answer = hyper::Response::new(body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = response.headers().clone();

    tokio::spawn(async move {
        let (client, engine) = match tokio::join!(client_upgrade, engine_upgrade) {
            (Ok(client), Ok(engine)) => (TokioIo::new(client), TokioIo::new(engine)),
            _ => {
                complete(&gateway, &record, 0, Some("the upgrade failed")).await;
                return;
            }
        };
        let closed = sessions::closed(conn.closed.clone());
        let (to_engine, to_client, reason) = tokio::select! {
            counts = splice(client, engine) => (counts.0, counts.1, None),
            _ = closed => (0, 0, Some("the session was closed (certificate revoked or user locked)")),
        };
        record_bytes(&gateway, record, to_engine, to_client, reason).await;
        drop(conn);
    });
    Ok(answer)
}

async fn record_bytes(
    gateway: &Gateway,
    mut record: CallRecord,
    to_engine: u64,
    to_client: u64,
    reason: Option<&str>,
) {
    record.bytes_in += to_engine;
    complete(gateway, &record, to_client, reason).await;
}

async fn complete(gateway: &Gateway, record: &CallRecord, bytes_out: u64, reason: Option<&str>) {
    let outcome = Outcome {
        decision: Decision::Allow,
        reason: reason.map(str::to_owned),
        status: StatusCode::SWITCHING_PROTOCOLS.as_u16(),
        bytes_out,
    };
    if let Err(err) = gateway.audit.append(record.completed(&outcome)).await {
        tracing::error!("audit: could not complete a hijacked call: {err}");
    }
}

/// Copies both ways with half-close; returns the bytes sent toward the
/// engine and toward the client. Ends when the engine's side ends.
async fn splice<C, E>(client: C, engine: E) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin,
    E: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut engine_read, mut engine_write) = tokio::io::split(engine);
    let mut up = 0u64;
    let mut down = 0u64;
    let to_engine = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if engine_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            }
        }
        let _ = engine_write.shutdown().await;
        std::future::pending::<()>().await
    };
    let to_client = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match engine_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    down += n as u64;
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = to_engine => {}
        _ = to_client => {}
    }
    (up, down)
}
