//! `policy.csv`, read and checked line by line, so a bad policy is refused
//! with the line that is wrong and why, before casbin sees it.
//!
//! ```text
//! # comment
//! p, SUBJECT, PERMISSION, OBJECT, allow|deny
//! g, SUBJECT, ROLE
//! ```
//!
//! SUBJECT is `user:NAME`, `group:NAME` or a role (a bare NAME). PERMISSION
//! and OBJECT are patterns: exact, `*`, or a prefix ending in `*`. Fields
//! are separated by commas and trimmed; there is no quoting.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::hostpath;
use crate::identity::{GROUP_PREFIX, USER_PREFIX};
use crate::image_ref;
use crate::permission::{ObjectForm, Permission};
use crate::policy::PolicyError;

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// What a line says.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// `p, SUBJECT, PERMISSION, OBJECT, EFFECT`
    Permission {
        subject: String,
        permission: String,
        object: String,
        effect: Effect,
    },
    /// `g, SUBJECT, ROLE`: the subject holds the role.
    Grouping { subject: String, role: String },
}

/// One rule of `policy.csv`, with its line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleLine {
    /// 1-based.
    pub number: usize,
    pub rule: RuleKind,
}

impl fmt::Display for RuleKind {
    /// The canonical text: fields joined by `, `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleKind::Permission {
                subject,
                permission,
                object,
                effect,
            } => write!(
                f,
                "p, {subject}, {permission}, {object}, {}",
                effect.as_str()
            ),
            RuleKind::Grouping { subject, role } => write!(f, "g, {subject}, {role}"),
        }
    }
}

impl std::str::FromStr for RuleKind {
    type Err = String;

    /// One rule line, checked as a load checks it (but alone: whether a
    /// role it grants is defined depends on the rest of the file).
    fn from_str(line: &str) -> Result<RuleKind, String> {
        parse_line(line.trim())
    }
}

/// Reads and checks every line, then the whole: no duplicates, and every
/// role a `g` line grants is defined (has a `p` rule, or inherits a role).
pub(crate) fn parse(text: &str) -> Result<Vec<RuleLine>, PolicyError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let rule = parse_line(trimmed).map_err(|reason| PolicyError::Line {
            line: number,
            text: trimmed.to_owned(),
            reason,
        })?;
        lines.push(RuleLine { number, rule });
    }

    let mut seen: HashMap<&RuleKind, usize> = HashMap::new();
    for line in &lines {
        if let Some(first) = seen.insert(&line.rule, line.number) {
            return Err(PolicyError::Line {
                line: line.number,
                text: line.rule.to_string(),
                reason: format!("the same rule as line {first}"),
            });
        }
    }

    let defined: BTreeSet<&str> = lines
        .iter()
        .filter_map(|line| match &line.rule {
            RuleKind::Permission { subject, .. } if is_role(subject) => Some(subject.as_str()),
            RuleKind::Grouping { subject, .. } if is_role(subject) => Some(subject.as_str()),
            _ => None,
        })
        .collect();
    for line in &lines {
        if let RuleKind::Grouping { role, .. } = &line.rule
            && !defined.contains(role.as_str())
        {
            return Err(PolicyError::Line {
                line: line.number,
                text: line.rule.to_string(),
                reason: format!(
                    "role {role:?} is not defined: no p rule or g line gives it anything"
                ),
            });
        }
    }
    Ok(lines)
}

fn parse_line(line: &str) -> Result<RuleKind, String> {
    if let Some(c) = line.chars().find(|c| c.is_control() || *c == '"') {
        return Err(format!(
            "{c:?} is not allowed in a rule (fields are not quoted)"
        ));
    }
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if let Some(i) = fields.iter().position(|f| f.is_empty()) {
        return Err(format!("field {} is empty", i + 1));
    }
    match fields.as_slice() {
        ["p", subject, permission, object, effect] => {
            check_subject(subject)?;
            let exact = check_permission(permission)?;
            check_object(exact, object)?;
            let effect = match *effect {
                "allow" => Effect::Allow,
                "deny" => Effect::Deny,
                other => return Err(format!("effect {other:?} is neither allow nor deny")),
            };
            Ok(RuleKind::Permission {
                subject: subject.to_string(),
                permission: permission.to_string(),
                object: object.to_string(),
                effect,
            })
        }
        ["p", ..] => Err(format!(
            "a p rule has 5 fields (p, SUBJECT, PERMISSION, OBJECT, allow|deny), not {}",
            fields.len()
        )),
        ["g", subject, role] => {
            check_subject(subject)?;
            if !is_role(role) {
                return Err(format!(
                    "{role:?} is not a role: g's last field names a role, without user: or group:"
                ));
            }
            check_name(role)?;
            Ok(RuleKind::Grouping {
                subject: subject.to_string(),
                role: role.to_string(),
            })
        }
        ["g", ..] => Err(format!(
            "a g line has 3 fields (g, SUBJECT, ROLE), not {}",
            fields.len()
        )),
        [kind, ..] => Err(format!("{kind:?} is not a rule type (p or g)")),
        [] => Err("empty rule".into()),
    }
}

pub(crate) fn is_role(subject: &str) -> bool {
    !subject.contains(':')
}

/// `user:NAME`, `group:NAME` or a role NAME; names as certificates allow
/// them: `[A-Za-z0-9][A-Za-z0-9._@-]{0,63}`.
fn check_subject(subject: &str) -> Result<(), String> {
    let name = subject
        .strip_prefix(USER_PREFIX)
        .or_else(|| subject.strip_prefix(GROUP_PREFIX))
        .unwrap_or(subject);
    if name.contains(':') {
        return Err(format!(
            "{subject:?} is not a subject (user:NAME, group:NAME or a role name)"
        ));
    }
    check_name(name)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a name ([A-Za-z0-9][A-Za-z0-9._@-], at most 64)"
        ))
    }
}

/// A pattern has at most one `*`, at its end.
fn check_pattern(what: &str, pattern: &str) -> Result<(), String> {
    match pattern.find('*') {
        Some(i) if i + 1 != pattern.len() => {
            Err(format!("{what} {pattern:?}: a * may only end a pattern"))
        }
        _ => Ok(()),
    }
}

/// The permission a pattern names exactly, if it is not a wildcard. A
/// pattern that matches no permission is a typo.
fn check_permission(pattern: &str) -> Result<Option<Permission>, String> {
    check_pattern("permission", pattern)?;
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            if Permission::all().any(|p| p.as_str().starts_with(prefix)) {
                Ok(None)
            } else {
                Err(format!(
                    "permission pattern {pattern:?} matches no permission"
                ))
            }
        }
        None => pattern
            .parse::<Permission>()
            .map(Some)
            .map_err(|e| format!("{e} (see docs/policy.md for the names)")),
    }
}

/// Refuses objects that could never match what the permission is checked
/// on, with the form to write instead.
fn check_object(permission: Option<Permission>, object: &str) -> Result<(), String> {
    check_pattern("object", object)?;
    let Some(permission) = permission else {
        return Ok(());
    };
    let Some(form) = permission.object_form() else {
        return Ok(());
    };
    if object == "*" {
        return Ok(());
    }
    let literal = object.strip_suffix('*').unwrap_or(object);
    let ok = match form {
        ObjectForm::Any => false,
        ObjectForm::HostPath => {
            let trimmed = literal
                .strip_suffix('/')
                .filter(|t| !t.is_empty())
                .unwrap_or(literal);
            // `/tmp/x/*` and `/tmp/x*` are fine; `/tmp//x`, `/tmp/./x` and
            // `tmp/x` could never equal a normalized path.
            hostpath::normalize(trimmed).is_ok_and(|n| n == trimmed)
                && (object.ends_with('*') || !literal.ends_with('/') || literal == "/")
        }
        ObjectForm::Capability => {
            literal
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !literal.starts_with("CAP_")
        }
        ObjectForm::Port => {
            literal.bytes().all(|b| b.is_ascii_digit())
                && (object.ends_with('*') || literal.parse::<u16>().is_ok_and(|p| p > 0))
        }
        ObjectForm::Repository => image_ref::is_normalized_pattern(object),
        ObjectForm::Url | ObjectForm::Name => true,
    };
    if ok {
        return Ok(());
    }
    let hint = match form {
        ObjectForm::Any => format!("{permission} takes no object: write *"),
        ObjectForm::HostPath => {
            "host paths are matched normalized: absolute, no //, . or .., no trailing /".into()
        }
        ObjectForm::Capability => {
            "capabilities are written in upper case without CAP_ (SYS_ADMIN)".into()
        }
        ObjectForm::Port => "ports are numbers (80) or a prefix of digits (8*)".into(),
        ObjectForm::Repository => {
            "repositories are matched normalized: docker.io/library/alpine, quay.io/team/*".into()
        }
        ObjectForm::Url | ObjectForm::Name => String::new(),
    };
    Err(format!(
        "object {object:?} can never match {permission}: {hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> (usize, String) {
        match parse(text) {
            Err(PolicyError::Line { line, reason, .. }) => (line, reason),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn reads_rules_and_comments() {
        let lines = parse(
            "# roles\n\np, developer, container.create, *, allow\n  g , group:dev ,developer  \np, user:alice, host.bind, /srv/*, deny\n",
        )
        .unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].number, 4);
        assert_eq!(
            lines[1].rule,
            RuleKind::Grouping {
                subject: "group:dev".into(),
                role: "developer".into()
            }
        );
        assert_eq!(
            lines[2].rule.to_string(),
            "p, user:alice, host.bind, /srv/*, deny"
        );
    }

    #[test]
    fn names_the_line_and_the_reason() {
        let (line, reason) =
            error("p, dev, container.create, *, allow\n\np, dev, container.privleged, *, deny\n");
        assert_eq!(line, 3);
        assert!(
            reason.contains("unknown permission \"container.privleged\""),
            "{reason}"
        );

        for (text, want) in [
            ("p, dev, *, *, maybe", "neither allow nor deny"),
            ("p, dev, *, *", "5 fields"),
            ("g, user:a", "3 fields"),
            ("x, a, b", "not a rule type"),
            ("p, dev, host.*.x, *, allow", "may only end"),
            ("p, dev, nothing.*, *, allow", "matches no permission"),
            (
                "p, dev, host.bind, /tmp//x, allow",
                "can never match host.bind",
            ),
            (
                "p, dev, host.bind, tmp/x, allow",
                "can never match host.bind",
            ),
            (
                "p, dev, host.bind, /tmp/x/, allow",
                "can never match host.bind",
            ),
            (
                "p, dev, image.use, alpine, allow",
                "docker.io/library/alpine",
            ),
            (
                "p, dev, container.cap_add, CAP_SYS_ADMIN, allow",
                "without CAP_",
            ),
            (
                "p, dev, container.privileged, yes, allow",
                "takes no object",
            ),
            (
                "p, dev, host.port_privileged, http, allow",
                "ports are numbers",
            ),
            ("p, user:a:b, *, *, allow", "not a subject"),
            ("p, -dev, *, *, allow", "not a name"),
            ("p, dev, \"*\", *, allow", "not quoted"),
            ("p, , *, *, allow", "field 2 is empty"),
            ("g, user:alice, group:dev", "not a role"),
            (
                "g, user:alice, devloper\np, developer, *, *, allow",
                "role \"devloper\" is not defined",
            ),
            (
                "p, dev, *, *, allow\np,dev,*,*,allow",
                "the same rule as line 1",
            ),
        ] {
            let (_, reason) = error(text);
            assert!(reason.contains(want), "{text:?}: {reason}");
        }
    }

    #[test]
    fn accepts_the_forms_objects_take() {
        for text in [
            "p, dev, host.bind, /tmp/moat-shared/*, allow",
            "p, dev, host.bind, /, deny",
            "p, dev, host.bind, /srv/data, allow",
            "p, dev, host.bind, /srv/data*, allow",
            "p, dev, host.device, /dev/fuse, allow",
            "p, dev, container.cap_add, NET_ADMIN, allow",
            "p, dev, container.cap_add, ALL, deny",
            "p, dev, host.port_privileged, 80, allow",
            "p, dev, host.port_privileged, 4*, allow",
            "p, dev, image.use, docker.io/library/*, allow",
            "p, dev, image.use, sha256:*, allow",
            "p, dev, build.remote, https://github.com/team/*, allow",
            "p, dev, container.logs, web-*, allow",
            "p, dev, host.*, anything, deny",
        ] {
            parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn a_role_defined_by_inheritance_counts() {
        parse("p, developer, container.create, *, allow\ng, lead, developer\ng, user:bob, lead\n")
            .unwrap();
    }
}
