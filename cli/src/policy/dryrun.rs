//! `moat policy dry-run`: a candidate policy the gateway evaluates beside
//! the one in force on every call, without enforcing it. The candidate
//! lives in `POLICY_DIR/dry-run/` (model.conf and policy.csv); the gateway
//! picks it up within seconds and, on every call the candidate would
//! decide differently, writes what it would have decided into the audit
//! record (`dry_run: {"allowed": false, "denied": ["perm:object (rule)"]}`).
//! `report` reads those records back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use moat_audit::Entry;
use moat_audit::record::rfc3339_micros;
use moat_policy::Policy;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::store::Store;
use super::{Output, OutputArg, print_table};
use crate::state::StateRoot;

/// The candidate's directory below the policy directory (the gateway
/// reads the same place).
const DRY_RUN_DIR: &str = "dry-run";

#[derive(Subcommand)]
pub enum DryRunCommand {
    /// Start (or replace) a dry run of a candidate policy, validated first
    #[command(after_help = "Examples:\n  moat policy dry-run start ./candidate/\n  \
        moat policy dry-run start new-policy.csv\n\n\
        Takes what `import` takes. The gateway starts evaluating it within seconds; \
        nothing it decides is enforced.")]
    Start {
        /// A directory (model.conf, policy.csv), a policy.csv, or a JSON export
        path: PathBuf,
    },
    /// End the dry run
    #[command(after_help = "Example:\n  moat policy dry-run stop")]
    Stop,
    /// Whether a dry run is on, since when, and how its candidate differs
    #[command(after_help = "Example:\n  moat policy dry-run status")]
    Status,
    /// The calls the candidate would have decided differently, from the audit log
    #[command(after_help = "Examples:\n  moat policy dry-run report\n  \
        moat policy dry-run report --since 1h --user alice --output json")]
    Report {
        /// From this long ago (30m, 1h, 7d) or this RFC 3339 time [default: since the candidate was written]
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Only this user's calls
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// The audit log directory [default: STATE_ROOT/audit]
        #[arg(long, value_name = "DIR")]
        audit: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
}

pub fn run(command: DryRunCommand, store: &Store, state: &StateRoot) -> Result<()> {
    let dir = candidate_dir(store)?;
    match command {
        DryRunCommand::Start { path } => start(store, &dir, &path),
        DryRunCommand::Stop => stop(&dir),
        DryRunCommand::Status => status(store, &dir),
        DryRunCommand::Report {
            since,
            user,
            audit,
            output,
        } => report(
            &dir,
            &audit.unwrap_or_else(|| state.audit()),
            since.as_deref(),
            user.as_deref(),
            output.output,
        ),
    }
}

/// Where the candidate goes: dry runs are the policy directory's, so the
/// gateway's own host.
pub fn candidate_dir(store: &Store) -> Result<PathBuf> {
    match store {
        Store::Local { dir } => Ok(dir.join(DRY_RUN_DIR)),
        Store::Remote(_) => bail!(
            "dry runs are started on the gateway's host (in its policy directory); \
             the admin API has no dry-run call"
        ),
    }
}

fn start(store: &Store, dir: &Path, path: &Path) -> Result<()> {
    let running = store.load()?;
    let candidate = super::read_candidate(path, Some(running.model()))
        .with_context(|| format!("{} was refused; no dry run started", path.display()))?;
    let policy_dir = dir.parent().context("the policy directory")?;
    // As a gateway would on its first start: a directory holding nothing
    // but a candidate would not load.
    Policy::init_dir(policy_dir)
        .with_context(|| format!("the policy in {}", policy_dir.display()))?;
    let replacing = dir.exists();
    if replacing {
        // Each file is replaced atomically; the gateway sees the new pair.
        candidate.write_dir(dir)?;
    } else {
        // Written aside, then renamed in: the gateway never sees half of it.
        let staging = policy_dir.join(format!(".{DRY_RUN_DIR}.new"));
        let _ = std::fs::remove_dir_all(&staging);
        make_dir_like(&staging, policy_dir)?;
        candidate.write_dir(&staging)?;
        std::fs::rename(&staging, dir)
            .with_context(|| format!("moving the candidate to {}", dir.display()))?;
    }
    let d = moat_policy::edit::diff(&running, &candidate);
    super::print_diff(&d);
    if d.is_empty() {
        println!("(the candidate has the same rules as the policy in force)");
    }
    println!(
        "{} the dry run in {}: a running gateway evaluates the candidate within seconds, \
         without enforcing it. See what it would change with `moat policy dry-run report`.",
        if replacing { "Replaced" } else { "Started" },
        dir.display()
    );
    Ok(())
}

/// A directory with `like`'s owner, mode 0750 (plus setgid if `like` has
/// it), so a gateway that owns `like` can read what is written inside.
fn make_dir_like(dir: &Path, like: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let parent = std::fs::metadata(like).with_context(|| format!("reading {}", like.display()))?;
    let mine = std::fs::metadata(dir)?;
    if (mine.uid(), mine.gid()) != (parent.uid(), parent.gid()) {
        std::os::unix::fs::chown(dir, Some(parent.uid()), Some(parent.gid()))
            .with_context(|| format!("giving {} the owner of {}", dir.display(), like.display()))?;
    }
    let mode = 0o750 | (parent.mode() & 0o2000);
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn stop(dir: &Path) -> Result<()> {
    if !dir.exists() {
        println!("no dry run ({} does not exist)", dir.display());
        return Ok(());
    }
    // Renamed away first, so the gateway sees the candidate whole or gone.
    let parent = dir.parent().context("the policy directory")?;
    let retired = parent.join(format!(".{DRY_RUN_DIR}.old"));
    let _ = std::fs::remove_dir_all(&retired);
    std::fs::rename(dir, &retired).with_context(|| format!("removing {}", dir.display()))?;
    std::fs::remove_dir_all(&retired).with_context(|| format!("removing {}", retired.display()))?;
    println!(
        "Stopped the dry run: a running gateway stops evaluating the candidate within seconds."
    );
    Ok(())
}

fn status(store: &Store, dir: &Path) -> Result<()> {
    let Some(since) = started_at(dir) else {
        println!("no dry run");
        return Ok(());
    };
    let candidate = Policy::load_dir(dir)
        .with_context(|| format!("the dry-run candidate in {} does not load", dir.display()))?;
    println!(
        "dry run of {} since {}",
        dir.display(),
        rfc3339_micros::format(since)
    );
    let d = moat_policy::edit::diff(&store.load()?, &candidate);
    super::print_diff(&d);
    if d.is_empty() {
        println!("(the same rules as the policy in force)");
    }
    Ok(())
}

/// When the candidate was last written.
fn started_at(dir: &Path) -> Option<OffsetDateTime> {
    let modified = std::fs::metadata(dir.join(moat_policy::policy::POLICY_FILE))
        .and_then(|m| m.modified())
        .ok()?;
    Some(OffsetDateTime::from(modified))
}

/// `1h` (that long before now) or an RFC 3339 time.
fn when(text: &str) -> Result<OffsetDateTime> {
    if let Ok(ago) = moat_certs::ttl::parse(text) {
        return Ok(OffsetDateTime::now_utc() - ago);
    }
    rfc3339_micros::parse(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?}: give a duration (30m, 1h, 7d) or an RFC 3339 time (2026-05-01T12:00:00Z)"
        )
    })
}

fn report(
    dir: &Path,
    audit: &Path,
    since: Option<&str>,
    user: Option<&str>,
    output: Output,
) -> Result<()> {
    let since = match since {
        Some(text) => Some(when(text)?),
        None => started_at(dir),
    };
    let filter = moat_audit::Filter {
        user: user.map(str::to_owned),
        stage: Some(moat_audit::Stage::Completed),
        since,
        ..moat_audit::Filter::default()
    };
    let mut calls = 0usize;
    let mut would_deny = Vec::new();
    let mut would_allow = Vec::new();
    let lines = moat_audit::lines(&[audit.to_path_buf()])
        .with_context(|| format!("reading the audit log in {}", audit.display()))?;
    for line in lines {
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                eprintln!("moat: skipping {err}");
                continue;
            }
        };
        let Entry::Event(record) = &line.entry else {
            continue;
        };
        if !filter.matches(record) {
            continue;
        }
        calls += 1;
        // Read from the line itself: the field is the gateway's addition.
        let raw: Value = serde_json::from_slice(&line.raw).unwrap_or_default();
        let Some(dry_run) = raw.get("dry_run").filter(|v| v.is_object()) else {
            continue;
        };
        let item = json!({
            "time": rfc3339_micros::format(record.time),
            "user": record.user,
            "groups": record.groups,
            "method": record.method,
            "path": record.path,
            "action": record.action,
            "decision": record.decision.as_str(),
            "dry_run": dry_run,
        });
        if dry_run["allowed"] == false {
            would_deny.push(item);
        } else {
            would_allow.push(item);
        }
    }

    if output == Output::Json {
        let json = json!({
            "candidate": dir,
            "since": since.map(rfc3339_micros::format),
            "calls": calls,
            "would_deny": would_deny,
            "would_allow": would_allow,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{} call{} since {}: the candidate would deny {} the policy in force allowed, and allow {} it denied",
        calls,
        if calls == 1 { "" } else { "s" },
        since.map_or_else(|| "the log began".to_owned(), rfc3339_micros::format),
        would_deny.len(),
        would_allow.len()
    );
    if !dir.exists() {
        println!("(no dry run is on now)");
    }
    let rows = |items: &[Value], key: &str| -> Vec<[String; 4]> {
        items
            .iter()
            .map(|item| {
                let text = |k: &str| item[k].as_str().unwrap_or("-").to_owned();
                [
                    text("time"),
                    text("user"),
                    format!("{} {} ({})", text("method"), text("path"), text("action")),
                    item["dry_run"][key]
                        .as_array()
                        .map(|d| {
                            d.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect()
    };
    if !would_deny.is_empty() {
        println!("\nWould deny:");
        print_table(
            ["TIME", "USER", "CALL", "DENIED BY THE CANDIDATE"],
            &rows(&would_deny, "denied"),
        );
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for item in &would_deny {
            for denied in item["dry_run"]["denied"].as_array().into_iter().flatten() {
                let key = (
                    item["user"].as_str().unwrap_or("-").to_owned(),
                    denied.as_str().unwrap_or("-").to_owned(),
                );
                *counts.entry(key).or_default() += 1;
            }
        }
        println!("\nBy user and requirement:");
        let table: Vec<[String; 3]> = counts
            .into_iter()
            .map(|((user, denied), n)| [user, denied, n.to_string()])
            .collect();
        print_table(["USER", "DENIED BY THE CANDIDATE", "CALLS"], &table);
    }
    if !would_allow.is_empty() {
        println!("\nWould allow (denied by the policy in force):");
        print_table(
            ["TIME", "USER", "CALL", "STILL DENIED"],
            &rows(&would_allow, "denied"),
        );
    }
    Ok(())
}
