//! `docker rmi` and `docker image prune` with Docker's rules, and the
//! collection of blobs and unpacked layers no image needs any more.
//!
//! A container runs from the unpacked layer directories themselves, so an
//! image a container uses is never deleted, force or not: `in_use` should
//! answer true for an image any container (running or stopped) was created
//! from. With force, removing such an image's last tag only untags it, as
//! Docker does for an image a running container uses.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::error::{ImageError, Result};
use super::layer::lock_layers;
use super::layout::{Digest, StoreLock, descriptor_digest};
use super::{Catalog, ImageId, ImageStore, Matched, find};

/// One line of `docker rmi`'s answer: `{"Untagged": "busybox:test"}` or
/// `{"Deleted": "sha256:..."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Removed {
    Untagged(String),
    Deleted(ImageId),
}

impl ImageStore {
    /// `docker rmi [-f] reference`.
    ///
    /// By tag: the tag goes; the image goes with its last tag unless a
    /// container uses it (then the last tag needs `force`, and the image
    /// stays, untagged). By id: every tag goes and the image with them;
    /// several tags need `force`; an image in use is never deleted.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &dyn Fn(&ImageId) -> bool,
    ) -> Result<Vec<Removed>> {
        let lock = self.layout.lock()?;
        let mut catalog = self.catalog()?;
        let (index, matched) = find(&catalog.images, reference)?;
        let id = catalog.images[index].id.clone();
        let used = in_use(&id);
        let conflict = |reason: String| ImageError::Conflict {
            reference: reference.to_owned(),
            reason,
        };
        let mut removed = Vec::new();
        match matched {
            Matched::Tag(tag) => {
                let image = &mut catalog.images[index];
                if used && !force && image.tags.len() == 1 {
                    return Err(conflict(format!(
                        "unable to remove repository reference {reference:?} (must force) - a container is using its referenced image {}",
                        id.short()
                    )));
                }
                image.tags.retain(|t| t != &tag);
                removed.push(Removed::Untagged(tag.familiar()));
                if !image.tags.is_empty() || used {
                    self.write_catalog(&catalog, &lock)?;
                    return Ok(removed);
                }
            }
            Matched::Id => {
                let image = &catalog.images[index];
                if used {
                    return Err(conflict(format!(
                        "unable to delete {} (cannot be forced) - image is being used by a container",
                        id.short()
                    )));
                }
                if image.tags.len() > 1 && !force {
                    return Err(conflict(format!(
                        "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        id.short()
                    )));
                }
                removed.extend(image.tags.iter().map(|t| Removed::Untagged(t.familiar())));
            }
        }
        catalog.images.retain(|image| image.id != id);
        removed.push(Removed::Deleted(id));
        self.write_catalog(&catalog, &lock)?;
        self.collect_garbage(&catalog, &lock)?;
        Ok(removed)
    }

    /// `docker image prune [-a]`: removes the images no container uses,
    /// only the untagged ones when `dangling_only`, and frees what no
    /// remaining image needs. Returns the removed ids and the bytes freed.
    pub fn prune(
        &self,
        dangling_only: bool,
        in_use: &dyn Fn(&ImageId) -> bool,
    ) -> Result<(Vec<ImageId>, u64)> {
        let lock = self.layout.lock()?;
        let mut catalog = self.catalog()?;
        let mut removed = Vec::new();
        catalog.images.retain(|image| {
            let goes = (!dangling_only || image.tags.is_empty()) && !in_use(&image.id);
            if goes && !removed.contains(&image.id) {
                removed.push(image.id.clone());
            }
            !goes
        });
        if !removed.is_empty() {
            self.write_catalog(&catalog, &lock)?;
        }
        let freed = self.collect_garbage(&catalog, &lock)?;
        Ok((removed, freed))
    }

    /// Deletes the blobs and unpacked layers that no image of `catalog`
    /// (the index as just written) needs, and leftovers of interrupted
    /// unpacking. Returns the bytes freed.
    pub(super) fn collect_garbage(&self, catalog: &Catalog, _lock: &StoreLock) -> Result<u64> {
        self.forget_repo_digests(catalog)?;
        let mut blobs: HashSet<Digest> = HashSet::new();
        let mut layers: HashSet<String> = HashSet::new();
        for image in &catalog.images {
            blobs.insert(image.manifest_digest.clone());
            blobs.insert(image.id.digest());
            for (blob, diff_id) in image.layer_digests()? {
                blobs.insert(blob);
                layers.insert(diff_id.hex().to_owned());
            }
        }
        for descriptor in &catalog.foreign {
            if let Ok(digest) = descriptor_digest("index.json", descriptor) {
                self.mark_reachable(&digest, descriptor.media_type().as_ref(), &mut blobs, 0);
            }
        }
        layers.extend(self.build_cache_diff_ids(catalog));
        let mut freed = 0;
        let dir = self.layout.blobs_dir();
        for entry in fs::read_dir(dir).map_err(ImageError::io(dir))? {
            let entry = entry.map_err(ImageError::io(dir))?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if !blobs.contains(&digest) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or_default();
                fs::remove_file(entry.path()).map_err(ImageError::io(entry.path()))?;
            }
        }
        for map_dir in fs::read_dir(&self.layers).map_err(ImageError::io(&self.layers))? {
            let map_dir = map_dir.map_err(ImageError::io(&self.layers))?.path();
            if !map_dir.is_dir() {
                continue;
            }
            // Unpacking holds this lock: a `.tmp-` seen under it is a leftover.
            let _unpacking = lock_layers(&map_dir)?;
            for entry in fs::read_dir(&map_dir).map_err(ImageError::io(&map_dir))? {
                let entry = entry.map_err(ImageError::io(&map_dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let unused = Digest::from_hex(&name).is_some() && !layers.contains(&name);
                if unused || name.starts_with(".tmp-") {
                    freed += disk_usage(&entry.path());
                    fs::remove_dir_all(entry.path()).map_err(ImageError::io(entry.path()))?;
                }
            }
        }
        Ok(freed)
    }
}

impl ImageStore {
    /// Marks `digest` and, for an index or manifest another tool put in the
    /// layout (a multi-platform index, say), everything it references.
    fn mark_reachable(
        &self,
        digest: &Digest,
        media_type: &str,
        blobs: &mut HashSet<Digest>,
        depth: usize,
    ) {
        if !blobs.insert(digest.clone())
            || depth > 8
            || !(media_type.contains("manifest") || media_type.contains("index"))
        {
            return;
        }
        let Ok(bytes) = self.layout.read_blob(digest) else {
            return;
        };
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return;
        };
        let config = document.get("config").into_iter();
        let listed = ["manifests", "layers"]
            .iter()
            .filter_map(|key| document.get(key).and_then(|v| v.as_array()))
            .flatten();
        for child in config.chain(listed) {
            let child_type = child["mediaType"].as_str().unwrap_or_default();
            if let Some(child_digest) = child["digest"].as_str().and_then(Digest::parse) {
                self.mark_reachable(&child_digest, child_type, blobs, depth + 1);
            }
        }
    }
}

/// Bytes of the regular files below `path`, never following a link.
fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}
