//! Reading a log for people: records in order with filters, and following
//! the log as it grows (across rotations). Reading checks nothing; that is
//! [`crate::verify`]'s job.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::chain::log_files;
use crate::record::{Decision, Entry, Record, Stage};
use crate::verify::Location;

/// Which event records to show. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    /// An action (`container.create`), or a prefix ending in `*`
    /// (`container.*`).
    pub action: Option<String>,
    pub decision: Option<Decision>,
    pub stage: Option<Stage>,
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records before this time.
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        if self.user.as_ref().is_some_and(|u| *u != record.user) {
            return false;
        }
        if let Some(wanted) = &self.action {
            let action = record.action.as_deref().unwrap_or("");
            let ok = match wanted.strip_suffix('*') {
                Some(prefix) => record.action.is_some() && action.starts_with(prefix),
                None => action == wanted,
            };
            if !ok {
                return false;
            }
        }
        self.decision.is_none_or(|d| d == record.decision)
            && self.stage.is_none_or(|s| s == record.stage)
            && self.since.is_none_or(|t| record.time >= t)
            && self.until.is_none_or(|t| record.time < t)
    }
}

/// One line as read: where it is, its exact bytes, what it says.
#[derive(Debug, Clone)]
pub struct Line {
    pub location: Location,
    /// The line's bytes, without the newline.
    pub raw: Vec<u8>,
    pub entry: Entry,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: unparseable: {reason}")]
    Unparseable { location: Location, reason: String },
}

/// Every complete line of the given files or directories, in chain order.
/// An unparseable line is an `Err` item; reading goes on after it.
pub fn lines(inputs: &[PathBuf]) -> Result<Lines, ReadError> {
    let files = crate::verify::expand(inputs).map_err(|e| match e {
        crate::verify::VerifyError::Io { path, source } => ReadError::Io { path, source },
        other => ReadError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    Ok(Lines {
        files: files.into(),
        current: None,
    })
}

pub struct Lines {
    files: VecDeque<PathBuf>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
}

impl Iterator for Lines {
    type Item = Result<Line, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some((path, reader, number)) = &mut self.current else {
                let path = self.files.pop_front()?;
                match File::open(&path) {
                    Ok(file) => self.current = Some((path, BufReader::new(file), 0)),
                    Err(source) => return Some(Err(ReadError::Io { path, source })),
                }
                continue;
            };
            let mut raw = Vec::new();
            match reader.read_until(b'\n', &mut raw) {
                Err(source) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(ReadError::Io { path, source }));
                }
                // The end, or a line still being written: not a record yet.
                Ok(_) if raw.last() != Some(&b'\n') => self.current = None,
                Ok(_) => {
                    raw.pop();
                    *number += 1;
                    let location = Location {
                        file: path.clone(),
                        line: *number,
                    };
                    return Some(parse(location, raw));
                }
            }
        }
    }
}

fn parse(location: Location, raw: Vec<u8>) -> Result<Line, ReadError> {
    match Entry::parse(&raw) {
        Ok(entry) => Ok(Line {
            location,
            raw,
            entry,
        }),
        Err(e) => Err(ReadError::Unparseable {
            location,
            reason: e.to_string(),
        }),
    }
}

/// Follows a log directory as the writer appends to it, like `tail -f`,
/// moving on to the next file when the log rotates.
pub struct Follower {
    dir: PathBuf,
    path: Option<PathBuf>,
    offset: u64,
    line: u64,
}

impl Follower {
    /// Starts after the last complete line of the newest file.
    pub fn at_end(dir: &Path) -> Result<Follower, ReadError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReadError::Io { path, source }
        };
        let newest = log_files(dir).map_err(io(dir))?.pop();
        let (mut offset, mut line) = (0, 0);
        if let Some(path) = &newest {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io(path))?;
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\n' {
                    offset = i as u64 + 1;
                    line += 1;
                }
            }
        }
        Ok(Follower {
            dir: dir.to_path_buf(),
            path: newest,
            offset,
            line,
        })
    }

    /// The lines completed since the last call (possibly none).
    pub fn poll(&mut self) -> Result<Vec<Result<Line, ReadError>>, ReadError> {
        let mut out = Vec::new();
        loop {
            // Looked at before reading: the writer finishes a file before it
            // starts the next, so once a newer file exists, this one is done.
            let files = log_files(&self.dir).map_err(|source| ReadError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let newer = match &self.path {
                Some(current) => files.into_iter().find(|f| f > current),
                None => files.into_iter().next(),
            };
            if let Some(path) = self.path.clone() {
                self.read_new(&path, &mut out)?;
            }
            match newer {
                Some(next) => {
                    self.path = Some(next);
                    self.offset = 0;
                    self.line = 0;
                }
                None => return Ok(out),
            }
        }
    }

    fn read_new(
        &mut self,
        path: &Path,
        out: &mut Vec<Result<Line, ReadError>>,
    ) -> Result<(), ReadError> {
        let io = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut start = 0;
        while let Some(n) = bytes[start..].iter().position(|&b| b == b'\n') {
            let raw = bytes[start..start + n].to_vec();
            start += n + 1;
            self.line += 1;
            let location = Location {
                file: path.to_path_buf(),
                line: self.line,
            };
            out.push(parse(location, raw));
        }
        self.offset += start as u64;
        Ok(())
    }
}
