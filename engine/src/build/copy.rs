//! `COPY` and `ADD`: sources from the context (or, with `--from`, from a
//! stage or an image), resolved inside their tree; the destination
//! resolved inside the image, symlinks included; a layer tar with the
//! files under their real destination and every directory above them
//! (as the image has it, or new, 0755, owned by `--chown`'s ids).
//!
//! Sources cannot leave the context: `..` above its top is refused, and a
//! symlink resolves inside it as in a chroot. `ADD` extracts local tar
//! archives (plain or gzip) and refuses URLs: the engine fetches nothing
//! on a build's behalf.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::dockerfile::{Flag, Source};
use super::error::BuildError;
use super::layer::{Attrs, LayerTar};
use super::pattern::Pattern;
use super::tree::{self, Tree};
use super::{BuildOptions, Builder, Stage, cache_key, config, image_tree, lex, stage_by_name};
use crate::images::BuildImage;

pub struct CopyRequest<'a> {
    pub add: bool,
    pub flags: &'a [Flag],
    pub sources: &'a [Source],
    pub dest: &'a str,
    pub escape: char,
    pub vars: &'a [(String, String)],
}

/// What goes into the layer at one path.
#[derive(Debug)]
enum Item {
    Dir,
    File {
        host: PathBuf,
        size: u64,
    },
    Symlink(String),
    Data(Vec<u8>),
    /// A local archive `ADD` extracts into the directory `name`.
    Archive {
        host: PathBuf,
    },
}

#[derive(Debug)]
struct Planned {
    /// The path in the layer, without a leading `/`.
    name: String,
    attrs: Attrs,
    item: Item,
}

fn bad(message: impl Into<String>) -> BuildError {
    BuildError::Request(message.into())
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn copy(
    builder: &Builder,
    stage: &Stage,
    request: &CopyRequest<'_>,
    done: &[(Option<String>, BuildImage)],
    context: &Tree,
    options: &BuildOptions,
) -> Result<BuildImage, BuildError> {
    let what = if request.add { "ADD" } else { "COPY" };
    let word =
        |text: &str| lex::word(text, request.escape, request.vars).map_err(|e| bad(e.to_string()));
    let (mut from, mut chown, mut chmod) = (None, None, None);
    for flag in request.flags {
        let value = word(flag.value.as_deref().unwrap_or(""))?;
        match flag.name.as_str() {
            "from" if !request.add => from = Some(value),
            "chown" => chown = Some(value),
            "chmod" => {
                chmod = Some(
                    u32::from_str_radix(&value, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| bad(format!("--chmod={value}: not an octal mode")))?,
                )
            }
            other => return Err(bad(format!("{what} --{other} is not supported"))),
        }
    }
    let source_tree = match &from {
        Some(name) => {
            let image = match stage_by_name(done, name) {
                Some(image) => image.clone(),
                None => builder.image(name, false)?,
            };
            image_tree(builder, &image)?
        }
        None => context.clone(),
    };
    let dest_tree = image_tree(builder, &stage.image)?;
    let ids = match &chown {
        Some(spec) => owner(&dest_tree, spec)?,
        None => (0, 0),
    };
    let workdir = stage.config()["WorkingDir"]
        .as_str()
        .unwrap_or("/")
        .to_owned();
    let dest_text = word(request.dest)?;
    let dest = if dest_text.starts_with('/') {
        dest_text.clone()
    } else {
        format!("{}/{dest_text}", workdir.trim_end_matches('/'))
    };
    let wants_dir = dest_text.ends_with('/')
        || dest_text == "."
        || dest_text.ends_with("/.")
        || dest_text.is_empty();

    // Every source, resolved: (name shown, parts in the source tree, entry).
    let mut found: Vec<(String, Vec<String>, tree::Entry)> = Vec::new();
    let mut here_docs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut wildcard = false;
    for source in request.sources {
        match source {
            Source::HereDoc {
                name,
                content,
                expand,
            } => {
                let content = if *expand {
                    lex::word(content, request.escape, request.vars)
                        .map_err(|e| bad(e.to_string()))?
                } else {
                    content.clone()
                };
                here_docs.push((name.clone(), content.into_bytes()));
            }
            Source::Path(raw) => {
                let path = word(raw)?;
                if path.contains("://") {
                    return Err(bad(if request.add {
                        format!(
                            "ADD {path}: fetching URLs is not supported by moat (the engine fetches nothing for a build); download it into the context"
                        )
                    } else {
                        format!("COPY {path}: source can't be a URL for COPY")
                    }));
                }
                if escapes(&path) && from.is_none() {
                    return Err(bad(format!(
                        "forbidden path outside the build context: {path}"
                    )));
                }
                let is_glob = path.contains(['*', '?', '[']);
                wildcard |= is_glob;
                let matches = if is_glob {
                    glob(&source_tree, &path)?
                } else {
                    let parts = source_tree.resolve(&path, true).map_err(bad)?;
                    match source_tree.lookup(&parts) {
                        Some(entry) => vec![(parts, entry)],
                        None => vec![],
                    }
                };
                if matches.is_empty() {
                    return Err(bad(match &from {
                        None => format!(
                            "{what} failed: file not found in build context or excluded by .dockerignore: stat {path}: file does not exist"
                        ),
                        Some(stage) => format!("{what} failed: {path} not found in {stage}"),
                    }));
                }
                for (parts, entry) in matches {
                    // A symlink found by a glob is followed like a named one.
                    let (parts, entry) = if entry.is_symlink() {
                        let joined = format!("/{}", parts.join("/"));
                        let real = source_tree.resolve(&joined, true).map_err(bad)?;
                        let entry = source_tree.lookup(&real).ok_or_else(|| {
                            bad(format!("{what} failed: {joined} is a dangling symlink"))
                        })?;
                        (real, entry)
                    } else {
                        (parts, entry)
                    };
                    found.push((path.clone(), parts, entry));
                }
            }
        }
    }
    let count = found.len() + here_docs.len();
    if (count > 1 || wildcard) && !wants_dir {
        return Err(bad(format!(
            "When using {what} with more than one source file, the destination must be a directory and end with a /"
        )));
    }
    // Where things go: a directory, or (one file) a file's path.
    let archive = |entry: &tree::Entry| {
        request.add && entry.meta.is_file() && is_archive(entry).unwrap_or(false)
    };
    let into_dir = wants_dir || found.iter().any(|(_, _, e)| e.is_dir() || archive(e)) || {
        let parts = dest_tree.resolve(&dest, true).map_err(bad)?;
        dest_tree.lookup(&parts).is_some_and(|e| e.is_dir())
    };
    let mut plan = Vec::new();
    let now = now_secs();
    let (dir_parts, file_target) = if into_dir {
        (dest_tree.resolve(&dest, true).map_err(bad)?, None)
    } else {
        let parts = dest_tree.resolve(&dest, true).map_err(bad)?;
        let (last, parent) = parts
            .split_last()
            .ok_or_else(|| bad(format!("{what}: cannot copy a file to /")))?;
        (parent.to_vec(), Some(last.clone()))
    };
    dirs_for(&dest_tree, &dir_parts, ids, now, &mut plan)?;
    let base = dir_parts.join("/");
    let under = |rel: &str| {
        if base.is_empty() {
            rel.to_owned()
        } else {
            format!("{base}/{rel}")
        }
    };
    let attrs_of = |entry: &tree::Entry| Attrs {
        uid: ids.0,
        gid: ids.1,
        mode: chmod.unwrap_or(entry.meta.mode() & 0o7777),
        mtime: entry.meta.mtime().max(0) as u64,
    };
    for (shown, parts, entry) in &found {
        if entry.is_dir() {
            for (rel, child) in source_tree.walk(parts) {
                let rel = rel.join("/");
                check_name(&rel)?;
                let attrs = attrs_of(&child);
                let item = if child.is_dir() {
                    Item::Dir
                } else if child.meta.is_file() {
                    Item::File {
                        host: child.host.clone(),
                        size: child.meta.len(),
                    }
                } else if child.is_symlink() {
                    let target = std::fs::read_link(&child.host)
                        .map_err(|e| BuildError::Engine(format!("{rel}: {e}")))?;
                    Item::Symlink(target.to_string_lossy().into_owned())
                } else {
                    // Fifos and sockets are left out, as dockerd does.
                    continue;
                };
                plan.push(Planned {
                    name: under(&rel),
                    attrs,
                    item,
                });
            }
        } else if entry.meta.is_file() {
            let name = match &file_target {
                Some(name) => name.clone(),
                None => parts.last().cloned().unwrap_or_else(|| shown.clone()),
            };
            check_name(&name)?;
            let item = if archive(entry) {
                Item::Archive {
                    host: entry.host.clone(),
                }
            } else {
                Item::File {
                    host: entry.host.clone(),
                    size: entry.meta.len(),
                }
            };
            let name = match item {
                Item::Archive { .. } => base.clone(),
                _ => under(&name),
            };
            plan.push(Planned {
                name,
                attrs: attrs_of(entry),
                item,
            });
        } else {
            return Err(bad(format!(
                "{what} failed: {shown} is not a file or directory"
            )));
        }
    }
    for (name, data) in here_docs {
        let name = file_target.clone().unwrap_or(name);
        check_name(&name)?;
        plan.push(Planned {
            name: under(&name),
            attrs: Attrs {
                uid: ids.0,
                gid: ids.1,
                mode: chmod.unwrap_or(0o644),
                mtime: now,
            },
            item: Item::Data(data),
        });
    }

    let hash = plan_hash(&plan)?;
    let kind = match (
        found.len() + usize::from(count > found.len()),
        found.first(),
    ) {
        (1, Some((_, _, e))) if e.is_dir() => "dir",
        (1, _) => "file",
        _ => "multi",
    };
    let created_by = format!("/bin/sh -c #(nop) {what} {kind}:{hash} in {dest_text} ");
    let key = cache_key(
        &stage.image,
        what,
        &[&hash, &dest, &format!("{from:?} {chown:?} {chmod:?}")],
    );
    if let Some(image) = builder.cached(&key, options)? {
        return Ok(image);
    }
    let tar_path = builder
        .work
        .join(format!("layer-{}.tar", super::random_hex()));
    let result = (|| {
        let mut tar = LayerTar::create(&tar_path)?;
        write_plan(&plan, &mut tar)?;
        tar.finish()?;
        let mut config: Value = stage.image.config.clone();
        config::add_history(&mut config, &created_by, false);
        Ok(builder
            .images
            .build_step(&key, config, stage.image.layers.clone(), Some(&tar_path))?)
    })();
    let _ = std::fs::remove_file(&tar_path);
    result
}

/// Whether a path climbs above its top with `..`.
fn escapes(path: &str) -> bool {
    let mut depth: i64 = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// A whiteout's name would delete files from the image instead.
fn check_name(rel: &str) -> Result<(), BuildError> {
    if rel.split('/').any(|p| p.starts_with(".wh.")) {
        return Err(bad(format!(
            "{rel}: names starting with .wh. are reserved for layer whiteouts"
        )));
    }
    Ok(())
}

/// The entries of `tree` a glob matches, component by component.
fn glob(tree: &Tree, path: &str) -> Result<Vec<(Vec<String>, tree::Entry)>, BuildError> {
    let mut current: Vec<Vec<String>> = vec![Vec::new()];
    for part in tree::split(path) {
        let pattern = Pattern::glob(&part).map_err(|e| bad(e.to_string()))?;
        let mut next = Vec::new();
        for prefix in &current {
            if pattern.is_literal() {
                let mut candidate = prefix.clone();
                candidate.push(part.replace('\\', ""));
                next.push(candidate);
                continue;
            }
            for (name, _) in tree.read_dir(prefix) {
                if pattern.matches(&name) {
                    let mut candidate = prefix.clone();
                    candidate.push(name);
                    next.push(candidate);
                }
            }
        }
        current = next;
    }
    Ok(current
        .into_iter()
        .filter_map(|parts| tree.lookup(&parts).map(|e| (parts, e)))
        .collect())
}

/// `--chown=user[:group]`: numbers, or names from the image's
/// `/etc/passwd` and `/etc/group`.
fn owner(tree: &Tree, spec: &str) -> Result<(u32, u32), BuildError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = tree
        .read_file("/etc/passwd", 4 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                bad(format!(
                    "unable to find user {user}: no matching entries in passwd file"
                ))
            })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = tree
                    .read_file("/etc/group", 4 << 20)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "unable to find group {g}: no matching entries in group file"
                        ))
                    })?
            }
        },
    };
    if uid >= crate::userns::RANGE_SIZE || gid >= crate::userns::RANGE_SIZE {
        return Err(bad(format!(
            "--chown={spec}: ids must be below {}",
            crate::userns::RANGE_SIZE
        )));
    }
    Ok((uid, gid))
}

/// The directories from `/` down to `parts`: as the image has them, or
/// new (0755, owned by `ids`). A non-directory in the way is an error.
fn dirs_for(
    tree: &Tree,
    parts: &[String],
    ids: (u32, u32),
    now: u64,
    plan: &mut Vec<Planned>,
) -> Result<(), BuildError> {
    for depth in 1..=parts.len() {
        let prefix = &parts[..depth];
        let name = prefix.join("/");
        let attrs = match tree.lookup(prefix) {
            Some(entry) if entry.is_dir() => {
                let (uid, gid) = tree.ids(&entry);
                Attrs {
                    uid,
                    gid,
                    mode: entry.meta.mode() & 0o7777,
                    mtime: entry.meta.mtime().max(0) as u64,
                }
            }
            Some(_) => return Err(bad(format!("/{name} is not a directory"))),
            None => Attrs {
                uid: ids.0,
                gid: ids.1,
                mode: 0o755,
                mtime: now,
            },
        };
        plan.push(Planned {
            name,
            attrs,
            item: Item::Dir,
        });
    }
    Ok(())
}

/// `WORKDIR`'s layer: the directory and those above it.
pub fn make_dirs(
    tree: &Tree,
    dir: &str,
    ids: (u32, u32),
    tar: &mut LayerTar,
) -> Result<(), BuildError> {
    let parts = tree.resolve(dir, true).map_err(bad)?;
    let mut plan = Vec::new();
    dirs_for(tree, &parts, ids, now_secs(), &mut plan)?;
    write_plan(&plan, tar)
}

/// Whether a file is a tar archive, plain or gzip (bzip2 and xz are
/// refused rather than copied as they are).
fn is_archive(entry: &tree::Entry) -> Result<bool, BuildError> {
    let mut head = [0u8; 512];
    let mut file = entry
        .open()
        .map_err(|e| BuildError::Engine(e.to_string()))?;
    let n = read_full(&mut file, &mut head);
    if head[..n].starts_with(b"BZh") || head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(bad(
            "ADD: bzip2 and xz archives are not supported (use a plain or gzip tar)",
        ));
    }
    if head[..n].starts_with(&[0x1f, 0x8b]) {
        let file = entry
            .open()
            .map_err(|e| BuildError::Engine(e.to_string()))?;
        let mut gz = flate2::read::GzDecoder::new(file);
        let mut inner = [0u8; 512];
        let m = read_full(&mut gz, &mut inner);
        return Ok(m == 512 && &inner[257..262] == b"ustar");
    }
    Ok(n == 512 && &head[257..262] == b"ustar")
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

/// What the cache key knows of the copy: every name, kind, owner, mode and
/// content (not times: a `touch` changes nothing).
fn plan_hash(plan: &[Planned]) -> Result<String, BuildError> {
    let mut hasher = Sha256::new();
    for p in plan {
        let a = p.attrs;
        hasher.update(format!("{}\0{}:{}:{:o}\0", p.name, a.uid, a.gid, a.mode).as_bytes());
        match &p.item {
            Item::Dir => hasher.update(b"d"),
            Item::Symlink(target) => hasher.update(format!("l{target}").as_bytes()),
            Item::Data(data) => {
                hasher.update(b"f");
                hasher.update(data);
            }
            Item::File { host, .. } | Item::Archive { host } => {
                hasher.update(if matches!(p.item, Item::File { .. }) {
                    b"f"
                } else {
                    b"a"
                });
                let file = open_nofollow(host)?;
                let mut reader = BufReader::with_capacity(1 << 16, file);
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| BuildError::Engine(format!("{}: {e}", host.display())))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
        }
        hasher.update(b"\n");
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn open_nofollow(path: &std::path::Path) -> Result<File, BuildError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| BuildError::Engine(format!("{}: {e}", path.display())))
}

fn write_plan(plan: &[Planned], tar: &mut LayerTar) -> Result<(), BuildError> {
    for p in plan {
        match &p.item {
            Item::Dir => tar.dir(&p.name, p.attrs)?,
            Item::File { host, size } => {
                let file = open_nofollow(host)?;
                tar.file(
                    &p.name,
                    p.attrs,
                    *size,
                    BufReader::with_capacity(1 << 16, file),
                )?;
            }
            Item::Symlink(target) => tar.symlink(&p.name, target, p.attrs)?,
            Item::Data(data) => tar.file(&p.name, p.attrs, data.len() as u64, &data[..])?,
            Item::Archive { host } => extract_archive(host, &p.name, tar)?,
        }
    }
    Ok(())
}

/// `ADD archive.tar.gz /dir/`: its entries under `dir`, owners as the
/// archive has them; `..` and whiteout names refused.
fn extract_archive(
    host: &std::path::Path,
    dir: &str,
    tar: &mut LayerTar,
) -> Result<(), BuildError> {
    let file = open_nofollow(host)?;
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 2];
    let gzip = {
        let n = read_full(&mut reader, &mut head);
        n == 2 && head == [0x1f, 0x8b]
    };
    let file = open_nofollow(host)?;
    let stream: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let shown = host.display().to_string();
    let fail = |e: std::io::Error| bad(format!("ADD {shown}: {e}"));
    let mut archive = tar::Archive::new(stream);
    let prefix = |rel: &str| {
        if dir.is_empty() {
            rel.to_owned()
        } else {
            format!("{dir}/{rel}")
        }
    };
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if escapes(&raw) {
            return Err(bad(format!(
                "ADD: the archive entry {raw} leaves its directory"
            )));
        }
        let rel = tree::split(&raw).join("/");
        if rel.is_empty() {
            continue;
        }
        check_name(&rel)?;
        let attrs = Attrs {
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            mtime: header.mtime().unwrap_or(0),
        };
        if attrs.uid >= crate::userns::RANGE_SIZE || attrs.gid >= crate::userns::RANGE_SIZE {
            return Err(bad(format!(
                "ADD: {rel} is owned by ids outside the container's range"
            )));
        }
        use tar::EntryType as T;
        match kind {
            T::Directory => tar.dir(&prefix(&rel), attrs)?,
            T::Regular | T::Continuous => {
                let size = header.size().unwrap_or(0);
                tar.file(&prefix(&rel), attrs, size, &mut entry)?
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                tar.symlink(&prefix(&rel), &target, attrs)?
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if escapes(&target) {
                    return Err(bad(format!(
                        "ADD: the hard link {rel} leaves its directory"
                    )));
                }
                tar.hardlink(
                    &prefix(&rel),
                    &prefix(&tree::split(&target).join("/")),
                    attrs,
                )?
            }
            T::Fifo => tar.fifo(&prefix(&rel), attrs)?,
            _ => {
                return Err(bad(format!(
                    "ADD: {rel}: device nodes and sparse files are not supported"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_paths_are_seen() {
        assert!(escapes("../x"));
        assert!(escapes("a/../../x"));
        assert!(escapes("/.."));
        assert!(!escapes("a/../b"));
        assert!(!escapes("./a/b/.."));
    }

    #[test]
    fn globs_and_owners_resolve_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for f in ["a.txt", "b.txt", "c.md", "sub/d.txt"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "staff:x:50:\n").unwrap();
        let tree = Tree::new(vec![root], crate::userns::IdMap::HOST);
        let names = |p: &str| -> Vec<String> {
            glob(&tree, p)
                .unwrap()
                .into_iter()
                .map(|(p, _)| p.join("/"))
                .collect()
        };
        assert_eq!(names("*.txt"), ["a.txt", "b.txt"]);
        assert_eq!(names("/sub/*.txt"), ["sub/d.txt"]);
        assert!(names("*.none").is_empty());
        assert_eq!(owner(&tree, "app").unwrap(), (1000, 1001));
        assert_eq!(owner(&tree, "app:staff").unwrap(), (1000, 50));
        assert_eq!(owner(&tree, "7").unwrap(), (7, 7));
        assert_eq!(owner(&tree, "7:8").unwrap(), (7, 8));
        assert!(owner(&tree, "nobody").is_err());
        assert!(owner(&tree, "70000").is_err());
    }
}
