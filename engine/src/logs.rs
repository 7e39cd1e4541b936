//! Container logs in Docker's `json-file` format: the shim writes what a
//! container prints to `container.log` (one JSON object a line, rotated like
//! `max-size`/`max-file`), and the engine reads it back for
//! `GET /containers/{id}/logs`, all at once or following the file as it
//! grows. The files are byte-compatible with dockerd's, and the query and
//! stream semantics follow dockerd's `daemon/logger/loggerutils` (see
//! [`read_logs`] for where that differs from a naive reading).
//!
//! Everything here is blocking std I/O: the shim is single-threaded and the
//! engine runs the reader under `spawn_blocking`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Docker's copier cuts a line that has not ended after 16 KiB of bytes
/// (`daemon/logger/copier.go`, `defaultBufSize`); each piece is an entry.
pub const MAX_LINE: usize = 16 * 1024;

/// How often a follower looks at the file again when it has caught up.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes a reader takes from a file per step, so a follower's batches and a
/// reader's memory stay bounded however large the file is.
const READ_CHUNK: usize = 1024 * 1024;

/// dockerd creates log files with mode 0640.
const LOG_FILE_MODE: u32 = 0o640;

/// What failed on a container's log, and the file it failed on.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("opening log file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing log file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading log file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Renaming or removing a file to make room for a new one.
    #[error("rotating log file {path}: {source}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Which of the container's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name json-file stores in the `stream` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream type byte of the API's multiplexed framing (`stdcopy`).
    fn frame_type(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    fn parse(name: &str) -> Option<Stream> {
        match name {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One stored line: the bytes as the container printed them, including the
/// trailing `\n` when the line had one (pieces of a cut line and a last line
/// flushed at exit have none, as in Docker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: Stream,
    pub time: OffsetDateTime,
    pub line: Vec<u8>,
}

/// Docker's `max-size` / `max-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the current file has reached this many bytes; 0 never.
    pub max_size: u64,
    /// Files kept, the current one included; 0 is taken as 1 (dockerd
    /// rejects it). With 1 the current file is replaced, keeping nothing.
    pub max_file: u32,
}

impl Rotation {
    pub const NEVER: Rotation = Rotation {
        max_size: 0,
        max_file: 1,
    };
}

/// What `docker logs` asks for. `Default` is both streams, everything, no
/// timestamps: what the docker CLI sends when given no flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub stdout: bool,
    pub stderr: bool,
    /// Entries at or after this time (checked until one entry passes; see
    /// [`read_logs`]).
    pub since: Option<OffsetDateTime>,
    /// Entries at or before this time (dockerd includes an entry stamped
    /// exactly `until`).
    pub until: Option<OffsetDateTime>,
    /// The last N entries of the log; `None` is all of it.
    pub tail: Option<usize>,
    /// For [`encode_for_client`]; reading does not look at it.
    pub timestamps: bool,
}

impl Default for LogQuery {
    fn default() -> LogQuery {
        LogQuery {
            stdout: true,
            stderr: true,
            since: None,
            until: None,
            tail: None,
            timestamps: false,
        }
    }
}

/// Appends a container's output to its json-file log.
///
/// Each entry is one `write(2)` of a whole JSON line to a file opened with
/// `O_APPEND`, with no buffering in between, so a reader sees an entry as
/// soon as it is written. Nothing is fsynced per line: as with dockerd, a
/// host crash can lose the last lines the page cache held; [`close`]
/// syncs once, at container exit.
///
/// [`close`]: LogWriter::close
pub struct LogWriter {
    file: RotatingFile,
    stdout: PendingLine,
    stderr: PendingLine,
    closed: bool,
}

/// The bytes of a stream's line that has not ended yet.
#[derive(Default)]
struct PendingLine {
    bytes: Vec<u8>,
    /// Set once a piece of this line has been written: Docker stamps every
    /// piece of a cut line with the time of the first piece.
    first_piece_at: Option<OffsetDateTime>,
}

impl LogWriter {
    /// Opens (or creates) the log at `path` for appending; a container that
    /// restarts keeps its earlier lines, and they count towards rotation.
    pub fn open(path: impl Into<PathBuf>, rotation: Rotation) -> Result<LogWriter, LogError> {
        let path = path.into();
        let file = open_for_append(&path)?;
        let size = file
            .metadata()
            .map_err(|source| LogError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(LogWriter {
            file: RotatingFile {
                path,
                file,
                size,
                rotation,
            },
            stdout: PendingLine::default(),
            stderr: PendingLine::default(),
            closed: false,
        })
    }

    /// The current log file, `container.log`.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Takes bytes just read from a stream's pipe or pty, stamped now.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<(), LogError> {
        self.write_at(stream, data, OffsetDateTime::now_utc())
    }

    /// Takes bytes read from a stream at `time`. Every line they end is
    /// written; the rest waits for its `\n`, or is written in 16 KiB pieces
    /// if it grows that long. On an error the lines of this call that were
    /// not yet written are lost; later calls carry on.
    pub fn write_at(
        &mut self,
        stream: Stream,
        data: &[u8],
        time: OffsetDateTime,
    ) -> Result<(), LogError> {
        let pending = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        pending.bytes.extend_from_slice(data);
        let mut done = 0;
        let result = loop {
            let rest = &pending.bytes[done..];
            let window = &rest[..rest.len().min(MAX_LINE)];
            let (piece, stamp) = if let Some(end) = window.iter().position(|&b| b == b'\n') {
                let stamp = pending.first_piece_at.take().unwrap_or(time);
                (&rest[..=end], stamp)
            } else if rest.len() >= MAX_LINE {
                (window, *pending.first_piece_at.get_or_insert(time))
            } else {
                break Ok(());
            };
            done += piece.len();
            if let Err(err) = self.file.append(stream, piece, stamp) {
                break Err(err);
            }
        };
        pending.bytes.drain(..done);
        result
    }

    /// Writes out the lines that have not ended, as Docker does when a
    /// container's streams close. Their entries have no trailing `\n`.
    pub fn flush_partial(&mut self) -> Result<(), LogError> {
        let now = OffsetDateTime::now_utc();
        for (stream, pending) in [
            (Stream::Stdout, &mut self.stdout),
            (Stream::Stderr, &mut self.stderr),
        ] {
            if pending.bytes.is_empty() {
                continue;
            }
            let stamp = *pending.first_piece_at.get_or_insert(now);
            let bytes = std::mem::take(&mut pending.bytes);
            self.file.append(stream, &bytes, stamp)?;
        }
        Ok(())
    }

    /// Flushes the unended lines and syncs the file: the container has exited.
    pub fn close(mut self) -> Result<(), LogError> {
        self.closed = true;
        self.flush_partial()?;
        self.file
            .file
            .sync_data()
            .map_err(|source| LogError::Write {
                path: self.file.path.clone(),
                source,
            })
    }
}

impl Drop for LogWriter {
    /// A shim that bails out early should still leave the last words of its
    /// container in the log; there is no one to report an error to here.
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.flush_partial();
        }
    }
}

/// The current log file and the rotation that replaces it.
struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

impl RotatingFile {
    /// Writes one entry. Like dockerd (`LogFile.WriteLogEntry`), the check
    /// comes before the write: a file is rotated once it has reached
    /// `max_size`, so it can end up one entry over. If rotation fails the
    /// entry still goes to the current file and the error is returned.
    fn append(
        &mut self,
        stream: Stream,
        line: &[u8],
        time: OffsetDateTime,
    ) -> Result<(), LogError> {
        let max_size = self.rotation.max_size;
        let rotated = if max_size > 0 && self.size >= max_size {
            self.rotate()
        } else {
            Ok(())
        };
        let mut entry = Vec::with_capacity(line.len() + 80);
        encode_stored_line(&mut entry, stream, line, time);
        self.file
            .write_all(&entry)
            .map_err(|source| LogError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.size += entry.len() as u64;
        rotated
    }

    /// `container.log.{n-1}` is dropped, each `.k` becomes `.k+1`, the current
    /// file becomes `.1` and a new empty one takes its name; the order of
    /// dockerd's `rotate()`, so readers holding the old file keep reading it.
    fn rotate(&mut self) -> Result<(), LogError> {
        let max_file = self.rotation.max_file.max(1);
        if max_file == 1 {
            remove_if_present(&self.path)?;
        } else {
            remove_if_present(&rotated_name(&self.path, max_file - 1))?;
            for k in (2..max_file).rev() {
                rename_if_present(
                    &rotated_name(&self.path, k - 1),
                    &rotated_name(&self.path, k),
                )?;
            }
            rename_if_present(&self.path, &rotated_name(&self.path, 1))?;
        }
        // The old file has been moved or removed by now (an error above
        // returns first), so this creates an empty one.
        self.file = open_for_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_for_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(LOG_FILE_MODE)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_owned(),
            source,
        })
}

fn remove_if_present(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(LogError::Rotate {
            path: path.to_owned(),
            source,
        }),
        _ => Ok(()),
    }
}

fn rename_if_present(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(LogError::Rotate {
            path: from.to_owned(),
            source,
        }),
        _ => Ok(()),
    }
}

/// `container.log.3` for `container.log` and 3.
fn rotated_name(path: &Path, k: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// One json-file line, byte for byte what dockerd writes
/// (`jsonlog.JSONLogs.MarshalJSONBuf`): `log`, `stream`, `time`, no spaces.
fn encode_stored_line(out: &mut Vec<u8>, stream: Stream, line: &[u8], time: OffsetDateTime) {
    out.extend_from_slice(b"{\"log\":");
    push_json_string(out, line);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(format_time(time, TimeDigits::Trimmed).as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A JSON string of raw container bytes, escaped exactly as dockerd's
/// `ffjsonWriteJSONBytesAsString` does, so our files match its byte for
/// byte: `<`, `>`, `&`, control bytes other than `\n`/`\r`, U+2028 and U+2029
/// become `\uXXXX`, and every byte that is not part of valid UTF-8 becomes
/// its own `\ufffd`. (serde_json over `from_utf8_lossy` would decode to
/// nearly the same text but differs in bytes: it leaves `<>&` and tabs as
/// they are and folds a truncated multi-byte sequence into one U+FFFD.)
fn push_json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.extend_from_slice(b"\\\\"),
                '"' => out.extend_from_slice(b"\\\""),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\0'..='\x1f' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

#[derive(Clone, Copy)]
enum TimeDigits {
    /// Go's `time.RFC3339Nano`, which the stored `time` field uses: trailing
    /// zeros of the fraction are dropped, and the dot with them at zero.
    Trimmed,
    /// `jsonmessage.RFC3339NanoFixed`, which `docker logs -t` prints: always
    /// nine digits, so the columns line up.
    Fixed,
}

/// RFC 3339 in UTC with nanoseconds, as Go formats it.
fn format_time(time: OffsetDateTime, digits: TimeDigits) -> String {
    let t = time.to_offset(UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = format!("{:09}", t.nanosecond());
    let nanos = match digits {
        TimeDigits::Fixed => nanos.as_str(),
        TimeDigits::Trimmed => nanos.trim_end_matches('0'),
    };
    if !nanos.is_empty() {
        text.push('.');
        text.push_str(nanos);
    }
    text.push('Z');
    text
}

/// One entry as `GET /containers/{id}/logs` sends it: with `timestamps` the
/// line is prefixed by its nine-digit RFC 3339 time and a space
/// (`httputils.WriteLogStream`); without a TTY it is framed by the 8-byte
/// `stdcopy` header `[type, 0, 0, 0, len as u32 big-endian]`.
pub fn encode_for_client(entry: &LogEntry, timestamps: bool, tty: bool) -> Vec<u8> {
    let mut payload = Vec::with_capacity(entry.line.len() + 31);
    if timestamps {
        payload.extend_from_slice(format_time(entry.time, TimeDigits::Fixed).as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(&entry.line);
    if tty {
        return payload;
    }
    let mut framed = Vec::with_capacity(payload.len() + 8);
    framed.extend_from_slice(&[entry.stream.frame_type(), 0, 0, 0]);
    // Entries are at most 16 KiB plus a timestamp, far below u32::MAX.
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    framed
}

/// The fields of a stored line that reading needs; dockerd may also have
/// written `attrs`, which is ignored.
#[derive(Deserialize)]
struct StoredLine {
    #[serde(default)]
    log: String,
    stream: String,
    time: String,
}

/// A line of the file back as an entry, or `None` for anything that is not
/// a whole, well-formed entry: such lines are skipped, never fatal.
fn parse_stored_line(line: &[u8]) -> Option<LogEntry> {
    let stored: StoredLine = serde_json::from_slice(line).ok()?;
    Some(LogEntry {
        stream: Stream::parse(&stored.stream)?,
        time: OffsetDateTime::parse(&stored.time, &Rfc3339)
            .ok()?
            .to_offset(UtcOffset::UTC),
        line: stored.log.into_bytes(),
    })
}

/// Reads the log at `path` (and its rotated files, oldest first) as
/// `docker logs` without `--follow` does. A missing log is an empty one, as
/// for a container that never ran. Lines that are not well-formed entries,
/// such as a half-written last line, are skipped.
///
/// The order of filters is dockerd's (`loggerutils.LogFile.ReadLogs`,
/// `tailFiles`, `forwarder.Do`, then `httputils.WriteLogStream`), which is
/// not the obvious one: `tail` takes the last N entries of the whole log
/// first, then `since`/`until` and the stream choice filter those N, so
/// `tail: Some(5), stdout only` can return fewer than 5. `since` is checked
/// only until the first entry that passes it, and the first entry after
/// `until` ends the read.
pub fn read_logs(path: impl AsRef<Path>, query: &LogQuery) -> Result<Vec<LogEntry>, LogError> {
    let mut cursor = Cursor::open(path.as_ref())?;
    let mut filter = Filter::new(query);
    let mut entries = Vec::new();
    match query.tail {
        Some(0) => {}
        Some(n) => {
            let last = cursor.tail(n)?;
            filter.admit_into(last, &mut entries);
        }
        None => {
            while let Some(chunk) = cursor.read_chunk()? {
                if filter.admit_into(chunk, &mut entries) {
                    break;
                }
            }
        }
    }
    Ok(entries)
}

/// Follows a log as `docker logs --follow` does: first the entries already
/// there (per the query, as [`read_logs`]), then each entry as it is
/// appended, across rotations, until the container is done and everything
/// written has been returned.
///
/// Pull-based and blocking, for `spawn_blocking`: call
/// [`next_batch`](LogFollower::next_batch) until it returns `None`, and
/// simply drop the follower when the client goes away.
pub struct LogFollower {
    cursor: Cursor,
    filter: Filter,
    is_done: Box<dyn Fn() -> bool + Send>,
    /// The tail taken when following began, not yet returned.
    backlog: Vec<LogEntry>,
    /// An entry after `until` was seen: nothing more will be returned.
    ended: bool,
}

impl LogFollower {
    /// Starts following the log at `path`. `is_done` should turn true once
    /// the container's log writer has been closed (its last partial lines
    /// flushed); the follower then returns what is left and ends. Where to
    /// start is fixed now, not at the first `next_batch`.
    pub fn open(
        path: impl AsRef<Path>,
        query: &LogQuery,
        is_done: impl Fn() -> bool + Send + 'static,
    ) -> Result<LogFollower, LogError> {
        let mut cursor = Cursor::open(path.as_ref())?;
        let mut filter = Filter::new(query);
        let mut backlog = Vec::new();
        let mut ended = false;
        match query.tail {
            // Nothing of the past; follow from the end of what is there.
            Some(0) => cursor.skip_to_end()?,
            Some(n) => {
                let last = cursor.tail(n)?;
                ended = filter.admit_into(last, &mut backlog);
            }
            // The whole log: read lazily, chunk by chunk, like new entries.
            None => {}
        }
        cursor.unbound();
        Ok(LogFollower {
            cursor,
            filter,
            is_done: Box::new(is_done),
            backlog,
            ended,
        })
    }

    /// The next entries, waiting up to `timeout` for some to be written.
    /// `Some(empty)` means none came in time (check on the client, then call
    /// again); `None` means the log is finished: the container is done and
    /// all of it was returned, or an entry after `until` was reached.
    pub fn next_batch(&mut self, timeout: Duration) -> Result<Option<Vec<LogEntry>>, LogError> {
        if !self.backlog.is_empty() {
            return Ok(Some(std::mem::take(&mut self.backlog)));
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.ended {
                return Ok(None);
            }
            // Asked before reading, so whatever was written before the
            // writer closed is read in this pass.
            let done = (self.is_done)();
            let batch = self.read_available()?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
            if done {
                self.ended = true;
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Some(Vec::new()));
            }
            thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    /// Entries admitted by the query from what has been written so far,
    /// moving on to newer files when the log has been rotated.
    fn read_available(&mut self) -> Result<Vec<LogEntry>, LogError> {
        let mut batch = Vec::new();
        loop {
            match self.cursor.read_chunk()? {
                Some(chunk) => {
                    self.ended = self.filter.admit_into(chunk, &mut batch);
                    if self.ended || !batch.is_empty() {
                        return Ok(batch);
                    }
                }
                None => {
                    if !self.cursor.follow_rotation()? {
                        return Ok(batch);
                    }
                }
            }
        }
    }
}

/// The query's filters, in dockerd's order and with its state: once an
/// entry has passed `since`, later ones are not checked against it, since
/// timestamps need not be monotonic (`forwarder.Do`).
struct Filter {
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    stdout: bool,
    stderr: bool,
}

impl Filter {
    fn new(query: &LogQuery) -> Filter {
        Filter {
            since: query.since,
            until: query.until,
            stdout: query.stdout,
            stderr: query.stderr,
        }
    }

    /// Moves the admitted entries to `out`; true once an entry after
    /// `until` has ended the log.
    fn admit_into(
        &mut self,
        entries: impl IntoIterator<Item = LogEntry>,
        out: &mut Vec<LogEntry>,
    ) -> bool {
        for entry in entries {
            if let Some(since) = self.since {
                if entry.time < since {
                    continue;
                }
                self.since = None;
            }
            if self.until.is_some_and(|until| entry.time > until) {
                return true;
            }
            let wanted = match entry.stream {
                Stream::Stdout => self.stdout,
                Stream::Stderr => self.stderr,
            };
            if wanted {
                out.push(entry);
            }
        }
        false
    }
}

/// Identity of a file across renames: a rotated file keeps it, the new
/// `container.log` has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// An open log file and how far into it entries have been read.
struct OpenLog {
    name: PathBuf,
    file: File,
    id: FileId,
    /// Start of the first line not yet read.
    pos: u64,
    /// Where reading stops: the size when the read began, so `read_logs`
    /// does not chase a busy writer forever. `None` when following.
    limit: Option<u64>,
}

impl OpenLog {
    fn open(name: PathBuf) -> Result<Option<OpenLog>, LogError> {
        let file = match File::open(&name) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LogError::Open { path: name, source }),
        };
        let meta = file.metadata().map_err(|source| LogError::Read {
            path: name.clone(),
            source,
        })?;
        Ok(Some(OpenLog {
            name,
            file,
            id: FileId::of(&meta),
            pos: 0,
            limit: Some(meta.len()),
        }))
    }

    fn read_err(&self) -> impl FnOnce(io::Error) -> LogError + '_ {
        |source| LogError::Read {
            path: self.name.clone(),
            source,
        }
    }

    /// Reads whole lines from `pos`, about [`READ_CHUNK`] bytes of them;
    /// returns the entries and where the next unread line starts. A line
    /// without its `\n` yet is left for later.
    fn read_lines(&self) -> Result<(Vec<LogEntry>, u64), LogError> {
        let stop = self.limit.unwrap_or(u64::MAX);
        let mut buf = Vec::new();
        let mut block = vec![0; 64 * 1024];
        let mut at = self.pos;
        let mut last_newline = None;
        while at < stop && !(buf.len() >= READ_CHUNK && last_newline.is_some()) {
            let want = block
                .len()
                .min(usize::try_from(stop - at).unwrap_or(usize::MAX));
            let n = match self.file.read_at(&mut block[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.read_err()(err)),
            };
            if let Some(i) = block[..n].iter().rposition(|&b| b == b'\n') {
                last_newline = Some(buf.len() + i);
            }
            buf.extend_from_slice(&block[..n]);
            at += n as u64;
        }
        let Some(last) = last_newline else {
            return Ok((Vec::new(), self.pos));
        };
        let entries = buf[..=last]
            .split_inclusive(|&b| b == b'\n')
            .filter_map(parse_stored_line)
            .collect();
        Ok((entries, self.pos + last as u64 + 1))
    }

    /// The end of the last whole line before `limit` (or the end of file),
    /// found by reading backwards, for following from "now".
    fn end_of_last_line(&self) -> Result<u64, LogError> {
        let mut end = match self.limit {
            Some(limit) => limit,
            None => self.file.metadata().map_err(self.read_err())?.len(),
        };
        let mut block = vec![0; 64 * 1024];
        while end > self.pos {
            let start = end.saturating_sub(block.len() as u64).max(self.pos);
            let len = (end - start) as usize;
            self.file
                .read_exact_at(&mut block[..len], start)
                .map_err(self.read_err())?;
            if let Some(i) = block[..len].iter().rposition(|&b| b == b'\n') {
                return Ok(start + i as u64 + 1);
            }
            end = start;
        }
        Ok(self.pos)
    }
}

/// The files of one log in the order their entries were written: rotated
/// files oldest first, then the file now named `container.log` at the back.
struct Cursor {
    path: PathBuf,
    files: VecDeque<OpenLog>,
}

impl Cursor {
    /// Opens the current file first and the rotated ones after it, so a
    /// rotation in between shows up as a file opened twice (skipped) rather
    /// than as entries missed.
    fn open(path: &Path) -> Result<Cursor, LogError> {
        let mut files = VecDeque::new();
        let current = OpenLog::open(path.to_owned())?;
        let mut k = 1;
        while let Some(mut rotated) = OpenLog::open(rotated_name(path, k))? {
            k += 1;
            let opened_already = current.as_ref().is_some_and(|c| c.id == rotated.id)
                || files.iter().any(|f: &OpenLog| f.id == rotated.id);
            if !opened_already {
                // Rotated files are finished; read them to their end.
                rotated.limit = None;
                files.push_front(rotated);
            }
        }
        files.extend(current);
        Ok(Cursor {
            path: path.to_owned(),
            files,
        })
    }

    /// The next entries in order, `None` once the newest file's end (or its
    /// limit) has been reached.
    fn read_chunk(&mut self) -> Result<Option<Vec<LogEntry>>, LogError> {
        while let Some(front) = self.files.front_mut() {
            let (entries, next) = front.read_lines()?;
            if next > front.pos {
                front.pos = next;
                return Ok(Some(entries));
            }
            if self.files.len() == 1 {
                break;
            }
            self.files.pop_front();
        }
        Ok(None)
    }

    /// The last `n` entries up to the limit, reading everything once but
    /// keeping only `n` in memory.
    fn tail(&mut self, n: usize) -> Result<VecDeque<LogEntry>, LogError> {
        let mut last = VecDeque::with_capacity(n.min(4096));
        while let Some(chunk) = self.read_chunk()? {
            for entry in chunk {
                if last.len() == n {
                    last.pop_front();
                }
                last.push_back(entry);
            }
        }
        Ok(last)
    }

    /// Skips everything written so far.
    fn skip_to_end(&mut self) -> Result<(), LogError> {
        while self.files.len() > 1 {
            self.files.pop_front();
        }
        if let Some(current) = self.files.back_mut() {
            current.pos = current.end_of_last_line()?;
        }
        Ok(())
    }

    /// From here on, read files to wherever they have grown.
    fn unbound(&mut self) {
        for file in &mut self.files {
            file.limit = None;
        }
    }

    /// Called when everything written has been read: if `container.log` is
    /// no longer the file being read, the log was rotated, so the files
    /// written since (rotated ones missed between two polls, then the new
    /// `container.log`) are queued after it. True if there is more to read.
    fn follow_rotation(&mut self) -> Result<bool, LogError> {
        let meta = match fs::metadata(&self.path) {
            Ok(meta) => meta,
            // Between rename and create, or not created yet: look again later.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(LogError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let id = FileId::of(&meta);
        if let Some(current) = self.files.back_mut()
            && current.id == id
        {
            // Truncated under us (not something we do): start over.
            if meta.len() < current.pos {
                current.pos = 0;
                return Ok(true);
            }
            return Ok(false);
        }
        // Files newer than the one being read, newest first: rotated files
        // down to where that one went. If it is gone (rotated out, or
        // `max_file` 1), every rotated file is newer than it.
        let mut newer = Vec::new();
        let mut k = 1;
        while let Some(rotated) = OpenLog::open(rotated_name(&self.path, k))? {
            k += 1;
            if self.files.iter().any(|f| f.id == rotated.id) {
                break;
            }
            newer.push(rotated);
        }
        newer.reverse();
        newer.extend(OpenLog::open(self.path.clone())?);
        let mut queued = false;
        for mut file in newer {
            if !self.files.iter().any(|f| f.id == file.id) {
                file.limit = None;
                self.files.push_back(file);
                queued = true;
            }
        }
        Ok(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    fn utc(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    fn t0() -> OffsetDateTime {
        utc("2026-11-28T08:23:47.123456789Z")
    }

    fn at(seconds: i64) -> OffsetDateTime {
        t0() + time::Duration::seconds(seconds)
    }

    fn lines(entries: &[LogEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.line.clone()).unwrap())
            .collect()
    }

    fn log_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("container.log")
    }

    fn everything() -> LogQuery {
        LogQuery::default()
    }

    #[test]
    fn lines_are_split_across_chunk_boundaries_per_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"hel").unwrap();
        writer.write(Stream::Stderr, b"oops: ").unwrap();
        writer.write(Stream::Stdout, b"lo\nwor").unwrap();
        writer.write(Stream::Stderr, b"bad\n").unwrap();
        writer.write(Stream::Stdout, b"ld\n\nlast").unwrap();
        // Only whole lines are in the file so far.
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(lines(&entries), ["hello\n", "oops: bad\n", "world\n", "\n"]);
        let streams: Vec<_> = entries.iter().map(|e| e.stream).collect();
        assert_eq!(
            streams,
            [
                Stream::Stdout,
                Stream::Stderr,
                Stream::Stdout,
                Stream::Stdout
            ]
        );
        writer.close().unwrap();
    }

    #[test]
    fn partial_lines_are_flushed_without_newline_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"done\nprompt> ").unwrap();
        writer.write(Stream::Stderr, b"no newline").unwrap();
        writer.close().unwrap();
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(lines(&entries), ["done\n", "prompt> ", "no newline"]);
    }

    #[test]
    fn dropping_the_writer_still_flushes_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"cut short").unwrap();
        drop(writer);
        assert_eq!(
            lines(&read_logs(&path, &everything()).unwrap()),
            ["cut short"]
        );
    }

    #[test]
    fn long_lines_are_cut_at_16k_and_pieces_share_the_first_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        let long = vec![b'x'; 2 * MAX_LINE + 10];
        // In odd-sized chunks, later ones at later times.
        for (i, chunk) in long.chunks(5000).enumerate() {
            writer
                .write_at(Stream::Stdout, chunk, at(i as i64))
                .unwrap();
        }
        writer.write_at(Stream::Stdout, b"\n", at(100)).unwrap();
        let entries = read_logs(&path, &everything()).unwrap();
        let sizes: Vec<_> = entries.iter().map(|e| e.line.len()).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 11]);
        assert!(entries[..2].iter().all(|e| !e.line.ends_with(b"\n")));
        assert_eq!(entries[2].line, b"xxxxxxxxxx\n");
        // The first piece was cut from the chunk written at 3 s.
        assert!(entries.iter().all(|e| e.time == at(3)));
    }

    #[test]
    fn a_line_of_16k_with_its_newline_is_one_entry_and_one_byte_more_is_two() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        let mut fits = vec![b'a'; MAX_LINE - 1];
        fits.push(b'\n');
        writer.write(Stream::Stdout, &fits).unwrap();
        let mut over = vec![b'b'; MAX_LINE];
        over.push(b'\n');
        writer.write(Stream::Stdout, &over).unwrap();
        let entries = read_logs(&path, &everything()).unwrap();
        let sizes: Vec<_> = entries.iter().map(|e| e.line.len()).collect();
        // Docker's 16 KiB buffer holds the newline too: a 16384-byte line
        // fills it, and its newline becomes an entry of its own.
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 1]);
    }

    #[test]
    fn stored_lines_match_dockerd_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer
            .write_at(Stream::Stdout, b"a <b> & \"c\"\t\\ \x01\r\n", t0())
            .unwrap();
        let trailing_zeros = utc("2026-01-02T03:04:05.120000000Z");
        writer
            .write_at(Stream::Stderr, b"x\n", trailing_zeros)
            .unwrap();
        let whole_second = utc("2026-01-02T03:04:05+02:00");
        writer
            .write_at(Stream::Stderr, b"\xe2\x80\xa8\n", whole_second)
            .unwrap();
        writer.close().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"log":"a \u003cb\u003e \u0026 \"c\"\u0009\\ \u0001\r\n","stream":"stdout","time":"2026-11-28T08:23:47.123456789Z"}"#,
                "\n",
                r#"{"log":"x\n","stream":"stderr","time":"2026-01-02T03:04:05.12Z"}"#,
                "\n",
                r#"{"log":"\u2028\n","stream":"stderr","time":"2026-01-02T01:04:05Z"}"#,
                "\n",
            )
        );
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(entries[0].line, b"a <b> & \"c\"\t\\ \x01\r\n");
        assert_eq!(entries[0].time, t0());
        assert_eq!(entries[1].time, trailing_zeros);
        assert_eq!(entries[2].time, whole_second);
    }

    #[test]
    fn invalid_utf8_becomes_one_replacement_per_byte_as_in_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        // A lone 0xff, then a euro sign missing its last byte, then valid text.
        writer
            .write_at(Stream::Stdout, b"a\xffb\xe2\x82c \xe2\x82\xac\n", t0())
            .unwrap();
        writer.close().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"log":"a\ufffdb\ufffd\ufffdc €\n","stream""#),
            "{text}"
        );
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(lines(&entries), ["a\u{fffd}b\u{fffd}\u{fffd}c €\n"]);
    }

    #[test]
    fn lines_written_by_dockerd_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        fs::write(
            &path,
            concat!(
                r#"{"log":"with attrs\n","stream":"stderr","attrs":{"tag":"web"},"time":"2019-05-01T10:00:00.5Z"}"#,
                "\n",
                r#"{"log":"offset\n","stream":"stdout","time":"2019-05-01T12:00:01+02:00"}"#,
                "\n",
            ),
        )
        .unwrap();
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(lines(&entries), ["with attrs\n", "offset\n"]);
        assert_eq!(entries[0].stream, Stream::Stderr);
        assert_eq!(entries[0].time, utc("2019-05-01T10:00:00.5Z"));
        assert_eq!(entries[1].time, utc("2019-05-01T10:00:01Z"));
    }

    #[test]
    fn truncated_and_garbage_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write_at(Stream::Stdout, b"one\n", at(0)).unwrap();
        drop(writer);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"garbage\n{\"log\":\"no stream\\n\",\"time\":\"2026-01-01T00:00:00Z\"}\n")
            .unwrap();
        file.write_all(b"{\"log\":\"bad time\\n\",\"stream\":\"stdout\",\"time\":\"yesterday\"}\n")
            .unwrap();
        drop(file);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write_at(Stream::Stdout, b"two\n", at(1)).unwrap();
        drop(writer);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"log\":\"half wri").unwrap();
        let entries = read_logs(&path, &everything()).unwrap();
        assert_eq!(lines(&entries), ["one\n", "two\n"]);
    }

    #[test]
    fn a_missing_log_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_logs(log_in(&dir), &everything()).unwrap().is_empty());
    }

    #[test]
    fn rotation_keeps_max_file_files_and_reads_across_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        // max_size 1: every entry after the first starts a new file.
        let rotation = Rotation {
            max_size: 1,
            max_file: 3,
        };
        let mut writer = LogWriter::open(&path, rotation).unwrap();
        for i in 1..=5 {
            writer
                .write_at(Stream::Stdout, format!("line {i}\n").as_bytes(), at(i))
                .unwrap();
        }
        writer.close().unwrap();
        let only_line_of = |name: &Path| {
            let text = fs::read_to_string(name).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            text
        };
        assert!(only_line_of(&path).contains("line 5"));
        assert!(only_line_of(&rotated_name(&path, 1)).contains("line 4"));
        assert!(only_line_of(&rotated_name(&path, 2)).contains("line 3"));
        assert!(!rotated_name(&path, 3).exists());
        assert_eq!(
            lines(&read_logs(&path, &everything()).unwrap()),
            ["line 3\n", "line 4\n", "line 5\n"]
        );
        let last_two = LogQuery {
            tail: Some(2),
            ..everything()
        };
        assert_eq!(
            lines(&read_logs(&path, &last_two).unwrap()),
            ["line 4\n", "line 5\n"]
        );
    }

    #[test]
    fn a_file_is_rotated_once_it_has_reached_max_size_as_in_dockerd() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut entry = Vec::new();
        encode_stored_line(&mut entry, Stream::Stdout, b"line 1\n", at(1));
        let entry_len = entry.len() as u64;
        let rotation = Rotation {
            max_size: entry_len + 1,
            max_file: 2,
        };
        let mut writer = LogWriter::open(&path, rotation).unwrap();
        for i in 1..=3 {
            writer
                .write_at(Stream::Stdout, format!("line {i}\n").as_bytes(), at(i))
                .unwrap();
        }
        writer.close().unwrap();
        // One entry is under max_size, so the second goes in too and takes
        // the file past it; the third starts a new file.
        assert_eq!(
            fs::metadata(rotated_name(&path, 1)).unwrap().len(),
            2 * entry_len
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), entry_len);
    }

    #[test]
    fn max_file_1_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let rotation = Rotation {
            max_size: 1,
            max_file: 1,
        };
        let mut writer = LogWriter::open(&path, rotation).unwrap();
        writer.write(Stream::Stdout, b"old\nnew\n").unwrap();
        writer.close().unwrap();
        assert_eq!(lines(&read_logs(&path, &everything()).unwrap()), ["new\n"]);
        assert!(!rotated_name(&path, 1).exists());
    }

    #[test]
    fn reopening_appends_and_counts_the_old_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let rotation = Rotation {
            max_size: 1,
            max_file: 2,
        };
        LogWriter::open(&path, rotation)
            .unwrap()
            .write(Stream::Stdout, b"first run\n")
            .unwrap();
        LogWriter::open(&path, rotation)
            .unwrap()
            .write(Stream::Stdout, b"second run\n")
            .unwrap();
        assert_eq!(
            lines(&read_logs(&path, &everything()).unwrap()),
            ["first run\n", "second run\n"]
        );
        assert!(rotated_name(&path, 1).exists());
    }

    /// t0 stdout, t1 stderr, t2 stdout, t3 stderr, t4 stdout, t5 stderr.
    fn six_entries(path: &Path) {
        let mut writer = LogWriter::open(path, Rotation::NEVER).unwrap();
        for i in 0..6 {
            let stream = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            writer
                .write_at(stream, format!("{i}\n").as_bytes(), at(i))
                .unwrap();
        }
        writer.close().unwrap();
    }

    fn query(path: &Path, query: LogQuery) -> Vec<String> {
        read_logs(path, &query)
            .unwrap()
            .iter()
            .map(|e| {
                String::from_utf8(e.line.clone())
                    .unwrap()
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn since_is_inclusive_and_until_includes_its_own_instant() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        six_entries(&path);
        let since = |s| LogQuery {
            since: Some(at(s)),
            ..everything()
        };
        assert_eq!(query(&path, since(2)), ["2", "3", "4", "5"]);
        let until = LogQuery {
            until: Some(at(3)),
            ..everything()
        };
        assert_eq!(query(&path, until), ["0", "1", "2", "3"]);
        let between = LogQuery {
            since: Some(at(1)),
            until: Some(at(3) - time::Duration::nanoseconds(1)),
            ..everything()
        };
        assert_eq!(query(&path, between), ["1", "2"]);
        assert!(query(&path, since(6)).is_empty());
    }

    #[test]
    fn streams_are_chosen_after_tail_as_in_dockerd() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        six_entries(&path);
        let stdout = LogQuery {
            stderr: false,
            ..everything()
        };
        assert_eq!(query(&path, stdout.clone()), ["0", "2", "4"]);
        let stderr = LogQuery {
            stdout: false,
            ..everything()
        };
        assert_eq!(query(&path, stderr), ["1", "3", "5"]);
        let last_three_stdout = LogQuery {
            tail: Some(3),
            ..stdout
        };
        assert_eq!(query(&path, last_three_stdout), ["4"]);
    }

    #[test]
    fn tail_is_taken_before_since_and_until_as_in_dockerd() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        six_entries(&path);
        let tail = |n, since: Option<i64>, until: Option<i64>| LogQuery {
            tail: Some(n),
            since: since.map(at),
            until: until.map(at),
            ..everything()
        };
        assert_eq!(query(&path, tail(2, None, None)), ["4", "5"]);
        assert_eq!(query(&path, tail(100, None, None)).len(), 6);
        assert!(query(&path, tail(0, None, None)).is_empty());
        // The last 4 are 2..=5; since 4 leaves two of them.
        assert_eq!(query(&path, tail(4, Some(4), None)), ["4", "5"]);
        // since older than the tail changes nothing.
        assert_eq!(query(&path, tail(2, Some(0), None)), ["4", "5"]);
        // The last 2 are both after until: nothing, as dockerd answers.
        assert!(query(&path, tail(2, None, Some(3))).is_empty());
        assert_eq!(query(&path, tail(3, Some(2), Some(4))), ["3", "4"]);
    }

    #[test]
    fn since_is_checked_until_first_met_and_until_ends_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        // A clock that stepped back: times 1, 5, 3, 2.
        for (line, t) in [("a", 1), ("b", 5), ("c", 3), ("d", 2)] {
            writer
                .write_at(Stream::Stdout, format!("{line}\n").as_bytes(), at(t))
                .unwrap();
        }
        writer.close().unwrap();
        let since_4 = LogQuery {
            since: Some(at(4)),
            ..everything()
        };
        assert_eq!(query(&path, since_4), ["b", "c", "d"]);
        let until_4 = LogQuery {
            until: Some(at(4)),
            ..everything()
        };
        assert_eq!(query(&path, until_4), ["a"]);
    }

    fn done_flag() -> (Arc<AtomicBool>, impl Fn() -> bool + Send + 'static) {
        let flag = Arc::new(AtomicBool::new(false));
        let reader = Arc::clone(&flag);
        (flag, move || reader.load(Ordering::SeqCst))
    }

    /// Collects batches until `want` entries have come, failing after a while.
    fn collect(follower: &mut LogFollower, want: usize) -> Vec<String> {
        let mut got = Vec::new();
        let give_up = Instant::now() + Duration::from_secs(10);
        while got.len() < want {
            assert!(Instant::now() < give_up, "only got {got:?}");
            let batch = follower
                .next_batch(Duration::from_millis(200))
                .unwrap()
                .unwrap();
            got.extend(lines(&batch));
        }
        got
    }

    #[test]
    fn follow_returns_existing_then_new_entries_then_ends_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"before\n").unwrap();
        let (done, is_done) = done_flag();
        let mut follower = LogFollower::open(&path, &everything(), is_done).unwrap();
        assert_eq!(collect(&mut follower, 1), ["before\n"]);
        // Nothing new: an empty batch after the timeout.
        assert_eq!(
            follower.next_batch(Duration::from_millis(60)).unwrap(),
            Some(vec![])
        );

        let background = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            writer.write(Stream::Stderr, b"after\nhalf").unwrap();
            writer.close().unwrap();
            done.store(true, Ordering::SeqCst);
        });
        assert_eq!(collect(&mut follower, 2), ["after\n", "half"]);
        background.join().unwrap();
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn follow_drains_what_was_written_before_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let (done, is_done) = done_flag();
        let mut follower = LogFollower::open(&path, &everything(), is_done).unwrap();
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"last words\n").unwrap();
        writer.close().unwrap();
        done.store(true, Ordering::SeqCst);
        let batch = follower
            .next_batch(Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(lines(&batch), ["last words\n"]);
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn follow_survives_rotation_including_rotations_missed_between_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let rotation = Rotation {
            max_size: 1,
            max_file: 5,
        };
        let mut writer = LogWriter::open(&path, rotation).unwrap();
        writer.write(Stream::Stdout, b"0\n1\n").unwrap();
        let (done, is_done) = done_flag();
        let tail_one = LogQuery {
            tail: Some(1),
            ..everything()
        };
        let mut follower = LogFollower::open(&path, &tail_one, is_done).unwrap();
        assert_eq!(collect(&mut follower, 1), ["1\n"]);
        // One rotation per line: the file being followed ends up as .3.
        writer.write(Stream::Stdout, b"2\n3\n4\n").unwrap();
        assert_eq!(collect(&mut follower, 3), ["2\n", "3\n", "4\n"]);
        writer.write(Stream::Stdout, b"5\n").unwrap();
        assert_eq!(collect(&mut follower, 1), ["5\n"]);
        writer.close().unwrap();
        done.store(true, Ordering::SeqCst);
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn follow_reads_the_whole_log_across_files_when_not_tailing() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let rotation = Rotation {
            max_size: 1,
            max_file: 3,
        };
        let mut writer = LogWriter::open(&path, rotation).unwrap();
        writer.write(Stream::Stdout, b"a\nb\nc\n").unwrap();
        let (done, is_done) = done_flag();
        let mut follower = LogFollower::open(&path, &everything(), is_done).unwrap();
        writer.write(Stream::Stdout, b"d\n").unwrap();
        // The follower opened a, b, c before d rotated a out of existence.
        assert_eq!(collect(&mut follower, 4), ["a\n", "b\n", "c\n", "d\n"]);
        done.store(true, Ordering::SeqCst);
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn follow_with_tail_0_starts_at_the_end_and_waits_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let (_done, is_done) = done_flag();
        let only_new = LogQuery {
            tail: Some(0),
            ..everything()
        };
        // The container has not written its log yet.
        let mut early = LogFollower::open(&path, &only_new, is_done).unwrap();
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"old\nhalf").unwrap();
        let (_done, is_done) = done_flag();
        let mut late = LogFollower::open(&path, &only_new, is_done).unwrap();
        writer.write(Stream::Stdout, b" line\nnew\n").unwrap();
        assert_eq!(collect(&mut early, 3), ["old\n", "half line\n", "new\n"]);
        // The half-written line was not "before": it ended after following began.
        assert_eq!(collect(&mut late, 2), ["half line\n", "new\n"]);
    }

    #[test]
    fn follow_ends_at_the_first_entry_after_until() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write_at(Stream::Stdout, b"before\n", at(1)).unwrap();
        let (_done, is_done) = done_flag();
        let until_2 = LogQuery {
            until: Some(at(2)),
            ..everything()
        };
        let mut follower = LogFollower::open(&path, &until_2, is_done).unwrap();
        assert_eq!(collect(&mut follower, 1), ["before\n"]);
        writer
            .write_at(Stream::Stdout, b"at until\n", at(2))
            .unwrap();
        writer.write_at(Stream::Stdout, b"after\n", at(3)).unwrap();
        writer
            .write_at(Stream::Stdout, b"clock stepped back\n", at(0))
            .unwrap();
        assert_eq!(collect(&mut follower, 1), ["at until\n"]);
        assert_eq!(follower.next_batch(Duration::from_secs(5)).unwrap(), None);
    }

    #[test]
    fn follow_skips_a_line_broken_by_a_crashed_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_in(&dir);
        let (_done, is_done) = done_flag();
        let mut follower = LogFollower::open(&path, &everything(), is_done).unwrap();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"log\":\"cut off\\n\",\"str").unwrap();
        assert_eq!(
            follower.next_batch(Duration::from_millis(60)).unwrap(),
            Some(vec![])
        );
        file.write_all(b"\n").unwrap();
        let mut writer = LogWriter::open(&path, Rotation::NEVER).unwrap();
        writer.write(Stream::Stdout, b"restarted\n").unwrap();
        assert_eq!(collect(&mut follower, 1), ["restarted\n"]);
    }

    #[test]
    fn follower_and_writer_can_move_to_another_thread() {
        // The engine runs the follower under spawn_blocking.
        fn is_send<T: Send>() {}
        is_send::<LogFollower>();
        is_send::<LogWriter>();
    }

    #[test]
    fn frames_match_stdcopy_byte_for_byte() {
        let entry = |stream, line: &[u8]| LogEntry {
            stream,
            time: t0(),
            line: line.to_vec(),
        };
        assert_eq!(
            encode_for_client(&entry(Stream::Stdout, b"hi\n"), false, false),
            b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
        );
        assert_eq!(
            encode_for_client(&entry(Stream::Stderr, b"err"), false, false),
            b"\x02\x00\x00\x00\x00\x00\x00\x03err"
        );
        let big = vec![b'z'; 0x1_0203];
        let framed = encode_for_client(&entry(Stream::Stdout, &big), false, false);
        assert_eq!(framed[..8], [1, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(framed.len(), 8 + big.len());
        assert_eq!(
            encode_for_client(&entry(Stream::Stderr, b"raw\r\n"), false, true),
            b"raw\r\n"
        );
    }

    #[test]
    fn client_timestamps_always_have_nine_digits() {
        let entry = |time| LogEntry {
            stream: Stream::Stdout,
            time,
            line: b"hi\n".to_vec(),
        };
        assert_eq!(
            encode_for_client(&entry(t0()), true, true),
            b"2026-11-28T08:23:47.123456789Z hi\n"
        );
        let round = utc("2026-01-02T03:04:05+01:00");
        assert_eq!(
            encode_for_client(&entry(round), true, true),
            b"2026-01-02T02:04:05.000000000Z hi\n"
        );
        let tenth = utc("2026-01-02T03:04:05.1Z");
        let framed = encode_for_client(&entry(tenth), true, false);
        let payload = b"2026-01-02T03:04:05.100000000Z hi\n";
        assert_eq!(framed[..8], [1, 0, 0, 0, 0, 0, 0, payload.len() as u8]);
        assert_eq!(&framed[8..], payload);
    }
}
