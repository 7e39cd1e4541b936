//! `docker cp` and `docker export`: the container's files as tar, read and
//! written by a `moat shim-archive` process that resolves every path inside
//! the container (see `shim/archive.rs`).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;

use super::images::BodyReader;
use super::{ApiError, ApiResult, Call, Engine, blocking};

fn helper(engine: &Engine, id: &str, mode: &str, path: &str) -> Command {
    let runtime = &engine.runtime;
    let mut cmd = Command::new(&runtime.config().shim_binary);
    cmd.arg("shim-archive")
        .arg(mode)
        .arg(runtime.state_dir(id))
        .arg(path);
    if let Some(pid) = runtime.shim_pid(id) {
        cmd.arg(pid.to_string());
    }
    cmd
}

fn target(call: &Call) -> Result<(String, String), ApiError> {
    let reference = call.object()?;
    let path = call
        .query
        .get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::bad_request("path is required"))?
        .to_owned();
    Ok((reference, path))
}

async fn resolve_path(
    engine: &Arc<Engine>,
    reference: String,
    path: String,
) -> Result<(String, String), ApiError> {
    let runtime = engine.runtime.clone();
    let id = blocking(move || Ok(runtime.resolve(&reference)?)).await?;
    Ok((id, path))
}

async fn stat_header(engine: &Arc<Engine>, id: &str, path: &str) -> Result<HeaderValue, ApiError> {
    let mut cmd = helper(engine, id, "stat", path);
    let output = blocking(move || {
        cmd.output()
            .map_err(|e| ApiError::internal(format!("shim-archive: {e}")))
    })
    .await?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(if message.contains("Could not find") {
            ApiError::not_found(message)
        } else {
            ApiError::internal(message)
        });
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(output.stdout.trim_ascii_end());
    HeaderValue::from_str(&encoded).map_err(|e| ApiError::internal(e.to_string()))
}

pub async fn get(engine: Arc<Engine>, call: Call) -> ApiResult {
    let (reference, path) = target(&call)?;
    let (id, path) = resolve_path(&engine, reference, path).await?;
    let stat = stat_header(&engine, &id, &path).await?;
    let head = call.request.method() == axum::http::Method::HEAD;
    let body = if head {
        Body::empty()
    } else {
        stream_helper(helper(&engine, &id, "get", &path))?
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

pub async fn export(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reference = call.object()?;
    let runtime = engine.runtime.clone();
    let id = blocking(move || Ok(runtime.resolve(&reference)?)).await?;
    let mut response = Response::new(stream_helper(helper(&engine, &id, "get", "/"))?);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// The helper's stdout as a streamed body.
fn stream_helper(mut cmd: Command) -> Result<Body, ApiError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::internal(format!("shim-archive: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        let _ = child.kill();
                        break;
                    }
                }
            }
        }
        let _ = child.wait();
    });
    Ok(super::stream_body(rx))
}

pub async fn put(engine: Arc<Engine>, call: Call) -> ApiResult {
    let (reference, path) = target(&call)?;
    let (id, path) = resolve_path(&engine, reference, path).await?;
    let mut cmd = helper(&engine, &id, "put", &path);
    let mut reader = BodyReader::new(call.request.into_body());
    blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ApiError::internal(format!("shim-archive: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let copied = std::io::copy(&mut reader, &mut stdin);
        drop(stdin);
        let output = child
            .wait_with_output()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !output.status.success() {
            let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            return Err(if message.contains("Could not find") {
                ApiError::not_found(message)
            } else {
                ApiError::bad_request(message)
            });
        }
        copied.map_err(|e| ApiError::bad_request(format!("reading the archive: {e}")))?;
        let _ = std::io::stdout().flush();
        Ok(())
    })
    .await?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
