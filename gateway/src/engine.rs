//! The engine's Unix socket, from the gateway's side: a small pool of
//! HTTP/1.1 connections for plain calls, a fresh connection for each
//! streaming or hijacked call.
//!
//! The pool is per thread: a connection's I/O is driven by the runtime of
//! the serving thread that opened it, so only that thread reuses it (on
//! another thread every call would be a hand-off between the two).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::body::GatewayBody;

/// How many idle connections each thread keeps: enough for every call in
/// flight at a busy moment, so a burst does not turn into a connect per
/// call (measured: with 32 and 64 clients, one new engine connection every
/// five calls).
const POOL_IDLE: usize = 512;

pub struct Engine {
    socket: PathBuf,
    /// This engine's key in each thread's pool.
    id: u64,
}

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Idle connections by engine id, on this thread.
    static IDLE: RefCell<HashMap<u64, Vec<SendRequest<GatewayBody>>>> = RefCell::default();
}

#[derive(Debug, thiserror::Error)]
#[error("the engine at {socket} did not answer: {reason}")]
pub struct EngineUnavailable {
    pub socket: String,
    pub reason: String,
}

impl Engine {
    pub fn new(socket: PathBuf) -> Engine {
        Engine {
            socket,
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn unavailable(&self, reason: impl ToString) -> EngineUnavailable {
        EngineUnavailable {
            socket: self.socket.display().to_string(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<GatewayBody>, EngineUnavailable> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unavailable(e))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(e))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Sends a request on a pooled connection and reads the whole response
    /// (plain calls answer with bounded bodies); the connection goes back
    /// to the pool.
    pub async fn send_buffered(
        &self,
        request: Request<GatewayBody>,
    ) -> Result<Response<Bytes>, EngineUnavailable> {
        let mut sender = loop {
            let pooled = IDLE.with_borrow_mut(|idle| idle.get_mut(&self.id).and_then(Vec::pop));
            match pooled {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        break sender;
                    }
                }
                None => break self.connect().await?,
            }
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unavailable(e))?;
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| self.unavailable(e))?
            .to_bytes();
        IDLE.with_borrow_mut(|idle| {
            let idle = idle.entry(self.id).or_default();
            if idle.len() < POOL_IDLE {
                idle.push(sender);
            }
        });
        Ok(Response::from_parts(parts, bytes))
    }

    /// Sends a request on a connection of its own, for responses that
    /// stream or upgrade.
    pub async fn send_streaming(
        &self,
        request: Request<GatewayBody>,
    ) -> Result<Response<Incoming>, EngineUnavailable> {
        let mut sender = self.connect().await?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// A GET whose JSON answer the gateway itself needs (an owner lookup).
    /// `None` when the engine answers anything but 200.
    pub async fn get_json(
        &self,
        path: &str,
    ) -> Result<Option<serde_json::Value>, EngineUnavailable> {
        let request = Request::get(path)
            .header(hyper::header::HOST, "moat-engine")
            .body(GatewayBody::new(
                Empty::new().map_err(|never| match never {}),
            ))
            .expect("a GET request");
        let response = self.send_buffered(request).await?;
        if response.status() != hyper::StatusCode::OK {
            return Ok(None);
        }
        serde_json::from_slice(response.body())
            .map(Some)
            .map_err(|e| self.unavailable(format!("unreadable answer to GET {path}: {e}")))
    }
}
