//! The Docker Engine API on a Unix socket.
//!
//! Every request is classified by `moat_api::classify` — the same function
//! the gateway uses — and dispatched on its typed action, so the engine and
//! the gateway can never read a request differently. Handlers call the
//! runtime (blocking work goes to tokio's blocking pool) and answer in
//! Docker's JSON shapes, with Docker's errors: `{"message": "..."}` and its
//! status codes.

mod archive;
mod build;
mod containers;
mod events;
mod exec;
mod images;
mod registry;
mod system;

use std::collections::HashMap;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use moat_api::query::Query;
use moat_api::{Action, Route};
use tokio::sync::{oneshot, watch};

use crate::error::EngineError;
use crate::images::ImageStore;
use crate::registry::{Registry, RegistryConfig};
use crate::runtime::Runtime;
use crate::shim::protocol::{AttachHeader, ExitStatus};

pub use build::BuildConfig;
pub use events::Events;

/// The largest JSON body the engine reads (a create body is a few KiB).
const MAX_JSON_BODY: usize = 4 << 20;

/// Everything the handlers share.
pub struct Engine {
    pub runtime: Arc<Runtime>,
    pub images: Arc<ImageStore>,
    pub registry: Arc<Registry>,
    pub events: Events,
    /// What builds may do.
    pub build: BuildConfig,
    execs: Mutex<HashMap<String, exec::ExecRecord>>,
    /// Attach requests made before their container started (`docker run`).
    pending_attach: Mutex<HashMap<String, Vec<PendingAttach>>>,
    /// The latest exit of each container this engine saw, for `wait`.
    exits: Mutex<HashMap<String, watch::Sender<Lifecycle>>>,
}

struct PendingAttach {
    header: AttachHeader,
    stream: oneshot::Sender<Result<StdUnixStream, EngineError>>,
}

/// What `wait` waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    Created,
    Started { run: u64 },
    Exited { run: u64, status: ExitStatus },
    Removed { status: Option<ExitStatus> },
}

impl Engine {
    pub fn new(runtime: Runtime, images: ImageStore) -> Engine {
        // What builds of a previous engine left (it died mid-build).
        crate::build::recover(&runtime, &runtime.config().state_root);
        Engine {
            runtime: Arc::new(runtime),
            images: Arc::new(images),
            registry: Arc::new(Registry::new(RegistryConfig::default())),
            events: Events::new(),
            build: BuildConfig::default(),
            execs: Mutex::new(HashMap::new()),
            pending_attach: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
        }
    }

    /// Which registries are insecure (`--insecure-registry`).
    pub fn with_registry(mut self, config: RegistryConfig) -> Engine {
        self.registry = Arc::new(Registry::new(config));
        self
    }

    /// What builds may do (`--allow-build-host-network`).
    pub fn with_build(mut self, config: BuildConfig) -> Engine {
        self.build = config;
        self
    }

    fn lifecycle(&self, id: &str) -> watch::Sender<Lifecycle> {
        let mut exits = self.exits.lock().unwrap_or_else(|e| e.into_inner());
        exits
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(Lifecycle::Created).0)
            .clone()
    }
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(engine: Arc<Engine>, listener: tokio::net::UnixListener) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(engine.clone());
    tokio::spawn(containers::watch_running(engine));
    axum::serve(listener, app).await
}

/// An error in Docker's shape.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::Config(_) => StatusCode::BAD_REQUEST,
            EngineError::NoSuchContainer(_) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Runtime { .. } => StatusCode::BAD_REQUEST,
            EngineError::Io { .. } | EngineError::UserNamespace(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::images::ImageError> for ApiError {
    fn from(e: crate::images::ImageError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.to_string())
    }
}

impl From<moat_api::query::QueryError> for ApiError {
    fn from(e: moat_api::query::QueryError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Runs blocking engine work off the async threads.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}

/// What a handler gets: the classified route, its query, and the request.
pub struct Call {
    pub route: Route,
    pub query: Query,
    pub request: Request,
}

impl Call {
    /// The path object's name (container id or name, image reference, ...).
    pub fn object(&self) -> Result<String, ApiError> {
        self.route
            .object
            .as_ref()
            .map(|o| o.name().to_owned())
            .ok_or_else(|| ApiError::bad_request("the path names no object"))
    }

    /// The JSON body, parsed with the same types the gateway used.
    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiError> {
        let bytes = self.body_bytes(MAX_JSON_BODY).await?;
        if bytes.is_empty() {
            return serde_json::from_slice(b"{}").map_err(|e| ApiError::bad_request(e.to_string()));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }

    pub async fn body_bytes(self, limit: usize) -> Result<Bytes, ApiError> {
        let body = http_body_util::Limited::new(self.request.into_body(), limit);
        body.collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body: {e}")))
    }
}

async fn handle(State(engine): State<Arc<Engine>>, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let route = match moat_api::classify(request.method().as_str(), &target) {
        Ok(route) => route,
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            return ApiError::new(status, e.to_string()).into_response();
        }
    };
    let query = match Query::parse(route.query.as_deref()) {
        Ok(q) => q,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let head = request.method() == Method::HEAD;
    let call = Call {
        route,
        query,
        request,
    };
    let mut response = dispatch(engine, call)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let headers = response.headers_mut();
    headers.insert(
        "Api-Version",
        HeaderValue::from_static(moat_api::MAX_API_VERSION),
    );
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Ostype", HeaderValue::from_static("linux"));
    headers.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("moat/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    if head {
        *response.body_mut() = Body::empty();
    }
    response
}

async fn dispatch(engine: Arc<Engine>, call: Call) -> ApiResult {
    use Action::*;
    match call.route.action {
        SystemPing => system::ping(),
        SystemVersion => system::version(),
        SystemInfo => system::info(engine).await,
        SystemEvents => engine.events.stream(&call.query),
        SystemDf => system::df(engine).await,

        ContainerCreate => containers::create(engine, call).await,
        ContainerList => containers::list(engine, call).await,
        ContainerInspect => containers::inspect(engine, call).await,
        ContainerStart => containers::start(engine, call).await,
        ContainerStop => containers::stop(engine, call).await,
        ContainerRestart => containers::restart(engine, call).await,
        ContainerKill => containers::kill(engine, call).await,
        ContainerWait => containers::wait(engine, call).await,
        ContainerRemove => containers::remove(engine, call).await,
        ContainerLogs => containers::logs(engine, call).await,
        ContainerAttach => containers::attach(engine, call).await,
        ContainerResize => containers::resize(engine, call).await,
        ContainerTop => containers::top(engine, call).await,
        ContainerStats => containers::stats(engine, call).await,
        ContainerRename => containers::rename(engine, call).await,
        ContainerPause => containers::pause(engine, call, true).await,
        ContainerUnpause => containers::pause(engine, call, false).await,
        ContainerPrune => containers::prune(engine, call).await,
        ContainerArchiveGet | ContainerArchiveHead => containers::archive_get(engine, call).await,
        ContainerArchivePut => containers::archive_put(engine, call).await,
        ContainerExport => containers::export(engine, call).await,

        ExecCreate => exec::create(engine, call).await,
        ExecStart => exec::start(engine, call).await,
        ExecInspect => exec::inspect(engine, call).await,
        ExecResize => exec::resize(engine, call).await,

        ImageList => images::list(engine, call).await,
        ImageInspect => images::inspect(engine, call).await,
        ImageHistory => images::history(engine, call).await,
        ImageTag => images::tag(engine, call).await,
        ImageRemove => images::remove(engine, call).await,
        ImagePrune => images::prune(engine, call).await,
        ImageCreate => images::create(engine, call).await,
        ImageLoad => images::load(engine, call).await,
        ImageSave => images::save(engine, call).await,
        ImagePush => registry::push(engine, call).await,
        Auth => registry::auth(engine, call).await,
        Build => build::build(engine, call).await,
        BuildPrune => build::prune(engine, call).await,
        Session | Grpc => build::buildkit(),

        other => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{other} is not supported by moat"),
        )),
    }
}

/// The upgrade half of a request that hijacks its connection, taken
/// before the body is read.
pub struct Hijack {
    on_upgrade: hyper::upgrade::OnUpgrade,
    wants_upgrade: bool,
}

impl Hijack {
    pub fn take(request: &mut Request) -> Hijack {
        let wants_upgrade = request
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
        Hijack {
            on_upgrade: hyper::upgrade::on(request),
            wants_upgrade,
        }
    }
}

/// Answers a hijacking request (`Upgrade: tcp`) and splices the upgraded
/// connection with the stream `stream` yields, in both directions. When the
/// client finishes sending, the shim is told so (write half closed) and
/// the output keeps flowing until the shim ends it.
pub fn hijack<F>(hijack: Hijack, tty: bool, stream: F) -> Response
where
    F: std::future::Future<Output = Option<StdUnixStream>> + Send + 'static,
{
    tokio::spawn(async move {
        let Ok(upgraded) = hijack.on_upgrade.await else {
            return;
        };
        let client = hyper_util::rt::TokioIo::new(upgraded);
        let Some(stream) = stream.await else {
            return;
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(shim) = tokio::net::UnixStream::from_std(stream) else {
            return;
        };
        splice(client, shim).await;
    });
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let mut response = Response::new(Body::empty());
    if hijack.wants_upgrade {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Copies both ways with half-close: EOF from the client shuts down writing
/// toward the shim, and the output runs on to its own end, which ends the
/// session.
async fn splice<C>(client: C, shim: tokio::net::UnixStream)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut shim_read, mut shim_write) = shim.into_split();
    let to_shim = async {
        let _ = tokio::io::copy(&mut client_read, &mut shim_write).await;
        let _ = shim_write.shutdown().await;
        std::future::pending::<()>().await
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut shim_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        _ = to_shim => {}
        _ = to_client => {}
    }
}

/// A streamed body fed from a channel.
pub fn stream_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Body::from_stream(tokio_stream::StreamExt::map(
        stream,
        Ok::<_, std::io::Error>,
    ))
}

/// Where the engine keeps its state, and what runs the containers.
#[derive(Debug, Clone)]
pub struct EnginePaths {
    pub state_root: PathBuf,
    pub run_root: PathBuf,
    pub socket: PathBuf,
}
