//! The writer: callers serialize their record in their own task and queue
//! it; whoever commits takes everything queued, stamps the chain fields,
//! writes the lot with one write and one `fdatasync`, then answers every
//! caller (group commit). A failed batch is cut back off the file and
//! every caller in it gets the error.
//!
//! Who commits: a caller that finds the log quiet (nothing being written,
//! and the last batch was its caller's record alone), on a thread that may
//! wait (`Options::may_commit_here`), commits its own record on its own
//! thread, so a lone call pays for its fsync and no
//! thread hand-off. Otherwise the writer thread commits: records that
//! arrive while a commit is in flight wait for it, and it takes the next
//! batch as soon as that commit ends, so under load the callers' threads
//! (the gateway's serving threads) never wait on the disk. It also writes
//! timed checkpoints. At most one commit runs at a time.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::chain::{GENESIS, Link, checkpoint_message, file_name, line_hash, log_files, stamp};
use crate::error::AuditError;
use crate::key::Signer;
use crate::record::{Checkpoint, Kind, Record, rfc3339_micros};
use crate::segment::{self, Head, ReverseLines};

/// How the log rotates and how often it is signed.
#[derive(Debug, Clone)]
pub struct Options {
    /// A new file is started before a batch would take the current one past
    /// this size.
    pub max_file_bytes: u64,
    /// A checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the last one, whichever comes first, when
    /// there is anything to cover.
    pub checkpoint_interval: Duration,
    /// Asked on the caller's thread before it commits its own record: may
    /// this thread wait on the disk? The gateway answers no while the
    /// thread has other calls in flight, since they would wait too.
    pub may_commit_here: fn() -> bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_file_bytes: 64 * 1024 * 1024,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(5),
            may_commit_here: || true,
        }
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// Hex SHA-256 of its line: the next line's `prev`.
    pub hash: String,
}

/// The writer's state, for the gateway's admin API.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    /// The file being written.
    pub file: PathBuf,
    /// The last seq on disk (0 for an empty log).
    pub last_seq: u64,
    pub last_checkpoint_seq: Option<u64>,
    #[serde(with = "rfc3339_micros::option")]
    pub last_checkpoint_time: Option<OffsetDateTime>,
    /// Records on disk that no checkpoint covers yet.
    pub uncovered: u64,
    /// Records appended since the log was opened.
    pub appended: u64,
    /// Batches written (one `fdatasync` each) since the log was opened.
    pub commits: u64,
    /// True while appends are failing; cleared by the next success.
    pub failing: bool,
    /// The most recent failure, kept after recovery for the operator.
    pub last_error: Option<String>,
    #[serde(with = "rfc3339_micros::option")]
    pub last_error_time: Option<OffsetDateTime>,
}

/// A handle on the audit log. Cheap to clone; every clone appends to the
/// same chain. The writer stops (after a final checkpoint) on
/// [`AuditLog::close`] or when the last handle is dropped.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.status().dir)
            .finish()
    }
}

/// Dropping the last handle asks the writer to finish.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.closing = true;
        self.shared.wake.notify_one();
    }
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    may_commit_here: fn() -> bool,
    /// Locked only by whoever set `Queue::committing`.
    writer: Mutex<Writer>,
    status: Mutex<Status>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A commit is in flight (by the writer thread or a caller).
    committing: bool,
    /// Records in the last batch: more than one means callers are
    /// queueing, and the writer thread commits.
    last_batch: usize,
    /// When the writer thread must write a checkpoint if nothing else
    /// comes (as of the last commit).
    checkpoint_due: Option<Instant>,
    closing: bool,
    closed: Option<Result<(), AuditError>>,
    close_waiters: Vec<oneshot::Sender<Result<(), AuditError>>>,
}

struct Pending {
    /// The record serialized with `seq: 0, prev: ""`.
    line: Vec<u8>,
    reply: oneshot::Sender<Result<Appended, AuditError>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves nothing half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AuditLog {
    /// Opens the log in `dir` (created 0700 if missing) and continues its
    /// chain from the last record of the newest file, cutting away a torn
    /// last write if a crash left one.
    pub fn open(dir: &Path, signer: Signer, options: Options) -> Result<AuditLog, AuditError> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(segment::DIR_MODE)
                .create(dir)
                .map_err(AuditError::io(dir))?;
        }
        let may_commit_here = options.may_commit_here;
        let writer = Writer::open(dir, signer, options)?;
        let shared = Arc::new(Shared {
            may_commit_here,
            queue: Mutex::new(Queue {
                checkpoint_due: writer.checkpoint_due(),
                ..Queue::default()
            }),
            wake: Condvar::new(),
            status: Mutex::new(writer.status()),
            writer: Mutex::new(writer),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("moat-audit-writer".into())
            .spawn(move || run(&thread_shared))
            .map_err(AuditError::io(dir))?;
        Ok(AuditLog {
            inner: Arc::new(Handle { shared }),
        })
    }

    /// Appends a record and resolves once it is on disk (fdatasync'd). The
    /// writer sets `seq`, `prev` and `kind`. An error means the record is
    /// not in the log.
    pub async fn append(&self, mut record: Record) -> Result<Appended, AuditError> {
        record.seq = 0;
        record.prev.clear();
        record.kind = Kind::Event;
        let line = serde_json::to_vec(&record).map_err(|e| AuditError::Encode(Arc::new(e)))?;
        let (reply, answer) = oneshot::channel();
        let shared = &self.inner.shared;
        let here = {
            let mut queue = lock(&shared.queue);
            if queue.closing {
                return Err(AuditError::Closed);
            }
            queue.pending.push(Pending { line, reply });
            if queue.committing {
                // The writer thread takes it when the commit in flight ends.
                None
            } else if queue.last_batch > 1 || !(shared.may_commit_here)() {
                shared.wake.notify_one();
                None
            } else {
                Some(Committing::start(shared, &mut queue))
            }
        };
        if let Some((mut commit, batch)) = here {
            commit.write(batch, false);
        }
        answer.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Writes what is queued and a final checkpoint, then stops the writer.
    /// Appends after this fail with [`AuditError::Closed`].
    pub async fn close(&self) -> Result<(), AuditError> {
        let (done, answer) = oneshot::channel();
        {
            let mut queue = lock(&self.inner.shared.queue);
            if let Some(result) = &queue.closed {
                return result.clone();
            }
            queue.closing = true;
            queue.close_waiters.push(done);
            self.inner.shared.wake.notify_one();
        }
        answer.await.unwrap_or(Ok(()))
    }

    pub fn status(&self) -> Status {
        lock(&self.inner.shared.status).clone()
    }
}

/// However the writer thread ends (a panic included), later appends fail
/// at once instead of waiting for a writer that is gone.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.queue);
        queue.closing = true;
        let result = queue.closed.get_or_insert(Err(AuditError::Closed)).clone();
        for pending in queue.pending.drain(..) {
            let _ = pending.reply.send(Err(AuditError::Closed));
        }
        for waiter in queue.close_waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// The right to commit, held from setting `Queue::committing` to clearing
/// it; cleared on drop even if the commit panics, so the log never waits
/// on a committer that is gone (that batch's callers then get `Closed`).
struct Committing<'a> {
    shared: &'a Shared,
    records: usize,
    checkpoint_due: Option<Instant>,
    closed: Option<Result<(), AuditError>>,
}

impl<'a> Committing<'a> {
    /// Takes the right to commit, and the batch queued, under the queue
    /// lock.
    fn start(shared: &'a Shared, queue: &mut Queue) -> (Committing<'a>, Vec<Pending>) {
        queue.committing = true;
        let commit = Committing {
            shared,
            records: 0,
            checkpoint_due: queue.checkpoint_due,
            closed: None,
        };
        (commit, std::mem::take(&mut queue.pending))
    }

    fn write(&mut self, batch: Vec<Pending>, closing: bool) {
        self.records = batch.len();
        let mut writer = lock(&self.shared.writer);
        let result = writer.commit(batch, closing, self.shared);
        self.checkpoint_due = writer.checkpoint_due();
        if closing {
            self.closed = Some(result);
        }
    }
}

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared.queue);
        queue.committing = false;
        queue.last_batch = self.records;
        // The writer thread sleeps until the due time it last saw, or
        // until told: tell it if that is now wrong.
        let wake_thread = match (queue.checkpoint_due, self.checkpoint_due) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => new < old || new <= Instant::now(),
        };
        queue.checkpoint_due = self.checkpoint_due;
        if let Some(result) = self.closed.take() {
            queue.closed = Some(result.clone());
            for waiter in queue.close_waiters.drain(..) {
                let _ = waiter.send(result.clone());
            }
        } else if !queue.pending.is_empty() || queue.closing || wake_thread {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer thread: commits what queues up behind a commit in flight,
/// timed checkpoints, and the last batch on close.
fn run(shared: &Shared) {
    let _refuse_after_exit = ExitGuard(shared);
    loop {
        let (mut commit, batch, closing) = {
            let mut queue = lock(&shared.queue);
            loop {
                let now = Instant::now();
                let due = queue.checkpoint_due;
                if !queue.committing
                    && (!queue.pending.is_empty() || queue.closing || due.is_some_and(|d| d <= now))
                {
                    break;
                }
                queue = match due {
                    Some(due) if due > now => {
                        shared
                            .wake
                            .wait_timeout(queue, due - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    // Nothing due, or due while a commit is in flight: the
                    // committer wakes this thread when it ends.
                    _ => shared.wake.wait(queue).unwrap_or_else(|e| e.into_inner()),
                };
            }
            let closing = queue.closing;
            let (commit, batch) = Committing::start(shared, &mut queue);
            (commit, batch, closing)
        };
        commit.write(batch, closing);
        if closing {
            return;
        }
    }
}

/// The log file and its chain, behind `Shared::writer`.
struct Writer {
    dir: PathBuf,
    signer: Signer,
    options: Options,
    file: File,
    path: PathBuf,
    /// Bytes of `file` that are the log; anything after is a failed write.
    len: u64,
    /// A failed write could not be cut off: do that before the next one.
    dirty: bool,
    seq: u64,
    head: String,
    /// Seq of the last checkpoint (0 if none).
    checkpoint_seq: u64,
    checkpoint_time: Option<OffsetDateTime>,
    checkpoint_at: Instant,
    /// For the next checkpoint.
    notes: Vec<String>,
    appended: u64,
    commits: u64,
    failure: Option<Failure>,
    last_error: Option<(String, OffsetDateTime)>,
    retry_at: Option<Instant>,
}

/// An outage in progress: what the next checkpoint will say about it.
struct Failure {
    since: OffsetDateTime,
    error: String,
    records: u64,
}

impl Writer {
    fn open(dir: &Path, signer: Signer, options: Options) -> Result<Writer, AuditError> {
        let mut files = log_files(dir).map_err(AuditError::io(dir))?;
        let mut notes = Vec::new();
        // The newest file may end in a torn write; older ones may not.
        let (path, file, len, head) = match files.pop() {
            None => {
                let path = dir.join(file_name(1));
                (path.clone(), segment::open_rw(&path)?, 0, None)
            }
            Some(path) => {
                let file = segment::open_rw(&path)?;
                let tail = segment::recover_tail(&path, &file)?;
                notes.extend(tail.notes);
                let head = match tail.head {
                    Some(head) => Some(head),
                    None => match files.last() {
                        Some(older) => segment::last_head(older)?,
                        None => None,
                    },
                };
                (path, file, tail.len, head)
            }
        };
        let head = head.unwrap_or(Head {
            seq: 0,
            hash: GENESIS.to_owned(),
            kind: Kind::Event,
        });
        // An empty newest file must be named for the record it will get.
        let (path, file) = if len == 0 && path != dir.join(file_name(head.seq + 1)) {
            drop(file);
            std::fs::remove_file(&path).map_err(AuditError::io(&path))?;
            let path = dir.join(file_name(head.seq + 1));
            let file = segment::open_rw(&path)?;
            (path, file)
        } else {
            (path, file)
        };
        files.push(path.clone());
        let (checkpoint_seq, checkpoint_time) = last_checkpoint(&files, head.seq)?;
        for note in &notes {
            tracing::warn!(dir = %dir.display(), note = %note, "audit log recovered on open");
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            signer,
            options,
            file,
            path,
            len,
            dirty: false,
            seq: head.seq,
            head: head.hash,
            checkpoint_seq,
            checkpoint_time,
            checkpoint_at: Instant::now(),
            notes,
            appended: 0,
            commits: 0,
            failure: None,
            last_error: None,
            retry_at: None,
        })
    }

    fn status(&self) -> Status {
        Status {
            dir: self.dir.clone(),
            file: self.path.clone(),
            last_seq: self.seq,
            last_checkpoint_seq: (self.checkpoint_seq > 0).then_some(self.checkpoint_seq),
            last_checkpoint_time: self.checkpoint_time,
            uncovered: self.seq - self.checkpoint_seq,
            appended: self.appended,
            commits: self.commits,
            failing: self.failure.is_some(),
            last_error: self.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_time: self.last_error.as_ref().map(|(_, t)| *t),
        }
    }

    /// Something to sign: records since the last checkpoint, or notes.
    fn needs_checkpoint(&self) -> bool {
        self.seq > self.checkpoint_seq || !self.notes.is_empty()
    }

    fn checkpoint_due(&self) -> Option<Instant> {
        if !self.needs_checkpoint() {
            return None;
        }
        let due = self.checkpoint_at + self.options.checkpoint_interval;
        Some(self.retry_at.map_or(due, |retry| retry.max(due)))
    }

    /// Writes one batch: the queued records, and a checkpoint after every
    /// `checkpoint_every` records, when the interval is up, or on close.
    /// The status is published before any caller hears back, so a caller
    /// that reads it after its append sees its own outcome.
    fn commit(
        &mut self,
        batch: Vec<Pending>,
        closing: bool,
        shared: &Shared,
    ) -> Result<(), AuditError> {
        let now = Instant::now();
        let time = OffsetDateTime::now_utc();
        let mut buf = Vec::with_capacity(batch.iter().map(|p| p.line.len() + 100).sum());
        let mut seq = self.seq;
        let mut head = self.head.clone();
        let mut checkpoint_seq = self.checkpoint_seq;
        let pending_notes = std::mem::take(&mut self.notes);
        // Notes not yet in a checkpoint of this batch.
        let mut unsigned = pending_notes.clone();
        let mut appended = Vec::with_capacity(batch.len());
        for pending in &batch {
            seq += 1;
            let start = buf.len();
            stamp(&mut buf, seq, &head, &pending.line);
            head = line_hash(&buf[start..]);
            buf.push(b'\n');
            appended.push(Appended {
                seq,
                hash: head.clone(),
            });
            if seq - checkpoint_seq >= self.options.checkpoint_every {
                self.checkpoint(
                    &mut buf,
                    &mut seq,
                    &mut head,
                    checkpoint_seq,
                    time,
                    &unsigned,
                );
                checkpoint_seq = seq;
                unsigned.clear();
            }
        }
        let timer_due = now >= self.checkpoint_at + self.options.checkpoint_interval
            && self.retry_at.is_none_or(|retry| now >= retry);
        if (timer_due || closing) && (seq > checkpoint_seq || !unsigned.is_empty()) {
            self.checkpoint(
                &mut buf,
                &mut seq,
                &mut head,
                checkpoint_seq,
                time,
                &unsigned,
            );
            checkpoint_seq = seq;
            unsigned.clear();
        }
        if buf.is_empty() {
            self.notes = pending_notes;
            return Ok(());
        }
        let first_seq = self.seq + 1;
        match self.write(&buf, first_seq) {
            Ok(()) => {
                self.notes = unsigned;
                self.retry_at = None;
                if let Some(failure) = self.failure.take() {
                    tracing::warn!(dir = %self.dir.display(), refused = failure.records, "audit log writable again");
                    // Said in the next checkpoint: this batch was built before.
                    self.notes.push(format!(
                        "appends failed from {} to {}: {} records refused; first error: {}",
                        rfc3339_micros::format(failure.since),
                        rfc3339_micros::format(time),
                        failure.records,
                        failure.error
                    ));
                }
                if checkpoint_seq != self.checkpoint_seq {
                    self.checkpoint_seq = checkpoint_seq;
                    self.checkpoint_time = Some(time);
                    self.checkpoint_at = now;
                }
                self.seq = seq;
                self.head = head;
                self.appended += batch.len() as u64;
                self.commits += 1;
                *lock(&shared.status) = self.status();
                for (pending, result) in batch.into_iter().zip(appended) {
                    let _ = pending.reply.send(Ok(result));
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(error = %error, refused = batch.len(), "audit write failed; refusing the batch");
                self.notes = pending_notes;
                let failure = self.failure.get_or_insert_with(|| Failure {
                    since: time,
                    error: error.to_string(),
                    records: 0,
                });
                failure.records += batch.len() as u64;
                self.last_error = Some((error.to_string(), time));
                self.retry_at = Some(now + Duration::from_secs(1));
                *lock(&shared.status) = self.status();
                for pending in batch {
                    let _ = pending.reply.send(Err(error.clone()));
                }
                Err(error)
            }
        }
    }

    /// Appends a signed checkpoint line covering the chain up to `head`.
    fn checkpoint(
        &self,
        buf: &mut Vec<u8>,
        seq: &mut u64,
        head: &mut String,
        previous: u64,
        time: OffsetDateTime,
        notes: &[String],
    ) {
        *seq += 1;
        let mut checkpoint = Checkpoint {
            seq: *seq,
            prev: head.clone(),
            kind: Kind::Checkpoint,
            time,
            count: *seq - previous - 1,
            key: self.signer.public_key().id().to_owned(),
            notes: notes.to_vec(),
            sig: String::new(),
        };
        checkpoint.sig = self.signer.sign(&checkpoint_message(&checkpoint));
        let start = buf.len();
        serde_json::to_writer(&mut *buf, &checkpoint).expect("a checkpoint serializes");
        *head = line_hash(&buf[start..]);
        buf.push(b'\n');
    }

    /// One write and one fdatasync; on failure the file is cut back to
    /// where it was, so the chain on disk stays whole.
    fn write(&mut self, buf: &[u8], first_seq: u64) -> Result<(), AuditError> {
        if self.dirty {
            self.cut().map_err(AuditError::io(&self.path))?;
            self.dirty = false;
        }
        if self.len > 0 && self.len + buf.len() as u64 > self.options.max_file_bytes {
            self.rotate(first_seq)?;
        }
        let result = self
            .file
            .write_all_at(buf, self.len)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                if self.cut().is_err() {
                    self.dirty = true;
                }
                Err(AuditError::io(&self.path)(e))
            }
        }
    }

    /// Cuts the file back to the end of the last good write.
    fn cut(&self) -> std::io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_data()
    }

    /// Starts the file for `first_seq`. The old file is complete and synced.
    fn rotate(&mut self, first_seq: u64) -> Result<(), AuditError> {
        let path = self.dir.join(file_name(first_seq));
        let file = segment::open_rw(&path)?;
        if file.metadata().map_err(AuditError::io(&path))?.len() != 0 {
            return Err(AuditError::Corrupt {
                path,
                reason: "the next log file already exists and is not empty".into(),
            });
        }
        tracing::info!(file = %path.display(), first_seq, "audit log rotated");
        self.file = file;
        self.path = path;
        self.len = 0;
        Ok(())
    }
}

/// The seq and time of the last checkpoint at or before `head_seq`, reading
/// the files backwards (checkpoints are frequent, so this stops early).
fn last_checkpoint(
    files: &[PathBuf],
    head_seq: u64,
) -> Result<(u64, Option<OffsetDateTime>), AuditError> {
    for path in files.iter().rev() {
        let file = File::open(path).map_err(AuditError::io(path))?;
        let len = file.metadata().map_err(AuditError::io(path))?.len();
        let end = segment::end_of_last_line(&file, len).map_err(AuditError::io(path))?;
        let mut lines = ReverseLines::new(&file, end);
        while let Some((_, line)) = lines.next_line().map_err(AuditError::io(path))? {
            let Ok(link) = Link::parse(&line) else {
                continue;
            };
            if link.kind == Kind::Checkpoint && link.seq <= head_seq {
                let time = serde_json::from_slice::<Checkpoint>(&line)
                    .ok()
                    .map(|c| c.time);
                return Ok((link.seq, time));
            }
        }
    }
    Ok((0, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, Entry, PublicKey, Report, verify};

    fn record(user: &str, n: usize) -> Record {
        Record {
            audit_id: format!("{user}-{n}"),
            user: user.into(),
            source: "127.0.0.1:1".into(),
            method: "GET".into(),
            path: "/_ping".into(),
            decision: Decision::Allow,
            ..Record::default()
        }
    }

    fn options() -> Options {
        Options {
            checkpoint_interval: Duration::from_secs(3600),
            ..Options::default()
        }
    }

    /// One key as PEM, so a test can open the same log twice.
    struct Key(String);

    impl Key {
        fn new() -> Key {
            let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
                &aws_lc_rs::rand::SystemRandom::new(),
            )
            .unwrap();
            Key(pem::encode(&pem::Pem::new(
                "PRIVATE KEY",
                doc.as_ref().to_vec(),
            )))
        }
        fn signer(&self) -> Signer {
            Signer::from_pem(self.0.as_bytes()).unwrap()
        }
        fn public(&self) -> PublicKey {
            self.signer().public_key().clone()
        }
    }

    fn check(dir: &Path, key: &Key) -> Report {
        verify(&[dir.to_path_buf()], &key.public()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_share_fsyncs_and_get_every_seq_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::new();
        let log = AuditLog::open(dir.path(), key.signer(), options()).unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for n in 0..50 {
                        seqs.push(log.append(record(&format!("u{t}"), n)).await.unwrap().seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.unwrap());
        }
        let status = log.status();
        assert_eq!(status.appended, 3200);
        assert!(
            status.commits < 3200,
            "no batching: {} commits",
            status.commits
        );
        log.close().await.unwrap();
        // 3200 records and a checkpoint after every 1000 records: the
        // records got every seq that is not a checkpoint's, each once.
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 3200);
        assert!(seqs.iter().all(|s| ![1001, 2002, 3003].contains(s)));
        let report = check(dir.path(), &key);
        assert_eq!(
            (report.records, report.checkpoints, report.uncovered),
            (3200, 4, 0)
        );
        assert!(matches!(
            log.append(record("late", 0)).await,
            Err(AuditError::Closed)
        ));
    }

    #[tokio::test]
    async fn callers_that_may_not_wait_leave_every_commit_to_the_writer_thread() {
        // As the gateway's serving threads do while they serve other calls.
        for may_commit_here in [(|| false) as fn() -> bool, || true] {
            let dir = tempfile::tempdir().unwrap();
            let key = Key::new();
            let options = Options {
                may_commit_here,
                checkpoint_interval: Duration::from_millis(50),
                ..options()
            };
            let log = AuditLog::open(dir.path(), key.signer(), options).unwrap();
            for n in 0..5 {
                let appended =
                    tokio::time::timeout(Duration::from_secs(5), log.append(record("alice", n)))
                        .await
                        .expect("an append nobody committed")
                        .unwrap();
                assert_eq!(appended.seq, n as u64 + 1);
            }
            assert_eq!(log.status().commits, 5, "one commit per lone record");
            // The timed checkpoint comes from the writer thread either way.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(log.status().last_checkpoint_seq, Some(6));
            log.close().await.unwrap();
            assert_eq!(check(dir.path(), &key).last_seq, Some(6));
        }
    }

    #[tokio::test]
    async fn checkpoints_every_n_records_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::new();
        let options = Options {
            checkpoint_every: 10,
            ..options()
        };
        let log = AuditLog::open(dir.path(), key.signer(), options).unwrap();
        for n in 0..25 {
            log.append(record("alice", n)).await.unwrap();
        }
        assert_eq!(log.status().last_checkpoint_seq, Some(22));
        assert_eq!(log.status().uncovered, 5);
        log.close().await.unwrap();
        let report = check(dir.path(), &key);
        assert_eq!(report.checkpoints, 3);
        assert_eq!(report.last_seq, Some(28));
        let counts: Vec<u64> = crate::lines(&[dir.path().to_path_buf()])
            .unwrap()
            .filter_map(|l| match l.unwrap().entry {
                Entry::Checkpoint(c) => Some(c.count),
                Entry::Event(_) => None,
            })
            .collect();
        assert_eq!(counts, vec![10, 10, 5]);
    }

    #[tokio::test]
    async fn a_checkpoint_follows_the_interval_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            checkpoint_interval: Duration::from_millis(50),
            ..Options::default()
        };
        let log = AuditLog::open(dir.path(), Signer::generate(), options).unwrap();
        log.append(record("alice", 0)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.status().uncovered != 0 {
            assert!(
                Instant::now() < deadline,
                "no checkpoint: {:?}",
                log.status()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(log.status().last_checkpoint_seq, Some(2));
    }

    #[tokio::test]
    async fn rotation_continues_the_chain_and_so_does_reopening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &tmp.path().join("audit");
        let key = Key::new();
        let options = Options {
            max_file_bytes: 2048,
            checkpoint_every: 7,
            ..options()
        };
        let log = AuditLog::open(dir, key.signer(), options.clone()).unwrap();
        for n in 0..30 {
            log.append(record("alice", n)).await.unwrap();
        }
        log.close().await.unwrap();
        let files = log_files(dir).unwrap();
        assert!(files.len() > 3, "{files:?}");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert!(files.iter().all(|f| mode(f) == 0o600));
        assert_eq!(mode(dir), 0o700);
        for file in &files[..files.len() - 1] {
            assert!(std::fs::metadata(file).unwrap().len() <= 2048);
        }

        let log = AuditLog::open(dir, key.signer(), options).unwrap();
        assert_eq!(log.status().uncovered, 0);
        for n in 0..5 {
            log.append(record("bob", n)).await.unwrap();
        }
        drop(log);
        // Dropping the last handle lets the writer finish with a checkpoint.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let report = check(dir, &key);
            if report.uncovered == 0 {
                assert_eq!(report.records, 35);
                assert_eq!(report.files, log_files(dir).unwrap().len());
                break;
            }
            assert!(Instant::now() < deadline, "{report:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_on_reopen_and_noted_in_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::new();
        let log = AuditLog::open(dir.path(), key.signer(), options()).unwrap();
        for n in 0..3 {
            log.append(record("alice", n)).await.unwrap();
        }
        // A crash: no close, and half a line after the last whole one.
        let file = log.status().file;
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend_from_slice(br#"{"seq":4,"prev":"ab","ki"#);
        std::fs::write(&file, &bytes).unwrap();
        std::mem::forget(log);
        assert!(check(dir.path(), &key).incomplete_tail.is_some());

        let log = AuditLog::open(dir.path(), key.signer(), options()).unwrap();
        assert_eq!(log.status().last_seq, 3);
        assert_eq!(log.append(record("alice", 9)).await.unwrap().seq, 4);
        log.close().await.unwrap();
        let report = check(dir.path(), &key);
        assert_eq!((report.records, report.checkpoints), (4, 1));
        assert!(report.incomplete_tail.is_none());
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        assert!(
            report.notes[0].note.contains("incomplete last line"),
            "{:?}",
            report.notes
        );
    }
}
