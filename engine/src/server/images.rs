//! `/images/...`: the image store over HTTP (import, load, save, list,
//! inspect, history, tag, remove, prune). Pull and push are in
//! `registry.rs`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Call, Engine, blocking, json};
use crate::images::{ImageId, ImportConfig, Removed};
use crate::runtime::StateName;

pub async fn list(engine: Arc<Engine>, call: Call) -> ApiResult {
    let filters = call.query.filters()?;
    for key in filters.keys() {
        if !matches!(key.as_str(), "reference" | "dangling" | "label") {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
    }
    let images = engine.images.clone();
    let rows = blocking(move || {
        let mut rows = Vec::new();
        for image in images.list()? {
            let keep = filters.iter().all(|(key, values)| {
                values.is_empty()
                    || values.iter().any(|v| match key.as_str() {
                        "dangling" => (v == "true") == image.repo_tags.is_empty(),
                        "label" => match v.split_once('=') {
                            Some((k, val)) => image.labels.get(k).is_some_and(|l| l == val),
                            None => image.labels.contains_key(v.as_str()),
                        },
                        "reference" => image.repo_tags.iter().any(|t| reference_matches(v, t)),
                        _ => false,
                    })
            });
            if keep {
                rows.push(json!({
                    "Id": image.id.to_string(),
                    "ParentId": "",
                    "RepoTags": image.repo_tags,
                    "RepoDigests": image.repo_digests,
                    "Created": image.created.map_or(0, |t| t.unix_timestamp()),
                    "Size": image.size,
                    "VirtualSize": image.size,
                    "SharedSize": -1,
                    "Labels": image.labels,
                    "Containers": -1,
                }));
            }
        }
        Ok(rows)
    })
    .await?;
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

/// `reference` filters match a familiar name or `name:tag`, with `*` globs
/// in each part, as `docker images busybox` and `docker images 'bus*:*'` do.
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let (name, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    match pattern.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((p_name, p_tag)) => glob(p_name, name) && glob(p_tag, tag_part),
        None => glob(pattern, name),
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|i| glob(rest, &text[head.len() + i..]))
        }
    }
}

pub async fn inspect(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reference = call.object()?;
    let images = engine.images.clone();
    let image = blocking(move || Ok(images.inspect(&reference)?)).await?;
    let created = image
        .created
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let config = &image.config;
    Ok(json(
        StatusCode::OK,
        &json!({
            "Id": image.id.to_string(),
            "RepoTags": image.repo_tags,
            "RepoDigests": image.repo_digests,
            "Parent": "",
            "Comment": "",
            "Created": created,
            "DockerVersion": "",
            "Author": "",
            "Config": {
                "Env": config.env,
                "Cmd": config.cmd,
                "Entrypoint": config.entrypoint,
                "WorkingDir": config.working_dir.clone().unwrap_or_default(),
                "User": config.user.clone().unwrap_or_default(),
                "Labels": config.labels,
                "ExposedPorts": config.exposed_ports.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
                "Volumes": config.volumes.iter().map(|p| (p.clone(), json!({}))).collect::<serde_json::Map<_, _>>(),
                "StopSignal": config.stop_signal.clone().unwrap_or_default(),
            },
            "Architecture": image.architecture,
            "Os": image.os,
            "Size": image.size,
            "VirtualSize": image.size,
            "GraphDriver": { "Name": "overlay", "Data": {} },
            "RootFS": { "Type": "layers", "Layers": image.layers },
            "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
        }),
    ))
}

pub async fn history(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reference = call.object()?;
    let images = engine.images.clone();
    let rows = blocking(move || {
        Ok(images
            .history(&reference)?
            .into_iter()
            .map(|h| {
                json!({
                    "Id": h.id.map_or_else(|| "<missing>".to_owned(), |id| id.to_string()),
                    "Created": h.created.map_or(0, |t| t.unix_timestamp()),
                    "CreatedBy": h.created_by,
                    "Tags": if h.tags.is_empty() { Value::Null } else { json!(h.tags) },
                    "Size": h.size,
                    "Comment": h.comment,
                })
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

pub async fn tag(engine: Arc<Engine>, call: Call) -> ApiResult {
    let source = call.object()?;
    let repo = call
        .query
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("tag needs repo"))?
        .to_owned();
    let target = match call.query.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo,
    };
    let images = engine.images.clone();
    let target2 = target.clone();
    let id = blocking(move || {
        images.tag(&source, &target2)?;
        Ok(images.resolve(&target2)?)
    })
    .await?;
    engine.events.image(&id.to_string(), "tag", &target);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// The image ids containers use, and which of them are running.
fn images_in_use(engine: &Engine) -> (HashSet<String>, HashSet<String>) {
    let (mut used, mut running) = (HashSet::new(), HashSet::new());
    for record in engine.runtime.list().unwrap_or_default() {
        if engine
            .runtime
            .state(&record.id)
            .is_ok_and(|s| matches!(s.status, StateName::Running | StateName::Paused))
        {
            running.insert(record.image_id.clone());
        }
        used.insert(record.image_id);
    }
    (used, running)
}

pub async fn remove(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reference = call.object()?;
    let force = call.query.bool("force");
    let engine2 = engine.clone();
    let removed = blocking(move || {
        let (used, running) = images_in_use(&engine2);
        let id = engine2.images.resolve(&reference)?;
        if running.contains(&id.to_string()) && force {
            return Err(ApiError::conflict(format!(
                "conflict: unable to delete {reference} (cannot be forced) - image is being used by running container"
            )));
        }
        let in_use = |id: &ImageId| used.contains(&id.to_string());
        Ok(engine2.images.remove(&reference, force, &in_use)?)
    })
    .await?;
    let rows: Vec<Value> = removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(name) => {
                engine.events.image(name, "untag", name);
                json!({ "Untagged": name })
            }
            Removed::Deleted(id) => {
                engine
                    .events
                    .image(&id.to_string(), "delete", &id.to_string());
                json!({ "Deleted": id.to_string() })
            }
        })
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

pub async fn prune(engine: Arc<Engine>, call: Call) -> ApiResult {
    let filters = call.query.filters()?;
    let dangling_only = filters
        .get("dangling")
        .is_none_or(|v| v.iter().all(|d| d != "false" && d != "0"));
    let engine2 = engine.clone();
    let (deleted, reclaimed) = blocking(move || {
        let (used, _) = images_in_use(&engine2);
        let in_use = |id: &ImageId| used.contains(&id.to_string());
        Ok(engine2.images.prune(dangling_only, &in_use)?)
    })
    .await?;
    let deleted: Vec<Value> = deleted
        .iter()
        .map(|id| json!({ "Deleted": id.to_string() }))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": deleted, "SpaceReclaimed": reclaimed }),
    ))
}

/// `POST /images/create`: `fromSrc=-` imports the body (`docker import`);
/// `fromImage` pulls (`docker pull`, in `server/registry.rs`).
pub async fn create(engine: Arc<Engine>, call: Call) -> ApiResult {
    if call.query.contains("fromImage") {
        return super::registry::pull(engine, call).await;
    }
    match call.query.get("fromSrc") {
        Some("-") => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "importing from a URL is not supported; send the archive in the body (fromSrc=-)",
            ));
        }
        None => return Err(ApiError::bad_request("give fromImage or fromSrc")),
    }
    let reference = match (
        call.query.get("repo").filter(|r| !r.is_empty()),
        call.query.get("tag"),
    ) {
        (Some(repo), Some(tag)) if !tag.is_empty() => Some(format!("{repo}:{tag}")),
        (Some(repo), _) => Some(repo.to_owned()),
        _ => None,
    };
    let mut config = ImportConfig::default();
    for change in call.query.get_all("changes") {
        config.apply_change(change)?;
    }
    if let Some(message) = call.query.get("message").filter(|m| !m.is_empty()) {
        config.message = Some(message.to_owned());
    }
    let reader = BodyReader::new(call.request.into_body());
    let images = engine.images.clone();
    let reference2 = reference.clone();
    let id = blocking(move || Ok(images.import(reader, reference2.as_deref(), config)?)).await?;
    engine.events.image(
        &id.to_string(),
        "import",
        reference.as_deref().unwrap_or(""),
    );
    Ok(json(StatusCode::OK, &json!({ "status": id.to_string() })))
}

pub async fn load(engine: Arc<Engine>, call: Call) -> ApiResult {
    let reader = BodyReader::new(call.request.into_body());
    let images = engine.images.clone();
    let loaded = blocking(move || Ok(images.load(reader)?)).await?;
    let mut body = String::new();
    for image in &loaded {
        let names = if image.tags.is_empty() {
            vec![format!("ID: {}", image.id)]
        } else {
            image.tags.clone()
        };
        for name in names {
            engine.events.image(&image.id.to_string(), "load", &name);
            let line = if name.starts_with("ID: ") {
                format!("Loaded image {name}\n")
            } else {
                format!("Loaded image: {name}\n")
            };
            body.push_str(&json!({ "stream": line }).to_string());
            body.push('\n');
        }
    }
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

pub async fn save(engine: Arc<Engine>, call: Call) -> ApiResult {
    let names: Vec<String> = match &call.route.object {
        Some(object) => vec![object.name().to_owned()],
        None => call.query.get_all("names").map(str::to_owned).collect(),
    };
    if names.is_empty() {
        return Err(ApiError::bad_request("no images given to save"));
    }
    // Fail before the first byte when a name is unknown.
    for name in &names {
        let images = engine.images.clone();
        let name = name.clone();
        blocking(move || Ok(images.resolve(&name)?)).await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let images = engine.images.clone();
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut writer = ChannelWriter { tx };
        if let Err(e) = images.save(&refs, &mut writer) {
            tracing::warn!(error = %e, "image save failed mid-stream");
        }
    });
    let mut response = Response::new(super::stream_body(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// A request body read as `std::io::Read` on a blocking thread.
pub struct BodyReader {
    rx: std::sync::mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl BodyReader {
    pub fn new(body: Body) -> BodyReader {
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        tokio::spawn(async move {
            let mut body = body;
            while let Some(frame) = body.frame().await {
                let item = match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => Ok(data),
                        Err(_) => continue,
                    },
                    Err(e) => Err(e.to_string()),
                };
                let failed = item.is_err();
                let tx = tx.clone();
                if tokio::task::spawn_blocking(move || tx.send(item))
                    .await
                    .map_or(true, |r| r.is_err())
                    || failed
                {
                    return;
                }
            }
        });
        BodyReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(bytes)) => self.current = bytes,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Bytes written on a blocking thread become a streamed response body.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_glob_like_docker() {
        assert!(reference_matches("busybox", "busybox:test"));
        assert!(reference_matches("busy*", "busybox:test"));
        assert!(reference_matches("busybox:te*", "busybox:test"));
        assert!(!reference_matches("busybox:latest", "busybox:test"));
        assert!(reference_matches(
            "localhost:5000/app",
            "localhost:5000/app:1"
        ));
    }
}
