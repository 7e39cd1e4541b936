//! How `moat policy check` (and the gateway's `moat.check`) shows a
//! decision: who asked, which roles they hold, every requirement with its
//! decision and the rule that decided it. As a table for people, as JSON
//! for tools.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::enforcer::Enforcer;
use crate::identity::Identity;
use crate::permission::Requirement;
use crate::verdict::{Decision, Verdict};

/// A verdict with the identity it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub user: String,
    pub groups: Vec<String>,
    /// The roles the identity holds, through its user or its groups.
    pub roles: Vec<String>,
    pub allowed: bool,
    pub decisions: Vec<Decision>,
}

impl Explanation {
    pub fn new(who: &Identity, roles: Vec<String>, verdict: Verdict) -> Explanation {
        Explanation {
            user: who.user.clone(),
            groups: who.groups.clone(),
            roles,
            allowed: verdict.allowed,
            decisions: verdict.decisions,
        }
    }

    /// ```text
    /// alice (groups: developer; roles: developer): DENIED
    ///
    /// PERMISSION            OBJECT  DECISION  RULE
    /// container.create      *       allow     policy.csv:44: p, developer, container.create, *, allow
    /// container.privileged  *       deny      default deny
    /// ```
    pub fn table(&self) -> String {
        format!("{}\n\n{}", self.headline(), self.decision_table())
    }

    /// Who asked and the verdict, the table's first line:
    /// `alice (groups: developer; roles: developer): DENIED`.
    pub fn headline(&self) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        format!(
            "{} (groups: {}; roles: {}): {}",
            self.user,
            list(&self.groups),
            list(&self.roles),
            if self.allowed { "ALLOWED" } else { "DENIED" },
        )
    }

    /// The table of [`table`](Explanation::table) without the line on who
    /// asked: one row per requirement, under a header.
    pub fn decision_table(&self) -> String {
        let mut out = String::new();
        let rows: Vec<[String; 4]> = self
            .decisions
            .iter()
            .map(|d| {
                [
                    d.requirement.permission.to_string(),
                    d.requirement.object.clone(),
                    if d.allowed { "allow" } else { "deny" }.to_owned(),
                    d.rule.to_string(),
                ]
            })
            .collect();
        let header = ["PERMISSION", "OBJECT", "DECISION", "RULE"].map(str::to_owned);
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line = format!(
                "{:w0$}  {:w1$}  {:w2$}  {}",
                row[0],
                row[1],
                row[2],
                row[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }

    /// Pretty-printed JSON of [`Explanation`].
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an explanation serializes")
    }
}

impl Enforcer {
    /// Decides and explains: what `moat policy check` shows.
    pub fn explain(&self, who: &Identity, requirements: &[Requirement]) -> Explanation {
        let verdict = self.decide(who, requirements);
        Explanation::new(who, self.roles(who), verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::Permission;
    use crate::policy::Policy;

    #[test]
    fn renders_a_table_and_json() {
        let enforcer = Enforcer::new(Policy::builtin()).unwrap();
        let alice = Identity::new("alice", ["developer"]);
        let explanation = enforcer.explain(
            &alice,
            &[
                Requirement::flag(moat_api::Action::ContainerCreate),
                Requirement::flag(Permission::Privileged),
                Requirement::new(Permission::HostBind, "/"),
            ],
        );
        let table = explanation.table();
        assert!(
            table.starts_with("alice (groups: developer; roles: developer): DENIED\n\n"),
            "{table}"
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[2].starts_with("PERMISSION            OBJECT  DECISION  RULE"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("container.create      *       allow     policy.csv:"),
            "{table}"
        );
        assert!(
            lines[3].ends_with("p, developer, container.create, *, allow"),
            "{table}"
        );
        assert_eq!(
            lines[4],
            "container.privileged  *       deny      default deny"
        );
        assert_eq!(
            lines[5],
            "host.bind             /       deny      default deny"
        );

        let parsed: Explanation = serde_json::from_str(&explanation.json()).unwrap();
        assert_eq!(parsed, explanation);
        let json: serde_json::Value = serde_json::from_str(&explanation.json()).unwrap();
        assert_eq!(json["decisions"][2]["permission"], "host.bind");
        assert_eq!(json["allowed"], false);
    }

    /// The example in docs/policy.md is this crate's real output.
    #[test]
    fn the_docs_example_is_real() {
        let enforcer = Enforcer::new(Policy::builtin()).unwrap();
        let body = br#"{"Image":"alpine","HostConfig":{"Privileged":true,"Binds":["/:/host"]}}"#;
        let (_, requirements) =
            crate::derive_request("POST", "/v1.41/containers/create", Some(body)).unwrap();
        let table = enforcer
            .explain(&Identity::new("alice", ["developer"]), &requirements)
            .table();
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/policy.md"),
        )
        .unwrap();
        assert!(doc.contains(&table), "docs/policy.md should show:\n{table}");
    }
}
