//! `docker load` and `docker save`.
//!
//! `load` reads a docker-archive (`manifest.json` with `Config`, `RepoTags`
//! and `Layers`, as `docker save` wrote before 25, layers as tar or
//! tar.gz), an OCI archive (`oci-layout`, `index.json`, `blobs/`, as skopeo's
//! `oci-archive:` writes) or Docker ≥ 25's archive that is both (then
//! `manifest.json` is read). Every member is streamed to an ingest file
//! while hashed; everything is verified (blob names, sizes, diff ids)
//! before anything is added, so a bad archive stores nothing.
//!
//! `save` writes Docker ≥ 25's combined form: an OCI layout and a
//! `manifest.json` (plus `repositories`) pointing at the same
//! `blobs/sha256/...` files. Layers are written uncompressed, because
//! dockerd 20.10's `load` wants tars: a gzip layer is decompressed (and
//! checked against its diff id), and the image gets a manifest naming the
//! uncompressed blobs, since the manifest must describe the blobs present.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, Write};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::error::{ImageError, Result};
use super::import::{NewImage, NewLayer, manifest_json};
use super::layer::{self, Layer, clean_path};
use super::layout::{Compression, Digest, Ingested, MAX_JSON_BYTES, OCI_LAYOUT, descriptor_digest};
use super::reference::{self, Reference};
use super::{
    IMAGE_NAME_ANNOTATION, ImageId, ImageStore, LoadedImage, Matched, REF_NAME_ANNOTATION,
    StoredImage, find, host_architecture, is_manifest,
};

/// A member of the archive being loaded.
enum Member {
    File(Ingested),
    /// A symlink or hardlink, as the archive path it points to: legacy
    /// `docker save` links identical `layer.tar` files.
    Link(String),
}

/// The archive being loaded, every file already on disk and hashed.
struct Archive {
    members: HashMap<String, Member>,
    /// Layers already checked, by member path.
    layers: HashMap<String, Layer>,
}

impl Archive {
    fn read(store: &ImageStore, stream: impl Read) -> Result<Archive> {
        let bad = |e: io::Error| ImageError::bad_input("archive", e);
        let mut tar = tar::Archive::new(stream);
        let mut members = HashMap::new();
        for entry in tar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let path = member_path(&raw)
                .map_err(|r| ImageError::bad_input(format!("archive: {shown}"), r))?;
            let kind = entry.header().entry_type();
            use tar::EntryType as T;
            let member = match kind {
                T::Directory | T::XGlobalHeader => continue,
                T::Regular | T::Continuous => {
                    let ingested = store.ingest_stream(&mut entry, &format!("archive: {path}"))?;
                    check_blob_name(&path, &ingested)?;
                    Member::File(ingested)
                }
                T::Symlink | T::Link => {
                    let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                    let target = if kind == T::Symlink && !target.starts_with(b"/") {
                        // Relative to the link's own directory.
                        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                        [dir.as_bytes(), b"/", &target].concat()
                    } else {
                        target
                    };
                    let target = link_target(&target).map_err(|r| {
                        ImageError::bad_input(
                            format!("archive: {shown}"),
                            format!("link target: {r}"),
                        )
                    })?;
                    Member::Link(target)
                }
                other => {
                    return Err(ImageError::bad_input(
                        format!("archive: {shown}"),
                        format!("unexpected entry type {other:?}"),
                    ));
                }
            };
            members.insert(path, member);
        }
        Ok(Archive {
            members,
            layers: HashMap::new(),
        })
    }

    fn has(&self, path: &str) -> bool {
        self.members.contains_key(path)
    }

    /// The file at `path`, through links.
    fn file<'a>(&'a self, path: &'a str) -> Result<(&'a str, &'a Ingested)> {
        let mut path = path;
        for _ in 0..16 {
            match self.members.get(path) {
                Some(Member::File(ingested)) => return Ok((path, ingested)),
                Some(Member::Link(target)) => path = target,
                None => {
                    return Err(ImageError::bad_input(
                        format!("archive: {path}"),
                        "missing from the archive",
                    ));
                }
            }
        }
        Err(ImageError::bad_input(
            format!("archive: {path}"),
            "too many links",
        ))
    }

    fn bytes(&self, path: &str) -> Result<Vec<u8>> {
        let (path, ingested) = self.file(path)?;
        if ingested.size > MAX_JSON_BYTES {
            return Err(ImageError::bad_input(
                format!("archive: {path}"),
                "too large",
            ));
        }
        let mut bytes = Vec::new();
        ingested
            .open()?
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(ingested.path()))?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        serde_json::from_slice(&self.bytes(path)?)
            .map_err(|e| ImageError::bad_input(format!("archive: {path}"), e))
    }

    /// The blob `digest` of the OCI part, checked against its descriptor's
    /// size when one is given.
    fn blob_path(&self, digest: &Digest, size: Option<u64>) -> Result<String> {
        let path = format!("blobs/sha256/{}", digest.hex());
        let (_, ingested) = self.file(&path)?;
        if let Some(size) = size
            && size != ingested.size
        {
            return Err(ImageError::bad_input(
                format!("archive: {path}"),
                format!("{} bytes, but its descriptor says {size}", ingested.size),
            ));
        }
        Ok(path)
    }

    /// Checks the layer at `path` (once per file) against its diff id.
    fn layer(&mut self, store: &ImageStore, path: &str, diff_id: &str) -> Result<NewLayer> {
        let (resolved, ingested) = self.file(path)?;
        let resolved = resolved.to_owned();
        let (digest, size) = (ingested.digest.clone(), ingested.size);
        let layer = match self.layers.get(&resolved) {
            Some(layer) => layer.clone(),
            None => {
                let layer = layer::inspect(
                    ingested.open()?,
                    &format!("archive: {resolved}"),
                    &store.limits,
                )?;
                self.layers.insert(resolved.clone(), layer.clone());
                layer
            }
        };
        if layer.diff_id.to_string() != diff_id {
            return Err(ImageError::DigestMismatch {
                what: format!("archive: layer {resolved}"),
                expected: diff_id.to_owned(),
                actual: layer.diff_id.to_string(),
            });
        }
        Ok(NewLayer {
            digest,
            size,
            layer,
        })
    }

    /// Hands over the files that are the layers of `images`, by digest.
    fn into_blobs(self, images: &[NewImage]) -> HashMap<Digest, Ingested> {
        let wanted: HashSet<&Digest> = images
            .iter()
            .flat_map(|image| image.layers.iter().map(|l| &l.digest))
            .collect();
        let mut blobs = HashMap::new();
        for member in self.members.into_values() {
            if let Member::File(ingested) = member
                && wanted.contains(&ingested.digest)
            {
                blobs.entry(ingested.digest.clone()).or_insert(ingested);
            }
        }
        blobs
    }
}

/// An archive member's path, normalized: `./` and leading `/` dropped,
/// `..` refused.
fn member_path(raw: &[u8]) -> std::result::Result<String, &'static str> {
    let components = clean_path(raw)?;
    let joined = components.join(&b'/');
    String::from_utf8(joined).map_err(|_| "the path is not UTF-8")
}

/// A link's target inside the archive: `..` is resolved by name (the
/// archive is a namespace of names, nothing here is on disk yet), and may
/// not climb above the archive's root.
fn link_target(raw: &[u8]) -> std::result::Result<String, &'static str> {
    let mut components: Vec<&[u8]> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                components
                    .pop()
                    .ok_or("the target is outside the archive")?;
            }
            name => components.push(name),
        }
    }
    String::from_utf8(components.join(&b'/')).map_err(|_| "the path is not UTF-8")
}

/// Files named after their digest (`blobs/sha256/<hex>`, the legacy
/// `<hex>.json` config) must hash to it.
fn check_blob_name(path: &str, ingested: &Ingested) -> Result<()> {
    let named = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json").filter(|p| !p.contains('/')))
        .and_then(Digest::from_hex);
    match named {
        Some(expected) if expected != ingested.digest => Err(ImageError::DigestMismatch {
            what: format!("archive: {path}"),
            expected: expected.to_string(),
            actual: ingested.digest.to_string(),
        }),
        _ => Ok(()),
    }
}

/// An entry of a docker-archive's `manifest.json`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl ImageStore {
    /// `docker load`: the images of a docker-archive or OCI archive (the
    /// whole archive may be gzip-compressed), verified, then added with
    /// their tags. An image already stored only gets the tags.
    pub fn load(&self, archive: impl Read) -> Result<Vec<LoadedImage>> {
        let (_, stream) =
            super::layout::decompressed("archive", BufReader::with_capacity(1 << 16, archive))?;
        let mut archive = Archive::read(self, stream)?;
        let images = if archive.has("manifest.json") {
            self.docker_archive(&mut archive)?
        } else if archive.has("index.json") {
            self.oci_archive(&mut archive)?
        } else {
            return Err(ImageError::bad_input(
                "archive",
                "neither manifest.json nor index.json: not a docker-archive or an OCI archive",
            ));
        };
        if images.is_empty() {
            return Err(ImageError::bad_input("archive", "it holds no image"));
        }
        let mut blobs = archive.into_blobs(&images);
        self.add_images(images, &mut blobs)
    }

    fn docker_archive(&self, archive: &mut Archive) -> Result<Vec<NewImage>> {
        let items: Vec<ManifestItem> = archive.json("manifest.json")?;
        let mut images = Vec::new();
        for item in items {
            let config = archive.bytes(&item.config)?;
            let parsed: ImageConfiguration = serde_json::from_slice(&config)
                .map_err(|e| ImageError::bad_input(format!("archive: {}", item.config), e))?;
            let diff_ids = parsed.rootfs().diff_ids();
            if diff_ids.len() != item.layers.len() {
                return Err(ImageError::bad_input(
                    format!("archive: {}", item.config),
                    format!(
                        "the config has {} layers, manifest.json lists {}",
                        diff_ids.len(),
                        item.layers.len()
                    ),
                ));
            }
            let layers = item
                .layers
                .iter()
                .zip(diff_ids)
                .map(|(path, diff_id)| archive.layer(self, path, diff_id))
                .collect::<Result<Vec<_>>>()?;
            let tags = item
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|tag| Reference::parse_tag(tag).map_err(ImageError::from))
                .collect::<Result<Vec<_>>>()?;
            images.push(NewImage {
                config,
                manifest: None,
                layers,
                tags,
            });
        }
        Ok(images)
    }

    fn oci_archive(&self, archive: &mut Archive) -> Result<Vec<NewImage>> {
        if archive.has("oci-layout") {
            let layout: serde_json::Value = archive.json("oci-layout")?;
            if layout["imageLayoutVersion"] != "1.0.0" {
                return Err(ImageError::bad_input(
                    "archive: oci-layout",
                    "unsupported imageLayoutVersion (1.0.0 is)",
                ));
            }
        }
        let index: ImageIndex = archive.json("index.json")?;
        // Descriptors of the same manifest (one per tag) make one image.
        let mut found: Vec<(Digest, Vec<u8>, MediaType, Vec<Reference>)> = Vec::new();
        for descriptor in index.manifests() {
            let tags = oci_tags(descriptor)?;
            let (digest, bytes, media_type) = manifest_of(archive, descriptor, 0)?;
            match found.iter_mut().find(|(d, ..)| d == &digest) {
                Some((.., known)) => known.extend(tags),
                None => found.push((digest, bytes, media_type, tags)),
            }
        }
        let mut images = Vec::new();
        for (digest, bytes, media_type, tags) in found {
            let what = format!("archive: manifest {digest}");
            let manifest: ImageManifest =
                serde_json::from_slice(&bytes).map_err(|e| ImageError::bad_input(&what, e))?;
            let config_digest = descriptor_digest(&what, manifest.config())?;
            let config_path = archive.blob_path(&config_digest, Some(manifest.config().size()))?;
            let config = archive.bytes(&config_path)?;
            let parsed: ImageConfiguration = serde_json::from_slice(&config)
                .map_err(|e| ImageError::bad_input(format!("archive: {config_path}"), e))?;
            let diff_ids = parsed.rootfs().diff_ids();
            if diff_ids.len() != manifest.layers().len() {
                return Err(ImageError::bad_input(
                    what,
                    "the manifest and the config disagree on the number of layers",
                ));
            }
            let mut layers = Vec::new();
            for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
                let layer_digest = descriptor_digest(&what, descriptor)?;
                let path = archive.blob_path(&layer_digest, Some(descriptor.size()))?;
                layers.push(archive.layer(self, &path, diff_id)?);
            }
            images.push(NewImage {
                config,
                manifest: Some((bytes, media_type)),
                layers,
                tags,
            });
        }
        Ok(images)
    }
}

/// The tags an OCI index descriptor names: containerd's full-name
/// annotation, else `org.opencontainers.image.ref.name` when it is a full
/// reference. A bare tag (`latest`, as Docker ≥ 25 writes beside the full
/// name) names no repository, so alone it leaves the image untagged.
fn oci_tags(descriptor: &Descriptor) -> Result<Vec<Reference>> {
    let Some(annotations) = descriptor.annotations() else {
        return Ok(Vec::new());
    };
    let name = annotations.get(IMAGE_NAME_ANNOTATION).or_else(|| {
        annotations
            .get(REF_NAME_ANNOTATION)
            .filter(|name| name.contains(['/', ':', '@']))
    });
    match name {
        Some(name) => Ok(vec![Reference::parse_tag(name)?]),
        None => Ok(Vec::new()),
    }
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// The image manifest a descriptor leads to: itself, or, through an
/// index, the one for this host's platform.
fn manifest_of(
    archive: &Archive,
    descriptor: &Descriptor,
    depth: usize,
) -> Result<(Digest, Vec<u8>, MediaType)> {
    let digest = descriptor_digest("archive: index.json", descriptor)?;
    let path = archive.blob_path(&digest, Some(descriptor.size()))?;
    let bytes = archive.bytes(&path)?;
    let media_type = descriptor.media_type();
    if is_manifest(media_type) {
        return Ok((digest, bytes, media_type.clone()));
    }
    if !is_index(media_type) || depth > 4 {
        return Err(ImageError::bad_input(
            format!("archive: {path}"),
            format!("unsupported media type {media_type}"),
        ));
    }
    let index: ImageIndex = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::bad_input(format!("archive: {path}"), e))?;
    let ours = |d: &&Descriptor| {
        d.platform().as_ref().is_some_and(|p| {
            p.os().to_string() == "linux" && p.architecture().to_string() == host_architecture()
        })
    };
    let chosen = index
        .manifests()
        .iter()
        .find(ours)
        .or(match index.manifests().as_slice() {
            [only] if only.platform().is_none() => Some(only),
            _ => None,
        });
    match chosen {
        Some(chosen) => manifest_of(archive, chosen, depth + 1),
        None => Err(ImageError::bad_input(
            format!("archive: {path}"),
            format!("no image for linux/{} in the index", host_architecture()),
        )),
    }
}

/// A layer as it goes into a saved archive: always a tar.
struct SavedLayer {
    digest: Digest,
    size: u64,
    source: LayerSource,
}

enum LayerSource {
    Stored(File),
    /// Decompressed from a gzip blob into an ingest file.
    Decompressed(Ingested),
}

/// One image of a saved archive.
struct SavedImage {
    id: ImageId,
    tags: Vec<Reference>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    manifest_media_type: MediaType,
    layers: Vec<SavedLayer>,
    diff_ids: Vec<Digest>,
    architecture: String,
    os: String,
}

impl ImageStore {
    /// `docker save`: writes the images `references` name, as one tar
    /// holding both an OCI layout and a docker-archive `manifest.json`.
    /// A repository name without a tag saves all its tags, as Docker does.
    pub fn save(&self, references: &[&str], out: impl Write) -> Result<()> {
        if references.is_empty() {
            return Err(ImageError::bad_input("save", "no image named"));
        }
        // Resolve and open every blob under the lock: an `rmi` racing the
        // (possibly slow) write cannot take the files away, and the lock
        // is not held while the client reads.
        let mut images = {
            let _lock = self.layout.lock()?;
            let catalog = self.catalog()?;
            choose(&catalog.images, references)?
                .iter()
                .map(|(index, tags)| self.open_for_save(&catalog.images[*index], tags))
                .collect::<Result<Vec<_>>>()?
        };
        for image in &mut images {
            self.decompress_layers(image)?;
        }
        write_archive(&images, out).map_err(ImageError::io("save: the output stream"))
    }

    fn open_for_save(&self, image: &StoredImage, tags: &[Reference]) -> Result<SavedImage> {
        let layers = image
            .layer_digests()?
            .into_iter()
            .map(|(digest, _)| {
                let file = self.layout.open_blob(&digest)?;
                let size = file
                    .metadata()
                    .map_err(ImageError::io(self.layout.blob_path(&digest)))?
                    .len();
                Ok(SavedLayer {
                    size,
                    digest,
                    source: LayerSource::Stored(file),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let config_digest = image.id.digest();
        Ok(SavedImage {
            id: image.id.clone(),
            tags: tags.to_vec(),
            config: self.layout.read_blob(&config_digest)?,
            manifest: self.layout.read_blob(&image.manifest_digest)?,
            manifest_media_type: image.manifest_media_type.clone(),
            diff_ids: image.layer_digests()?.into_iter().map(|(_, d)| d).collect(),
            layers,
            architecture: image.config.architecture().to_string(),
            os: image.config.os().to_string(),
        })
    }

    /// Makes every layer of `image` a plain tar, and its manifest name
    /// those tars when any had to be decompressed.
    fn decompress_layers(&self, image: &mut SavedImage) -> Result<()> {
        let mut changed = false;
        for (layer, diff_id) in image.layers.iter_mut().zip(&image.diff_ids) {
            let LayerSource::Stored(file) = &mut layer.source else {
                continue;
            };
            let mut head = [0u8; 6];
            let n = read_head(file, &mut head)
                .map_err(ImageError::io(format!("layer {}", layer.digest)))?;
            if Compression::detect(&layer.digest.to_string(), &head[..n])? == Compression::None {
                continue;
            }
            let what = format!("layer {}", layer.digest);
            let mut ingest = self.layout.ingest(self.limits.max_bytes)?;
            let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::new(&*file));
            io::copy(&mut decoder, &mut ingest).map_err(|e| ImageError::corrupt(&what, e))?;
            let ingested = ingest.finish()?;
            if &ingested.digest != diff_id {
                return Err(ImageError::corrupt(
                    &what,
                    format!(
                        "decompresses to {}, not its diff id {diff_id}",
                        ingested.digest
                    ),
                ));
            }
            layer.digest = ingested.digest.clone();
            layer.size = ingested.size;
            layer.source = LayerSource::Decompressed(ingested);
            changed = true;
        }
        if changed {
            let new_layers: Vec<NewLayer> = image
                .layers
                .iter()
                .zip(&image.diff_ids)
                .map(|(l, diff_id)| NewLayer {
                    digest: l.digest.clone(),
                    size: l.size,
                    layer: Layer {
                        compression: Compression::None,
                        diff_id: diff_id.clone(),
                    },
                })
                .collect();
            image.manifest =
                manifest_json(&image.id.digest(), image.config.len() as u64, &new_layers)?;
            image.manifest_media_type = MediaType::ImageManifest;
        }
        Ok(())
    }
}

fn read_head(file: &mut File, head: &mut [u8]) -> io::Result<usize> {
    file.rewind()?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    file.rewind()?;
    Ok(filled)
}

/// Which images `references` name, each with the tags to save it under.
fn choose(images: &[StoredImage], references: &[&str]) -> Result<Vec<(usize, Vec<Reference>)>> {
    let mut chosen: Vec<(usize, Vec<Reference>)> = Vec::new();
    let mut add = |index: usize, tag: Option<Reference>| {
        let entry = match chosen.iter().position(|(i, _)| *i == index) {
            Some(position) => &mut chosen[position],
            None => {
                chosen.push((index, Vec::new()));
                chosen.last_mut().expect("just pushed")
            }
        };
        if let Some(tag) = tag
            && !entry.1.contains(&tag)
        {
            entry.1.push(tag);
        }
    };
    for input in references {
        if ImageId::parse(input).is_none()
            && let Ok(parsed) = reference::parse(input)
            && parsed.name_only
        {
            let repository = parsed.reference.repository();
            let mut any = false;
            for (index, image) in images.iter().enumerate() {
                for tag in image.tags.iter().filter(|t| t.repository() == repository) {
                    add(index, Some(tag.clone()));
                    any = true;
                }
            }
            if any {
                continue;
            }
        }
        match find(images, input)? {
            (index, Matched::Tag(tag)) => add(index, Some(tag)),
            (index, Matched::Id) => add(index, None),
        }
    }
    Ok(chosen)
}

fn header(size: u64, directory: bool) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(if directory {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_size(size);
    header.set_mode(if directory { 0o755 } else { 0o644 });
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn write_archive(images: &[SavedImage], out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let add = |tar: &mut tar::Builder<_>, path: &str, data: &[u8]| {
        tar.append_data(&mut header(data.len() as u64, false), path, data)
    };
    add(&mut tar, "oci-layout", OCI_LAYOUT.as_bytes())?;
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(0, true), dir, io::empty())?;
    }
    let mut written: HashSet<Digest> = HashSet::new();
    let mut index_manifests = Vec::new();
    let mut manifest_items = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
        let config_digest = image.id.digest();
        if written.insert(config_digest.clone()) {
            add(&mut tar, &blob_path(&config_digest), &image.config)?;
        }
        for layer in &image.layers {
            if !written.insert(layer.digest.clone()) {
                continue;
            }
            let mut file = match &layer.source {
                LayerSource::Stored(file) => file.try_clone()?,
                LayerSource::Decompressed(ingested) => File::open(ingested.path())?,
            };
            file.rewind()?;
            tar.append_data(
                &mut header(layer.size, false),
                blob_path(&layer.digest),
                file,
            )?;
        }
        let manifest_digest = Digest::of(&image.manifest);
        if written.insert(manifest_digest.clone()) {
            add(&mut tar, &blob_path(&manifest_digest), &image.manifest)?;
        }

        // The OCI index: Docker ≥ 25's annotations, a descriptor per tag.
        let mut descriptor = Descriptor::new(
            image.manifest_media_type.clone(),
            image.manifest.len() as u64,
            manifest_digest.oci(),
        );
        descriptor.set_platform(
            oci_spec::image::PlatformBuilder::default()
                .architecture(image.architecture.as_str())
                .os(image.os.as_str())
                .build()
                .ok(),
        );
        if image.tags.is_empty() {
            index_manifests.push(descriptor.clone());
        }
        for tag in &image.tags {
            let mut tagged = descriptor.clone();
            tagged.set_annotations(Some(HashMap::from([
                (IMAGE_NAME_ANNOTATION.to_owned(), tag.to_string()),
                (
                    REF_NAME_ANNOTATION.to_owned(),
                    tag.tag().unwrap_or_default().to_owned(),
                ),
            ])));
            index_manifests.push(tagged);
            if let Some(top) = image.diff_ids.last() {
                repositories.entry(tag.familiar_name()).or_default().insert(
                    tag.tag().unwrap_or_default().to_owned(),
                    top.hex().to_owned(),
                );
            }
        }
        manifest_items.push(ManifestItem {
            config: blob_path(&config_digest),
            repo_tags: (!image.tags.is_empty())
                .then(|| image.tags.iter().map(Reference::familiar).collect()),
            layers: image.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        });
    }
    let mut index = super::layout::empty_index();
    index.set_manifests(index_manifests);
    add(&mut tar, "index.json", &to_json(&index)?)?;
    let mut manifest_json = to_json(&manifest_items)?;
    manifest_json.push(b'\n');
    add(&mut tar, "manifest.json", &manifest_json)?;
    if !repositories.is_empty() {
        let mut repositories_json = to_json(&repositories)?;
        repositories_json.push(b'\n');
        add(&mut tar, "repositories", &repositories_json)?;
    }
    tar.into_inner()?.flush()
}

fn to_json(value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io::Error::other)
}
