//! Log files on disk: creating them private, reading them from the end,
//! and cutting away a torn last write.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::chain::{Link, line_hash};
use crate::error::AuditError;
use crate::record::Kind;

pub(crate) const FILE_MODE: u32 = 0o600;
pub(crate) const DIR_MODE: u32 = 0o700;

const CHUNK: u64 = 64 * 1024;

/// Opens (creating if missing) a log file for reading and writing, mode
/// 0600 whatever the umask, and makes its directory entry durable.
pub(crate) fn open_rw(path: &Path) -> Result<File, AuditError> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map_err(AuditError::io(path))?;
    if !existed {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(AuditError::io(path))?;
        sync_dir(path)?;
    }
    Ok(file)
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), AuditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AuditError::io(dir))
}

/// The complete lines of a file read backwards, each with its offset,
/// without the newline. Starts at `end`, which must follow a newline (or
/// be 0).
pub(crate) struct ReverseLines<'a> {
    file: &'a File,
    /// Offset of `buf[0]` in the file.
    pos: u64,
    /// Unread bytes; ends with the newline of the next line to yield.
    buf: Vec<u8>,
}

impl<'a> ReverseLines<'a> {
    pub fn new(file: &'a File, end: u64) -> ReverseLines<'a> {
        ReverseLines {
            file,
            pos: end,
            buf: Vec::new(),
        }
    }

    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            if let Some(body_end) = self.buf.len().checked_sub(1) {
                if let Some(i) = self.buf[..body_end].iter().rposition(|&b| b == b'\n') {
                    let line = self.buf[i + 1..body_end].to_vec();
                    self.buf.truncate(i + 1);
                    return Ok(Some((self.pos + i as u64 + 1, line)));
                }
                if self.pos == 0 {
                    let line = self.buf[..body_end].to_vec();
                    self.buf.clear();
                    return Ok(Some((0, line)));
                }
            } else if self.pos == 0 {
                return Ok(None);
            }
            let n = CHUNK.min(self.pos);
            let mut chunk = vec![0; n as usize];
            self.file.read_exact_at(&mut chunk, self.pos - n)?;
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            self.pos -= n;
        }
    }
}

/// Offset just after the last newline of the first `len` bytes (0 if none).
pub(crate) fn end_of_last_line(file: &File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    while end > 0 {
        let n = CHUNK.min(end);
        let mut chunk = vec![0; n as usize];
        file.read_exact_at(&mut chunk, end - n)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(end - n + i as u64 + 1);
        }
        end -= n;
    }
    Ok(0)
}

/// The chain head a file ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
    pub kind: Kind,
}

/// What [`recover_tail`] found and did.
pub(crate) struct Tail {
    /// The file's length once cut.
    pub len: u64,
    /// Its last record, if it has any.
    pub head: Option<Head>,
    /// What was cut, for the next checkpoint.
    pub notes: Vec<String>,
}

/// Reads the end of the newest log file. A write the writer never
/// acknowledged may have been cut short by a crash: bytes after the last
/// newline, or a last line that does not parse. Those are cut away (and
/// reported); anything worse is [`AuditError::Corrupt`].
pub(crate) fn recover_tail(path: &Path, file: &File) -> Result<Tail, AuditError> {
    let io = |e| AuditError::io(path)(e);
    let size = file.metadata().map_err(io)?.len();
    let mut end = end_of_last_line(file, size).map_err(io)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut notes = Vec::new();
    if end < size {
        notes.push(format!(
            "{name}: removed {} bytes of an incomplete last line (a write cut short)",
            size - end
        ));
    }
    let mut lines = ReverseLines::new(file, end);
    let mut head = None;
    let mut cut_bad_line = false;
    while let Some((offset, line)) = lines.next_line().map_err(io)? {
        match Link::parse(&line) {
            Ok(link) => {
                head = Some(Head {
                    seq: link.seq,
                    hash: line_hash(&line),
                    kind: link.kind,
                });
                break;
            }
            Err(e) if !cut_bad_line => {
                notes.push(format!(
                    "{name}: removed an unreadable last line of {} bytes ({e})",
                    line.len()
                ));
                end = offset;
                cut_bad_line = true;
            }
            Err(e) => {
                return Err(AuditError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!(
                        "the last two lines do not parse (the second from last: {e}); \
                         that is not a torn write"
                    ),
                });
            }
        }
    }
    if end < size {
        tracing::warn!(file = %path.display(), removed_bytes = size - end, "audit log: cut a torn last write");
        file.set_len(end).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    Ok(Tail {
        len: end,
        head,
        notes,
    })
}

/// The last record of a file that must be complete (not the newest).
pub(crate) fn last_head(path: &Path) -> Result<Option<Head>, AuditError> {
    let file = File::open(path).map_err(AuditError::io(path))?;
    let size = file.metadata().map_err(AuditError::io(path))?.len();
    let end = end_of_last_line(&file, size).map_err(AuditError::io(path))?;
    let corrupt = |reason: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if end < size {
        return Err(corrupt("an older log file ends without a newline".into()));
    }
    let Some((_, line)) = ReverseLines::new(&file, end)
        .next_line()
        .map_err(AuditError::io(path))?
    else {
        return Ok(None);
    };
    let link =
        Link::parse(&line).map_err(|e| corrupt(format!("its last line does not parse: {e}")))?;
    Ok(Some(Head {
        seq: link.seq,
        hash: line_hash(&line),
        kind: link.kind,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, path, file)
    }

    #[test]
    fn reverse_lines_across_chunks() {
        let long = "x".repeat(CHUNK as usize + 10);
        let text = format!("a\n{long}\n\nb\n");
        let (_d, _p, file) = file_with(text.as_bytes());
        let mut lines = ReverseLines::new(&file, text.len() as u64);
        let mut got = Vec::new();
        while let Some((off, line)) = lines.next_line().unwrap() {
            assert_eq!(
                &text.as_bytes()[off as usize..off as usize + line.len()],
                &line[..]
            );
            got.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(
            got,
            vec!["b".to_owned(), String::new(), long, "a".to_owned()]
        );
    }

    #[test]
    fn a_torn_tail_and_a_bad_last_line_are_cut_but_no_more() {
        let good = r#"{"seq":1,"prev":"00","kind":"event"}"#;
        let text = format!("{good}\n{{\"seq\":2,\"pr\n{{\"seq\":3");
        let (_d, path, file) = file_with(text.as_bytes());
        let tail = recover_tail(&path, &file).unwrap();
        assert_eq!(tail.len, good.len() as u64 + 1);
        assert_eq!(tail.head.unwrap().seq, 1);
        assert_eq!(tail.notes.len(), 2, "{:?}", tail.notes);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{good}\n"));

        let (_d, path, file) = file_with(b"garbage\nmore garbage\n");
        assert!(matches!(
            recover_tail(&path, &file),
            Err(AuditError::Corrupt { .. })
        ));
    }
}
