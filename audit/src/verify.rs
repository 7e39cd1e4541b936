//! Checking a log: every line parses, seqs go up by one, every `prev` is
//! the hash of the line before it, and every checkpoint is signed by the
//! audit key. The first thing wrong is named as `FILE:LINE: why`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::chain::{GENESIS, Link, checkpoint_message, file_first_seq, line_hash, log_files};
use crate::key::PublicKey;
use crate::record::{Checkpoint, Kind};

/// A line of a log file, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: PathBuf,
    pub line: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept a log whose first record is not seq 1 (old files removed on
    /// purpose). Its first `prev` and first checkpoint count cannot be
    /// checked then.
    pub allow_pruned: bool,
}

/// What a passing log holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub files: usize,
    /// Event records.
    pub records: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Records after the last checkpoint: chained, but not yet signed, so
    /// they could be cut off or rewritten without a trace.
    pub uncovered: u64,
    /// The log did not start at seq 1 (allowed by `allow_pruned`).
    pub pruned: bool,
    /// The last line of the newest file has no newline yet: a write in
    /// progress, or one a crash cut short (the writer removes it on reopen).
    pub incomplete_tail: Option<Location>,
    /// What the writer noted in its checkpoints (torn writes removed,
    /// outages), with the checkpoint that said it.
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub location: Location,
    pub note: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log fails a check: `location` is the first bad line.
    #[error("{location}: {fault}")]
    Tampered {
        location: Location,
        fault: Fault,
        /// What was verified before it.
        checked: Box<Report>,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no audit log files given or found")]
    NoFiles,
}

/// Why a line is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("unparseable: {0}")]
    Unparseable(String),
    #[error("edited: its hash does not match the prev of the next record ({next})")]
    Edited { next: Location },
    #[error(
        "edited: its prev does not match the hash of the record before it, \
         nor its hash the prev of the record after it"
    )]
    EditedPrev,
    #[error(
        "deleted: expected seq {expected}, found {found}: {} record(s) missing before this line",
        found - expected
    )]
    Deleted { expected: u64, found: u64 },
    #[error("reordered: expected seq {expected}, found {found} (seq {expected} is at {at})")]
    Reordered {
        expected: u64,
        found: u64,
        at: Location,
    },
    #[error("reordered or inserted: expected seq {expected}, found {found}")]
    OutOfOrder { expected: u64, found: u64 },
    #[error(
        "deleted: the log starts at seq {found}, not 1; earlier records are missing \
         (if old files were removed on purpose, allow a pruned log)"
    )]
    MissingStart { found: u64 },
    #[error("edited: the first record's prev is not the genesis hash")]
    BadGenesis,
    #[error(
        "renamed or deleted: the file name says it starts at seq {named}, its first record is seq {found}"
    )]
    FileName { named: u64, found: u64 },
    #[error(
        "bad signature: checkpoint seq {seq} does not verify with key {key}: forged, or the lines it covers were rewritten"
    )]
    BadSignature { seq: u64, key: String },
    #[error("checkpoint seq {seq} is signed by key {found}, not by the key given ({expected})")]
    WrongKey {
        seq: u64,
        found: String,
        expected: String,
    },
    #[error(
        "checkpoint seq {seq} counts {claimed} records since the last one, the log has {actual}"
    )]
    BadCount { seq: u64, claimed: u64, actual: u64 },
    #[error("incomplete: the line has no newline, and more of the log follows")]
    Unterminated,
}

/// Verifies the log made of `inputs`: files, or directories whose
/// `audit-*.jsonl` files are taken. Files are checked in name order, which
/// is chain order.
pub fn verify(inputs: &[PathBuf], key: &PublicKey) -> Result<Report, VerifyError> {
    verify_with(inputs, key, &VerifyOptions::default())
}

pub fn verify_with(
    inputs: &[PathBuf],
    key: &PublicKey,
    options: &VerifyOptions,
) -> Result<Report, VerifyError> {
    let files = expand(inputs)?;
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut walk = Walk {
        key,
        options,
        report: Report {
            files: files.len(),
            ..Report::default()
        },
        last: None,
        last_checkpoint: None,
    };
    for (i, path) in files.iter().enumerate() {
        let bytes = std::fs::read(path).map_err(|source| VerifyError::Io {
            path: path.clone(),
            source,
        })?;
        walk.file(path, &bytes, i + 1 == files.len())
            .map_err(|(location, fault)| VerifyError::Tampered {
                location,
                fault,
                checked: Box::new(walk.report.clone()),
            })?;
    }
    let mut report = walk.report;
    report.uncovered = match (report.last_seq, walk.last_checkpoint) {
        (Some(last), Some(checkpoint)) => last - checkpoint,
        (Some(last), None) => last + 1 - report.first_seq.unwrap_or(1),
        (None, _) => 0,
    };
    Ok(report)
}

/// The log files named by `inputs`, in chain order, each once.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            files.extend(log_files(input).map_err(|source| VerifyError::Io {
                path: input.clone(),
                source,
            })?);
        } else {
            files.push(input.clone());
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then(a.cmp(b)));
    files.dedup();
    Ok(files)
}

struct Walk<'k> {
    key: &'k PublicKey,
    options: &'k VerifyOptions,
    report: Report,
    /// The last line checked and its hash.
    last: Option<(Location, String)>,
    /// Seq of the last checkpoint; 0 at the start of an unpruned log.
    last_checkpoint: Option<u64>,
}

type Failure = (Location, Fault);

impl Walk<'_> {
    fn file(&mut self, path: &Path, bytes: &[u8], newest: bool) -> Result<(), Failure> {
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // After the last newline: nothing, or an unfinished line.
        let rest = lines.pop().unwrap_or_default();
        if !rest.is_empty() {
            let location = Location {
                file: path.to_path_buf(),
                line: lines.len() as u64 + 1,
            };
            if !newest {
                return Err((location, Fault::Unterminated));
            }
            self.report.incomplete_tail = Some(location);
        }
        for (i, line) in lines.iter().enumerate() {
            let location = Location {
                file: path.to_path_buf(),
                line: i as u64 + 1,
            };
            self.line(&location, line, &lines[i + 1..])?;
        }
        Ok(())
    }

    fn line(&mut self, at: &Location, line: &[u8], after: &[&[u8]]) -> Result<(), Failure> {
        let fail = |fault| Err((at.clone(), fault));
        let link = match Link::parse(line) {
            Ok(link) => link,
            Err(e) => return fail(Fault::Unparseable(e.to_string())),
        };
        let hash = line_hash(line);
        match &self.last {
            None => {
                if link.seq == 1 {
                    if link.prev != GENESIS {
                        return fail(Fault::BadGenesis);
                    }
                    self.last_checkpoint = Some(0);
                } else if self.options.allow_pruned {
                    self.report.pruned = true;
                } else {
                    return fail(Fault::MissingStart { found: link.seq });
                }
                self.report.first_seq = Some(link.seq);
            }
            Some((previous, previous_hash)) => {
                let expected = self.report.last_seq.unwrap_or(0) + 1;
                if link.seq > expected {
                    let moved = after
                        .iter()
                        .position(|l| Link::parse(l).is_ok_and(|other| other.seq == expected));
                    return fail(match moved {
                        Some(j) => Fault::Reordered {
                            expected,
                            found: link.seq,
                            at: Location {
                                file: at.file.clone(),
                                line: at.line + 1 + j as u64,
                            },
                        },
                        None => Fault::Deleted {
                            expected,
                            found: link.seq,
                        },
                    });
                }
                if link.seq < expected {
                    return fail(Fault::OutOfOrder {
                        expected,
                        found: link.seq,
                    });
                }
                if link.prev != previous_hash {
                    // The previous line was edited, unless this one's own
                    // prev was (then its hash breaks the next link too).
                    let next_links_here = after
                        .first()
                        .and_then(|l| Link::parse(l).ok())
                        .is_none_or(|next| next.prev == hash);
                    return if next_links_here {
                        Err((previous.clone(), Fault::Edited { next: at.clone() }))
                    } else {
                        fail(Fault::EditedPrev)
                    };
                }
            }
        }
        if at.line == 1
            && let Some(named) = file_first_seq(&at.file)
            && named != link.seq
        {
            return fail(Fault::FileName {
                named,
                found: link.seq,
            });
        }
        match link.kind {
            Kind::Event => self.report.records += 1,
            Kind::Checkpoint => {
                let checkpoint: Checkpoint = match serde_json::from_slice(line) {
                    Ok(c) => c,
                    Err(e) => return fail(Fault::Unparseable(e.to_string())),
                };
                if checkpoint.key != self.key.id() {
                    return fail(Fault::WrongKey {
                        seq: link.seq,
                        found: checkpoint.key,
                        expected: self.key.id().to_owned(),
                    });
                }
                if !self
                    .key
                    .verify(&checkpoint_message(&checkpoint), &checkpoint.sig)
                {
                    return fail(Fault::BadSignature {
                        seq: link.seq,
                        key: checkpoint.key,
                    });
                }
                if let Some(previous) = self.last_checkpoint {
                    let actual = link.seq - previous - 1;
                    if checkpoint.count != actual {
                        return fail(Fault::BadCount {
                            seq: link.seq,
                            claimed: checkpoint.count,
                            actual,
                        });
                    }
                }
                for note in checkpoint.notes {
                    self.report.notes.push(Note {
                        location: at.clone(),
                        note,
                    });
                }
                self.last_checkpoint = Some(link.seq);
                self.report.checkpoints += 1;
            }
        }
        self.report.last_seq = Some(link.seq);
        self.last = Some((at.clone(), hash));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, Decision, Options, Record, Signer};

    /// A closed log of `n` records, a checkpoint after every 5, one file.
    async fn log(n: usize) -> (tempfile::TempDir, PathBuf, PublicKey) {
        let dir = tempfile::tempdir().unwrap();
        let signer = Signer::generate();
        let key = signer.public_key().clone();
        let options = Options {
            checkpoint_every: 5,
            ..Options::default()
        };
        let log = AuditLog::open(dir.path(), signer, options).unwrap();
        for i in 0..n {
            let record = Record {
                audit_id: format!("call-{i}"),
                user: "alice".into(),
                decision: Decision::Allow,
                ..Record::default()
            };
            log.append(record).await.unwrap();
        }
        log.close().await.unwrap();
        let file = log_files(dir.path()).unwrap().pop().unwrap();
        (dir, file, key)
    }

    fn edit(file: &Path, change: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        change(&mut lines);
        std::fs::write(file, lines.join("\n") + "\n").unwrap();
    }

    fn failure(file: &Path, key: &PublicKey) -> (u64, Fault) {
        match verify(&[file.to_path_buf()], key) {
            Err(VerifyError::Tampered {
                location, fault, ..
            }) => (location.line, fault),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_intact_log_passes() {
        let (_dir, file, key) = log(12).await;
        let report = verify(&[file], &key).unwrap();
        assert_eq!(report.records, 12);
        assert_eq!(report.checkpoints, 3);
        assert_eq!(report.uncovered, 0);
    }

    #[tokio::test]
    async fn an_edited_record_is_named() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| l[2] = l[2].replace("call-2", "call-X"));
        let (line, fault) = failure(&file, &key);
        assert_eq!(line, 3);
        assert!(matches!(fault, Fault::Edited { .. }), "{fault}");
    }

    #[tokio::test]
    async fn an_edited_prev_is_named() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| {
            let hash = line_hash(b"anything");
            let start = l[2].find("\"prev\":\"").unwrap() + 8;
            l[2].replace_range(start..start + 64, &hash);
        });
        let (line, fault) = failure(&file, &key);
        assert_eq!((line, fault), (3, Fault::EditedPrev));
    }

    #[tokio::test]
    async fn a_deleted_record_is_named() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| {
            l.remove(3);
        });
        let (line, fault) = failure(&file, &key);
        assert_eq!(line, 4);
        assert_eq!(
            fault,
            Fault::Deleted {
                expected: 4,
                found: 5
            }
        );
    }

    #[tokio::test]
    async fn swapped_records_are_named() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| l.swap(1, 2));
        let (line, fault) = failure(&file, &key);
        assert_eq!(line, 2);
        assert!(
            matches!(
                fault,
                Fault::Reordered {
                    expected: 2,
                    found: 3,
                    ..
                }
            ),
            "{fault}"
        );
    }

    #[tokio::test]
    async fn a_rewritten_chain_breaks_at_the_next_checkpoint() {
        let (_dir, file, key) = log(12).await;
        // Edit record 2 and recompute every later prev: the chain alone
        // is consistent again, the signed checkpoint is not.
        edit(&file, |l| {
            l[1] = l[1].replace("call-1", "call-Y");
            for i in 2..l.len() {
                let hash = line_hash(l[i - 1].as_bytes());
                let start = l[i].find("\"prev\":\"").unwrap() + 8;
                l[i].replace_range(start..start + 64, &hash);
            }
        });
        let (line, fault) = failure(&file, &key);
        assert_eq!(line, 6);
        assert!(
            matches!(fault, Fault::BadSignature { seq: 6, .. }),
            "{fault}"
        );
    }

    #[tokio::test]
    async fn another_key_or_a_wrong_count_fails() {
        let (_dir, file, key) = log(7).await;
        let (line, fault) = failure(&file, Signer::generate().public_key());
        assert_eq!(line, 6);
        assert!(matches!(fault, Fault::WrongKey { .. }), "{fault}");
        edit(&file, |l| l[5] = l[5].replace("\"count\":5", "\"count\":4"));
        let (line, fault) = failure(&file, &key);
        assert_eq!(line, 6);
        assert!(matches!(fault, Fault::BadSignature { .. }), "{fault}");
    }

    #[tokio::test]
    async fn a_pruned_log_passes_only_when_allowed() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| {
            l.drain(..3);
        });
        let (line, fault) = failure(&file, &key);
        assert_eq!((line, fault), (1, Fault::MissingStart { found: 4 }));
        let renamed = file.with_file_name("pruned.jsonl");
        std::fs::rename(&file, &renamed).unwrap();
        let options = VerifyOptions { allow_pruned: true };
        let report = verify_with(&[renamed], &key, &options).unwrap();
        assert!(report.pruned);
        assert_eq!(report.first_seq, Some(4));
    }

    #[tokio::test]
    async fn a_file_that_does_not_start_where_its_name_says_fails() {
        let (_dir, file, key) = log(12).await;
        edit(&file, |l| {
            l.drain(..3);
        });
        let options = VerifyOptions { allow_pruned: true };
        match verify_with(&[file], &key, &options) {
            Err(VerifyError::Tampered { fault, .. }) => {
                assert_eq!(fault, Fault::FileName { named: 1, found: 4 })
            }
            other => panic!("{other:?}"),
        }
    }
}
