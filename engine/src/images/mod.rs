//! The engine's image store: images kept as an OCI image layout that
//! skopeo and umoci can read, imported (`docker import`), loaded and saved
//! (`docker load`/`save`, both the docker-archive and the OCI forms),
//! tagged, removed and pruned with Docker's rules, and unpacked for a
//! container's user namespace into the read-only layer directories the
//! runtime mounts as overlayfs lowerdirs.
//!
//! On disk, under the store's root (`STATE/engine`):
//!
//! | path | what |
//! |------|------|
//! | `images/` | the OCI layout: `oci-layout`, `index.json` (one manifest descriptor per tag, annotated `org.opencontainers.image.ref.name` = the full reference; an untagged image keeps one descriptor without it), `blobs/sha256/<hex>` |
//! | `images.lock` | the `flock` every change to the layout takes |
//! | `images.ingest/` | blobs being written, renamed into `blobs/` once verified |
//! | `repo-digests.json` | image id → `repository@digest` it was pulled as or pushed to (`RepoDigests`) |
//! | `layers/<uid>.<gid>/<diff-id hex>/` | a layer unpacked for one remap root, owned by its ids; `.lock` serializes unpacking |
//!
//! An image's id is the digest of its config blob, as Docker's is.
//!
//! - [`reference`]: Docker's reference grammar and normalization.
//! - `layout`: the OCI layout, verified blobs, the store lock.
//! - `layer`: checking and unpacking layer tars safely.
//! - `import`, `archive`: `docker import`, `docker load` and `save`.
//! - `distribution`: what `docker pull` and `push` need (verified blobs,
//!   checked layers, a pulled image added whole, an image opened to push).
//! - `remove`: `docker rmi` and `docker image prune`, and what they free.
//! - `built`: what `docker build` needs (steps' images, the build cache).

mod archive;
mod built;
mod distribution;
mod error;
mod import;
mod layer;
mod layout;
pub use moat_api::image_ref as reference;
mod remove;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, MediaType};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use built::{BUILD_CACHE_ANNOTATION, BuildImage, BuildLayer};
pub use distribution::{
    BlobWriter, CheckedLayer, PulledImage, PushLayer, PushSource, VerifiedBlob,
};
pub use error::{ImageError, Result};
pub use import::ImportConfig;
pub use reference::Reference;
pub use remove::Removed;

use layer::Limits;
use layout::{Digest, Layout, descriptor_digest};

use crate::userns::IdMap;

/// The annotation naming a tag in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// containerd's (and Docker ≥ 25's) annotation for the full image name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

pub const DEFAULT_MAX_LAYER_BYTES: u64 = 8 << 30;
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 1_000_000;

/// An image id: `sha256:` and the hex digest of the image's config blob.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl ImageId {
    /// `sha256:<64 hex>` or the 64 hex digits alone.
    pub fn parse(s: &str) -> Option<ImageId> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        Digest::from_hex(hex).map(|d| ImageId::from_digest(&d))
    }

    fn from_digest(digest: &Digest) -> ImageId {
        ImageId(digest.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The 12 hex digits `docker images` shows.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    fn digest(&self) -> Digest {
        Digest::from_hex(self.hex()).expect("an image id holds a sha256 digest")
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ImageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ImageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not an image id: {s}")))
    }
}

/// How a container from this image runs by default: the `config` of the
/// OCI image config, in Docker's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    pub user: Option<String>,
    /// `80/tcp`, `53/udp`.
    pub exposed_ports: Vec<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Vec<String>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// A row of `docker images`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub id: ImageId,
    /// Familiar form, `busybox:test`; empty for a dangling image.
    pub repo_tags: Vec<String>,
    /// `busybox@sha256:...`, as pulled or pushed.
    pub repo_digests: Vec<String>,
    pub created: Option<OffsetDateTime>,
    /// Bytes of the image's layer blobs as stored.
    pub size: u64,
    pub labels: BTreeMap<String, String>,
    /// Always `None`: images here have no parent chain (a build's steps
    /// are images of the build cache, not parents).
    pub parent: Option<ImageId>,
}

/// `docker image inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    pub id: ImageId,
    pub repo_tags: Vec<String>,
    /// `repository@sha256:...` it was pulled as or pushed to, familiar.
    pub repo_digests: Vec<String>,
    pub created: Option<OffsetDateTime>,
    pub author: Option<String>,
    pub architecture: String,
    pub variant: Option<String>,
    pub os: String,
    pub size: u64,
    pub config: ImageConfig,
    /// The layers' diff ids, bottom first (`RootFS.Layers`).
    pub layers: Vec<String>,
    /// The config's history, oldest first.
    pub history: Vec<HistoryItem>,
}

/// One line of `docker history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    /// The image's id on its newest line; `None` ("<missing>") elsewhere.
    pub id: Option<ImageId>,
    pub created: Option<OffsetDateTime>,
    pub created_by: String,
    pub tags: Vec<String>,
    /// The stored size of the layer this step made; 0 for empty layers.
    pub size: u64,
    pub comment: String,
    pub empty_layer: bool,
}

/// One image `load` stored, for `Loaded image: ...` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    pub id: ImageId,
    /// Familiar form; empty when the archive named no tag.
    pub tags: Vec<String>,
}

/// The images of one state root.
pub struct ImageStore {
    layout: Layout,
    layers: PathBuf,
    /// `repo-digests.json`.
    repo_digests: PathBuf,
    limits: Limits,
}

/// One image of the index: its manifest, config and tags.
#[derive(Debug, Clone)]
struct StoredImage {
    id: ImageId,
    manifest_digest: Digest,
    manifest_media_type: MediaType,
    manifest_size: u64,
    manifest: ImageManifest,
    config: ImageConfiguration,
    tags: Vec<Reference>,
    /// `repository@digest`, full form.
    repo_digests: Vec<String>,
}

impl StoredImage {
    fn familiar_tags(&self) -> Vec<String> {
        self.tags.iter().map(Reference::familiar).collect()
    }

    fn familiar_repo_digests(&self) -> Vec<String> {
        self.repo_digests
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .map(|r| r.familiar())
            .collect()
    }

    fn size(&self) -> u64 {
        self.manifest.layers().iter().map(|l| l.size()).sum()
    }

    fn created(&self) -> Option<OffsetDateTime> {
        parse_time(self.config.created().as_deref())
    }

    /// `(blob, diff id)` of each layer, bottom first.
    fn layer_digests(&self) -> Result<Vec<(Digest, Digest)>> {
        let diff_ids = self.config.rootfs().diff_ids();
        if diff_ids.len() != self.manifest.layers().len() {
            return Err(ImageError::corrupt(
                self.manifest_digest.to_string(),
                "the manifest and the config disagree on the number of layers",
            ));
        }
        self.manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| {
                let blob = descriptor_digest("layer", layer)?;
                let diff_id = Digest::parse(diff_id).ok_or_else(|| {
                    ImageError::corrupt(self.id.to_string(), format!("bad diff id {diff_id}"))
                })?;
                Ok((blob, diff_id))
            })
            .collect()
    }
}

/// The whole index, read with its manifests and configs.
struct Catalog {
    images: Vec<StoredImage>,
    /// Descriptors of the index that are not image manifests (left by
    /// another tool): kept as they are.
    foreign: Vec<Descriptor>,
}

/// How `find` matched what the user wrote.
#[derive(Debug, Clone, PartialEq)]
enum Matched {
    Tag(Reference),
    Id,
}

fn parse_time(text: Option<&str>) -> Option<OffsetDateTime> {
    text.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

fn is_manifest(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageManifest)
        || media_type.to_string() == "application/vnd.docker.distribution.manifest.v2+json"
}

/// The architecture name Go (and so Docker and OCI) uses for this host.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

impl ImageStore {
    /// Opens the store under `root`, creating its layout when missing.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let layout = Layout::open(root)?;
        let layers = root.join("layers");
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(&layers)
            .map_err(ImageError::io(&layers))?;
        // Only root needs to reach unpacked layers (overlayfs checks lower
        // directories with the mounter's credentials); nobody else should
        // run their set-id files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&layers, std::fs::Permissions::from_mode(0o700))
            .map_err(ImageError::io(&layers))?;
        Ok(ImageStore {
            layout,
            layers,
            repo_digests: root.join("repo-digests.json"),
            limits: Limits {
                max_bytes: DEFAULT_MAX_LAYER_BYTES,
                max_entries: DEFAULT_MAX_LAYER_ENTRIES,
            },
        })
    }

    /// The most a layer may hold uncompressed (default 8 GiB).
    pub fn with_max_layer_bytes(mut self, bytes: u64) -> ImageStore {
        self.limits.max_bytes = bytes;
        self
    }

    /// The most entries a layer may have (default 1,000,000).
    pub fn with_max_layer_entries(mut self, entries: u64) -> ImageStore {
        self.limits.max_entries = entries;
        self
    }

    /// The OCI layout directory (`root/images`).
    pub fn layout_dir(&self) -> &Path {
        self.layout.dir()
    }

    /// The id of the image `reference` names: a tag, `name@sha256:...`,
    /// a full id (`sha256:...` or 64 hex digits) or a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<ImageId> {
        let catalog = self.read_catalog()?;
        let (index, _) = find(&catalog.images, reference)?;
        Ok(catalog.images[index].id.clone())
    }

    /// Every image, newest first, one row per image whatever its tags.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut rows: Vec<ImageSummary> = self
            .read_catalog()?
            .images
            .iter()
            .map(|image| ImageSummary {
                id: image.id.clone(),
                repo_tags: image.familiar_tags(),
                repo_digests: image.familiar_repo_digests(),
                created: image.created(),
                size: image.size(),
                labels: image_config(&image.config).labels,
                parent: None,
            })
            .collect();
        rows.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(rows)
    }

    /// `docker image inspect`.
    pub fn inspect(&self, reference: &str) -> Result<ImageDetails> {
        let catalog = self.read_catalog()?;
        let (index, _) = find(&catalog.images, reference)?;
        let image = &catalog.images[index];
        let config = &image.config;
        // Oldest first, as in the config; ids and tags are `history`'s.
        let mut history = history_of(image);
        history.reverse();
        for item in &mut history {
            item.id = None;
            item.tags.clear();
        }
        Ok(ImageDetails {
            id: image.id.clone(),
            repo_tags: image.familiar_tags(),
            repo_digests: image.familiar_repo_digests(),
            created: image.created(),
            author: config.author().clone(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
            os: config.os().to_string(),
            size: image.size(),
            config: image_config(config),
            layers: config.rootfs().diff_ids().clone(),
            history,
        })
    }

    /// `docker history`: newest first.
    pub fn history(&self, reference: &str) -> Result<Vec<HistoryItem>> {
        let catalog = self.read_catalog()?;
        let (index, _) = find(&catalog.images, reference)?;
        Ok(history_of(&catalog.images[index]))
    }

    /// `docker tag SOURCE TARGET`: the tag moves if another image had it.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let target = Reference::parse_tag(target)?;
        let lock = self.layout.lock()?;
        let mut catalog = self.catalog()?;
        let (index, _) = find(&catalog.images, source)?;
        for image in &mut catalog.images {
            image.tags.retain(|t| t != &target);
        }
        catalog.images[index].tags.push(target);
        self.write_catalog(&catalog, &lock)
    }

    /// The unpacked layer directories of image `id` for a container whose
    /// ids map by `map`, top layer first, as the runtime mounts them.
    /// Unpacks what is missing.
    ///
    /// The store lock is not held while unpacking (that can take long):
    /// the caller keeps an image it is about to use from being removed
    /// (`in_use` of [`ImageStore::remove`]).
    pub fn layers_for(&self, id: &ImageId, map: &IdMap) -> Result<Vec<PathBuf>> {
        let layers = self
            .read_catalog()?
            .images
            .iter()
            .find(|image| &image.id == id)
            .ok_or_else(|| ImageError::not_found(id.to_string()))?
            .layer_digests()?;
        let mut dirs = layers
            .iter()
            .map(|(blob, diff_id)| {
                layer::unpacked(&self.layout, &self.layers, blob, diff_id, map, &self.limits)
            })
            .collect::<Result<Vec<_>>>()?;
        dirs.reverse();
        Ok(dirs)
    }

    /// The catalog, read under the store lock so that no `rmi` removes a
    /// blob between reading the index and reading the blob.
    fn read_catalog(&self) -> Result<Catalog> {
        let _lock = self.layout.lock()?;
        self.catalog()
    }

    /// Reads the index and every manifest and config it names; the caller
    /// holds the store lock.
    fn catalog(&self) -> Result<Catalog> {
        let index = self.layout.read_index()?;
        let index_path = self.layout.index_path();
        let mut images: Vec<StoredImage> = Vec::new();
        let mut by_digest: HashMap<Digest, usize> = HashMap::new();
        let mut foreign = Vec::new();
        for descriptor in index.manifests() {
            if !is_manifest(descriptor.media_type()) {
                foreign.push(descriptor.clone());
                continue;
            }
            let digest = descriptor_digest("index.json", descriptor)
                .map_err(|e| ImageError::corrupt(&index_path, e))?;
            // A name another tool wrote that Docker's grammar rejects
            // leaves the image untagged rather than the store unreadable.
            let tag = descriptor
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
                .and_then(|name| Reference::parse_tag(name).ok());
            if let Some(&i) = by_digest.get(&digest) {
                if let Some(tag) = tag
                    && !images[i].tags.contains(&tag)
                {
                    images[i].tags.push(tag);
                }
                continue;
            }
            let manifest: ImageManifest = self.read_json(&digest)?;
            let config_digest = descriptor_digest("manifest", manifest.config())
                .map_err(|e| ImageError::corrupt(self.layout.blob_path(&digest), e))?;
            let config: ImageConfiguration = self.read_json(&config_digest)?;
            by_digest.insert(digest.clone(), images.len());
            images.push(StoredImage {
                id: ImageId::from_digest(&config_digest),
                manifest_digest: digest,
                manifest_media_type: descriptor.media_type().clone(),
                manifest_size: descriptor.size(),
                manifest,
                config,
                tags: tag.into_iter().collect(),
                repo_digests: Vec::new(),
            });
        }
        let mut repo_digests = self.read_repo_digests()?;
        for image in &mut images {
            image.repo_digests = repo_digests.remove(image.id.as_str()).unwrap_or_default();
        }
        Ok(Catalog { images, foreign })
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<T> {
        let bytes = self.layout.read_blob(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::corrupt(self.layout.blob_path(digest), e))
    }

    /// Writes the index for `catalog`: a descriptor per tag, or one without
    /// a name for an image that has none.
    fn write_catalog(&self, catalog: &Catalog, lock: &layout::StoreLock) -> Result<()> {
        let mut manifests = Vec::new();
        for image in &catalog.images {
            if image.tags.is_empty() {
                manifests.push(index_descriptor(image, None));
            }
            for tag in &image.tags {
                manifests.push(index_descriptor(image, Some(tag)));
            }
        }
        manifests.extend(catalog.foreign.iter().cloned());
        let mut index = layout::empty_index();
        index.set_manifests(manifests);
        self.layout.write_index(&index, lock)
    }
}

fn index_descriptor(image: &StoredImage, tag: Option<&Reference>) -> Descriptor {
    let mut descriptor = Descriptor::new(
        image.manifest_media_type.clone(),
        image.manifest_size,
        image.manifest_digest.oci(),
    );
    let platform = oci_spec::image::PlatformBuilder::default()
        .architecture(image.config.architecture().clone())
        .os(image.config.os().clone())
        .build()
        .ok();
    descriptor.set_platform(platform);
    if let Some(tag) = tag {
        descriptor.set_annotations(Some(HashMap::from([(
            REF_NAME_ANNOTATION.to_owned(),
            tag.to_string(),
        )])));
    }
    descriptor
}

/// Finds what `input` names, in Docker's order: a full id, then a
/// reference (tag, or `@digest` of a stored manifest), then an id prefix.
fn find(images: &[StoredImage], input: &str) -> Result<(usize, Matched)> {
    let by_id = |id: &ImageId| images.iter().position(|image| &image.id == id);
    if let Some(id) = ImageId::parse(input) {
        return by_id(&id)
            .map(|i| (i, Matched::Id))
            .ok_or_else(|| ImageError::not_found(input));
    }
    let parsed = reference::parse(input);
    if let Ok(parsed) = &parsed {
        let wanted = &parsed.reference;
        let found = match wanted.digest() {
            Some(digest) => images
                .iter()
                .position(|image| image.manifest_digest.to_string() == digest)
                .or_else(|| {
                    // Pulled through an index: the index's digest.
                    let full = format!("{}@{digest}", wanted.repository());
                    images
                        .iter()
                        .position(|image| image.repo_digests.contains(&full))
                })
                .map(|i| (i, Matched::Id)),
            None => images
                .iter()
                .position(|image| image.tags.contains(wanted))
                .map(|i| (i, Matched::Tag(wanted.clone()))),
        };
        if let Some(found) = found {
            return Ok(found);
        }
    }
    let prefix = input.strip_prefix("sha256:").unwrap_or(input);
    if reference::is_hex(prefix) {
        let matches: Vec<&StoredImage> = images
            .iter()
            .filter(|image| image.id.hex().starts_with(prefix))
            .collect();
        return match matches.as_slice() {
            [] => Err(ImageError::not_found(input)),
            // Manifests another tool added may share an id: still one image.
            [first, rest @ ..] if rest.iter().all(|image| image.id == first.id) => {
                let index = images.iter().position(|image| image.id == first.id);
                Ok((index.unwrap_or_default(), Matched::Id))
            }
            _ => Err(ImageError::Ambiguous {
                reference: input.to_owned(),
            }),
        };
    }
    match parsed {
        Ok(parsed) => Err(ImageError::not_found(parsed.reference.familiar())),
        Err(e) => Err(e.into()),
    }
}

/// The config part of an OCI image config, as [`ImageConfig`].
fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
    exposed_ports.sort();
    let mut volumes = c.volumes().clone().unwrap_or_default();
    volumes.sort();
    ImageConfig {
        user: c.user().clone().filter(|u| !u.is_empty()),
        exposed_ports,
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        volumes,
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()),
    }
}

/// `docker history`, newest first: each step of the config's history,
/// with the size of the layer it made (steps marked `empty_layer` made
/// none).
fn history_of(image: &StoredImage) -> Vec<HistoryItem> {
    let layers = image.manifest.layers();
    let mut next_layer = 0;
    let mut items: Vec<HistoryItem> = match image.config.history() {
        Some(history) if !history.is_empty() => history
            .iter()
            .map(|step| {
                let empty = step.empty_layer().unwrap_or(false);
                let size = if empty {
                    0
                } else {
                    next_layer += 1;
                    layers.get(next_layer - 1).map_or(0, |l| l.size())
                };
                HistoryItem {
                    id: None,
                    created: parse_time(step.created().as_deref()),
                    created_by: step.created_by().clone().unwrap_or_default(),
                    tags: Vec::new(),
                    size,
                    comment: step.comment().clone().unwrap_or_default(),
                    empty_layer: empty,
                }
            })
            .collect(),
        // No history recorded: one line per layer, as Docker shows.
        _ => layers
            .iter()
            .map(|layer| HistoryItem {
                id: None,
                created: image.created(),
                created_by: String::new(),
                tags: Vec::new(),
                size: layer.size(),
                comment: String::new(),
                empty_layer: false,
            })
            .collect(),
    };
    items.reverse();
    if let Some(newest) = items.first_mut() {
        newest.id = Some(image.id.clone());
        newest.tags = image.familiar_tags();
    }
    items
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
