//! What `docker pull` and `docker push` need from the store, and nothing
//! about HTTP: blobs written while hashed and kept only if they are exactly
//! the announced digest and size, layers checked against the config's diff
//! ids, a pulled image added whole (or not at all), and an image's files
//! opened for pushing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};

use oci_spec::image::{ImageConfiguration, ImageManifest, MediaType};

use super::error::{ImageError, Result};
use super::import::{NewImage, NewLayer};
use super::layer::{self, Layer};
use super::layout::{Digest, Ingest, Ingested, MAX_JSON_BYTES, descriptor_digest};
use super::{Catalog, ImageId, ImageStore, Reference, find, is_manifest};

/// A blob on its way in from a registry: written to an ingest file while
/// hashed, and refused past its announced size.
pub struct BlobWriter {
    ingest: Ingest,
    digest: Digest,
    size: u64,
    what: String,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ingest.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ingest.flush()
    }
}

impl BlobWriter {
    /// The blob, once its size and digest are the announced ones.
    pub fn finish(self) -> Result<VerifiedBlob> {
        let ingested = self.ingest.finish()?;
        if ingested.size != self.size {
            return Err(ImageError::bad_input(
                &self.what,
                format!("{} bytes, but {} were announced", ingested.size, self.size),
            ));
        }
        if ingested.digest != self.digest {
            return Err(ImageError::DigestMismatch {
                what: self.what,
                expected: self.digest.to_string(),
                actual: ingested.digest.to_string(),
            });
        }
        Ok(VerifiedBlob { ingested })
    }
}

/// A blob whose bytes are known to match its digest, not yet in the store
/// (its file goes when this is dropped).
pub struct VerifiedBlob {
    ingested: Ingested,
}

impl VerifiedBlob {
    pub fn digest(&self) -> String {
        self.ingested.digest.to_string()
    }
}

/// A layer of a pulled image, checked: a tar within the limits whose
/// uncompressed digest is the config's diff id.
pub struct CheckedLayer {
    new: NewLayer,
    blob: Option<VerifiedBlob>,
}

impl CheckedLayer {
    pub fn digest(&self) -> String {
        self.new.digest.to_string()
    }

    /// The same layer again (an image may list a layer twice); its blob
    /// goes in with the first.
    pub fn again(&self) -> CheckedLayer {
        CheckedLayer {
            new: self.new.clone(),
            blob: None,
        }
    }
}

/// Everything a pull fetched for one image, checked blob by blob.
pub struct PulledImage {
    /// The image manifest as the registry sent it (its digest stays).
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub config: Vec<u8>,
    pub layers: Vec<CheckedLayer>,
    pub tag: Option<Reference>,
    /// `repository@digest` it was pulled as (an index's digest for a
    /// multi-platform image): its `RepoDigests`, and what `name@digest`
    /// finds.
    pub repo_digest: String,
}

/// An image opened for pushing: its manifest and config as stored, and
/// its layer files, opened under the store lock so that an `rmi` during
/// the push cannot take them away.
pub struct PushSource {
    pub id: ImageId,
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<PushLayer>,
}

pub struct PushLayer {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub file: File,
}

impl ImageStore {
    /// Whether the store has the blob `digest` of `size` bytes.
    pub fn has_blob(&self, digest: &str, size: u64) -> bool {
        Digest::parse(digest).is_some_and(|d| self.layout.blob_size(&d) == Some(size))
    }

    /// A writer for the blob `digest` of `size` bytes (`what` names it in
    /// errors). Only sha256 digests are accepted.
    pub fn blob_writer(&self, what: &str, digest: &str, size: u64) -> Result<BlobWriter> {
        let parsed = Digest::parse(digest)
            .ok_or_else(|| ImageError::bad_input(what, format!("unsupported digest {digest}")))?;
        if size > self.limits.max_bytes {
            return Err(ImageError::LayerTooLarge {
                layer: what.to_owned(),
                reason: format!("{size} bytes announced"),
            });
        }
        Ok(BlobWriter {
            // One byte past the announced size is an error.
            ingest: self.layout.ingest(size)?,
            digest: parsed,
            size,
            what: what.to_owned(),
        })
    }

    /// Reads a small verified blob (a config) into memory.
    pub fn blob_bytes(&self, blob: &VerifiedBlob) -> Result<Vec<u8>> {
        if blob.ingested.size > MAX_JSON_BYTES {
            return Err(ImageError::bad_input(blob.digest(), "document too large"));
        }
        std::fs::read(blob.ingested.path()).map_err(ImageError::io(blob.ingested.path()))
    }

    /// Checks a layer: the freshly downloaded `blob`, or the stored blob
    /// `digest` when `blob` is `None`, must be a tar (plain or gzip)
    /// within the limits whose uncompressed sha256 is `diff_id`. A stored
    /// blob another image already uses with this diff id is not read again.
    pub fn check_layer(
        &self,
        digest: &str,
        size: u64,
        blob: Option<VerifiedBlob>,
        diff_id: &str,
    ) -> Result<CheckedLayer> {
        let what = format!("layer {digest}");
        let blob_digest = Digest::parse(digest)
            .ok_or_else(|| ImageError::bad_input(&what, "unsupported digest"))?;
        let expected = Digest::parse(diff_id)
            .ok_or_else(|| ImageError::bad_input(&what, format!("bad diff id {diff_id}")))?;
        let layer = match &blob {
            Some(blob) => layer::inspect(blob.ingested.open()?, &what, &self.limits)?,
            None => match self.known_layer(&blob_digest, &expected)? {
                Some(layer) => layer,
                None => layer::inspect(self.layout.open_blob(&blob_digest)?, &what, &self.limits)?,
            },
        };
        if layer.diff_id != expected {
            return Err(ImageError::DigestMismatch {
                what: format!("{what}: uncompressed content"),
                expected: expected.to_string(),
                actual: layer.diff_id.to_string(),
            });
        }
        Ok(CheckedLayer {
            new: NewLayer {
                digest: blob_digest,
                size,
                layer,
            },
            blob,
        })
    }

    /// A stored image that has `blob` as a layer with diff id `diff_id`.
    fn known_layer(&self, blob: &Digest, diff_id: &Digest) -> Result<Option<Layer>> {
        let catalog = self.read_catalog()?;
        for image in &catalog.images {
            for (b, d) in image.layer_digests()? {
                if &b == blob && &d == diff_id {
                    let compression = {
                        let mut file = self.layout.open_blob(blob)?;
                        let mut head = [0u8; 6];
                        let n = read_head(&mut file, &mut head)
                            .map_err(ImageError::io(self.layout.blob_path(blob)))?;
                        super::layout::Compression::detect(&blob.to_string(), &head[..n])?
                    };
                    return Ok(Some(Layer {
                        compression,
                        diff_id: d,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Adds a pulled image: the manifest must parse and name exactly the
    /// config and layers given. Returns its id and whether the tag (if
    /// any) already named it.
    pub fn add_pulled(&self, image: PulledImage) -> Result<(ImageId, bool)> {
        let what = "pulled manifest";
        let media_type = MediaType::from(image.media_type.as_str());
        if !is_manifest(&media_type) {
            return Err(ImageError::bad_input(
                what,
                format!("unsupported media type {}", image.media_type),
            ));
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&image.manifest).map_err(|e| ImageError::bad_input(what, e))?;
        let config_digest = descriptor_digest(what, manifest.config())?;
        if config_digest != Digest::of(&image.config) {
            return Err(ImageError::bad_input(
                what,
                "the config is not the one the manifest names",
            ));
        }
        let listed: Vec<Digest> = manifest
            .layers()
            .iter()
            .map(|l| descriptor_digest(what, l))
            .collect::<Result<_>>()?;
        let given: Vec<&Digest> = image.layers.iter().map(|l| &l.new.digest).collect();
        if listed.iter().collect::<Vec<_>>() != given {
            return Err(ImageError::bad_input(
                what,
                "the layers are not the ones the manifest names",
            ));
        }
        let _: ImageConfiguration = serde_json::from_slice(&image.config)
            .map_err(|e| ImageError::bad_input("pulled config", e))?;
        let id = ImageId::from_digest(&config_digest);
        let up_to_date = match &image.tag {
            Some(tag) => {
                let catalog = self.read_catalog()?;
                find(&catalog.images, &tag.to_string())
                    .is_ok_and(|(i, _)| catalog.images[i].id == id)
            }
            None => false,
        };
        let mut blobs: HashMap<Digest, Ingested> = HashMap::new();
        let mut layers = Vec::new();
        for checked in image.layers {
            if let Some(blob) = checked.blob {
                blobs
                    .entry(checked.new.digest.clone())
                    .or_insert(blob.ingested);
            }
            layers.push(checked.new);
        }
        let new = NewImage {
            config: image.config,
            manifest: Some((image.manifest, media_type)),
            layers,
            tags: image.tag.into_iter().collect(),
        };
        let added = self.add_images(vec![new], &mut blobs)?;
        self.record_repo_digest(&id, &image.repo_digest)?;
        Ok((added[0].id.clone(), up_to_date))
    }

    /// Notes that image `id` is `repository@digest` in a registry (pulled
    /// or pushed); entries of images no longer stored are dropped.
    pub fn record_repo_digest(&self, id: &ImageId, repo_digest: &str) -> Result<()> {
        let _lock = self.layout.lock()?;
        let catalog = self.catalog()?;
        let mut all = self.read_repo_digests()?;
        all.retain(|image, _| catalog.images.iter().any(|i| i.id.as_str() == image));
        let entry = all.entry(id.to_string()).or_default();
        if !entry.iter().any(|d| d == repo_digest) {
            // One digest per repository: the latest pull or push.
            let repository = repo_digest.split('@').next().unwrap_or_default();
            entry.retain(|d| d.split('@').next() != Some(repository));
            entry.push(repo_digest.to_owned());
        }
        self.write_repo_digests(&all)
    }

    /// Drops the entries of images `catalog` no longer has (after `rmi`,
    /// so a later pull of the same image starts afresh); the caller holds
    /// the store lock.
    pub(super) fn forget_repo_digests(&self, catalog: &Catalog) -> Result<()> {
        let mut all = self.read_repo_digests()?;
        let before = all.len();
        all.retain(|image, _| catalog.images.iter().any(|i| i.id.as_str() == image));
        if all.len() == before {
            return Ok(());
        }
        self.write_repo_digests(&all)
    }

    fn write_repo_digests(&self, all: &BTreeMap<String, Vec<String>>) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(all)
            .map_err(|e| ImageError::corrupt(&self.repo_digests, e))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&self.repo_digests, &bytes)
            .map_err(ImageError::io(&self.repo_digests))
    }

    /// `repo-digests.json`; the caller holds the store lock.
    pub(super) fn read_repo_digests(&self) -> Result<BTreeMap<String, Vec<String>>> {
        match std::fs::read(&self.repo_digests) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::corrupt(&self.repo_digests, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ImageError::io(&self.repo_digests)(e)),
        }
    }

    /// The image `reference` names, opened for pushing.
    pub fn push_source(&self, reference: &str) -> Result<PushSource> {
        let _lock = self.layout.lock()?;
        let catalog = self.catalog()?;
        let (index, _) = find(&catalog.images, reference)?;
        let image = &catalog.images[index];
        let config_digest = image.id.digest();
        let layers = image
            .layer_digests()?
            .into_iter()
            .map(|(digest, diff_id)| {
                let file = self.layout.open_blob(&digest)?;
                let size = file
                    .metadata()
                    .map_err(ImageError::io(self.layout.blob_path(&digest)))?
                    .len();
                Ok(PushLayer {
                    digest: digest.to_string(),
                    size,
                    diff_id: diff_id.to_string(),
                    file,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PushSource {
            id: image.id.clone(),
            manifest: self.layout.read_blob(&image.manifest_digest)?,
            media_type: image.manifest_media_type.to_string(),
            config: self.layout.read_blob(&config_digest)?,
            config_digest: config_digest.to_string(),
            layers,
        })
    }

    /// The tags of `repository` (`127.0.0.1:5000/team/app`), full form.
    pub fn tags_of(&self, repository: &str) -> Result<Vec<Reference>> {
        let catalog = self.read_catalog()?;
        let mut tags: Vec<Reference> = catalog
            .images
            .iter()
            .flat_map(|image| image.tags.iter())
            .filter(|t| t.repository() == repository && t.tag().is_some())
            .cloned()
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// Repositories on registry `domain` whose tagged images have the
    /// layer blob `digest`: where a push may mount it from.
    pub fn repositories_with_blob(&self, domain: &str, digest: &str) -> Result<Vec<String>> {
        let Some(digest) = Digest::parse(digest) else {
            return Ok(Vec::new());
        };
        let catalog = self.read_catalog()?;
        let mut found = Vec::new();
        for image in &catalog.images {
            let has = image.layer_digests()?.iter().any(|(b, _)| b == &digest);
            if !has {
                continue;
            }
            for tag in &image.tags {
                let repository = tag.repository();
                if tag.domain() == domain && !found.contains(&repository) {
                    found.push(repository);
                }
            }
        }
        Ok(found)
    }
}

fn read_head(file: &mut File, head: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
