//! `moat audit`: verify the audit log, search it, follow it, count it,
//! export it.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use moat_audit::record::rfc3339_micros;
use moat_audit::{Decision, Entry, Filter, Line, PublicKey, Record, Stage, VerifyError};
use time::OffsetDateTime;

use crate::state::StateRoot;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the signed checkpoints; name the first bad line
    #[command(after_help = "Examples:\n  moat audit verify\n  \
        moat audit verify /var/lib/moat/audit/audit-*.jsonl --key ./audit-pub.pem\n\n\
        Exit status: 0 the log verifies, 1 it does not (the first bad line is printed \
        as FILE:LINE: why), 2 it could not be checked (no files, no key).")]
    Verify {
        /// Log files to check (default: every file in --dir)
        files: Vec<PathBuf>,
        #[command(flatten)]
        dir: DirArg,
        /// The audit public key (default: STATE_ROOT/pki/audit-pub.pem)
        #[arg(long, value_name = "PEM")]
        key: Option<PathBuf>,
        /// Accept a log whose oldest files were removed on purpose
        #[arg(long)]
        allow_pruned: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Find calls by user, action, decision and time
    #[command(
        after_help = "Examples:\n  moat audit search --user alice --decision deny --since 1h\n  \
        moat audit search --action 'container.*' --since 2026-05-01T00:00:00Z --output json"
    )]
    Search {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show the last records, and with -f follow new ones as they are written
    #[command(after_help = "Example:\n  moat audit tail -f --decision deny")]
    Tail {
        #[command(flatten)]
        dir: DirArg,
        /// Keep printing records as they are written (Ctrl-C to stop)
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many past records to show first
        #[arg(short = 'n', long, default_value_t = 10, value_name = "N")]
        lines: usize,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Count calls per user, action and decision (completed records only)
    #[command(after_help = "Example:\n  moat audit stats --since 24h")]
    Stats {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        filter: FilterArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Write matching records, as stored (JSON Lines), to a file for a SIEM
    #[command(after_help = "Example:\n  moat audit export --since 24h --out /tmp/moat-audit.jsonl")]
    Export {
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        filter: FilterArgs,
        /// Where to write (`-` for standard output); created 0600
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// The audit log directory (default: STATE_ROOT/audit)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl DirArg {
    fn path(&self, state: &StateRoot) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state.audit())
    }
}

#[derive(Args)]
pub struct OutputArg {
    /// Output format (json: the records as stored, one per line)
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub struct FilterArgs {
    /// Only this user
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only this action, or a prefix ending in `*` (e.g. 'container.*')
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Only this decision
    #[arg(long, value_enum)]
    decision: Option<DecisionArg>,
    /// Only this stage
    #[arg(long, value_enum)]
    stage: Option<StageArg>,
    /// From this long ago (30m, 1h, 7d) or this RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Until this long ago or this RFC 3339 time
    #[arg(long, value_name = "WHEN")]
    until: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecisionArg {
    Allow,
    Deny,
    Error,
}

#[derive(Clone, Copy, ValueEnum)]
enum StageArg {
    Started,
    Completed,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        let now = OffsetDateTime::now_utc();
        Ok(Filter {
            user: self.user.clone(),
            action: self.action.clone(),
            decision: self.decision.map(|d| match d {
                DecisionArg::Allow => Decision::Allow,
                DecisionArg::Deny => Decision::Deny,
                DecisionArg::Error => Decision::Error,
            }),
            stage: self.stage.map(|s| match s {
                StageArg::Started => Stage::Started,
                StageArg::Completed => Stage::Completed,
            }),
            since: self
                .since
                .as_deref()
                .map(|w| when(w, now).context("--since"))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|w| when(w, now).context("--until"))
                .transpose()?,
        })
    }
}

/// `1h` (that long before now) or an RFC 3339 time.
fn when(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if let Ok(ago) = moat_certs::ttl::parse(text) {
        return Ok(now - ago);
    }
    rfc3339_micros::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "{text:?}: give a duration (30m, 1h, 7d) or an RFC 3339 time (2026-05-01T12:00:00Z)"
        )
    })
}

pub fn run(cmd: AuditCommand, state: &StateRoot) -> Result<()> {
    match run_command(cmd, state) {
        // `moat audit search | head`: the reader has seen enough.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run_command(cmd: AuditCommand, state: &StateRoot) -> Result<()> {
    match cmd {
        AuditCommand::Verify {
            files,
            dir,
            key,
            allow_pruned,
            output,
        } => {
            let inputs = if files.is_empty() {
                vec![dir.path(state)]
            } else {
                files
            };
            let key = key.unwrap_or_else(|| state.pki().join(moat_certs::authority::AUDIT_PUB));
            verify(&inputs, &key, allow_pruned, output.output)
        }
        AuditCommand::Search {
            dir,
            filter,
            output,
        } => {
            let filter = filter.filter()?;
            let mut printer = Printer::new(output.output);
            for_each_event(&dir.path(state), |line, record| {
                if filter.matches(record) {
                    printer.print(line, record)?;
                }
                Ok(())
            })?;
            printer.finish()
        }
        AuditCommand::Tail {
            dir,
            follow,
            lines,
            filter,
            output,
        } => tail(
            &dir.path(state),
            follow,
            lines,
            &filter.filter()?,
            output.output,
        ),
        AuditCommand::Stats {
            dir,
            filter,
            output,
        } => {
            let mut filter = filter.filter()?;
            filter.stage = Some(Stage::Completed);
            let mut stats = Stats::default();
            for_each_event(&dir.path(state), |_, record| {
                if filter.matches(record) {
                    stats.add(record);
                }
                Ok(())
            })?;
            stats.print(output.output)
        }
        AuditCommand::Export { dir, filter, out } => {
            let filter = filter.filter()?;
            let mut sink: Box<dyn Write> = if out == Path::new("-") {
                Box::new(std::io::stdout().lock())
            } else {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                Box::new(std::io::BufWriter::new(file))
            };
            let mut count = 0u64;
            for_each_event(&dir.path(state), |line, record| {
                if filter.matches(record) {
                    sink.write_all(&line.raw)?;
                    sink.write_all(b"\n")?;
                    count += 1;
                }
                Ok(())
            })?;
            sink.flush()
                .with_context(|| format!("writing {}", out.display()))?;
            if out != Path::new("-") {
                eprintln!("exported {count} records to {}", out.display());
            }
            Ok(())
        }
    }
}

fn verify(inputs: &[PathBuf], key_path: &Path, allow_pruned: bool, output: Output) -> Result<()> {
    let key = match PublicKey::load(key_path) {
        Ok(key) => key,
        Err(e) => cannot_verify(&anyhow::Error::from(e)),
    };
    let options = moat_audit::VerifyOptions { allow_pruned };
    match moat_audit::verify_with(inputs, &key, &options) {
        Ok(report) => {
            if output == Output::Json {
                let mut json = serde_json::to_value(&report)?;
                json["ok"] = true.into();
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            println!(
                "OK: {} and {} in {}, seq {}..{}, signed by key {}",
                plural(report.records, "record"),
                plural(report.checkpoints, "checkpoint"),
                plural(report.files as u64, "file"),
                report.first_seq.unwrap_or(0),
                report.last_seq.unwrap_or(0),
                key.id()
            );
            if report.pruned {
                println!(
                    "note: the log starts at seq {}: records before it were not checked",
                    report.first_seq.unwrap_or(0)
                );
            }
            for note in &report.notes {
                println!("note: {}: the writer noted: {}", note.location, note.note);
            }
            if let Some(at) = &report.incomplete_tail {
                println!(
                    "warning: {at}: the last line is incomplete (being written, or cut short by a crash)"
                );
            }
            if report.uncovered > 0 {
                println!(
                    "warning: the last {} not yet covered by a signed checkpoint; \
                     until one is written they could be removed without a trace",
                    if report.uncovered == 1 {
                        "record is".to_owned()
                    } else {
                        format!("{} records are", report.uncovered)
                    }
                );
            }
            Ok(())
        }
        Err(VerifyError::Tampered {
            location,
            fault,
            checked,
        }) => {
            if output == Output::Json {
                let json = serde_json::json!({
                    "ok": false,
                    "location": location,
                    "fault": fault.to_string(),
                    "checked": checked,
                });
                println!("{}", serde_json::to_string_pretty(&json)?);
            } else {
                eprintln!("{location}: {fault}");
                eprintln!("moat: the audit log does not verify");
            }
            std::process::exit(1);
        }
        Err(e) => cannot_verify(&e.into()),
    }
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn cannot_verify(err: &anyhow::Error) -> ! {
    eprintln!("moat: cannot verify: {err:#}");
    std::process::exit(2);
}

/// Calls `f` with every event record of the log in `dir`, in order;
/// unparseable lines are reported on stderr and skipped.
fn for_each_event(dir: &Path, mut f: impl FnMut(&Line, &Record) -> Result<()>) -> Result<()> {
    if !dir.is_dir() {
        bail!("no audit log at {} (give --dir)", dir.display());
    }
    for line in moat_audit::lines(&[dir.to_path_buf()])? {
        match line {
            Ok(line) => {
                if let Entry::Event(record) = &line.entry {
                    f(&line, record)?;
                }
            }
            Err(e) => eprintln!("moat: warning: {e}"),
        }
    }
    Ok(())
}

fn tail(dir: &Path, follow: bool, count: usize, filter: &Filter, output: Output) -> Result<()> {
    // Positioned before the history is read, so nothing written in between
    // is missed; seqs already shown are skipped.
    let mut follower = moat_audit::Follower::at_end(dir)?;
    let mut last: VecDeque<(Line, Record)> = VecDeque::with_capacity(count + 1);
    for_each_event(dir, |line, record| {
        if filter.matches(record) && count > 0 {
            last.push_back((line.clone(), record.clone()));
            if last.len() > count {
                last.pop_front();
            }
        }
        Ok(())
    })?;
    let mut printer = Printer::new(output);
    let mut shown = 0;
    for (line, record) in &last {
        printer.print(line, record)?;
        shown = shown.max(record.seq);
    }
    printer.flush()?;
    if !follow {
        return printer.finish();
    }
    loop {
        for line in follower.poll()? {
            match line {
                Ok(line) => {
                    if let Entry::Event(record) = &line.entry
                        && record.seq > shown
                        && filter.matches(record)
                    {
                        printer.print(&line, record)?;
                        shown = record.seq;
                    }
                }
                Err(e) => eprintln!("moat: warning: {e}"),
            }
        }
        printer.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints records as a table (header first) or as the stored JSON lines.
struct Printer {
    output: Output,
    out: std::io::StdoutLock<'static>,
    header: bool,
}

impl Printer {
    fn new(output: Output) -> Printer {
        Printer {
            output,
            out: std::io::stdout().lock(),
            header: false,
        }
    }

    fn print(&mut self, line: &Line, r: &Record) -> Result<()> {
        if self.output == Output::Json {
            self.out.write_all(&line.raw)?;
            self.out.write_all(b"\n")?;
            return Ok(());
        }
        if !self.header {
            self.header = true;
            writeln!(
                self.out,
                "{:<27} {:<16} {:<9} {:<8} {:<6} {:<24} {:<24} {:<21} REASON",
                "TIME", "USER", "STAGE", "DECISION", "STATUS", "ACTION", "OBJECT", "SOURCE"
            )?;
        }
        let action = match &r.action {
            Some(action) => action.clone(),
            None => format!("{} {}", r.method, r.path),
        };
        writeln!(
            self.out,
            "{:<27} {:<16} {:<9} {:<8} {:<6} {:<24} {:<24} {:<21} {}",
            rfc3339_micros::format(r.time),
            r.user,
            r.stage.as_str(),
            r.decision.as_str(),
            r.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            action,
            r.object.as_deref().unwrap_or("-"),
            r.source,
            r.reason.as_deref().unwrap_or("")
        )?;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.output == Output::Table && !self.header {
            eprintln!("no matching records");
        }
        self.flush()
    }
}

#[derive(Default)]
struct Counts {
    calls: u64,
    allow: u64,
    deny: u64,
    error: u64,
}

impl Counts {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls,
            "allow": self.allow,
            "deny": self.deny,
            "error": self.error,
        })
    }

    fn add(&mut self, decision: Decision) {
        self.calls += 1;
        match decision {
            Decision::Allow => self.allow += 1,
            Decision::Deny => self.deny += 1,
            Decision::Error => self.error += 1,
        }
    }
}

#[derive(Default)]
struct Stats {
    total: Counts,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    by_user: BTreeMap<String, Counts>,
    by_action: BTreeMap<String, Counts>,
}

impl Stats {
    fn add(&mut self, r: &Record) {
        self.total.add(r.decision);
        self.first = Some(self.first.map_or(r.time, |t| t.min(r.time)));
        self.last = Some(self.last.map_or(r.time, |t| t.max(r.time)));
        self.by_user
            .entry(r.user.clone())
            .or_default()
            .add(r.decision);
        let action = r.action.clone().unwrap_or_else(|| "(unclassified)".into());
        self.by_action.entry(action).or_default().add(r.decision);
    }

    fn print(&self, output: Output) -> Result<()> {
        if output == Output::Json {
            let map = |m: &BTreeMap<String, Counts>| {
                m.iter()
                    .map(|(k, c)| (k.clone(), c.json()))
                    .collect::<serde_json::Map<_, _>>()
            };
            let mut json = self.total.json();
            json["first"] = self.first.map(rfc3339_micros::format).into();
            json["last"] = self.last.map(rfc3339_micros::format).into();
            json["by_user"] = map(&self.by_user).into();
            json["by_action"] = map(&self.by_action).into();
            println!("{}", serde_json::to_string_pretty(&json)?);
            return Ok(());
        }
        let t = &self.total;
        match (self.first, self.last) {
            (Some(first), Some(last)) => println!(
                "{} calls from {} to {}: {} allowed, {} denied, {} errors",
                t.calls,
                rfc3339_micros::format(first),
                rfc3339_micros::format(last),
                t.allow,
                t.deny,
                t.error
            ),
            _ => println!("no calls"),
        }
        for (title, map) in [("USER", &self.by_user), ("ACTION", &self.by_action)] {
            if map.is_empty() {
                continue;
            }
            println!();
            println!(
                "{:<32} {:>8} {:>8} {:>8} {:>8}",
                title, "CALLS", "ALLOW", "DENY", "ERROR"
            );
            let mut rows: Vec<_> = map.iter().collect();
            rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
            for (name, c) in rows {
                println!(
                    "{:<32} {:>8} {:>8} {:>8} {:>8}",
                    name, c.calls, c.allow, c.deny, c.error
                );
            }
        }
        Ok(())
    }
}
