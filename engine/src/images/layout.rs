//! The OCI image layout on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), and how content gets into it: streamed into an
//! ingest file while hashed, renamed into `blobs/` only once its digest is
//! known and checked, and only under the store lock, so a collection of
//! unreferenced blobs (also under the lock) never races a blob about to
//! be referenced.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{ImageIndex, MediaType};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::error::{ImageError, Result};
use super::reference::is_hex;
use crate::fsutil;

pub(crate) const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
/// The biggest JSON document (manifest, config, index) read into memory.
pub(crate) const MAX_JSON_BYTES: u64 = 16 << 20;

/// A sha256 content digest, kept as its 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digest(String);

impl Digest {
    /// `sha256:<64 hex>`; nothing else is accepted.
    pub fn parse(s: &str) -> Option<Digest> {
        Digest::from_hex(s.strip_prefix("sha256:")?)
    }

    pub fn from_hex(hex: &str) -> Option<Digest> {
        (hex.len() == 64 && is_hex(hex)).then(|| Digest(hex.to_owned()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        let bytes = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest(hex)
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    pub fn oci(&self) -> oci_spec::image::Digest {
        // A valid sha256 digest always converts.
        self.to_string()
            .parse()
            .expect("a sha256 digest is a valid OCI digest")
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// The digest of a descriptor, which must be sha256.
pub(crate) fn descriptor_digest(
    what: &str,
    descriptor: &oci_spec::image::Descriptor,
) -> Result<Digest> {
    Digest::parse(descriptor.digest().as_ref()).ok_or_else(|| {
        ImageError::bad_input(
            what,
            format!("unsupported digest {}", descriptor.digest().as_ref()),
        )
    })
}

/// How a layer blob is compressed, told by its first bytes (as Docker's
/// `DetectCompression`), whatever its media type says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub fn detect(what: &str, head: &[u8]) -> Result<Compression> {
        let unsupported = |name: &str| {
            ImageError::bad_input(
                what,
                format!("{name}-compressed layers are not supported (use tar or gzip)"),
            )
        };
        match head {
            [0x1f, 0x8b, 0x08, ..] => Ok(Compression::Gzip),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Err(unsupported("zstd")),
            [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Err(unsupported("xz")),
            [b'B', b'Z', b'h', ..] => Err(unsupported("bzip2")),
            _ => Ok(Compression::None),
        }
    }

    pub fn layer_media_type(self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
        }
    }
}

/// Reads the first bytes of `reader` to tell its compression, and gives
/// back a reader of the uncompressed stream.
pub(crate) fn decompressed<'a>(
    what: &str,
    mut reader: impl Read + 'a,
) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::bad_input(what, e)),
        }
    }
    let compression = Compression::detect(what, &head[..filled])?;
    let whole = io::Cursor::new(head[..filled].to_vec()).chain(reader);
    Ok(match compression {
        Compression::None => (compression, Box::new(whole)),
        Compression::Gzip => (
            compression,
            Box::new(flate2::read::MultiGzDecoder::new(whole)),
        ),
    })
}

/// A reader that hashes and counts what passes through it, and fails
/// (`FileTooLarge`) past its limit.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> HashingReader<R> {
    pub fn with_limit(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            exceeded: false,
        }
    }

    /// Whether the stream went past the limit: errors seen by a parser
    /// reading through this are then really this.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Reads to the end (tar's trailing blocks count for the digest) and
    /// gives the digest and size of everything read.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("more than {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

/// JSON with object keys sorted at every level, so the same content always
/// has the same digest (the serializers of `oci-spec` iterate hash maps).
pub(crate) fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let value = serde_json::to_value(value)
        .map_err(|e| ImageError::corrupt("<json>", format!("serializing: {e}")))?;
    serde_json::to_vec(&sorted(value))
        .map_err(|e| ImageError::corrupt("<json>", format!("serializing: {e}")))
}

/// Holding this means holding the store's lock (an `flock`), which every
/// change to `index.json` and `blobs/` needs.
pub(crate) struct StoreLock {
    _file: File,
}

pub(crate) struct Layout {
    dir: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
    lock: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl Layout {
    /// Opens (creating when missing) the layout at `root/images`, its lock
    /// `root/images.lock` and ingest area `root/images.ingest`, kept beside
    /// it so the layout holds nothing other tools would not expect.
    pub fn open(root: &Path) -> Result<Layout> {
        let layout = Layout {
            dir: root.join("images"),
            blobs: root.join("images/blobs/sha256"),
            ingest: root.join("images.ingest"),
            lock: root.join("images.lock"),
        };
        // The root is shared with the rest of the engine's state, which may
        // need it traversable: only what is the store's own is private.
        fs::create_dir_all(root).map_err(ImageError::io(root))?;
        for dir in [&layout.dir, &layout.blobs, &layout.ingest] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(ImageError::io(dir))?;
        }
        let lock = layout.lock()?;
        let oci_layout = layout.dir.join("oci-layout");
        if !oci_layout.exists() {
            fsutil::write_atomic(&oci_layout, OCI_LAYOUT.as_bytes())
                .map_err(ImageError::io(&oci_layout))?;
        }
        let index = layout.index_path();
        if !index.exists() {
            layout.write_index(&empty_index(), &lock)?;
        }
        layout.remove_stale_ingest()?;
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub fn blobs_dir(&self) -> &Path {
        &self.blobs
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn lock(&self) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)
            .map_err(ImageError::io(&self.lock))?;
        file.lock().map_err(ImageError::io(&self.lock))?;
        Ok(StoreLock { _file: file })
    }

    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(ImageError::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::corrupt(&path, e))
    }

    pub fn write_index(&self, index: &ImageIndex, _lock: &StoreLock) -> Result<()> {
        let path = self.index_path();
        let mut bytes = serde_json::to_vec_pretty(index)
            .map_err(|e| ImageError::corrupt(&path, format!("serializing: {e}")))?;
        bytes.push(b'\n');
        fsutil::write_atomic(&path, &bytes).map_err(ImageError::io(&path))
    }

    /// A blob's bytes, checked against its digest: the store trusts no file
    /// it did not hash on the way in, and hashes again on the way out.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::corrupt(&path, "blob is missing"),
            _ => ImageError::io(&path)(e),
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_JSON_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(&path))?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(ImageError::corrupt(&path, "document too large"));
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(ImageError::corrupt(
                &path,
                format!("content has digest {actual}"),
            ));
        }
        Ok(bytes)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::corrupt(&path, "blob is missing"),
            _ => ImageError::io(&path)(e),
        })
    }

    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// A new ingest file, named after this process so a later start can
    /// tell its own files from a dead process's leftovers.
    pub fn ingest(&self, limit: u64) -> Result<Ingest> {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self.ingest.join(format!("{}-{seq}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(ImageError::io(&path))?;
        Ok(Ingest {
            out: BufWriter::with_capacity(1 << 16, file),
            path: Some(path),
            hasher: Sha256::new(),
            size: 0,
            limit,
        })
    }

    /// Moves an ingested file into `blobs/` under its digest.
    pub fn commit(&self, mut ingested: Ingested, _lock: &StoreLock) -> Result<Digest> {
        let Some(from) = ingested.path.take() else {
            return Ok(ingested.digest.clone());
        };
        let to = self.blob_path(&ingested.digest);
        fs::rename(&from, &to).map_err(ImageError::io(&to))?;
        Ok(ingested.digest.clone())
    }

    /// Makes the renames of [`Layout::commit`] durable: one fsync of
    /// `blobs/sha256` for a batch.
    pub fn sync_blobs(&self) -> Result<()> {
        File::open(&self.blobs)
            .and_then(|d| d.sync_all())
            .map_err(ImageError::io(&self.blobs))
    }

    /// Writes a small blob (a manifest or config) and commits it.
    pub fn write_blob(&self, bytes: &[u8], lock: &StoreLock) -> Result<Digest> {
        let mut ingest = self.ingest(u64::MAX)?;
        let path = ingest.path().to_path_buf();
        ingest.write_all(bytes).map_err(ImageError::io(&path))?;
        let digest = self.commit(ingest.finish()?, lock)?;
        Ok(digest)
    }

    /// Removes ingest files left by processes that are gone.
    fn remove_stale_ingest(&self) -> Result<()> {
        let entries = fs::read_dir(&self.ingest).map_err(ImageError::io(&self.ingest))?;
        for entry in entries {
            let entry = entry.map_err(ImageError::io(&self.ingest))?;
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

pub(crate) fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(Vec::new());
    index
}

/// A blob being written: hashed as it goes, removed unless committed.
pub(crate) struct Ingest {
    out: BufWriter<File>,
    path: Option<PathBuf>,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl Ingest {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Flushes and fsyncs the file: its bytes are on disk before it is
    /// renamed into `blobs/`.
    pub fn finish(mut self) -> Result<Ingested> {
        let path = self.path.take().unwrap_or_default();
        let result = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all());
        let ingested = Ingested {
            path: Some(path.clone()),
            digest: Digest::from_hasher(std::mem::take(&mut self.hasher)),
            size: self.size,
        };
        result.map_err(ImageError::io(&path))?;
        Ok(ingested)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size + buf.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("more than {} bytes", self.limit),
            ));
        }
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A complete ingest file with its digest; removed when dropped unless
/// committed.
pub(crate) struct Ingested {
    path: Option<PathBuf>,
    pub digest: Digest,
    pub size: u64,
}

impl Ingested {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    pub fn open(&self) -> Result<File> {
        File::open(self.path()).map_err(ImageError::io(self.path()))
    }
}

impl Drop for Ingested {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_an_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join("images/oci-layout")).unwrap();
        assert_eq!(text, OCI_LAYOUT);
        let index = layout.read_index().unwrap();
        assert_eq!(index.schema_version(), 2);
        assert!(index.manifests().is_empty());
        assert!(dir.path().join("images/blobs/sha256").is_dir());
    }

    #[test]
    fn blobs_are_hashed_and_dropped_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        let mut ingest = layout.ingest(u64::MAX).unwrap();
        ingest.write_all(b"hello").unwrap();
        let ingested = ingest.finish().unwrap();
        assert_eq!(
            ingested.digest.hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let path = ingested.path().to_path_buf();
        assert!(path.exists());
        drop(ingested);
        assert!(!path.exists(), "an uncommitted ingest file is removed");

        let lock = layout.lock().unwrap();
        let digest = layout.write_blob(b"hello", &lock).unwrap();
        assert_eq!(layout.read_blob(&digest).unwrap(), b"hello");
        fs::write(layout.blob_path(&digest), b"tampered").unwrap();
        let err = layout.read_blob(&digest).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
        assert_eq!(err.status(), 500);
    }

    #[test]
    fn ingest_stops_at_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::open(dir.path()).unwrap();
        let mut ingest = layout.ingest(4).unwrap();
        let err = ingest.write_all(b"hello").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn stale_ingest_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(Layout::open(dir.path()).unwrap());
        let stale = dir.path().join("images.ingest/999999999-1");
        let ours = dir
            .path()
            .join(format!("images.ingest/{}-999", std::process::id()));
        fs::write(&stale, b"x").unwrap();
        fs::write(&ours, b"x").unwrap();
        drop(Layout::open(dir.path()).unwrap());
        assert!(!stale.exists());
        assert!(ours.exists());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut map = std::collections::HashMap::new();
        for k in ["b", "a", "c", "d", "e"] {
            map.insert(k, serde_json::json!({"z": 1, "y": [{"b": 1, "a": 2}]}));
        }
        let text = String::from_utf8(canonical_json(&map).unwrap()).unwrap();
        assert!(
            text.starts_with(r#"{"a":{"y":[{"a":2,"b":1}],"z":1},"b""#),
            "{text}"
        );
    }

    #[test]
    fn compression_is_told_by_magic() {
        assert_eq!(
            Compression::detect("x", &[0x1f, 0x8b, 8, 0]).unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            Compression::detect("x", b"ustar").unwrap(),
            Compression::None
        );
        assert_eq!(Compression::detect("x", b"").unwrap(), Compression::None);
        let err = Compression::detect("x", &[0x28, 0xb5, 0x2f, 0xfd]).unwrap_err();
        assert!(err.to_string().contains("zstd"), "{err}");
        assert_eq!(err.status(), 400);
    }
}
