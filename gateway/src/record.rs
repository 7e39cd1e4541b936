//! What the gateway knows about one call, as it learns it, and the audit
//! records made from it: a "started" record before a mutating or
//! long-lived call is forwarded, and exactly one "completed" record per
//! call, allowed or denied.

use std::time::Instant;

use moat_api::Action;
use moat_policy::Verdict;
use serde_json::Value;

use crate::tls::Caller;

pub use moat_audit::{Decision, Level};

#[derive(Clone)]
pub struct CallRecord {
    pub audit_id: String,
    pub time: time::OffsetDateTime,
    started: Instant,
    pub user: String,
    pub groups: Vec<String>,
    pub auth: moat_audit::Auth,
    pub serial: Option<String>,
    pub fingerprint: Option<String>,
    pub source: String,
    pub user_agent: Option<String>,
    pub method: String,
    pub path: String,
    pub action: Option<Action>,
    pub object: Option<String>,
    pub verdict: Option<Verdict>,
    pub level: Level,
    pub request: Option<Value>,
    /// What the dry-run policy would have decided, when it differs.
    pub dry_run: Option<Value>,
    pub bytes_in: u64,
}

/// The outcome that completes a record.
pub struct Outcome {
    pub decision: Decision,
    pub reason: Option<String>,
    pub status: u16,
    pub bytes_out: u64,
}

impl CallRecord {
    pub fn new(
        audit_id: String,
        caller: &Caller,
        source: &str,
        method: &str,
        target: &str,
        user_agent: Option<&str>,
    ) -> CallRecord {
        CallRecord {
            audit_id,
            time: time::OffsetDateTime::now_utc(),
            started: Instant::now(),
            user: caller.user.clone(),
            groups: caller.groups.clone(),
            auth: caller.auth,
            serial: caller.serial.clone(),
            fingerprint: caller.fingerprint.clone(),
            source: source.to_owned(),
            user_agent: user_agent.map(|ua| truncate(ua, 256)),
            method: truncate(method, 32),
            path: truncate(target, 4096),
            action: None,
            object: None,
            verdict: None,
            level: Level::Metadata,
            request: None,
            dry_run: None,
            bytes_in: 0,
        }
    }

    /// Keeps the request body for a Request-level record, with every
    /// environment value replaced (values are where secrets go).
    pub fn keep_body(&mut self, body: &[u8]) {
        if self.level == Level::Request {
            self.request = serde_json::from_slice::<Value>(body).ok().map(redact);
        }
    }

    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The record written before a call is forwarded.
    pub fn started(&self) -> moat_audit::Record {
        let mut record = self.base();
        record.stage = moat_audit::Stage::Started;
        record.decision = moat_audit::Decision::Allow;
        record
    }

    /// The record that ends the call.
    pub fn completed(&self, outcome: &Outcome) -> moat_audit::Record {
        let mut record = self.base();
        record.stage = moat_audit::Stage::Completed;
        record.decision = outcome.decision;
        record.reason = outcome.reason.clone();
        record.status = Some(outcome.status);
        record.bytes_in = Some(self.bytes_in);
        record.bytes_out = Some(outcome.bytes_out);
        record.duration_us = Some(self.elapsed_us());
        record
    }

    fn base(&self) -> moat_audit::Record {
        moat_audit::Record {
            audit_id: self.audit_id.clone(),
            time: self.time,
            level: self.level,
            user: self.user.clone(),
            groups: self.groups.clone(),
            auth: self.auth,
            cert_serial: self.serial.clone(),
            cert_fingerprint: self.fingerprint.clone(),
            source: self.source.clone(),
            user_agent: self.user_agent.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            action: self.action.map(|a| a.as_str().to_owned()),
            object: self.object.clone(),
            requirements: self
                .verdict
                .iter()
                .flat_map(|v| &v.decisions)
                .map(|d| moat_audit::RequirementOutcome {
                    permission: d.requirement.permission.to_string(),
                    object: Some(d.requirement.object.clone()),
                    allowed: d.allowed,
                    rule: d.rule.to_string(),
                })
                .collect(),
            request: self.request.clone(),
            dry_run: self.dry_run.clone(),
            ..Default::default()
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Keys whose values are credentials wherever they appear.
const SECRET_KEYS: [&str; 6] = [
    "password",
    "identitytoken",
    "registrytoken",
    "auth",
    "token",
    "secret",
];

/// Replaces the value of every `NAME=value` in an `Env` array, and every
/// credential field, at any depth, with `<redacted>`.
fn redact(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    // Credentials (`/auth`, registry configs): the value goes.
                    if SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k)) {
                        *child = Value::String("<redacted>".into());
                    } else if key == "Env" {
                        if let Value::Array(items) = child {
                            for item in items {
                                if let Value::String(entry) = item {
                                    let name = entry.split('=').next().unwrap_or("").to_owned();
                                    *entry = format!("{name}=<redacted>");
                                }
                            }
                        }
                    } else {
                        walk(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_values_are_redacted_at_any_depth() {
        let body = serde_json::json!({
            "Env": ["TOKEN=s3cret", "PATH"],
            "Nested": [{"Env": ["A=b=c"]}],
            "Cmd": ["echo", "TOKEN=visible"],
        });
        let out = redact(body);
        assert_eq!(
            out["Env"],
            serde_json::json!(["TOKEN=<redacted>", "PATH=<redacted>"])
        );
        assert_eq!(out["Nested"][0]["Env"], serde_json::json!(["A=<redacted>"]));
        assert_eq!(out["Cmd"][1], "TOKEN=visible");

        let login = redact(serde_json::json!({
            "username": "ci", "password": "hunter2", "serveraddress": "r.example",
            "IdentityToken": "t0k", "nested": {"auth": "YWJj"},
        }));
        assert_eq!(login["username"], "ci");
        assert_eq!(login["password"], "<redacted>");
        assert_eq!(login["IdentityToken"], "<redacted>");
        assert_eq!(login["nested"]["auth"], "<redacted>");
        assert!(!login.to_string().contains("hunter2"));
        assert!(!out.to_string().contains("s3cret"));
    }
}
