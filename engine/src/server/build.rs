//! `POST /build` (the classic builder, what `DOCKER_BUILDKIT=0 docker
//! build` sends), `POST /build/prune` (`docker builder prune`), and the
//! answer to BuildKit's `/session` and `/grpc`: moat has no BuildKit.
//!
//! The query is checked before anything is read: a parameter the engine
//! would not honour is refused rather than ignored. The context is then
//! read from the body, and everything after is Docker's JSON stream.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;

use super::images::BodyReader;
use super::{ApiError, ApiResult, Call, Engine, blocking};
use crate::build::context::{self, ContextLimits};
use crate::build::{self, BuildError, BuildOptions, Builder, Output, Puller};
use crate::images::Reference;
use crate::registry::pull::{self, PullRequest};
use crate::registry::{AuthConfig, Credentials};

/// What the engine lets builds do (`moat engine` flags).
#[derive(Debug, Clone, Default)]
pub struct BuildConfig {
    /// `networkmode=host` for `RUN` (`--allow-build-host-network`); the
    /// gateway's policy also requires `host.network` of the caller.
    pub allow_host_network: bool,
    pub context: ContextLimits,
}

const BUILDKIT: &str = "BuildKit is not supported by moat: build with the classic builder (DOCKER_BUILDKIT=0 docker build ...)";

/// `/session` and `/grpc`: what BuildKit's clients call first.
pub fn buildkit() -> ApiResult {
    Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, BUILDKIT))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported by moat's builder"))
}

/// The request's options, or why they cannot be honoured.
fn options(call: &Call, config: &BuildConfig) -> Result<BuildOptions, ApiError> {
    let q = &call.query;
    let text = |key: &str| q.get(key).unwrap_or("").trim();
    let request = |e: BuildError| ApiError::bad_request(e.to_string());
    if text("version") == "2" || text("remote") == "client-session" {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, BUILDKIT));
    }
    if !text("remote").is_empty() {
        return Err(ApiError::bad_request(
            "remote build contexts (a URL or git repository) are not supported by moat: send the context in the request (docker build PATH)",
        ));
    }
    let mut tags = Vec::new();
    for t in q.get_all("t").filter(|t| !t.is_empty()) {
        tags.push(Reference::parse_tag(t).map_err(|e| ApiError::bad_request(e.to_string()))?);
    }
    let host_network = match text("networkmode") {
        "" | "default" | "bridge" | "none" => false,
        "host" if config.allow_host_network => true,
        "host" => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "networkmode=host is not allowed by this engine (moat engine --allow-build-host-network)",
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "networkmode {other:?} is not supported for builds"
            )));
        }
    };
    let int = |key: &str| q.int(key).map(|v| v.unwrap_or(0));
    for key in ["cpusetcpus", "cpusetmems", "cgroupparent"] {
        if !text(key).is_empty() {
            return Err(unsupported(key));
        }
    }
    if int("shmsize")? != 0 {
        return Err(unsupported("shmsize"));
    }
    for key in ["ulimits", "outputs", "securityopt"] {
        if !matches!(text(key), "" | "null" | "[]" | "{}") {
            return Err(unsupported(key));
        }
    }
    if q.bool("squash") {
        return Err(unsupported("squash"));
    }
    if !matches!(text("isolation"), "" | "default") {
        return Err(unsupported("isolation"));
    }
    build::check_platform(text("platform")).map_err(request)?;
    let (period, quota) = (int("cpuperiod")?, int("cpuquota")?);
    let nano_cpus = match (period, quota) {
        (_, q) if q <= 0 => 0,
        (p, q) => q * 1_000_000_000 / if p > 0 { p } else { 100_000 },
    };
    let dockerfile = match text("dockerfile") {
        "" => "Dockerfile".to_owned(),
        name => name.to_owned(),
    };
    Ok(BuildOptions {
        tags,
        dockerfile,
        build_args: build::parse_build_args(text("buildargs")).map_err(request)?,
        labels: build::parse_labels(text("labels")).map_err(request)?,
        no_cache: q.bool("nocache"),
        pull: q.bool("pull"),
        // dockerd: an absent `rm` means true.
        remove: text("rm").is_empty() || q.bool("rm"),
        force_remove: q.bool("forcerm"),
        quiet: q.bool("q"),
        host_network,
        target: Some(text("target").to_owned()).filter(|t| !t.is_empty()),
        memory: int("memory")?,
        memory_swap: int("memswap")?,
        cpu_shares: int("cpushares")?,
        nano_cpus,
        extra_hosts: q
            .get_all("extrahosts")
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// `X-Registry-Config`: the CLI's credentials for every registry it
/// knows, as base64url JSON `{"host": AuthConfig}`.
fn registry_config(call: &Call) -> Result<HashMap<String, AuthConfig>, ApiError> {
    let Some(value) = call.request.headers().get("x-registry-config") else {
        return Ok(HashMap::new());
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Registry-Config is not text"))?
        .trim();
    if text.is_empty() {
        return Ok(HashMap::new());
    }
    let engines = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
    ];
    let json = engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .ok_or_else(|| ApiError::bad_request("X-Registry-Config is not base64"))?;
    if json.trim_ascii() == b"null" {
        return Ok(HashMap::new());
    }
    serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad_request(format!("X-Registry-Config: {e}")))
}

/// Pulls for `FROM` through the engine's registry client, with the
/// credentials the CLI sent for that registry.
struct RegistryPuller {
    engine: Arc<Engine>,
    auths: HashMap<String, AuthConfig>,
    handle: tokio::runtime::Handle,
}

impl RegistryPuller {
    fn credentials(&self, domain: &str) -> Result<Credentials, BuildError> {
        let names: Vec<String> = if domain == crate::registry::DOCKER_HUB {
            vec![
                "https://index.docker.io/v1/".into(),
                "index.docker.io".into(),
                "docker.io".into(),
            ]
        } else {
            vec![
                domain.to_owned(),
                format!("https://{domain}"),
                format!("http://{domain}"),
            ]
        };
        match names.iter().find_map(|n| self.auths.get(n)) {
            Some(auth) => auth
                .credentials()
                .map_err(|e| BuildError::Request(e.to_string())),
            None => Ok(Credentials::Anonymous),
        }
    }
}

impl Puller for RegistryPuller {
    fn pull(&self, reference: &Reference, output: &Output) -> Result<(), BuildError> {
        let request = PullRequest {
            reference: reference.clone(),
            platform: None,
            credentials: self.credentials(reference.domain())?,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let engine = self.engine.clone();
        let task = self.handle.spawn(async move {
            let progress = crate::registry::progress::Progress::new(tx);
            pull::pull(&engine.registry, engine.images.clone(), request, &progress).await
        });
        // The task's progress ends when it does: relay until then.
        while let Some(line) = rx.blocking_recv() {
            if !output.send_bytes(line) {
                task.abort();
                return Err(BuildError::Cancelled);
            }
        }
        let pulled = self
            .handle
            .block_on(task)
            .map_err(|e| BuildError::Engine(format!("pull: {e}")))?
            .map_err(|e| BuildError::Request(format!("pulling {}: {e}", reference.familiar())))?;
        self.engine
            .events
            .image(&pulled.id.to_string(), "pull", &reference.familiar());
        Ok(())
    }
}

/// `POST /build`.
pub async fn build(engine: Arc<Engine>, call: Call) -> ApiResult {
    let checked = options(&call, &engine.build).and_then(|o| Ok((o, registry_config(&call)?)));
    let (options, auths) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            // The client is still sending its context: read it first, or
            // it sees a broken pipe instead of the reason.
            drain(call.request.into_body()).await;
            return Err(e);
        }
    };
    let reader = BodyReader::new(call.request.into_body());
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let output = Output::new(tx, options.quiet);
    let work = build::work_root(&engine.runtime.config().state_root)
        .join(format!("build-{}", build::random_hex()));
    let limits = engine.build.context;
    let handle = tokio::runtime::Handle::current();
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            let context_dir = work.join("context");
            std::fs::create_dir_all(&context_dir)
                .map_err(|e| BuildError::Engine(format!("{}: {e}", context_dir.display())))?;
            let mut reader = reader;
            let context = context::unpack(&mut reader, &context_dir, &options.dockerfile, limits)
                .inspect_err(|_| {
                // Read what the client still sends, so it sees the error.
                let _ = std::io::copy(
                    &mut std::io::Read::take(&mut reader, 256 << 20),
                    &mut std::io::sink(),
                );
            })?;
            let builder = Builder {
                images: engine2.images.clone(),
                runtime: engine2.runtime.clone(),
                puller: Box::new(RegistryPuller {
                    engine: engine2.clone(),
                    auths,
                    handle,
                }),
                output: output.clone(),
                work: work.clone(),
            };
            builder.build(&context.dir, &context.dockerfile, &options)
        })();
        let _ = std::fs::remove_dir_all(&work);
        match result {
            Ok(id) => {
                for tag in &options.tags {
                    engine2
                        .events
                        .image(&id.to_string(), "tag", &tag.familiar());
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "build failed");
                let message = e.to_string();
                output.send(&json!({ "errorDetail": { "message": message }, "error": message }));
            }
        }
    });
    let mut response = Response::new(super::stream_body(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Reads and drops a refused request's body, up to a bound.
async fn drain(mut body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut left: usize = 256 << 20;
    while let Some(Ok(frame)) = body.frame().await {
        let n = frame.data_ref().map_or(0, |d| d.len());
        if n >= left {
            return;
        }
        left -= n;
    }
}

/// `POST /build/prune` (`docker builder prune`): the whole cache goes.
pub async fn prune(engine: Arc<Engine>, _call: Call) -> ApiResult {
    let images = engine.images.clone();
    let (keys, freed) = blocking(move || Ok(images.build_prune()?)).await?;
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "CachesDeleted": keys,
            "SpaceReclaimed": freed,
        }),
    ))
}
