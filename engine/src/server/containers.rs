//! `/containers/...`: Docker's container endpoints over the runtime.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use moat_api::container::ContainerConfig;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    ApiError, ApiResult, Call, Engine, Lifecycle, PendingAttach, blocking, json, no_content,
};
use crate::logs::{LogFollower, LogQuery, encode_for_client, read_logs};
use crate::runtime::{ContainerRecord, ContainerState, CreateRequest, StateName, parse_signal};
use crate::shim::protocol::{AttachHeader, ExitStatus};

pub async fn create(engine: Arc<Engine>, call: Call) -> ApiResult {
    let name = call
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let mut config: ContainerConfig = call.json().await?;
    if config.image.is_empty() {
        return Err(ApiError::bad_request("no image given (Config.Image)"));
    }
    let engine2 = engine.clone();
    let record = blocking(move || {
        let image = engine2.images.inspect(&config.image)?;
        apply_image_defaults(&mut config, &image.config);
        let userns =
            crate::spec::userns_enabled(&config).map_err(crate::error::EngineError::from)?;
        let map = if userns {
            engine2.runtime.config().id_map
        } else {
            crate::userns::IdMap::HOST
        };
        let layers = engine2.images.layers_for(&image.id, &map)?;
        let image_ref = config.image.clone();
        Ok(engine2.runtime.create(CreateRequest {
            name,
            config,
            image: image_ref,
            image_id: image.id.to_string(),
            layers,
        })?)
    })
    .await?;
    engine.lifecycle(&record.id);
    engine.events.container(&record, "create");
    Ok(json(
        StatusCode::CREATED,
        &json!({ "Id": record.id, "Warnings": [] }),
    ))
}

/// Docker's merge of the image's configuration under the container's.
fn apply_image_defaults(config: &mut ContainerConfig, image: &crate::images::ImageConfig) {
    let mut env = image.env.clone();
    for var in &config.env {
        let name = var.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(name));
        env.push(var.clone());
    }
    config.env = env;
    if config.entrypoint.is_empty() {
        config.entrypoint = image.entrypoint.clone().unwrap_or_default();
        if config.cmd.is_empty() {
            config.cmd = image.cmd.clone().unwrap_or_default();
        }
    }
    if config.working_dir.is_empty() {
        config.working_dir = image.working_dir.clone().unwrap_or_default();
    }
    if config.user.is_empty() {
        config.user = image.user.clone().unwrap_or_default();
    }
    if config.stop_signal.is_empty() {
        config.stop_signal = image.stop_signal.clone().unwrap_or_default();
    }
    for (k, v) in &image.labels {
        config.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

async fn resolve(engine: &Arc<Engine>, reference: String) -> Result<String, ApiError> {
    let runtime = engine.runtime.clone();
    blocking(move || Ok(runtime.resolve(&reference)?)).await
}

pub async fn start(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let state = {
        let runtime = engine.runtime.clone();
        let id = id.clone();
        blocking(move || Ok(runtime.state(&id)?)).await?
    };
    if matches!(state.status, StateName::Running | StateName::Paused) {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    start_container(&engine, &id).await?;
    Ok(no_content())
}

/// Starts a container, hands the streams to attaches that were waiting,
/// and watches for its exit.
async fn start_container(engine: &Arc<Engine>, id: &str) -> Result<(), ApiError> {
    let pending: Vec<PendingAttach> = engine
        .pending_attach
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
        .unwrap_or_default();
    let headers: Vec<AttachHeader> = pending.iter().map(|p| p.header.clone()).collect();
    let runtime = engine.runtime.clone();
    let id_owned = id.to_owned();
    let result = blocking(move || Ok(runtime.start(&id_owned, &headers)?)).await;
    let lifecycle = engine.lifecycle(id);
    match result {
        Ok(streams) => {
            for (attach, stream) in pending.into_iter().zip(streams) {
                let _ = attach.stream.send(Ok(stream));
            }
            let run = next_run(&lifecycle);
            lifecycle.send_replace(Lifecycle::Started { run });
            if let Ok(record) = engine.runtime.record(id) {
                engine.events.container(&record, "start");
            }
            watch_exit(engine.clone(), id.to_owned(), run);
            Ok(())
        }
        Err(e) => {
            for attach in pending {
                let _ = attach
                    .stream
                    .send(Err(crate::error::EngineError::Conflict(e.message.clone())));
            }
            // A failed start is an exit too: `docker run` is waiting for it
            // (and, with --rm, for the removal).
            if let Ok(status) = engine.runtime.exit_status(id) {
                let run = next_run(&lifecycle);
                lifecycle.send_replace(Lifecycle::Exited {
                    run,
                    status: status.clone(),
                });
                if let Ok(record) = engine.runtime.record(id) {
                    engine.events.container_with(
                        &record,
                        "die",
                        &[("exitCode", status.exit_code.to_string())],
                    );
                    if record.config.host_config.auto_remove {
                        let runtime = engine.runtime.clone();
                        let id_owned = id.to_owned();
                        let _ = blocking(move || Ok(runtime.remove(&id_owned, true)?)).await;
                        engine.events.container(&record, "destroy");
                        lifecycle.send_replace(Lifecycle::Removed {
                            status: Some(status),
                        });
                    }
                }
            }
            Err(e)
        }
    }
}

fn next_run(lifecycle: &tokio::sync::watch::Sender<Lifecycle>) -> u64 {
    match &*lifecycle.borrow() {
        Lifecycle::Started { run } | Lifecycle::Exited { run, .. } => run + 1,
        _ => 1,
    }
}

/// Waits (on a blocking thread) for the container's exit, then records
/// it, tells waiters, and removes the container when it asked for that.
fn watch_exit(engine: Arc<Engine>, id: String, run: u64) {
    tokio::task::spawn_blocking(move || {
        let Ok(status) = engine.runtime.wait(&id) else {
            return;
        };
        let lifecycle = engine.lifecycle(&id);
        lifecycle.send_replace(Lifecycle::Exited {
            run,
            status: status.clone(),
        });
        let Ok(record) = engine.runtime.record(&id) else {
            lifecycle.send_replace(Lifecycle::Removed {
                status: Some(status),
            });
            return;
        };
        engine.events.container_with(
            &record,
            "die",
            &[("exitCode", status.exit_code.to_string())],
        );
        if record.config.host_config.auto_remove {
            let _ = engine.runtime.remove(&id, true);
            engine.events.container(&record, "destroy");
            lifecycle.send_replace(Lifecycle::Removed {
                status: Some(status),
            });
        }
    });
}

/// At start-up: watch the containers that kept running while no engine was.
pub async fn watch_running(engine: Arc<Engine>) {
    let runtime = engine.runtime.clone();
    let running = blocking(move || {
        Ok(runtime
            .list()?
            .into_iter()
            .filter(|r| {
                runtime
                    .state(&r.id)
                    .is_ok_and(|s| matches!(s.status, StateName::Running | StateName::Paused))
            })
            .map(|r| r.id)
            .collect::<Vec<_>>())
    })
    .await
    .unwrap_or_default();
    for id in running {
        let lifecycle = engine.lifecycle(&id);
        lifecycle.send_replace(Lifecycle::Started { run: 1 });
        watch_exit(engine.clone(), id, 1);
    }
}

pub async fn wait(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let condition = call
        .query
        .get("condition")
        .unwrap_or("not-running")
        .to_owned();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?}"
        )));
    }
    let mut rx = engine.lifecycle(&id).subscribe();
    let state = {
        let runtime = engine.runtime.clone();
        let id = id.clone();
        blocking(move || Ok(runtime.state(&id)?)).await?
    };
    let running = matches!(state.status, StateName::Running | StateName::Paused);
    let runtime = engine.runtime.clone();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let status: Option<ExitStatus> = if condition == "not-running" && !running {
            runtime.exit_status(&id).ok()
        } else {
            let start_run = match &*rx.borrow() {
                Lifecycle::Exited { run, .. } if condition == "next-exit" || running => *run,
                _ => 0,
            };
            loop {
                let current = rx.borrow_and_update().clone();
                match (&current, condition.as_str()) {
                    (Lifecycle::Removed { status }, _) => break status.clone(),
                    (Lifecycle::Exited { run, status }, "not-running" | "next-exit")
                        if *run > start_run =>
                    {
                        break Some(status.clone());
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    break None;
                }
            }
        };
        let body = match status {
            Some(s) if !s.error.is_empty() => {
                json!({ "StatusCode": s.exit_code, "Error": { "Message": s.error } })
            }
            Some(s) => json!({ "StatusCode": s.exit_code, "Error": null }),
            None => json!({ "StatusCode": -1, "Error": { "Message": "the container is gone" } }),
        };
        let _ = tx.send(Bytes::from(format!("{body}\n"))).await;
    });
    let mut response = Response::new(super::stream_body(body_rx));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

pub async fn stop(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let timeout = call.query.int("t")?.or(call.query.int("timeout")?);
    let runtime = engine.runtime.clone();
    let id2 = id.clone();
    let stopped = blocking(move || {
        let record = runtime.record(&id2)?;
        let state = runtime.state(&id2)?;
        if !matches!(state.status, StateName::Running | StateName::Paused) {
            return Ok(false);
        }
        let secs = timeout.or(record.config.stop_timeout).unwrap_or(10).max(0) as u64;
        runtime.stop(&id2, Duration::from_secs(secs))?;
        Ok(true)
    })
    .await?;
    if !stopped {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    if let Ok(record) = engine.runtime.record(&id) {
        engine.events.container(&record, "stop");
    }
    Ok(no_content())
}

pub async fn restart(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let timeout = call.query.int("t")?.unwrap_or(10).max(0) as u64;
    let runtime = engine.runtime.clone();
    let id2 = id.clone();
    blocking(move || {
        if matches!(
            runtime.state(&id2)?.status,
            StateName::Running | StateName::Paused
        ) {
            runtime.stop(&id2, Duration::from_secs(timeout))?;
        }
        Ok(())
    })
    .await?;
    start_container(&engine, &id).await?;
    if let Ok(record) = engine.runtime.record(&id) {
        engine.events.container(&record, "restart");
    }
    Ok(no_content())
}

pub async fn kill(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let signal = match call.query.get("signal").filter(|s| !s.is_empty()) {
        None => libc::SIGKILL,
        Some(name) => parse_signal(name)
            .ok_or_else(|| ApiError::bad_request(format!("invalid signal: {name}")))?,
    };
    let runtime = engine.runtime.clone();
    let id2 = id.clone();
    blocking(move || {
        if !matches!(
            runtime.state(&id2)?.status,
            StateName::Running | StateName::Paused
        ) {
            return Err(ApiError::conflict(format!(
                "Container {id2} is not running"
            )));
        }
        Ok(runtime.kill(&id2, signal)?)
    })
    .await?;
    if let Ok(record) = engine.runtime.record(&id) {
        engine
            .events
            .container_with(&record, "kill", &[("signal", signal.to_string())]);
    }
    Ok(no_content())
}

pub async fn remove(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let force = call.query.bool("force");
    let remove_volumes = call.query.bool("v");
    let runtime = engine.runtime.clone();
    let id2 = id.clone();
    let record = blocking(move || {
        let record = runtime.record(&id2)?;
        let state = runtime.state(&id2)?;
        if matches!(state.status, StateName::Running | StateName::Paused) && !force {
            return Err(ApiError::conflict(format!(
                "You cannot remove a running container {id2}. Stop the container before attempting removal or force remove"
            )));
        }
        runtime.remove(&id2, force)?;
        let _ = remove_volumes; // Named volumes outlive containers, as with `docker rm -v`.
        Ok(record)
    })
    .await?;
    engine.events.container(&record, "destroy");
    let lifecycle = engine.lifecycle(&id);
    let status = match &*lifecycle.borrow() {
        Lifecycle::Exited { status, .. } => Some(status.clone()),
        _ => None,
    };
    lifecycle.send_replace(Lifecycle::Removed { status });
    engine
        .exits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&id);
    Ok(no_content())
}

pub async fn inspect(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let runtime = engine.runtime.clone();
    let engine2 = engine.clone();
    let value = blocking(move || {
        let record = runtime.record(&id)?;
        let state = runtime.state(&id)?;
        Ok(inspect_json(&engine2, &record, &state))
    })
    .await?;
    Ok(json(StatusCode::OK, &value))
}

fn rfc3339(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn inspect_json(engine: &Engine, record: &ContainerRecord, state: &ContainerState) -> Value {
    let config = &record.config;
    let args = config.args();
    let image_id = &record.image_id;
    let dir = engine
        .runtime
        .config()
        .state_root
        .join("containers")
        .join(&record.id);
    let execs: Vec<String> = engine
        .execs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|e| e.container == record.id && e.running())
        .map(|e| e.id.clone())
        .collect();
    let mut host_config = serde_json::to_value(&config.host_config).unwrap_or_default();
    if let Some(object) = host_config.as_object_mut() {
        object.insert(
            "LogConfig".into(),
            json!({ "Type": "json-file", "Config": {} }),
        );
        object.insert(
            "RestartPolicy".into(),
            json!({ "Name": "no", "MaximumRetryCount": 0 }),
        );
        if config.host_config.network_mode.is_empty() {
            object.insert("NetworkMode".into(), json!("default"));
        }
    }
    let mut docker_config = serde_json::to_value(config).unwrap_or_default();
    if let Some(object) = docker_config.as_object_mut() {
        object.remove("HostConfig");
        object.insert("Image".into(), json!(record.image));
        object.insert("Hostname".into(), json!(hostname(record)));
    }
    json!({
        "Id": record.id,
        "Created": rfc3339(Some(record.created)),
        "Path": args.first().cloned().unwrap_or_default(),
        "Args": args.iter().skip(1).collect::<Vec<_>>(),
        "State": state_json(state),
        "Image": image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": dir.join("container.log"),
        "Name": format!("/{}", record.name),
        "RestartCount": record.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": if execs.is_empty() { Value::Null } else { json!(execs) },
        "HostConfig": host_config,
        "GraphDriver": { "Name": "overlay", "Data": { "UpperDir": dir.join("upper"), "WorkDir": dir.join("work") } },
        "Mounts": [],
        "Config": docker_config,
        "NetworkSettings": { "Networks": {}, "Ports": {}, "SandboxKey": "", "IPAddress": "" },
    })
}

fn hostname(record: &ContainerRecord) -> String {
    if record.config.hostname.is_empty() {
        record.id.chars().take(12).collect()
    } else {
        record.config.hostname.clone()
    }
}

fn state_json(state: &ContainerState) -> Value {
    json!({
        "Status": state.status.as_str(),
        "Running": matches!(state.status, StateName::Running | StateName::Paused),
        "Paused": state.status == StateName::Paused,
        "Restarting": false,
        "OOMKilled": state.oom_killed,
        "Dead": false,
        "Pid": state.pid,
        "ExitCode": state.exit_code,
        "Error": state.error,
        "StartedAt": rfc3339(state.started_at),
        "FinishedAt": rfc3339(state.finished_at),
    })
}

pub async fn list(engine: Arc<Engine>, call: Call) -> ApiResult {
    let all = call.query.bool("all");
    let limit = call.query.int("limit")?.filter(|l| *l > 0);
    let filters = call.query.filters()?;
    for key in filters.keys() {
        if !matches!(
            key.as_str(),
            "label" | "name" | "status" | "id" | "ancestor"
        ) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
    }
    let engine2 = engine.clone();
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for record in engine2.runtime.list()? {
            let Ok(state) = engine2.runtime.state(&record.id) else {
                continue;
            };
            let running = matches!(state.status, StateName::Running | StateName::Paused);
            if !all && !running && !filters.contains_key("status") {
                continue;
            }
            if !matches_filters(&engine2, &record, &state, &filters) {
                continue;
            }
            rows.push(summary_json(&engine2, &record, &state));
            if limit.is_some_and(|l| rows.len() as i64 >= l) {
                break;
            }
        }
        Ok(rows)
    })
    .await?;
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

fn matches_filters(
    engine: &Engine,
    record: &ContainerRecord,
    state: &ContainerState,
    filters: &std::collections::BTreeMap<String, Vec<String>>,
) -> bool {
    filters.iter().all(|(key, values)| {
        // Every label filter must match (Docker's MatchKVList): the
        // gateway narrows a caller's list by adding one.
        if key == "label" {
            return values.iter().all(|value| match value.split_once('=') {
                Some((k, v)) => record.config.labels.get(k).is_some_and(|l| l == v),
                None => record.config.labels.contains_key(value.as_str()),
            });
        }
        values.is_empty()
            || values.iter().any(|value| match key.as_str() {
                "name" => record.name.contains(value.trim_start_matches('/')),
                "id" => record.id.starts_with(value.as_str()),
                "status" => state.status.as_str() == value,
                "ancestor" => {
                    record.image == *value
                        || engine
                            .images
                            .resolve(value)
                            .is_ok_and(|id| id.to_string() == record.image_id)
                }
                _ => false,
            })
    })
}

fn summary_json(engine: &Engine, record: &ContainerRecord, state: &ContainerState) -> Value {
    let _ = engine;
    json!({
        "Id": record.id,
        "Names": [format!("/{}", record.name)],
        "Image": record.image,
        "ImageID": record.image_id,
        "Command": record.config.args().join(" "),
        "Created": record.created.unix_timestamp(),
        "Ports": [],
        "Labels": record.config.labels,
        "State": state.status.as_str(),
        "Status": human_status(state),
        "HostConfig": { "NetworkMode": if record.config.host_config.network_mode.is_empty() { "default" } else { record.config.host_config.network_mode.as_str() } },
        "NetworkSettings": { "Networks": {} },
        "Mounts": [],
    })
}

/// `Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`, as `docker ps` shows.
fn human_status(state: &ContainerState) -> String {
    let now = OffsetDateTime::now_utc();
    let ago = |t: Option<OffsetDateTime>| {
        human_duration(t.map_or(Duration::ZERO, |t| (now - t).unsigned_abs()))
    };
    match state.status {
        StateName::Running => format!("Up {}", ago(state.started_at)),
        StateName::Paused => format!("Up {} (Paused)", ago(state.started_at)),
        StateName::Exited => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            ago(state.finished_at)
        ),
        StateName::Created => "Created".into(),
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

pub async fn logs(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let q = &call.query;
    let (stdout, stderr) = (q.bool("stdout"), q.bool("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let query = LogQuery {
        stdout,
        stderr,
        since: parse_time(q.get("since"))?,
        until: parse_time(q.get("until"))?,
        tail: match q.get("tail") {
            None | Some("") | Some("all") => None,
            Some(n) => Some(
                n.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid tail: {n}")))?,
            ),
        },
        timestamps: q.bool("timestamps"),
    };
    let follow = q.bool("follow");
    let record = engine.runtime.record(&id)?;
    let tty = record.config.tty;
    let path = engine.runtime.log_path(&id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let runtime = engine.runtime.clone();
    tokio::task::spawn_blocking(move || {
        let send = |entries: Vec<crate::logs::LogEntry>| -> bool {
            entries.iter().all(|e| {
                tx.blocking_send(Bytes::from(encode_for_client(e, query.timestamps, tty)))
                    .is_ok()
            })
        };
        if !follow {
            if let Ok(entries) = read_logs(&path, &query) {
                send(entries);
            }
            return;
        }
        let runtime2 = runtime.clone();
        let id2 = id.clone();
        let done = move || {
            !runtime2
                .state(&id2)
                .is_ok_and(|s| matches!(s.status, StateName::Running | StateName::Paused))
        };
        let Ok(mut follower) = LogFollower::open(&path, &query, done) else {
            return;
        };
        loop {
            match follower.next_batch(Duration::from_millis(500)) {
                Ok(Some(batch)) if batch.is_empty() => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Ok(Some(batch)) => {
                    if !send(batch) {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            }
        }
    });
    let mut response = Response::new(super::stream_body(rx));
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction
/// (`1699999999.123456789`), or RFC 3339.
fn parse_time(value: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    let Some(v) = value.filter(|v| !v.is_empty() && *v != "0") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("invalid time: {v}"));
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(Some(t));
    }
    let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: i64 = format!("{frac:0<9}")[..9].parse().map_err(|_| bad())?;
    OffsetDateTime::from_unix_timestamp_nanos(secs as i128 * 1_000_000_000 + nanos as i128)
        .map(Some)
        .map_err(|_| bad())
}

pub async fn attach(engine: Arc<Engine>, mut call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let q = &call.query;
    if !q.bool("stream") && !q.bool("logs") {
        return Err(ApiError::bad_request("attach needs stream=1 (or logs=1)"));
    }
    let header = AttachHeader {
        stdin: q.bool("stdin"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
    };
    let record = engine.runtime.record(&id)?;
    let state = engine.runtime.state(&id)?;
    if state.status == StateName::Paused {
        return Err(ApiError::conflict(format!(
            "container {id} is paused, unpause the container before attach"
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.status == StateName::Running {
        let runtime = engine.runtime.clone();
        let stream = blocking(move || Ok(runtime.attach(&id, &header)?)).await?;
        let _ = tx.send(Ok(stream));
    } else {
        engine
            .pending_attach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_default()
            .push(PendingAttach { header, stream: tx });
    }
    let hijack = super::Hijack::take(&mut call.request);
    Ok(super::hijack(hijack, record.config.tty, async move {
        rx.await.ok().and_then(Result::ok)
    }))
}

pub async fn resize(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let (h, w) = size(&call)?;
    let runtime = engine.runtime.clone();
    blocking(move || Ok(runtime.resize(&id, h, w)?)).await?;
    Ok(empty(StatusCode::OK))
}

pub fn size(call: &Call) -> Result<(u16, u16), ApiError> {
    let dim = |key: &str| -> Result<u16, ApiError> {
        call.query
            .int(key)?
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| ApiError::bad_request(format!("invalid or missing {key}")))
    };
    Ok((dim("h")?, dim("w")?))
}

pub async fn top(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let ps_args = call.query.get("ps_args").unwrap_or("-ef").to_owned();
    let runtime = engine.runtime.clone();
    let value = blocking(move || {
        if runtime.state(&id)?.status != StateName::Running {
            return Err(ApiError::conflict(format!("Container {id} is not running")));
        }
        let pids = runtime.pids(&id)?;
        let args: Vec<&str> = ps_args.split_whitespace().collect();
        let output = std::process::Command::new("ps")
            .args(&args)
            .output()
            .map_err(|e| ApiError::internal(format!("ps: {e}")))?;
        if !output.status.success() {
            return Err(ApiError::internal(format!(
                "ps {ps_args}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        ps_table(&String::from_utf8_lossy(&output.stdout), &pids)
    })
    .await?;
    Ok(json(StatusCode::OK, &value))
}

/// `ps` output cut to the container's processes, as dockerd does.
fn ps_table(output: &str, pids: &[i32]) -> Result<Value, ApiError> {
    let mut lines = output.lines();
    let header = lines.next().unwrap_or_default();
    let titles: Vec<&str> = header.split_whitespace().collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| ApiError::internal("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if pids.contains(&pid) {
            let mut row: Vec<String> = fields[..titles.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect();
            row.push(fields[titles.len() - 1..].join(" "));
            processes.push(row);
        }
    }
    Ok(json!({ "Titles": titles, "Processes": processes }))
}

pub async fn stats(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let stream = call
        .query
        .get("stream")
        .is_none_or(|v| v != "0" && v != "false");
    let runtime = engine.runtime.clone();
    let record = engine.runtime.record(&id)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        loop {
            let runtime2 = runtime.clone();
            let id2 = id.clone();
            let sample = tokio::task::spawn_blocking(move || runtime2.stats(&id2)).await;
            let Ok(Ok(sample)) = sample else {
                return;
            };
            let value = json!({
                "read": rfc3339(Some(OffsetDateTime::now_utc())),
                "name": format!("/{}", record.name),
                "id": record.id,
                "pids_stats": { "current": sample.pids },
                "memory_stats": { "usage": sample.memory_usage, "limit": sample.memory_limit, "stats": {} },
                "cpu_stats": {
                    "cpu_usage": { "total_usage": sample.cpu_total_ns },
                    "system_cpu_usage": sample.system_cpu_ns,
                    "online_cpus": sample.online_cpus,
                },
                "precpu_stats": { "cpu_usage": { "total_usage": 0 } },
                "networks": {},
            });
            if tx.send(Bytes::from(format!("{value}\n"))).await.is_err() || !stream {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(Response::new(super::stream_body(rx)))
}

pub async fn rename(engine: Arc<Engine>, call: Call) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let name = call
        .query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("rename needs a name"))?
        .to_owned();
    let runtime = engine.runtime.clone();
    blocking(move || Ok(runtime.rename(&id, &name)?)).await?;
    Ok(no_content())
}

pub async fn pause(engine: Arc<Engine>, call: Call, pause: bool) -> ApiResult {
    let id = resolve(&engine, call.object()?).await?;
    let runtime = engine.runtime.clone();
    let id2 = id.clone();
    blocking(move || {
        let status = runtime.state(&id2)?.status;
        match (pause, status) {
            (true, StateName::Running) => Ok(runtime.pause(&id2)?),
            (false, StateName::Paused) => Ok(runtime.unpause(&id2)?),
            (true, StateName::Paused) => Err(ApiError::conflict(format!(
                "Container {id2} is already paused"
            ))),
            (false, _) => Err(ApiError::conflict(format!("Container {id2} is not paused"))),
            (true, _) => Err(ApiError::conflict(format!(
                "Container {id2} is not running"
            ))),
        }
    })
    .await?;
    if let Ok(record) = engine.runtime.record(&id) {
        engine
            .events
            .container(&record, if pause { "pause" } else { "unpause" });
    }
    Ok(no_content())
}

pub async fn prune(engine: Arc<Engine>, call: Call) -> ApiResult {
    let filters = call.query.filters()?;
    let engine2 = engine.clone();
    let deleted = blocking(move || {
        let mut deleted = Vec::new();
        for record in engine2.runtime.list()? {
            let state = engine2.runtime.state(&record.id)?;
            let stopped = matches!(state.status, StateName::Exited | StateName::Created);
            let labels_match = filters.get("label").is_none_or(|labels| {
                labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => record.config.labels.get(k).is_some_and(|x| x == v),
                    None => record.config.labels.contains_key(l.as_str()),
                })
            });
            if stopped && labels_match && engine2.runtime.remove(&record.id, false).is_ok() {
                engine2.events.container(&record, "destroy");
                deleted.push(record.id);
            }
        }
        Ok(deleted)
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 }),
    ))
}

pub async fn archive_get(engine: Arc<Engine>, call: Call) -> ApiResult {
    super::archive::get(engine, call).await
}

pub async fn archive_put(engine: Arc<Engine>, call: Call) -> ApiResult {
    super::archive::put(engine, call).await
}

pub async fn export(engine: Arc<Engine>, call: Call) -> ApiResult {
    super::archive::export(engine, call).await
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_docker_sends_them() {
        let t = parse_time(Some("1700000000.5")).unwrap().unwrap();
        assert_eq!(t.unix_timestamp(), 1_700_000_000);
        assert_eq!(t.nanosecond(), 500_000_000);
        assert_eq!(parse_time(Some("0")).unwrap(), None);
        assert!(parse_time(Some("yesterday")).is_err());
    }

    #[test]
    fn ps_output_is_cut_to_the_container() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init\n100000 42 41 0 10:01 ? 00:00:00 sleep 300 now\n";
        let table = ps_table(out, &[42]).unwrap();
        assert_eq!(
            table["Processes"],
            json!([[
                "100000",
                "42",
                "41",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 300 now"
            ]])
        );
    }

    #[test]
    fn statuses_read_like_docker_ps() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }
}
