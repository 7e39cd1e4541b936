//! What the enforcer answers: a [`Decision`] per requirement, each with
//! the [`Rule`] that decided it, rolled up into a [`Verdict`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::permission::Requirement;
use crate::policy::POLICY_FILE;

/// The whole request's answer: allowed only if every requirement is (and
/// there is at least one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    pub decisions: Vec<Decision>,
}

impl Verdict {
    /// The decisions that denied, in request order.
    pub fn denials(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.allowed)
    }
}

/// One requirement's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(flatten)]
    pub requirement: Requirement,
    pub allowed: bool,
    pub rule: Rule,
}

impl fmt::Display for Decision {
    /// `host.bind:/ denied (default deny)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{} {word} ({})", self.requirement, self.rule)
    }
}

/// What decided a requirement. Serialized as its display string, which
/// audit records and 403 messages carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A line of the policy: for an allow, the first allow rule that
    /// matched; for a deny, the deny rule that matched (deny wins).
    Line(Arc<PolicyLine>),
    /// No rule allowed it.
    DefaultDeny,
    /// The policy could not be evaluated (a matcher error); denied.
    Failed(Arc<str>),
}

/// A rule line as the enforcer knows it: where it is and what it says,
/// canonically spaced (`p, developer, host.bind, /tmp/moat-shared/*, allow`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyLine {
    /// 1-based line number in `policy.csv`.
    pub number: usize,
    pub text: String,
}

const DEFAULT_DENY: &str = "default deny";
const FAILED: &str = "evaluation failed: ";

impl fmt::Display for Rule {
    /// `policy.csv:12: p, developer, container.create, *, allow`,
    /// `default deny`, or `evaluation failed: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Line(line) => write!(f, "{POLICY_FILE}:{}: {}", line.number, line.text),
            Rule::DefaultDeny => f.write_str(DEFAULT_DENY),
            Rule::Failed(reason) => write!(f, "{FAILED}{reason}"),
        }
    }
}

/// Text that is not a rule's display form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a rule: {0:?}")]
pub struct BadRule(pub String);

impl FromStr for Rule {
    type Err = BadRule;

    fn from_str(s: &str) -> Result<Rule, BadRule> {
        if s == DEFAULT_DENY {
            return Ok(Rule::DefaultDeny);
        }
        if let Some(reason) = s.strip_prefix(FAILED) {
            return Ok(Rule::Failed(reason.into()));
        }
        let bad = || BadRule(s.to_owned());
        let rest = s
            .strip_prefix(POLICY_FILE)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(bad)?;
        let (number, text) = rest.split_once(": ").ok_or_else(bad)?;
        Ok(Rule::Line(Arc::new(PolicyLine {
            number: number.parse().map_err(|_| bad())?,
            text: text.to_owned(),
        })))
    }
}

impl Serialize for Rule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rule, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::Permission;

    #[test]
    fn rules_round_trip_through_their_text() {
        for rule in [
            Rule::DefaultDeny,
            Rule::Failed("boom".into()),
            Rule::Line(Arc::new(PolicyLine {
                number: 12,
                text: "p, developer, host.bind, /tmp/moat-shared/*, allow".into(),
            })),
        ] {
            assert_eq!(rule.to_string().parse::<Rule>().unwrap(), rule);
        }
        assert!("policy.csv:x: y".parse::<Rule>().is_err());
    }

    #[test]
    fn a_decision_serializes_flat() {
        let decision = Decision {
            requirement: Requirement::new(Permission::HostBind, "/"),
            allowed: false,
            rule: Rule::DefaultDeny,
        };
        let json = serde_json::to_value(&decision).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"permission": "host.bind", "object": "/", "allowed": false, "rule": "default deny"})
        );
        assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), decision);
        assert_eq!(decision.to_string(), "host.bind:/ denied (default deny)");
    }
}
