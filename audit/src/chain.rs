//! The chain: how lines are hashed and linked, what a checkpoint signs,
//! and how log files are named. Everything here is shared by the writer
//! and the verifier, so they cannot disagree.

use std::path::Path;

use aws_lc_rs::digest;
use serde::Deserialize;

use crate::record::{Checkpoint, Kind, rfc3339_micros};

/// `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What every signed checkpoint message starts with; the version changes
/// if the message ever does.
pub const CHECKPOINT_DOMAIN: &str = "moat-audit-checkpoint-v1";

/// The chain fields of a line of either kind, read without the rest.
#[derive(Deserialize)]
pub(crate) struct Link<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub prev: &'a str,
    pub kind: Kind,
}

impl<'a> Link<'a> {
    pub fn parse(line: &'a [u8]) -> Result<Link<'a>, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Hex SHA-256 of a line's exact bytes, without its newline.
pub fn line_hash(line: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, line).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The bytes a checkpoint's `sig` signs. One field per line, in this
/// order, each `name=value`:
///
/// ```text
/// moat-audit-checkpoint-v1
/// seq=<the checkpoint's seq, decimal>
/// prev=<hex SHA-256 of the line before it: the head of the chain it covers>
/// time=<its time, as written in the line>
/// count=<records since the previous checkpoint, decimal>
/// key=<the signing key's id>
/// notes=<the notes as a compact JSON array of strings>
/// ```
///
/// Each line ends with `\n`. `seq` and `prev` bind the checkpoint to one
/// position and one history: whoever rewrites any earlier line must forge a
/// signature to make a later checkpoint agree.
pub fn checkpoint_message(c: &Checkpoint) -> Vec<u8> {
    let notes = serde_json::to_string(&c.notes).expect("strings serialize");
    format!(
        "{CHECKPOINT_DOMAIN}\nseq={}\nprev={}\ntime={}\ncount={}\nkey={}\nnotes={}\n",
        c.seq,
        c.prev,
        rfc3339_micros::format(c.time),
        c.count,
        c.key,
        notes
    )
    .into_bytes()
}

/// A record serialized with `seq: 0, prev: ""` starts with exactly this;
/// the writer replaces it with the real chain fields, so callers can
/// serialize in parallel and the single writer only stamps.
pub(crate) const UNSTAMPED: &[u8] = br#"{"seq":0,"prev":"""#;

/// Appends `{"seq":SEQ,"prev":"PREV"` and the rest of an unstamped line.
pub(crate) fn stamp(out: &mut Vec<u8>, seq: u64, prev: &str, unstamped: &[u8]) {
    debug_assert!(unstamped.starts_with(UNSTAMPED));
    out.extend_from_slice(br#"{"seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(br#","prev":""#);
    out.extend_from_slice(prev.as_bytes());
    out.push(b'"');
    out.extend_from_slice(&unstamped[UNSTAMPED.len()..]);
}

/// The file a log segment starting at `first_seq` is written to. Names
/// sort in chain order.
pub fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The first seq a log file's name says it holds, if it is a log file.
pub fn file_first_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files in `dir`, in chain order.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if file_first_seq(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&bytes), "00017f80ff");
        assert_eq!(unhex("00017f80ff").unwrap(), bytes);
        assert!(unhex("0").is_none());
        assert!(unhex("0g").is_none());
        assert!(
            unhex("AB").is_none(),
            "upper case is not what the writer writes"
        );
    }

    #[test]
    fn stamping_replaces_the_placeholder_chain_fields() {
        let mut out = Vec::new();
        stamp(&mut out, 42, "ab", br#"{"seq":0,"prev":"","kind":"event"}"#);
        assert_eq!(out, br#"{"seq":42,"prev":"ab","kind":"event"}"#);
    }

    #[test]
    fn file_names_sort_in_seq_order_and_parse_back() {
        let (a, b) = (file_name(9), file_name(10));
        assert!(a < b);
        assert_eq!(file_first_seq(Path::new(&b)), Some(10));
        assert_eq!(file_first_seq(Path::new("audit-1.jsonl")), None);
        assert_eq!(file_first_seq(Path::new("other.jsonl")), None);
    }

    #[test]
    fn line_hash_is_sha256_hex() {
        assert_eq!(
            line_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
