//! `/containers/{id}/exec` and `/exec/{id}/...`: processes started in a
//! running container.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use moat_api::exec::{ExecConfig, ExecStartConfig};
use serde_json::json;

use super::{ApiError, ApiResult, Call, Engine, blocking, json};
use crate::runtime::StateName;
use crate::shim::protocol::ExecRequest;

/// An exec as created, before and after it runs.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub id: String,
    pub container: String,
    pub config: ExecConfig,
    pub started: bool,
    pub exit_code: Option<i32>,
}

impl ExecRecord {
    pub fn running(&self) -> bool {
        self.started && self.exit_code.is_none()
    }
}

pub async fn create(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reference = call.object()?;
    let config: ExecConfig = call.json().await?;
    if config.cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let runtime = engine.runtime.clone();
    let container = blocking(move || {
        let id = runtime.resolve(&reference)?;
        match runtime.state(&id)?.status {
            StateName::Running => Ok(id),
            StateName::Paused => Err(ApiError::conflict(format!(
                "Container {id} is paused, unpause the container before exec"
            ))),
            _ => Err(ApiError::conflict(format!("Container {id} is not running"))),
        }
    })
    .await?;
    let id = random_id();
    engine
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            id.clone(),
            ExecRecord {
                id: id.clone(),
                container,
                config,
                started: false,
                exit_code: None,
            },
        );
    Ok(json(StatusCode::CREATED, &json!({ "Id": id })))
}

fn record(engine: &Engine, id: &str) -> Result<ExecRecord, ApiError> {
    let mut execs = engine.execs.lock().unwrap_or_else(|e| e.into_inner());
    let record = execs
        .get_mut(id)
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
    if record.started
        && record.exit_code.is_none()
        && let Some(exit) = engine.runtime.exec_exit(&record.container, id)
    {
        record.exit_code = Some(exit.exit_code);
    }
    Ok(record.clone())
}

pub async fn start(engine: Arc<Engine>, mut call: Call) -> ApiResult {
    let id = call.object()?;
    let hijack = super::Hijack::take(&mut call.request);
    let start: ExecStartConfig = call.json().await?;
    let exec = {
        let mut execs = engine.execs.lock().unwrap_or_else(|e| e.into_inner());
        let exec = execs
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
        if exec.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {id} is already running"
            )));
        }
        exec.started = true;
        exec.clone()
    };
    let tty = exec.config.tty || start.tty;
    let request = ExecRequest {
        id: exec.id.clone(),
        args: exec.config.cmd.clone(),
        env: exec.config.env.clone(),
        user: exec.config.user.clone(),
        working_dir: exec.config.working_dir.clone(),
        tty,
        stdin: exec.config.attach_stdin && !start.detach,
        privileged: exec.config.privileged,
    };
    let runtime = engine.runtime.clone();
    let container = exec.container.clone();
    let stream = blocking(move || Ok(runtime.exec(&container, &request)?)).await;
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            engine
                .execs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(e);
        }
    };
    if let Ok(record) = engine.runtime.record(&exec.container) {
        engine
            .events
            .container_with(&record, "exec_start", &[("execID", id.clone())]);
    }
    if start.detach {
        // Nobody reads the output; drain it so the process never blocks.
        tokio::task::spawn_blocking(move || {
            let mut stream = stream;
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::OK;
        return Ok(response);
    }
    Ok(super::hijack(hijack, tty, async move { Some(stream) }))
}

pub async fn inspect(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = call.object()?;
    let engine2 = engine.clone();
    let exec = blocking(move || record(&engine2, &id)).await?;
    let args = exec.config.cmd.clone();
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": exec.id,
            "Running": exec.running(),
            "ExitCode": exec.exit_code,
            "ProcessConfig": {
                "tty": exec.config.tty,
                "entrypoint": args.first(),
                "arguments": args.iter().skip(1).collect::<Vec<_>>(),
                "privileged": exec.config.privileged,
                "user": exec.config.user,
            },
            "OpenStdin": exec.config.attach_stdin,
            "OpenStderr": exec.config.attach_stderr,
            "OpenStdout": exec.config.attach_stdout,
            "CanRemove": false,
            "ContainerID": exec.container,
            "DetachKeys": "",
            "Pid": 0,
        }),
    ))
}

pub async fn resize(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = call.object()?;
    let (h, w) = super::containers::size(&call)?;
    let exec = record(&engine, &id)?;
    let runtime = engine.runtime.clone();
    blocking(move || Ok(runtime.exec_resize(&exec.container, &exec.id, h, w)?)).await?;
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
