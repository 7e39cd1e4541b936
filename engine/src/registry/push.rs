//! `docker push`: each layer the registry lacks is uploaded (a few at a
//! time), mounted from another repository of the same registry when the
//! store knows one that has it, or skipped when the registry has it
//! already; then the config, then the manifest exactly as stored (OCI or
//! Docker schema2), so the pushed digest is the stored one.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::progress::{ByteCounter, Progress, short_id};
use super::pull::repository_path;
use super::session::{Mount, Session};
use super::transport::{self, Body};
use super::{Credentials, Registry, RegistryError};
use crate::images::{ImageError, ImageStore, PushLayer, Reference};

/// Layers uploaded at once (dockerd's default).
const PARALLEL_UPLOADS: usize = 5;
const UPLOAD_CHUNK: usize = 256 << 10;

/// One tag pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: Reference,
    pub digest: String,
    pub size: usize,
}

/// The tags a push of `name` (with the API's `tag`) means: that tag, the
/// tag in the name, or every tag of the repository.
pub fn tags_to_push(
    store: &ImageStore,
    name: &str,
    tag: Option<&str>,
) -> Result<Vec<Reference>, RegistryError> {
    let parsed = moat_api::image_ref::parse(name).map_err(ImageError::from)?;
    if parsed.reference.digest().is_some() {
        return Err(RegistryError::BadRequest(
            "cannot push a digest reference".into(),
        ));
    }
    let repository = parsed.reference.repository();
    let tags = match tag.filter(|t| !t.is_empty()) {
        Some(tag) => {
            vec![Reference::parse_tag(&format!("{repository}:{tag}")).map_err(ImageError::from)?]
        }
        None if !parsed.name_only => vec![parsed.reference.clone()],
        None => store.tags_of(&repository)?,
    };
    let missing = |name: String| {
        RegistryError::NoLocalImage(format!(
            "An image does not exist locally with the tag: {name}"
        ))
    };
    if tags.is_empty() {
        return Err(missing(parsed.reference.familiar_name()));
    }
    for tag in &tags {
        if store.resolve(&tag.to_string()).is_err() {
            return Err(missing(tag.familiar()));
        }
    }
    Ok(tags)
}

/// Pushes one tag.
pub async fn push(
    registry: &Registry,
    store: Arc<ImageStore>,
    reference: &Reference,
    credentials: Credentials,
    progress: &Progress,
) -> Result<Pushed, RegistryError> {
    let domain = reference.domain().to_owned();
    let path = repository_path(reference);
    let tag = reference.tag().unwrap_or("latest").to_owned();
    let source = {
        let (store, name) = (store.clone(), reference.to_string());
        blocking(move || store.push_source(&name)).await?
    };

    // Other repositories of this registry that have each layer.
    let mut mounts: Vec<Option<String>> = Vec::new();
    for layer in &source.layers {
        let (store, domain2, digest) = (store.clone(), domain.clone(), layer.digest.clone());
        let repositories =
            blocking(move || store.repositories_with_blob(&domain2, &digest)).await?;
        let prefix = format!("{domain}/");
        mounts.push(
            repositories
                .iter()
                .filter_map(|r| r.strip_prefix(&prefix))
                .find(|r| *r != path)
                .map(str::to_owned),
        );
    }
    let mut scopes = vec![format!("repository:{path}:pull,push")];
    for from in mounts.iter().flatten() {
        let scope = format!("repository:{from}:pull");
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    let session = Arc::new(Session::open(registry, &domain, &path, credentials, scopes).await?);

    let mut tasks = JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_UPLOADS));
    let mut seen: Vec<String> = Vec::new();
    for (n, (layer, from)) in source.layers.into_iter().zip(mounts).enumerate() {
        let id = short_id(&layer.diff_id);
        progress.layer(&id, "Preparing");
        if seen.contains(&layer.digest) {
            continue;
        }
        seen.push(layer.digest.clone());
        if n >= PARALLEL_UPLOADS {
            progress.layer(&id, "Waiting");
        }
        let (session, progress, permits) = (session.clone(), progress.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            push_layer(&session, layer, from.as_deref(), &progress).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result =
            joined.map_err(|e| RegistryError::protocol("push", format!("task failed: {e}")))?;
        if let Err(e) = result {
            tasks.abort_all();
            return Err(e);
        }
    }

    if !session.blob_exists(&source.config_digest).await? {
        let Mount::Upload(location) = session.start_upload(None).await? else {
            unreachable!("no mount was asked for");
        };
        let size = source.config.len() as u64;
        session
            .upload(
                &location,
                &source.config_digest,
                size,
                transport::full(source.config.clone()),
            )
            .await?;
    }

    let size = source.manifest.len();
    let computed = format!("sha256:{}", hex(&Sha256::digest(&source.manifest)));
    let answered = session
        .put_manifest(&tag, &source.media_type, Bytes::from(source.manifest))
        .await?;
    if let Some(answered) = answered
        && answered != computed
    {
        return Err(RegistryError::Image(ImageError::DigestMismatch {
            what: format!("pushed manifest {}", reference.familiar()),
            expected: computed,
            actual: answered,
        }));
    }
    {
        let (store, id) = (store.clone(), source.id.clone());
        let repo_digest = format!("{}@{computed}", reference.repository());
        blocking(move || store.record_repo_digest(&id, &repo_digest)).await?;
    }
    progress.status(&format!("{tag}: digest: {computed} size: {size}"));
    progress.aux(json!({ "Tag": tag, "Digest": computed, "Size": size }));
    Ok(Pushed {
        reference: reference.clone(),
        digest: computed,
        size,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::protocol("push", format!("task failed: {e}")))?
        .map_err(RegistryError::from)
}

/// One layer: skipped if the repository has it, mounted if another
/// repository of the registry has it, else uploaded.
async fn push_layer(
    session: &Session,
    layer: PushLayer,
    from: Option<&str>,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let id = short_id(&layer.diff_id);
    if session.blob_exists(&layer.digest).await? {
        progress.layer(&id, "Layer already exists");
        return Ok(());
    }
    let location = match session
        .start_upload(from.map(|from| (layer.digest.as_str(), from)))
        .await?
    {
        Mount::Mounted => {
            let from = from.unwrap_or_default();
            progress.layer(&id, &format!("Mounted from {from}"));
            return Ok(());
        }
        Mount::Upload(location) => location,
    };
    let body = file_body(
        layer.file,
        ByteCounter::new(progress, &id, "Pushing", layer.size),
    );
    session
        .upload(&location, &layer.digest, layer.size, body)
        .await?;
    progress.layer(&id, "Pushed");
    Ok(())
}

/// A file as a streamed request body, read on a blocking thread, counting
/// what it hands over.
fn file_body(mut file: std::fs::File, mut counter: ByteCounter) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                    counter.add(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let stream =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |chunk| {
            chunk.map(Frame::data)
        });
    StreamBody::new(stream).boxed()
}
