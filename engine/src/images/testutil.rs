//! Hand-made tars for the tests: headers are written byte by byte, so a
//! test can put in a layer what no well-behaved tool would (`..`, absolute
//! paths, devices, links through symlinks).

use std::io::Write;

use sha2::{Digest as _, Sha256};

pub const MTIME: u64 = 1_600_000_000;

/// One entry of a hand-made tar.
pub struct Entry {
    pub kind: tar::EntryType,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(kind: tar::EntryType, path: &str) -> Entry {
        Entry {
            kind,
            path: path.as_bytes().to_vec(),
            link: Vec::new(),
            data: Vec::new(),
            mode: if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            },
            uid: 0,
            gid: 0,
            pax: Vec::new(),
        }
    }

    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    pub fn pax(mut self, key: &str, value: &[u8]) -> Entry {
        self.pax.push((key.to_owned(), value.to_vec()));
        self
    }
}

pub fn file(path: &str, data: &[u8]) -> Entry {
    let mut entry = Entry::new(tar::EntryType::Regular, path);
    entry.data = data.to_vec();
    entry
}

pub fn dir(path: &str) -> Entry {
    Entry::new(tar::EntryType::Directory, path)
}

pub fn symlink(path: &str, target: &str) -> Entry {
    let mut entry = Entry::new(tar::EntryType::Symlink, path);
    entry.link = target.as_bytes().to_vec();
    entry.mode = 0o777;
    entry
}

pub fn hardlink(path: &str, target: &str) -> Entry {
    let mut entry = Entry::new(tar::EntryType::Link, path);
    entry.link = target.as_bytes().to_vec();
    entry
}

pub fn special(kind: tar::EntryType, path: &str) -> Entry {
    Entry::new(kind, path)
}

/// PAX records: `<length> <key>=<value>\n`, the length counting itself.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3;
        let mut length = body + body.to_string().len();
        if length.to_string().len() != body.to_string().len() {
            length += 1;
        }
        out.extend_from_slice(format!("{length} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn header(kind: tar::EntryType, path: &[u8], link: &[u8], size: u64, entry: &Entry) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(MTIME);
    let gnu = header.as_gnu_mut().expect("a GNU header");
    gnu.name = [0; 100];
    gnu.name[..path.len()].copy_from_slice(path);
    gnu.linkname = [0; 100];
    gnu.linkname[..link.len()].copy_from_slice(link);
    header.set_cksum();
    header
}

/// A tar of `entries`, byte for byte as given.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        if !entry.pax.is_empty() {
            let records = pax_records(&entry.pax);
            let pax = header(
                tar::EntryType::XHeader,
                b"PaxHeader",
                b"",
                records.len() as u64,
                entry,
            );
            builder.append(&pax, records.as_slice()).unwrap();
        }
        let h = header(
            entry.kind,
            &entry.path,
            &entry.link,
            entry.data.len() as u64,
            entry,
        );
        builder.append(&h, entry.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Root-only tests (chown, mknod, overlay mounts) say so and pass when
/// not run as root.
pub fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

/// A small root filesystem layer.
pub fn rootfs_tar(marker: &str) -> Vec<u8> {
    tar(&[
        dir("./"),
        dir("bin"),
        file("bin/hello", b"#!/bin/sh\necho hello\n").mode(0o755),
        dir("etc"),
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        file("etc/marker", marker.as_bytes()),
    ])
}
