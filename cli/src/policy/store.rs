//! Where the policy `moat policy` works on lives: a local policy directory
//! (the one a gateway on this host runs from and re-reads within seconds
//! of a change), or a running gateway reached through its admin API.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use moat_policy::{Draft, Enforcer, Explanation, Identity, Policy, Requirement};
use serde_json::json;

use super::docker::ApiRequest;
use super::remote::{Gateway, Refused};

pub enum Store {
    Local { dir: PathBuf },
    Remote(Gateway),
}

/// What the gateway would do with one request.
pub enum Outcome {
    /// Decided: each requirement and its rule.
    Explained(Explanation),
    /// Refused before any decision (400): a body or query the policy
    /// cannot judge, or a route the gateway does not know.
    Refused(String),
}

impl Outcome {
    pub fn allowed(&self) -> bool {
        matches!(self, Outcome::Explained(e) if e.allowed)
    }
}

impl Store {
    /// For messages: the directory, or the gateway's address.
    pub fn describe(&self) -> String {
        match self {
            Store::Local { dir } => dir.display().to_string(),
            Store::Remote(gateway) => gateway.url().to_owned(),
        }
    }

    /// The policy in force. A local directory that is missing or empty is
    /// the built-in default, which a gateway would write there on start.
    pub fn load(&self) -> Result<Policy> {
        match self {
            Store::Local { dir } => {
                let empty = match std::fs::read_dir(dir) {
                    Ok(mut entries) => entries.next().is_none(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
                };
                if empty {
                    return Ok(Policy::builtin());
                }
                Policy::load_dir(dir).with_context(|| format!("the policy in {}", dir.display()))
            }
            Store::Remote(gateway) => {
                let answer = gateway.call("GET", "/moat/v1/policy", None)?;
                let (Some(model), Some(text)) =
                    (answer["model"].as_str(), answer["policy"].as_str())
                else {
                    bail!(
                        "{}: the policy answer has no model and policy",
                        gateway.url()
                    );
                };
                Policy::from_text(model, text).with_context(|| {
                    format!("the policy {} runs does not validate here", gateway.url())
                })
            }
        }
    }

    /// The `model.conf` text in force: what a bare `policy.csv` is paired
    /// with. A local model file is read as it is, even if the policy
    /// beside it does not load.
    pub fn model(&self) -> Result<String> {
        match self {
            Store::Local { dir } => {
                match std::fs::read_to_string(dir.join(moat_policy::policy::MODEL_FILE)) {
                    Ok(model) => Ok(model),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        Ok(moat_policy::policy::DEFAULT_MODEL.to_owned())
                    }
                    Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
                }
            }
            Store::Remote(_) => Ok(self.load()?.model().to_owned()),
        }
    }

    /// Reads the policy in force, lets `change` draft a new one (`None`:
    /// nothing to do), validates the draft whole and only then writes it.
    /// A policy in force that does not load is an error here: fix it with
    /// [`replace`](Store::replace).
    pub fn change(&self, change: impl FnOnce(&Policy) -> Result<Option<Draft>>) -> Result<()> {
        self.write(|old| {
            let old = old.map_err(|e| anyhow::anyhow!("{e:#}"))?;
            let Some(draft) = change(old)? else {
                return Ok(None);
            };
            let new = draft
                .finish()
                .context("the change was refused and nothing was written")?;
            Ok(Some(new))
        })
    }

    /// Puts `new` (already validated) in force, even over a local policy
    /// that does not load.
    pub fn replace(&self, new: Policy) -> Result<()> {
        self.write(|old| {
            if let Err(e) = old {
                eprintln!("moat: replacing a policy that does not load ({e:#})");
            }
            Ok(Some(new))
        })
    }

    /// The one place policies are written: into the local directory
    /// (atomically, under a lock so two admins' changes do not overwrite
    /// each other), or with `PUT /moat/v1/policy`. `decide` sees the
    /// policy in force (or why it does not load) and returns the new one.
    /// Prints the rules that changed.
    fn write(
        &self,
        decide: impl FnOnce(Result<&Policy, &anyhow::Error>) -> Result<Option<Policy>>,
    ) -> Result<()> {
        let (old, new) = match self {
            Store::Local { dir } => {
                // As a gateway's first start would: a missing or empty
                // directory gets the default. A broken one is reported below.
                let _ = Policy::init_dir(dir);
                let _lock = lock_dir(dir)?;
                let old = Policy::load_dir(dir)
                    .with_context(|| format!("the policy in {}", dir.display()));
                let Some(new) = unchanged(old.as_ref().ok(), decide(old.as_ref())?) else {
                    return Ok(());
                };
                new.write_dir(dir)
                    .with_context(|| format!("writing the policy to {}", dir.display()))?;
                (old.ok(), new)
            }
            Store::Remote(gateway) => {
                let old = self.load()?;
                let Some(new) = unchanged(Some(&old), decide(Ok(&old))?) else {
                    return Ok(());
                };
                let mut body = json!({ "policy": new.text() });
                if new.model() != old.model() {
                    body["model"] = json!(new.model());
                }
                gateway
                    .call("PUT", "/moat/v1/policy", Some(&body))
                    .context("the gateway refused the change; its policy stays")?;
                // The reload swaps the policy in the way that also closes the
                // sessions of callers it now denies everything, as a local
                // change does; the PUT alone does not (yet).
                gateway
                    .call("POST", "/moat/v1/reload", None)
                    .context("the new policy is written; reloading it")?;
                (Some(old), new)
            }
        };
        if let Some(old) = &old {
            super::print_diff(&moat_policy::edit::diff(old, &new));
        }
        match self {
            Store::Local { dir } => println!(
                "wrote {} (a running gateway reloads it within seconds)",
                dir.join(moat_policy::policy::POLICY_FILE).display()
            ),
            Store::Remote(gateway) => println!("{} runs the new policy", gateway.url()),
        }
        Ok(())
    }

    /// What decides `check`: the local policy, or the gateway's own check.
    pub fn checker(&self) -> Result<Checker<'_>> {
        Ok(match self {
            Store::Local { .. } => Checker::Local(Enforcer::new(self.load()?)?),
            Store::Remote(gateway) => Checker::Remote(gateway),
        })
    }
}

pub enum Checker<'a> {
    Local(Enforcer),
    Remote(&'a Gateway),
}

impl Checker<'_> {
    /// Derives and decides one request for `who`, as the gateway would.
    /// `others`: the container, volume or network the path names is not
    /// `who`'s own (the gateway then adds `container.any` and the like).
    pub fn explain(&self, who: &Identity, request: &ApiRequest, others: bool) -> Result<Outcome> {
        match self {
            Checker::Local(enforcer) => {
                let body = request.body_bytes();
                let (route, mut requirements) = match moat_policy::derive_request(
                    request.method,
                    &request.target,
                    body.as_deref(),
                ) {
                    Ok(derived) => derived,
                    Err(err) => return Ok(Outcome::Refused(err.to_string())),
                };
                if others
                    && let Some(extra) = route
                        .object
                        .as_ref()
                        .and_then(|o| Requirement::on_others(o.kind()))
                    && !requirements.contains(&extra)
                {
                    requirements.push(extra);
                }
                Ok(Outcome::Explained(enforcer.explain(who, &requirements)))
            }
            Checker::Remote(gateway) => {
                if others {
                    bail!(
                        "--others is not available with --gateway: the admin API's check does not take it"
                    );
                }
                let body = json!({
                    "user": who.user,
                    "groups": who.groups,
                    "method": request.method,
                    "path": request.target,
                    "body": request.body,
                });
                match gateway.call("POST", "/moat/v1/check", Some(&body)) {
                    Ok(answer) => Ok(Outcome::Explained(
                        serde_json::from_value(answer).context("the gateway's explanation")?,
                    )),
                    Err(err) => match err.downcast_ref::<Refused>() {
                        Some(refused) if refused.status == 400 => {
                            let message = refused.message.trim_start_matches("moat: ");
                            Ok(Outcome::Refused(message.to_owned()))
                        }
                        _ => Err(err),
                    },
                }
            }
        }
    }
}

/// `new`, unless it is what is in force already (then says so).
fn unchanged(old: Option<&Policy>, new: Option<Policy>) -> Option<Policy> {
    let new = new?;
    if old == Some(&new) {
        println!("nothing to change");
        return None;
    }
    Some(new)
}

/// An exclusive lock on the directory itself, held until dropped; the
/// gateway never takes it, so it only orders `moat policy` runs.
fn lock_dir(dir: &std::path::Path) -> Result<nix::fcntl::Flock<File>> {
    let file = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", dir.display()))
}
