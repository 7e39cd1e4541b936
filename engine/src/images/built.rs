//! What `docker build` needs from the store: an image as a build's
//! starting point, each step's result as an image of its own (config and
//! manifest blobs, maybe a new layer), the build cache that finds a step's
//! result again, and the final image tagged.
//!
//! The cache is an OCI index in the layout (`index.json` lists it as one
//! descriptor annotated `io.moat.build-cache`), whose manifests are the
//! steps' images, each annotated with its cache key. Being in the layout,
//! everything it references survives `rmi` and `prune` (the garbage
//! collection marks what an index lists), and skopeo or umoci see a valid
//! layout; `docker builder prune` (`build_prune`) drops it.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, MediaType};
use serde_json::{Value, json};

use super::error::{ImageError, Result};
use super::import::{NewImage, NewLayer};
use super::layer::{self, Layer};
use super::layout::{Compression, Digest, canonical_json, descriptor_digest};
use super::{Catalog, ImageId, ImageStore, Reference, find};
use crate::userns::IdMap;

/// The annotation that marks the build cache's index in `index.json`.
pub const BUILD_CACHE_ANNOTATION: &str = "io.moat.build-cache";
/// The annotation of a cached step's manifest: its cache key.
const BUILD_KEY_ANNOTATION: &str = "io.moat.build.key";

/// A layer of an image being built.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildLayer {
    blob: Digest,
    diff_id: Digest,
    size: u64,
    compression: Compression,
}

/// An image a build starts from or made: its config as a JSON document
/// (Docker's fields such as `Healthcheck` and `Shell` kept) and layers.
#[derive(Debug, Clone)]
pub struct BuildImage {
    /// The config's digest; `None` for `scratch`, which is no image.
    pub id: Option<ImageId>,
    pub config: Value,
    pub layers: Vec<BuildLayer>,
}

impl BuildImage {
    /// `FROM scratch`: no layers, an empty config for this host.
    pub fn scratch() -> BuildImage {
        BuildImage {
            id: None,
            config: json!({
                "architecture": super::host_architecture(),
                "os": "linux",
                "config": {},
                "rootfs": { "type": "layers", "diff_ids": [] },
                "history": [],
            }),
            layers: Vec::new(),
        }
    }
}

impl ImageStore {
    /// A stored image as a build's starting point (`FROM`, `COPY --from`).
    pub fn build_base(&self, reference: &str) -> Result<BuildImage> {
        let _lock = self.layout.lock()?;
        let catalog = self.catalog()?;
        let (index, _) = find(&catalog.images, reference)?;
        let image = &catalog.images[index];
        let config: Value = self.read_json(&image.id.digest())?;
        let layers = image
            .layer_digests()?
            .into_iter()
            .zip(image.manifest.layers())
            .map(|((blob, diff_id), descriptor)| BuildLayer {
                blob,
                diff_id,
                size: descriptor.size(),
                compression: if descriptor.media_type().to_string().contains("gzip") {
                    Compression::Gzip
                } else {
                    Compression::None
                },
            })
            .collect();
        Ok(BuildImage {
            id: Some(image.id.clone()),
            config,
            layers,
        })
    }

    /// The image a step made before under `key`, if its blobs are all
    /// still there.
    pub fn build_cached(&self, key: &str) -> Result<Option<BuildImage>> {
        let _lock = self.layout.lock()?;
        let catalog = self.catalog()?;
        let Some((_, entries)) = self.cache_index(&catalog)? else {
            return Ok(None);
        };
        let Some(manifest_digest) = entries.get(key) else {
            return Ok(None);
        };
        self.read_built(manifest_digest).map(Some).or_else(|e| {
            tracing::warn!(error = %e, "a build cache entry is unusable");
            Ok(None)
        })
    }

    /// Records what a step made: `config` (its `rootfs.diff_ids` are the
    /// parent's; a new layer's is appended here) over `layers` and the
    /// layer tar `new_layer`, if any. The image is written and entered in
    /// the cache under `key` in one change of the store.
    pub fn build_step(
        &self,
        key: &str,
        mut config: Value,
        mut layers: Vec<BuildLayer>,
        new_layer: Option<&Path>,
    ) -> Result<BuildImage> {
        let ingested = match new_layer {
            Some(path) => {
                let file = File::open(path).map_err(ImageError::io(path))?;
                let ingested = self.ingest_stream(file, "built layer")?;
                let diff_id = ingested.digest.clone();
                if let Some(ids) = config
                    .pointer_mut("/rootfs/diff_ids")
                    .and_then(Value::as_array_mut)
                {
                    ids.push(Value::String(diff_id.to_string()));
                }
                layers.push(BuildLayer {
                    blob: ingested.digest.clone(),
                    diff_id,
                    size: ingested.size,
                    compression: Compression::None,
                });
                Some(ingested)
            }
            None => None,
        };
        let config_bytes = canonical_json(&config)?;
        let manifest = build_manifest(&config_bytes, &layers)?;
        let lock = self.layout.lock()?;
        if let Some(ingested) = ingested {
            self.layout.commit(ingested, &lock)?;
        }
        for layer in &layers {
            if self.layout.blob_size(&layer.blob) != Some(layer.size) {
                return Err(ImageError::corrupt(
                    self.layout.blob_path(&layer.blob),
                    "layer blob is missing",
                ));
            }
        }
        let config_digest = self.layout.write_blob(&config_bytes, &lock)?;
        let manifest_digest = self.layout.write_blob(&manifest, &lock)?;
        let mut catalog = self.catalog()?;
        let mut entries = match self.cache_index(&catalog)? {
            Some((_, entries)) => entries,
            None => HashMap::new(),
        };
        entries.insert(key.to_owned(), manifest_digest);
        self.write_cache_index(&mut catalog, &entries, &lock)?;
        Ok(BuildImage {
            id: Some(ImageId::from_digest(&config_digest)),
            config,
            layers,
        })
    }

    /// The unpacked layer directories of `image` for `map`, top first.
    pub fn build_unpack(&self, image: &BuildImage, map: &IdMap) -> Result<Vec<PathBuf>> {
        let mut dirs = image
            .layers
            .iter()
            .map(|l| {
                layer::unpacked(
                    &self.layout,
                    &self.layers,
                    &l.blob,
                    &l.diff_id,
                    map,
                    &self.limits,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        dirs.reverse();
        Ok(dirs)
    }

    /// Adds the build's result to the images, tagged with `tags`.
    pub fn build_finish(&self, image: &BuildImage, tags: &[Reference]) -> Result<ImageId> {
        let config = canonical_json(&image.config)?;
        let manifest = build_manifest(&config, &image.layers)?;
        let new = NewImage {
            config,
            manifest: Some((manifest, MediaType::ImageManifest)),
            layers: image
                .layers
                .iter()
                .map(|l| NewLayer {
                    digest: l.blob.clone(),
                    size: l.size,
                    layer: Layer {
                        compression: l.compression,
                        diff_id: l.diff_id.clone(),
                    },
                })
                .collect(),
            tags: tags.to_vec(),
        };
        let added = self.add_images(vec![new], &mut HashMap::new())?;
        Ok(added[0].id.clone())
    }

    /// `docker builder prune`: forgets every cached step and frees what no
    /// image needs. Returns the cache keys forgotten and the bytes freed.
    pub fn build_prune(&self) -> Result<(Vec<String>, u64)> {
        let lock = self.layout.lock()?;
        let mut catalog = self.catalog()?;
        let mut keys: Vec<String> = self
            .cache_index(&catalog)?
            .map(|(_, entries)| entries.into_keys().collect())
            .unwrap_or_default();
        keys.sort();
        catalog.foreign.retain(|d| !is_cache_index(d));
        self.write_catalog(&catalog, &lock)?;
        let freed = self.collect_garbage(&catalog, &lock)?;
        Ok((keys, freed))
    }

    /// The diff ids of every layer the cache holds: their unpacked
    /// directories stay when garbage is collected (a build may be using
    /// them).
    pub(super) fn build_cache_diff_ids(&self, catalog: &Catalog) -> HashSet<String> {
        let mut ids = HashSet::new();
        let Ok(Some((_, entries))) = self.cache_index(catalog) else {
            return ids;
        };
        for digest in entries.values() {
            if let Ok(image) = self.read_built(digest) {
                ids.extend(image.layers.iter().map(|l| l.diff_id.hex().to_owned()));
            }
        }
        ids
    }

    /// The cache's index descriptor and its entries (key → manifest).
    fn cache_index(
        &self,
        catalog: &Catalog,
    ) -> Result<Option<(Descriptor, HashMap<String, Digest>)>> {
        let Some(descriptor) = catalog.foreign.iter().find(|d| is_cache_index(d)) else {
            return Ok(None);
        };
        let digest = descriptor_digest("build cache", descriptor)?;
        let index: Value = self.read_json(&digest)?;
        let mut entries = HashMap::new();
        for manifest in index["manifests"].as_array().into_iter().flatten() {
            let key = manifest["annotations"][BUILD_KEY_ANNOTATION].as_str();
            let digest = manifest["digest"].as_str().and_then(Digest::parse);
            if let (Some(key), Some(digest)) = (key, digest) {
                entries.insert(key.to_owned(), digest);
            }
        }
        Ok(Some((descriptor.clone(), entries)))
    }

    /// Writes the cache's index and puts it in `index.json` in place of
    /// the previous one; the caller holds the store lock.
    fn write_cache_index(
        &self,
        catalog: &mut Catalog,
        entries: &HashMap<String, Digest>,
        lock: &super::layout::StoreLock,
    ) -> Result<()> {
        let mut sorted: Vec<(&String, &Digest)> = entries.iter().collect();
        sorted.sort();
        let mut manifests = Vec::new();
        for (key, digest) in sorted {
            let Some(size) = self.layout.blob_size(digest) else {
                continue;
            };
            manifests.push(json!({
                "mediaType": MediaType::ImageManifest.to_string(),
                "digest": digest.to_string(),
                "size": size,
                "annotations": { BUILD_KEY_ANNOTATION: key },
            }));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MediaType::ImageIndex.to_string(),
            "manifests": manifests,
        });
        let bytes = canonical_json(&index)?;
        let digest = self.layout.write_blob(&bytes, lock)?;
        let mut descriptor =
            Descriptor::new(MediaType::ImageIndex, bytes.len() as u64, digest.oci());
        descriptor.set_annotations(Some(
            [(BUILD_CACHE_ANNOTATION.to_owned(), "v1".to_owned())].into(),
        ));
        catalog.foreign.retain(|d| !is_cache_index(d));
        catalog.foreign.push(descriptor);
        self.layout.sync_blobs()?;
        self.write_catalog(catalog, lock)
    }

    /// A cached step's image from its manifest.
    fn read_built(&self, manifest_digest: &Digest) -> Result<BuildImage> {
        let manifest: Value = self.read_json(manifest_digest)?;
        let bad =
            |reason: &str| ImageError::corrupt(self.layout.blob_path(manifest_digest), reason);
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .and_then(Digest::parse)
            .ok_or_else(|| bad("no config digest"))?;
        let config: Value = self.read_json(&config_digest)?;
        let diff_ids: Vec<Digest> = config
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().and_then(Digest::parse))
            .collect();
        let descriptors = manifest["layers"].as_array().cloned().unwrap_or_default();
        if descriptors.len() != diff_ids.len() {
            return Err(bad("layers and diff ids disagree"));
        }
        let mut layers = Vec::new();
        for (descriptor, diff_id) in descriptors.iter().zip(diff_ids) {
            let blob = descriptor["digest"]
                .as_str()
                .and_then(Digest::parse)
                .ok_or_else(|| bad("a layer without a digest"))?;
            let size = descriptor["size"].as_u64().unwrap_or_default();
            if self.layout.blob_size(&blob) != Some(size) {
                return Err(bad("a layer blob is missing"));
            }
            let gzip = descriptor["mediaType"]
                .as_str()
                .is_some_and(|m| m.contains("gzip"));
            layers.push(BuildLayer {
                blob,
                diff_id,
                size,
                compression: if gzip {
                    Compression::Gzip
                } else {
                    Compression::None
                },
            });
        }
        Ok(BuildImage {
            id: Some(ImageId::from_digest(&config_digest)),
            config,
            layers,
        })
    }
}

fn is_cache_index(descriptor: &Descriptor) -> bool {
    descriptor
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(BUILD_CACHE_ANNOTATION))
}

/// The OCI manifest of a built image, canonical so the same config and
/// layers always make the same manifest.
fn build_manifest(config: &[u8], layers: &[BuildLayer]) -> Result<Vec<u8>> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({
                "mediaType": l.compression.layer_media_type().to_string(),
                "digest": l.blob.to_string(),
                "size": l.size,
            })
        })
        .collect();
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest.to_string(),
        "config": {
            "mediaType": MediaType::ImageConfig.to_string(),
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": layers,
    }))
}
