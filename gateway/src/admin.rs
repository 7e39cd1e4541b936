//! moat's admin API under `/moat/v1/`, answered by the gateway itself.
//! The pipeline has already authorized the call (each route is its own
//! action, e.g. `moat.policy.put`, which the default policy gives only to
//! `admin`) and audits it like any other.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hyper::StatusCode;
use moat_api::{Action, Route};
use moat_policy::{Enforcer, Identity, Policy};
use serde::Deserialize;
use serde_json::json;

use crate::sessions::Sessions;
use crate::tls::Caller;

/// Where a candidate policy in dry run lives, below the policy directory.
pub const DRY_RUN_DIR: &str = "dry-run";

pub struct Admin {
    pub policy_dir: PathBuf,
    pub enforcer: Arc<Enforcer>,
    /// A candidate policy evaluated beside the running one and never
    /// enforced: where it would decide differently, the audit record says
    /// so (`dry_run`). Loaded from `POLICY/dry-run/` while it exists.
    pub dry_run: arc_swap::ArcSwapOption<Enforcer>,
    pub audit: moat_audit::AuditLog,
    pub sessions: Sessions,
    /// The enrollment signer, for `moat.renew`; `None` when not configured.
    pub signer: Option<crate::enroll::Signer>,
}

/// `POST /moat/v1/renew`: a CSR for a new key of the caller's own identity.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Renew {
    csr: String,
}

/// `PUT /moat/v1/policy`: the new `policy.csv` (and optionally a new
/// `model.conf`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyPut {
    policy: String,
    #[serde(default)]
    model: Option<String>,
    /// The `version` a `GET` answered: the PUT is refused (409) if the
    /// policy changed since, so two admins cannot overwrite each other.
    #[serde(default)]
    version: Option<String>,
}

/// A short hash of a policy's model and rules: its version.
fn version_of(policy: &Policy) -> String {
    let mut bytes = policy.model().as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(policy.text().as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
    digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /moat/v1/check`: a request to explain for someone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    user: String,
    #[serde(default)]
    groups: Vec<String>,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<serde_json::Value>,
    /// Judge the container (or exec) the path names as someone else's,
    /// as the gateway does for a caller who does not own it.
    #[serde(default)]
    others: bool,
}

type Answer = (StatusCode, Bytes);

fn ok(value: serde_json::Value) -> Answer {
    (StatusCode::OK, Bytes::from(value.to_string()))
}

fn bad(status: StatusCode, message: impl std::fmt::Display) -> Answer {
    (
        status,
        Bytes::from(json!({ "message": format!("moat: {message}") }).to_string()),
    )
}

impl Admin {
    pub async fn serve(&self, route: &Route, caller: &Caller, body: &[u8]) -> Answer {
        match route.action {
            Action::MoatWhoami => ok(json!({
                "user": caller.user,
                "groups": caller.groups,
                "roles": self.enforcer.roles(&caller.identity()),
                "auth": caller.auth,
                "serial": caller.serial,
                "fingerprint": caller.fingerprint,
            })),
            Action::MoatPolicyGet => {
                let policy = self.enforcer.policy();
                ok(
                    json!({ "model": policy.model(), "policy": policy.text(), "version": version_of(&policy) }),
                )
            }
            Action::MoatPolicyPut => {
                let put: PolicyPut = match serde_json::from_slice(body) {
                    Ok(put) => put,
                    Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
                };
                let current = self.enforcer.policy();
                if let Some(version) = &put.version
                    && *version != version_of(&current)
                {
                    return bad(
                        StatusCode::CONFLICT,
                        "the policy changed since you read it; read it again and reapply your change",
                    );
                }
                let model = put.model.as_deref().unwrap_or(current.model());
                let policy = match Policy::from_text(model, &put.policy) {
                    Ok(policy) => policy,
                    Err(e) => {
                        return bad(
                            StatusCode::BAD_REQUEST,
                            format!("the policy was refused and the running one stays: {e}"),
                        );
                    }
                };
                let dir = self.policy_dir.clone();
                let written = policy.clone();
                let saved = tokio::task::spawn_blocking(move || written.write_dir(&dir)).await;
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e),
                    Err(e) => return bad(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
                match self.swap(policy) {
                    Ok(()) => ok(json!({
                        "message": "policy replaced",
                        "rules": self.enforcer.policy().rules().len(),
                        "version": version_of(&self.enforcer.policy()),
                    })),
                    Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
                }
            }
            Action::MoatReload => match self.reload() {
                Ok(rules) => ok(json!({ "message": "policy reloaded", "rules": rules })),
                Err(e) => bad(
                    StatusCode::BAD_REQUEST,
                    format!("the policy was refused and the running one stays: {e}"),
                ),
            },
            Action::MoatCheck => {
                let check: Check = match serde_json::from_slice(body) {
                    Ok(check) => check,
                    Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
                };
                let body = check.body.as_ref().map(|b| b.to_string());
                let derived = moat_policy::derive_request(
                    &check.method,
                    &check.path,
                    body.as_deref().map(str::as_bytes),
                );
                match derived {
                    Ok((route, mut requirements)) => {
                        if check.others
                            && let Some(object) = &route.object
                        {
                            requirements.extend(moat_policy::Requirement::on_others(object.kind()));
                        }
                        let who = Identity::new(check.user, check.groups);
                        let explanation = self.enforcer.explain(&who, &requirements);
                        match serde_json::to_value(&explanation) {
                            Ok(value) => ok(value),
                            Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
                        }
                    }
                    Err(e) => bad(StatusCode::BAD_REQUEST, e),
                }
            }
            Action::MoatAuditStatus => match serde_json::to_value(self.audit.status()) {
                Ok(mut value) => {
                    value["sessions"] = json!(self.sessions.count());
                    ok(value)
                }
                Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e),
            },
            Action::MoatRenew => {
                let renew: Renew = match serde_json::from_slice(body) {
                    Ok(renew) => renew,
                    Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
                };
                let (Some(signer), Some(serial)) = (&self.signer, &caller.serial) else {
                    return bad(
                        StatusCode::BAD_REQUEST,
                        "renewal needs a client certificate and a gateway started with --signer",
                    );
                };
                let request = json!({
                    "op": "renew",
                    "serial": serial,
                    "user": caller.user,
                    "groups": caller.groups,
                    "csr": renew.csr,
                });
                match signer.call(&request).await {
                    Ok(issued) => ok(issued),
                    Err(e) => bad(e.status(), format!("renewal refused: {e}")),
                }
            }
            Action::MoatEnroll => bad(
                StatusCode::NOT_FOUND,
                "enrollment is served on the gateway's enrollment port (--enroll-listen), to callers without a certificate",
            ),
            other => bad(
                StatusCode::NOT_IMPLEMENTED,
                format!("{other} is not served yet"),
            ),
        }
    }

    /// Loads the policy directory again and swaps it in if it is valid.
    pub fn reload(&self) -> Result<usize, moat_policy::PolicyError> {
        let policy = Policy::load_dir(&self.policy_dir)?;
        self.swap(policy)?;
        Ok(self.enforcer.policy().rules().len())
    }

    /// Swaps a validated policy in, then closes the sessions of callers it
    /// denies everything (a locked user, a user whose last role went):
    /// their open exec and attach streams end with them.
    fn swap(&self, policy: Policy) -> Result<(), moat_policy::PolicyError> {
        self.enforcer.reload(policy)?;
        let ping = [moat_policy::Requirement::flag(Action::SystemPing)];
        let closed = self.sessions.close_where(|session| {
            session
                .caller
                .as_ref()
                .is_some_and(|caller| !self.enforcer.decide(&caller.identity(), &ping).allowed)
        });
        if closed > 0 {
            tracing::info!("closed {closed} session(s) the new policy denies everything");
        }
        Ok(())
    }

    /// A policy edited on disk takes effect like one PUT through the API,
    /// so it is audited like one: who edited the file is not known here
    /// (the host's own logs know), but when and to what version is.
    async fn audit_local_change(&self) {
        let policy = self.enforcer.policy();
        let record = moat_audit::Record {
            audit_id: format!("policy-{}", version_of(&policy)),
            stage: moat_audit::Stage::Completed,
            user: "(local file)".into(),
            auth: moat_audit::Auth::None,
            source: "local".into(),
            method: "RELOAD".into(),
            path: self.policy_dir.display().to_string(),
            action: Some(Action::MoatReload.as_str().into()),
            decision: moat_audit::Decision::Allow,
            reason: Some(format!(
                "the policy directory changed on disk; now version {} with {} rules",
                version_of(&policy),
                policy.rules().len()
            )),
            ..moat_audit::Record::default()
        };
        if let Err(err) = self.audit.append(record).await {
            tracing::error!("audit: could not record the policy reload: {err}");
        }
    }

    /// Starts, replaces or ends the dry run from what `dir` holds.
    fn load_dry_run(&self, dir: &std::path::Path) {
        if !dir.exists() {
            if self.dry_run.swap(None).is_some() {
                tracing::info!("dry run ended");
            }
            return;
        }
        match Policy::load_dir(dir).and_then(Enforcer::new) {
            Ok(candidate) => {
                self.dry_run.store(Some(Arc::new(candidate)));
                tracing::info!("dry run of the policy in {}", dir.display());
            }
            Err(err) => {
                self.dry_run.store(None);
                tracing::error!(
                    "no dry run: the candidate in {} does not load: {err}",
                    dir.display()
                );
            }
        }
    }

    /// Polls the policy directory and reloads it when its files change, so
    /// a local `moat policy` edit takes effect within `every`. A policy
    /// that does not load is logged and the running one stays.
    pub async fn watch(self: Arc<Self>, every: std::time::Duration) {
        let files = [
            moat_policy::policy::MODEL_FILE,
            moat_policy::policy::POLICY_FILE,
        ];
        let stamp = |dir: &std::path::Path| -> Vec<Option<(std::time::SystemTime, u64)>> {
            files
                .iter()
                .map(|name| {
                    std::fs::metadata(dir.join(name))
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect()
        };
        let dry_dir = self.policy_dir.join(DRY_RUN_DIR);
        let mut seen = stamp(&self.policy_dir);
        let mut seen_dry = None;
        loop {
            let now_dry = stamp(&dry_dir);
            if Some(&now_dry) != seen_dry.as_ref() {
                self.load_dry_run(&dry_dir);
                seen_dry = Some(now_dry);
            }
            tokio::time::sleep(every).await;
            let now = stamp(&self.policy_dir);
            if now == seen {
                continue;
            }
            seen = now;
            let dir = self.policy_dir.clone();
            let loaded = tokio::task::spawn_blocking(move || Policy::load_dir(&dir)).await;
            match loaded {
                Ok(Ok(policy)) if *self.enforcer.policy() == policy => {}
                Ok(Ok(policy)) => match self.swap(policy) {
                    Ok(()) => {
                        tracing::info!("reloaded the policy from {}", self.policy_dir.display());
                        self.audit_local_change().await;
                    }
                    Err(err) => tracing::error!("keeping the running policy: {err}"),
                },
                Ok(Err(err)) => tracing::error!("keeping the running policy: {err}"),
                Err(err) => tracing::error!("keeping the running policy: {err}"),
            }
        }
    }
}
