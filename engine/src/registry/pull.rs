//! `docker pull`: the manifest (through an index to the platform's one),
//! the config, then the layers the store lacks, three at a time. Every
//! blob is checked against its digest and size as it is written, every
//! layer against the config's diff id, and the image is added only when
//! all of it is there: a failure anywhere stores nothing.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::progress::{ByteCounter, Progress, short_id};
use super::session::Session;
use super::transport::ANSWER_TIMEOUT;
use super::{Credentials, Registry, RegistryError};
use crate::images::{
    CheckedLayer, ImageError, ImageId, ImageStore, PulledImage, Reference, VerifiedBlob,
};

/// Layers downloaded at once (dockerd's default too).
const PARALLEL_DOWNLOADS: usize = 3;
/// The biggest config blob read into memory.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most layers an image may have (Docker's own limit: overlayfs
/// mounts only so many lower directories).
const MAX_LAYERS: usize = 125;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// An OS, architecture and variant, as `--platform linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This host's: `linux/amd64` here.
    pub fn host() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: crate::images::host_architecture().into(),
            variant: None,
        }
    }

    /// `os[/arch[/variant]]`, or an architecture alone (`arm64`).
    pub fn parse(text: &str) -> Result<Platform, RegistryError> {
        let text = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || RegistryError::BadRequest(format!("invalid platform {text:?}"));
        let (os, architecture, variant) = match parts.as_slice() {
            [arch] if *arch != "linux" => ("linux", *arch, None),
            [os] => (*os, crate::images::host_architecture(), None),
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(bad()),
        };
        if [os, architecture].iter().any(|p| p.is_empty()) || variant == Some("") {
            return Err(bad());
        }
        let architecture = match architecture {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(Platform {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_owned),
        })
    }

    fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        // arm64's only variant is v8: no variant and v8 are the same.
        let norm = |v: Option<&str>| match (architecture, v) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_owned),
        };
        self.os == os
            && self.architecture == architecture
            && (self.variant.is_none() || norm(self.variant.as_deref()) == norm(variant))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// What to pull.
pub struct PullRequest {
    pub reference: Reference,
    /// `None`: this host's platform.
    pub platform: Option<Platform>,
    pub credentials: Credentials,
}

/// What a pull stored.
#[derive(Debug)]
pub struct Pulled {
    pub id: ImageId,
    /// The digest the reference resolved to (an index's, for a
    /// multi-platform image), as `Digest:` shows it.
    pub digest: String,
    /// The tag already named this image.
    pub up_to_date: bool,
}

/// A manifest, an index or a manifest list, as far as a pull reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<DescriptorPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
struct DescriptorPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigDocument {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Pulls `request.reference` into `store`, telling `progress`.
pub async fn pull(
    registry: &Registry,
    store: Arc<ImageStore>,
    request: PullRequest,
    progress: &Progress,
) -> Result<Pulled, RegistryError> {
    let reference = &request.reference;
    let domain = reference.domain().to_owned();
    let path = repository_path(reference);
    let session = Arc::new(
        Session::open(
            registry,
            &domain,
            &path,
            request.credentials.clone(),
            vec![format!("repository:{path}:pull")],
        )
        .await?,
    );
    let wanted = reference
        .digest()
        .or(reference.tag())
        .unwrap_or(moat_api::image_ref::DEFAULT_TAG)
        .to_owned();
    progress.status(&format!("{wanted}: Pulling from {path}"));

    let (bytes, media_type, top_digest) = fetch_manifest(&session, &wanted).await?;
    let document = parse_document(&bytes, &media_type)?;
    let (manifest_bytes, manifest_type, manifest) = if is_index(&media_type, &document) {
        let platform = request.platform.clone().unwrap_or_else(Platform::host);
        let chosen = choose(&document, &platform).ok_or_else(|| RegistryError::NotFound {
            what: format!("manifest for {}", reference.familiar()),
            message: format!("no matching manifest for {platform} in the manifest list entries"),
        })?;
        let (bytes, media_type, _) = fetch_manifest(&session, &chosen.digest).await?;
        if bytes.len() as u64 != chosen.size {
            return Err(RegistryError::protocol(
                format!("manifest {}", chosen.digest),
                format!("{} bytes, the index says {}", bytes.len(), chosen.size),
            ));
        }
        let document = parse_document(&bytes, &media_type)?;
        if is_index(&media_type, &document) {
            return Err(RegistryError::Unsupported(
                "an index inside an index is not supported".into(),
            ));
        }
        let media_type = if media_type.is_empty() {
            chosen.media_type.clone()
        } else {
            media_type
        };
        (bytes, media_type, document)
    } else {
        (bytes.clone(), media_type, document)
    };
    let manifest_type = manifest_media_type(&manifest_type, &manifest)?;
    let config = manifest
        .config
        .clone()
        .ok_or_else(|| RegistryError::protocol("manifest", "no config"))?;
    check_config_type(&config.media_type)?;
    if manifest.layers.len() > MAX_LAYERS {
        return Err(RegistryError::Unsupported(format!(
            "{} layers: more than the {MAX_LAYERS} an image may have",
            manifest.layers.len()
        )));
    }
    for layer in &manifest.layers {
        check_layer_type(&layer.media_type)?;
    }

    // The config: small, read whole.
    if config.size > MAX_CONFIG_BYTES {
        return Err(RegistryError::protocol("config", "too large"));
    }
    let config_blob = download(&session, &store, "config", &config, None).await?;
    let config_bytes = {
        let store = store.clone();
        blocking(move || store.blob_bytes(&config_blob)).await?
    };
    let parsed: ConfigDocument = serde_json::from_slice(&config_bytes)
        .map_err(|e| RegistryError::protocol("image config", e))?;
    if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(RegistryError::protocol(
            "image config",
            format!(
                "{} diff ids for {} layers",
                parsed.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    if let Some(platform) = &request.platform
        && !platform.matches(
            &parsed.os,
            &parsed.architecture,
            platform.variant.as_deref(),
        )
    {
        return Err(RegistryError::Unsupported(format!(
            "image with reference {} was found but does not match the specified platform: wanted {platform}, actual: {}/{}",
            reference.familiar(),
            parsed.os,
            parsed.architecture
        )));
    }

    let blobs = download_layers(&session, &store, &manifest.layers, progress).await?;

    // Check each layer, bottom first, as Docker extracts them.
    let mut checked = Vec::new();
    for ((layer, diff_id), blob) in manifest
        .layers
        .iter()
        .zip(&parsed.rootfs.diff_ids)
        .zip(blobs)
    {
        if blob.is_none()
            && let Some(earlier) = checked
                .iter()
                .find(|c: &&CheckedLayer| c.digest() == layer.digest)
        {
            let again = earlier.again();
            checked.push(again);
            continue;
        }
        let id = short_id(&layer.digest);
        let fresh = blob.is_some();
        if fresh {
            progress.layer(&id, "Extracting");
        }
        let store = store.clone();
        let (digest, size, diff_id) = (layer.digest.clone(), layer.size, diff_id.clone());
        checked.push(blocking(move || store.check_layer(&digest, size, blob, &diff_id)).await?);
        if fresh {
            progress.layer(&id, "Pull complete");
        }
    }

    let tag = reference
        .digest()
        .is_none()
        .then(|| reference.clone())
        .filter(|r| r.tag().is_some());
    let image = PulledImage {
        manifest: manifest_bytes.to_vec(),
        media_type: manifest_type,
        config: config_bytes,
        layers: checked,
        tag,
        repo_digest: format!("{}@{top_digest}", reference.repository()),
    };
    let (id, up_to_date) = {
        let store = store.clone();
        blocking(move || store.add_pulled(image)).await?
    };
    Ok(Pulled {
        id,
        digest: top_digest,
        up_to_date,
    })
}

/// `team/app` of `127.0.0.1:5000/team/app:1`.
pub fn repository_path(reference: &Reference) -> String {
    let repository = reference.repository();
    repository
        .strip_prefix(&format!("{}/", reference.domain()))
        .unwrap_or(&repository)
        .to_owned()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RegistryError::protocol("pull", format!("task failed: {e}")))?
        .map_err(RegistryError::from)
}

/// A manifest by tag or digest, with its checked digest: one asked for by
/// digest must hash to it, and the registry's `Docker-Content-Digest`
/// must be the bytes' digest.
async fn fetch_manifest(
    session: &Session,
    reference: &str,
) -> Result<(Bytes, String, String), RegistryError> {
    let (bytes, media_type, header) = session.manifest(reference).await?;
    let actual = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    let expected = if reference.contains(':') {
        Some(reference.to_owned())
    } else {
        header.filter(|h| h.starts_with("sha256:"))
    };
    if let Some(expected) = expected
        && expected != actual
    {
        return Err(RegistryError::Image(ImageError::DigestMismatch {
            what: format!("manifest {reference}"),
            expected,
            actual,
        }));
    }
    Ok((bytes, media_type, actual))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_document(bytes: &[u8], media_type: &str) -> Result<Document, RegistryError> {
    let document: Document =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::protocol("manifest", e))?;
    let declared = document.media_type.as_deref().unwrap_or(media_type);
    if document.schema_version == Some(1)
        || declared.starts_with("application/vnd.docker.distribution.manifest.v1")
    {
        return Err(RegistryError::Unsupported(
            "schema 1 image manifests are not supported (push the image again with a current client)".into(),
        ));
    }
    Ok(document)
}

fn is_index(media_type: &str, document: &Document) -> bool {
    let declared = document.media_type.as_deref().unwrap_or(media_type);
    declared == OCI_INDEX || declared == DOCKER_LIST || document.manifests.is_some()
}

/// The media type to store an image manifest under.
fn manifest_media_type(content_type: &str, document: &Document) -> Result<String, RegistryError> {
    let declared = document.media_type.as_deref().unwrap_or(content_type);
    match declared {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(declared.to_owned()),
        // An OCI manifest may leave its media type out.
        "" | "application/json" | "application/octet-stream" => Ok(OCI_MANIFEST.to_owned()),
        other => Err(RegistryError::Unsupported(format!(
            "unsupported manifest media type {other}"
        ))),
    }
}

fn check_config_type(media_type: &str) -> Result<(), RegistryError> {
    match media_type {
        "application/vnd.oci.image.config.v1+json"
        | "application/vnd.docker.container.image.v1+json"
        | "" => Ok(()),
        other => Err(RegistryError::Unsupported(format!(
            "not a container image (config media type {other})"
        ))),
    }
}

fn check_layer_type(media_type: &str) -> Result<(), RegistryError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(()),
        t if t.ends_with("+zstd") => Err(RegistryError::Unsupported(
            "zstd-compressed layers are not supported yet (gzip and plain tar are)".into(),
        )),
        t if t.contains("foreign") || t.contains("nondistributable") => Err(
            RegistryError::Unsupported(format!("foreign layers ({t}) are not supported")),
        ),
        other => Err(RegistryError::Unsupported(format!(
            "unsupported layer media type {other}"
        ))),
    }
}

/// The index entry for `platform`: an exact variant first, then any.
fn choose<'a>(index: &'a Document, platform: &Platform) -> Option<&'a Descriptor> {
    let entries = index.manifests.as_deref().unwrap_or_default();
    let fits = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    };
    let exact = entries.iter().filter(fits).find(|d| {
        d.platform.as_ref().and_then(|p| p.variant.as_deref()) == platform.variant.as_deref()
    });
    exact.or_else(|| entries.iter().find(fits))
}

/// Downloads the layers the store lacks, a few at a time; `None` for a
/// layer already stored. The first failure stops the others and drops
/// what they wrote.
async fn download_layers(
    session: &Arc<Session>,
    store: &Arc<ImageStore>,
    layers: &[Descriptor],
    progress: &Progress,
) -> Result<Vec<Option<VerifiedBlob>>, RegistryError> {
    let mut results: Vec<Option<VerifiedBlob>> = layers.iter().map(|_| None).collect();
    let mut wanted = Vec::new();
    for (index, layer) in layers.iter().enumerate() {
        let id = short_id(&layer.digest);
        if store.has_blob(&layer.digest, layer.size)
            || layers[..index].iter().any(|l| l.digest == layer.digest)
        {
            progress.layer(&id, "Already exists");
        } else {
            progress.layer(&id, "Pulling fs layer");
            wanted.push(index);
        }
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_DOWNLOADS));
    let mut tasks = JoinSet::new();
    for (n, &index) in wanted.iter().enumerate() {
        let layer = layers[index].clone();
        if n >= PARALLEL_DOWNLOADS {
            progress.layer(&short_id(&layer.digest), "Waiting");
        }
        let (session, store, progress, permits) = (
            session.clone(),
            store.clone(),
            progress.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let blob = download(&session, &store, "layer", &layer, Some(&progress)).await;
            (index, blob)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (index, blob) =
            joined.map_err(|e| RegistryError::protocol("pull", format!("task failed: {e}")))?;
        match blob {
            Ok(blob) => results[index] = Some(blob),
            Err(e) => {
                tasks.abort_all();
                return Err(e);
            }
        }
    }
    // A layer listed twice was downloaded once: the store has it then.
    Ok(results)
}

/// Streams a blob into the store's ingest area (on a blocking thread),
/// checked against the descriptor's size and digest.
async fn download(
    session: &Session,
    store: &Arc<ImageStore>,
    kind: &str,
    descriptor: &Descriptor,
    progress: Option<&Progress>,
) -> Result<VerifiedBlob, RegistryError> {
    let what = format!("{kind} {}", descriptor.digest);
    let id = short_id(&descriptor.digest);
    let mut writer = {
        let (store, what, digest, size) = (
            store.clone(),
            what.clone(),
            descriptor.digest.clone(),
            descriptor.size,
        );
        blocking(move || store.blob_writer(&what, &digest, size)).await?
    };
    let response = session.blob(&descriptor.digest).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let sink = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            writer.write_all(&chunk)?;
        }
        Ok::<_, std::io::Error>(writer)
    });
    let mut counter = progress.map(|p| ByteCounter::new(p, &id, "Downloading", descriptor.size));
    let mut body = response.into_body();
    let mut failure = None;
    loop {
        let frame = match tokio::time::timeout(ANSWER_TIMEOUT, body.frame()).await {
            Err(_) => {
                failure = Some(RegistryError::protocol(&what, "the download stalled"));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                failure = Some(RegistryError::transport(session.registry(), e));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let n = data.len();
        if tx.send(data).await.is_err() {
            break; // the writer failed: its error is below
        }
        if let Some(counter) = &mut counter {
            counter.add(n);
        }
    }
    drop(tx);
    let written = sink
        .await
        .map_err(|e| RegistryError::protocol(&what, format!("task failed: {e}")))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let writer = written.map_err(|e| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            RegistryError::protocol(
                &what,
                format!("more than the {} bytes announced", descriptor.size),
            )
        } else {
            RegistryError::protocol(&what, format!("writing: {e}"))
        }
    })?;
    if let Some(progress) = progress {
        progress.layer(&id, "Verifying Checksum");
    }
    let blob = blocking(move || writer.finish()).await?;
    if let Some(progress) = progress {
        progress.layer(&id, "Download complete");
    }
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_like_docker() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().variant.as_deref(),
            Some("v7")
        );
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().architecture,
            "amd64"
        );
        assert!(Platform::parse("linux//").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn the_index_entry_for_the_platform_is_chosen() {
        let index: Document = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v6"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":1,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:d","size":1,"platform":{"architecture":"amd64","os":"linux"}},
              {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e","size":1,"platform":{"architecture":"unknown","os":"unknown"}}
            ]}"#,
        )
        .unwrap();
        assert!(is_index("", &index));
        let pick = |p: &str| choose(&index, &Platform::parse(p).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").as_deref(), Some("sha256:d"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("sha256:b"));
        assert_eq!(pick("linux/arm").as_deref(), Some("sha256:a"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("sha256:c"));
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("sha256:c"));
        assert_eq!(pick("linux/s390x"), None);
    }

    #[test]
    fn unsupported_content_is_named() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_document(
            schema1,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )
        .unwrap_err();
        assert!(err.to_string().contains("schema 1"), "{err}");
        assert!(
            check_layer_type("application/vnd.oci.image.layer.v1.tar+zstd")
                .unwrap_err()
                .to_string()
                .contains("zstd")
        );
        assert!(
            check_layer_type("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").is_err()
        );
        assert!(check_layer_type("application/vnd.docker.image.rootfs.diff.tar.gzip").is_ok());
        assert!(check_config_type("application/vnd.cncf.helm.config.v1+json").is_err());
        let doc: Document = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:a","size":1},"layers":[]}"#,
        )
        .unwrap();
        assert_eq!(manifest_media_type("", &doc).unwrap(), OCI_MANIFEST);
    }
}
