//! `docker import` (`POST /images/create?fromSrc=-`): a root filesystem
//! tar, plain or gzip, becomes a one-layer image whose config Docker's
//! `changes` (`CMD`, `ENV`, ...) shape; and how any new image (imported or
//! loaded) is added to the store.

use std::collections::HashMap;
use std::io::{self, Read};

use oci_spec::image::{
    Arch, Config, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifestBuilder, MediaType,
    Os, RootFsBuilder,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::{ImageError, Result};
use super::layer::{self, Layer};
use super::layout::{Digest, Ingested, canonical_json};
use super::{
    ImageConfig, ImageId, ImageStore, LoadedImage, Reference, StoredImage, host_architecture,
};

/// What `docker import` takes besides the tar: its `changes` (applied with
/// [`ImportConfig::apply_change`] or set directly), the history comment
/// (`message`, default `Imported from -`) and the creation time (default
/// now).
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    pub config: ImageConfig,
    pub message: Option<String>,
    pub created: Option<OffsetDateTime>,
}

impl ImportConfig {
    /// Applies one Dockerfile instruction of `docker import --change`:
    /// `CMD`, `ENTRYPOINT`, `ENV`, `LABEL`, `EXPOSE`, `VOLUME`, `WORKDIR`,
    /// `USER` or `STOPSIGNAL`.
    pub fn apply_change(&mut self, change: &str) -> Result<()> {
        let change = change.trim();
        let (instruction, rest) = change
            .split_once(char::is_whitespace)
            .map_or((change, ""), |(i, r)| (i, r.trim()));
        let bad = |reason: &str| ImageError::bad_input(format!("changes: {change:?}"), reason);
        let config = &mut self.config;
        match instruction.to_ascii_uppercase().as_str() {
            "CMD" => config.cmd = Some(command(rest).ok_or_else(|| bad("CMD needs a command"))?),
            "ENTRYPOINT" => {
                config.entrypoint =
                    Some(command(rest).ok_or_else(|| bad("ENTRYPOINT needs a command"))?)
            }
            "ENV" => {
                for (key, value) in pairs(rest).map_err(bad)? {
                    config
                        .env
                        .retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                    config.env.push(format!("{key}={value}"));
                }
            }
            "LABEL" => {
                for (key, value) in pairs(rest).map_err(bad)? {
                    config.labels.insert(key, value);
                }
            }
            "EXPOSE" => {
                for port in words(rest).map_err(bad)? {
                    for port in exposed_ports(&port).map_err(bad)? {
                        if !config.exposed_ports.contains(&port) {
                            config.exposed_ports.push(port);
                        }
                    }
                }
            }
            "VOLUME" => {
                let volumes = match serde_json::from_str::<Vec<String>>(rest) {
                    Ok(list) => list,
                    Err(_) => words(rest).map_err(bad)?,
                };
                if volumes.is_empty() || volumes.iter().any(|v| v.is_empty()) {
                    return Err(bad("VOLUME needs a path"));
                }
                for volume in volumes {
                    if !config.volumes.contains(&volume) {
                        config.volumes.push(volume);
                    }
                }
            }
            "WORKDIR" => {
                if rest.is_empty() {
                    return Err(bad("WORKDIR needs a path"));
                }
                // Relative to `/`: an imported image has no earlier WORKDIR.
                config.working_dir = Some(if rest.starts_with('/') {
                    rest.to_owned()
                } else {
                    format!("/{rest}")
                });
            }
            "USER" => {
                if rest.is_empty() || rest.contains(char::is_whitespace) {
                    return Err(bad("USER needs one user[:group]"));
                }
                config.user = Some(rest.to_owned());
            }
            "STOPSIGNAL" => {
                let valid = rest.parse::<u8>().is_ok()
                    || (rest.starts_with("SIG")
                        && rest.len() > 3
                        && rest[3..].bytes().all(|b| {
                            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'+' || b == b'-'
                        }));
                if !valid {
                    return Err(bad("STOPSIGNAL needs a signal name or number"));
                }
                config.stop_signal = Some(rest.to_owned());
            }
            "" => return Err(bad("an empty change")),
            other => {
                return Err(bad(&format!(
                    "{other} is not a change import supports (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)"
                )));
            }
        }
        Ok(())
    }
}

/// The exec form (`["sh", "-c", "x"]`) or the shell form, which runs
/// under `/bin/sh -c` as in a Dockerfile.
fn command(rest: &str) -> Option<Vec<String>> {
    if rest.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(rest)
    {
        return Some(list);
    }
    (!rest.is_empty()).then(|| vec!["/bin/sh".to_owned(), "-c".to_owned(), rest.to_owned()])
}

/// Splits on whitespace, honouring double and single quotes and `\`
/// escapes, as the Dockerfile parser does for `ENV` and `LABEL`.
fn words(text: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                word.push(chars.next().ok_or("a trailing backslash")?);
                in_word = true;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("an unterminated quote");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `KEY=value KEY2="two words"`, or the old `KEY value with spaces`.
fn pairs(text: &str) -> std::result::Result<Vec<(String, String)>, &'static str> {
    let first = text
        .split_whitespace()
        .next()
        .ok_or("a key and a value are needed")?;
    if !first.contains('=') {
        let value = text[first.len()..].trim();
        if value.is_empty() {
            return Err("a key and a value are needed");
        }
        let value = words(value)?.join(" ");
        return Ok(vec![(first.to_owned(), value)]);
    }
    words(text)?
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err("each word must be KEY=value"),
        })
        .collect()
}

/// `80` → `80/tcp`; `53/udp`; `8000-8002` → three ports.
fn exposed_ports(spec: &str) -> std::result::Result<Vec<String>, &'static str> {
    let (ports, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err("EXPOSE takes PORT[/tcp|udp|sctp]");
    }
    let port = |p: &str| p.parse::<u16>().map_err(|_| "EXPOSE needs port numbers");
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if first > last {
        return Err("EXPOSE: a port range must go up");
    }
    Ok((first..=last).map(|p| format!("{p}/{protocol}")).collect())
}

/// A layer about to be referenced by a new image.
#[derive(Debug, Clone)]
pub(super) struct NewLayer {
    pub digest: Digest,
    pub size: u64,
    pub layer: Layer,
}

/// An image about to be added: checked already, not yet in the store.
pub(super) struct NewImage {
    /// The config blob, byte for byte: its digest is the image id.
    pub config: Vec<u8>,
    /// The manifest as found (kept so its digest stays), or `None` to
    /// write one.
    pub manifest: Option<(Vec<u8>, MediaType)>,
    pub layers: Vec<NewLayer>,
    pub tags: Vec<Reference>,
}

impl ImageStore {
    /// `docker import`: stores the tar as the layer of a new image, tags
    /// it `reference` if given, and returns its id.
    pub fn import(
        &self,
        tar: impl Read,
        reference: Option<&str>,
        config: ImportConfig,
    ) -> Result<ImageId> {
        let tag = reference.map(Reference::parse_tag).transpose()?;
        let ingested = self.ingest_stream(tar, "import")?;
        let layer = layer::inspect(ingested.open()?, "imported layer", &self.limits)?;
        let created = config.created.unwrap_or_else(OffsetDateTime::now_utc);
        let config_json = import_config_json(&config, created, &layer.diff_id)?;
        let new = NewImage {
            config: config_json,
            manifest: None,
            layers: vec![NewLayer {
                digest: ingested.digest.clone(),
                size: ingested.size,
                layer,
            }],
            tags: tag.into_iter().collect(),
        };
        let mut blobs = HashMap::from([(ingested.digest.clone(), ingested)]);
        let loaded = self.add_images(vec![new], &mut blobs)?;
        Ok(loaded[0].id.clone())
    }

    /// Streams `source` into an ingest file, telling a failing source
    /// (the client's fault) from a failing disk.
    pub(super) fn ingest_stream(&self, source: impl Read, what: &str) -> Result<Ingested> {
        let mut ingest = self.layout.ingest(self.limits.max_bytes)?;
        let mut source = SourceReader {
            inner: source,
            failed: false,
        };
        if let Err(e) = io::copy(&mut source, &mut ingest) {
            return Err(if e.kind() == io::ErrorKind::FileTooLarge {
                ImageError::LayerTooLarge {
                    layer: what.to_owned(),
                    reason: format!("more than {} bytes", self.limits.max_bytes),
                }
            } else if source.failed {
                ImageError::bad_input(what, format!("reading the upload: {e}"))
            } else {
                ImageError::io(ingest.path())(e)
            });
        }
        ingest.finish()
    }

    /// Adds checked images: commits their blobs, writes configs and
    /// manifests, and moves their tags to them, all under the store lock
    /// and in one index write. An image already stored (same id) only
    /// gets the tags.
    pub(super) fn add_images(
        &self,
        images: Vec<NewImage>,
        blobs: &mut HashMap<Digest, Ingested>,
    ) -> Result<Vec<LoadedImage>> {
        let lock = self.layout.lock()?;
        let mut catalog = self.catalog()?;
        let mut loaded = Vec::new();
        for new in images {
            let config_digest = Digest::of(&new.config);
            let id = ImageId::from_digest(&config_digest);
            let index = match catalog.images.iter().position(|image| image.id == id) {
                Some(index) => index,
                None => {
                    for layer in &new.layers {
                        if let Some(ingested) = blobs.remove(&layer.digest) {
                            self.layout.commit(ingested, &lock)?;
                        } else if self.layout.blob_size(&layer.digest) != Some(layer.size) {
                            return Err(ImageError::corrupt(
                                self.layout.blob_path(&layer.digest),
                                "layer blob is missing",
                            ));
                        }
                    }
                    self.layout.write_blob(&new.config, &lock)?;
                    let (manifest_bytes, media_type) = match new.manifest {
                        Some(found) => found,
                        None => (
                            manifest_json(&config_digest, new.config.len() as u64, &new.layers)?,
                            MediaType::ImageManifest,
                        ),
                    };
                    let manifest_digest = self.layout.write_blob(&manifest_bytes, &lock)?;
                    let bad =
                        |e: serde_json::Error| ImageError::bad_input(format!("image {id}"), e);
                    catalog.images.push(StoredImage {
                        id: id.clone(),
                        manifest_digest,
                        manifest_media_type: media_type,
                        manifest_size: manifest_bytes.len() as u64,
                        manifest: serde_json::from_slice(&manifest_bytes).map_err(bad)?,
                        config: serde_json::from_slice(&new.config).map_err(bad)?,
                        tags: Vec::new(),
                        repo_digests: Vec::new(),
                    });
                    catalog.images.len() - 1
                }
            };
            for tag in &new.tags {
                for image in &mut catalog.images {
                    image.tags.retain(|t| t != tag);
                }
                catalog.images[index].tags.push(tag.clone());
            }
            loaded.push(LoadedImage {
                id,
                tags: new.tags.iter().map(Reference::familiar).collect(),
            });
        }
        self.layout.sync_blobs()?;
        self.write_catalog(&catalog, &lock)?;
        Ok(loaded)
    }
}

/// Tells the source's read errors from the destination's write errors.
struct SourceReader<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for SourceReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        self.failed |= result.is_err();
        result
    }
}

/// The OCI image config of an imported image, as Docker writes it: host
/// platform, one layer, one history entry.
fn import_config_json(
    import: &ImportConfig,
    created: OffsetDateTime,
    diff_id: &Digest,
) -> Result<Vec<u8>> {
    let created = created
        .format(&Rfc3339)
        .map_err(|e| ImageError::bad_input("created", e))?;
    let c = &import.config;
    let mut config = Config::default();
    config.set_user(c.user.clone());
    config.set_env((!c.env.is_empty()).then(|| c.env.clone()));
    config.set_entrypoint(c.entrypoint.clone());
    config.set_cmd(c.cmd.clone());
    config.set_working_dir(c.working_dir.clone());
    config.set_exposed_ports((!c.exposed_ports.is_empty()).then(|| c.exposed_ports.clone()));
    config.set_volumes((!c.volumes.is_empty()).then(|| c.volumes.clone()));
    config.set_labels((!c.labels.is_empty()).then(|| c.labels.clone().into_iter().collect()));
    config.set_stop_signal(c.stop_signal.clone());
    let message = import
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "Imported from -".to_owned());
    let history = HistoryBuilder::default()
        .created(created.clone())
        .comment(message)
        .build()
        .map_err(|e| ImageError::bad_input("history", e))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(|e| ImageError::bad_input("rootfs", e))?;
    let mut image = ImageConfiguration::default();
    image.set_created(Some(created));
    image.set_architecture(Arch::from(host_architecture()));
    image.set_os(Os::Linux);
    image.set_config(Some(config));
    image.set_rootfs(rootfs);
    image.set_history(Some(vec![history]));
    canonical_json(&image)
}

/// An OCI manifest for a config and layers, in canonical JSON so the same
/// image always gets the same manifest digest.
pub(super) fn manifest_json(
    config_digest: &Digest,
    config_size: u64,
    layers: &[NewLayer],
) -> Result<Vec<u8>> {
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|l| {
            Descriptor::new(
                l.layer.compression.layer_media_type(),
                l.size,
                l.digest.oci(),
            )
        })
        .collect();
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config_digest.oci(),
        ))
        .layers(layers)
        .build()
        .map_err(|e| ImageError::bad_input("manifest", e))?;
    canonical_json(&manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> ImageConfig {
        let mut import = ImportConfig::default();
        for change in changes {
            import.apply_change(change).unwrap();
        }
        import.config
    }

    #[test]
    fn changes_set_the_config_like_docker() {
        let config = changed(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /bin/init --flag",
            "ENV A=1 B=\"two words\" C=x\\ y",
            "env A=3",
            "ENV LEGACY value with spaces",
            "LABEL org.example.team=infra \"quoted key\"=v",
            "EXPOSE 80 53/udp 8000-8001",
            r#"VOLUME ["/data"]"#,
            "VOLUME /cache /logs",
            "WORKDIR app",
            "USER 1000:1000",
            "STOPSIGNAL SIGRTMIN+3",
        ]);
        assert_eq!(config.cmd.unwrap(), ["sh", "-c", "echo hi"]);
        assert_eq!(
            config.entrypoint.unwrap(),
            ["/bin/sh", "-c", "/bin/init --flag"]
        );
        assert_eq!(
            config.env,
            ["B=two words", "C=x y", "A=3", "LEGACY=value with spaces"]
        );
        assert_eq!(config.labels["org.example.team"], "infra");
        assert_eq!(config.labels["quoted key"], "v");
        assert_eq!(
            config.exposed_ports,
            ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]
        );
        assert_eq!(config.volumes, ["/data", "/cache", "/logs"]);
        assert_eq!(config.working_dir.as_deref(), Some("/app"));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.stop_signal.as_deref(), Some("SIGRTMIN+3"));
    }

    #[test]
    fn bad_changes_are_bad_input() {
        for change in [
            "",
            "RUN make",
            "HEALTHCHECK NONE",
            "CMD",
            "ENV",
            "ENV =x",
            "ENV A=\"unterminated",
            "EXPOSE http",
            "EXPOSE 80/icmp",
            "EXPOSE 90-80",
            "USER a b",
            "STOPSIGNAL TERM",
            "WORKDIR",
        ] {
            let err = ImportConfig::default().apply_change(change).unwrap_err();
            assert_eq!(err.status(), 400, "{change}: {err}");
        }
    }
}
