//! Changing a policy the way an admin would by hand, for `moat policy`:
//! rules are added at the end and removed where they stand, every comment
//! and blank line is kept, and the result is validated as a whole
//! ([`Draft::finish`]) before anyone writes it. Also the two facts the
//! admin tool and the gateway must read the same way: what a lock looks
//! like ([`lock_rule`]) and how two policies differ ([`diff`]).

use std::collections::{BTreeSet, HashSet};

use crate::identity::USER_PREFIX;
use crate::policy::{Policy, PolicyError};
use crate::rules::{self, Effect, RuleKind, RuleLine};

/// The comment that marks a lock, followed by the user's name: `unlock`
/// removes exactly the rule under it, never a deny someone wrote by hand.
pub const LOCK_MARKER: &str = "# moat policy lock";

/// What locks a user out: `p, user:NAME, *, *, deny`. `*` matches every
/// permission and every object, and a deny wins over any allow the user's
/// groups or roles hold.
pub fn lock_rule(user: &str) -> RuleKind {
    RuleKind::Permission {
        subject: format!("{USER_PREFIX}{user}"),
        permission: "*".into(),
        object: "*".into(),
        effect: Effect::Deny,
    }
}

/// A `policy.csv` being changed. Nothing is checked until [`finish`];
/// nothing is written by this type at all.
///
/// [`finish`]: Draft::finish
#[derive(Debug, Clone)]
pub struct Draft {
    model: String,
    lines: Vec<String>,
}

impl Policy {
    /// Starts a change from this policy's text.
    pub fn draft(&self) -> Draft {
        Draft {
            model: self.model().to_owned(),
            lines: self.text().lines().map(str::to_owned).collect(),
        }
    }

    /// Every role: a bare subject with a `p` rule or a `g` line of its
    /// own, or a role some `g` line grants.
    pub fn role_names(&self) -> BTreeSet<&str> {
        self.rules()
            .iter()
            .flat_map(|line| match &line.rule {
                RuleKind::Permission { subject, .. } => vec![subject.as_str()],
                RuleKind::Grouping { subject, role } => vec![subject.as_str(), role.as_str()],
            })
            .filter(|subject| rules::is_role(subject))
            .collect()
    }

    /// The users locked with `moat policy lock` (a [`LOCK_MARKER`] comment
    /// directly above their [`lock_rule`]), in file order.
    pub fn locked_users(&self) -> Vec<String> {
        let lines: Vec<&str> = self.text().lines().collect();
        lines
            .windows(2)
            .filter_map(|pair| {
                let user = marked_user(pair[0])?;
                (parse(pair[1]).as_ref() == Some(&lock_rule(user))).then(|| user.to_owned())
            })
            .collect()
    }
}

impl Draft {
    /// The rules in the draft as it stands, with their 1-based line
    /// numbers. Lines that do not parse are skipped ([`finish`] reports
    /// them).
    ///
    /// [`finish`]: Draft::finish
    pub fn rules(&self) -> Vec<RuleLine> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                parse(line).map(|rule| RuleLine {
                    number: i + 1,
                    rule,
                })
            })
            .collect()
    }

    /// Whether the draft holds this rule.
    pub fn contains(&self, rule: &RuleKind) -> bool {
        self.lines
            .iter()
            .any(|line| parse(line).as_ref() == Some(rule))
    }

    /// Appends a comment line (`# ` is added).
    pub fn comment(&mut self, text: &str) {
        self.lines.push(format!("# {text}"));
    }

    /// Appends an empty line, unless the draft is empty or already ends in
    /// one: keeps a block of added rules apart from what was there.
    pub fn separate(&mut self) {
        if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
            self.lines.push(String::new());
        }
    }

    /// Appends a rule in its canonical form.
    pub fn add(&mut self, rule: &RuleKind) {
        self.lines.push(rule.to_string());
    }

    /// Removes every rule line `remove` picks, and returns them in file
    /// order. Comments stay (they may describe more than the line below).
    pub fn remove(&mut self, mut remove: impl FnMut(&RuleKind) -> bool) -> Vec<RuleKind> {
        let mut removed = Vec::new();
        self.lines.retain(|line| match parse(line) {
            Some(rule) if remove(&rule) => {
                removed.push(rule);
                false
            }
            _ => true,
        });
        removed
    }

    /// Removes the comment line `# text` (as [`comment`] wrote it), and a
    /// blank line before it that would be left doubled or trailing.
    /// Returns whether there was one.
    ///
    /// [`comment`]: Draft::comment
    pub fn remove_comment(&mut self, text: &str) -> bool {
        let wanted = format!("# {text}");
        let Some(i) = self.lines.iter().position(|l| l.trim() == wanted) else {
            return false;
        };
        self.lines.remove(i);
        let blank = |line: Option<&String>| line.is_none_or(|l| l.trim().is_empty());
        if i > 0 && blank(self.lines.get(i - 1)) && blank(self.lines.get(i)) {
            self.lines.remove(i - 1);
        }
        true
    }

    /// Adds `user`'s lock: a [`LOCK_MARKER`] comment (with `note` after
    /// the name) and the [`lock_rule`] under it. `Ok(false)` when the user
    /// is locked already; an error when the same deny is there without the
    /// marker (it is not a lock `unlock` would remove).
    pub fn lock(&mut self, user: &str, note: &str) -> Result<bool, String> {
        if self.lock_at(user).is_some() {
            return Ok(false);
        }
        let rule = lock_rule(user);
        if let Some(i) = self.position(&rule) {
            return Err(format!(
                "line {} already denies {user} everything, without a lock marker; \
                 remove it by hand to manage it with lock/unlock",
                i + 1
            ));
        }
        self.separate();
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        self.lines.push(format!("{LOCK_MARKER} {user}{note}"));
        self.add(&rule);
        Ok(true)
    }

    /// Removes `user`'s lock (the marker and the rule under it); `false`
    /// when there is none.
    pub fn unlock(&mut self, user: &str) -> bool {
        let Some(i) = self.lock_at(user) else {
            return false;
        };
        self.lines.drain(i..i + 2);
        // The blank line `lock` put before it, if it now ends the file.
        if i == self.lines.len() && self.lines.last().is_some_and(|l| l.trim().is_empty()) {
            self.lines.pop();
        }
        true
    }

    /// The `policy.csv` text the draft would write.
    pub fn text(&self) -> String {
        let mut text = self.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// Validates the draft as a whole, exactly as a load would: the
    /// policy to write, or why it may not be.
    pub fn finish(self) -> Result<Policy, PolicyError> {
        Policy::from_text(&self.model, &self.text())
    }

    /// The index of the marker line of `user`'s lock.
    fn lock_at(&self, user: &str) -> Option<usize> {
        let rule = lock_rule(user);
        self.lines.windows(2).position(|pair| {
            marked_user(&pair[0]) == Some(user) && parse(&pair[1]).as_ref() == Some(&rule)
        })
    }

    fn position(&self, rule: &RuleKind) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| parse(line).as_ref() == Some(rule))
    }
}

/// A rule line's rule, or `None` for a comment, a blank or a bad line.
fn parse(line: &str) -> Option<RuleKind> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.parse().ok()
}

/// `# moat policy lock alice (...)` → `alice`.
fn marked_user(line: &str) -> Option<&str> {
    let rest = line.trim().strip_prefix(LOCK_MARKER)?.strip_prefix(' ')?;
    rest.split_whitespace().next()
}

/// How one policy's rules differ from another's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDiff {
    /// Rules of the old policy that the new one lacks, in the old file's
    /// order, with the old line numbers.
    pub removed: Vec<RuleLine>,
    /// Rules of the new policy that the old one lacks, in the new file's
    /// order, with the new line numbers.
    pub added: Vec<RuleLine>,
    /// Whether `model.conf` differs.
    pub model_changed: bool,
}

impl RuleDiff {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty() && !self.model_changed
    }
}

/// The rules `new` adds to and removes from `old`, compared in canonical
/// form (spacing, comments and order do not count).
pub fn diff(old: &Policy, new: &Policy) -> RuleDiff {
    let in_old: HashSet<&RuleKind> = old.rules().iter().map(|l| &l.rule).collect();
    let in_new: HashSet<&RuleKind> = new.rules().iter().map(|l| &l.rule).collect();
    RuleDiff {
        removed: old
            .rules()
            .iter()
            .filter(|l| !in_new.contains(&l.rule))
            .cloned()
            .collect(),
        added: new
            .rules()
            .iter()
            .filter(|l| !in_old.contains(&l.rule))
            .cloned()
            .collect(),
        model_changed: old.model() != new.model(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforcer::Enforcer;
    use crate::identity::Identity;
    use crate::permission::{Permission, Requirement};
    use crate::policy::DEFAULT_MODEL;

    fn policy(text: &str) -> Policy {
        Policy::from_text(DEFAULT_MODEL, text).unwrap()
    }

    #[test]
    fn a_lock_denies_every_permission_whatever_the_roles() {
        let mut draft = Policy::builtin().draft();
        assert_eq!(draft.lock("alice", "by root"), Ok(true));
        assert_eq!(draft.lock("alice", "again"), Ok(false));
        let locked = draft.finish().unwrap();
        assert_eq!(locked.locked_users(), vec!["alice"]);
        let enforcer = Enforcer::new(locked.clone()).unwrap();
        let alice = Identity::new("alice", ["admin", "developer"]);
        for permission in Permission::all() {
            for object in ["*", "web", "/", "docker.io/library/alpine"] {
                let decision = enforcer.check(&alice, &Requirement::new(permission, object));
                assert!(!decision.allowed, "{permission}:{object}");
            }
        }
        let bob = Identity::new("bob", ["admin"]);
        assert!(
            enforcer
                .decide(&bob, &[Requirement::flag(Permission::Privileged)])
                .allowed
        );

        let mut draft = locked.draft();
        assert!(draft.unlock("alice"));
        assert!(!draft.unlock("alice"));
        let unlocked = draft.finish().unwrap();
        assert_eq!(unlocked.text(), Policy::builtin().text());
    }

    #[test]
    fn unlock_never_removes_a_deny_written_by_hand() {
        let text = "p, admin, *, *, allow\np, user:bob, *, *, deny\n";
        let mut draft = policy(text).draft();
        assert!(!draft.unlock("bob"));
        let err = draft.lock("bob", "").unwrap_err();
        assert!(err.contains("line 2 already denies bob"), "{err}");
        assert_eq!(draft.text(), text);
        assert!(policy(text).locked_users().is_empty());
    }

    #[test]
    fn edits_keep_comments_and_validate_as_a_whole() {
        let text = "# the team\np, dev, container.create, *, allow\n\ng, user:bob, dev\n";
        let mut draft = policy(text).draft();
        let removed = draft.remove(|r| matches!(r, RuleKind::Grouping { .. }));
        assert_eq!(removed.len(), 1);
        draft.add(&"g, group:ops, dev".parse().unwrap());
        assert_eq!(
            draft.text(),
            "# the team\np, dev, container.create, *, allow\n\ng, group:ops, dev\n"
        );
        assert_eq!(draft.rules()[1].number, 4);

        // Removing the role's only rule leaves the binding undefined.
        draft.remove(|r| matches!(r, RuleKind::Permission { .. }));
        let err = draft.finish().unwrap_err().to_string();
        assert!(err.contains("role \"dev\" is not defined"), "{err}");
    }

    #[test]
    fn a_comment_goes_with_the_blank_line_before_it() {
        let text = "p, dev, container.create, *, allow\n";
        let mut draft = policy(text).draft();
        draft.separate();
        draft.comment("role x");
        draft.add(&"p, x, container.start, *, allow".parse().unwrap());
        draft.remove(|r| matches!(r, RuleKind::Permission { subject, .. } if subject == "x"));
        assert!(draft.remove_comment("role x"));
        assert!(!draft.remove_comment("role x"));
        assert_eq!(draft.text(), text);
    }

    #[test]
    fn roles_are_every_bare_subject() {
        let p = policy("p, dev, container.create, *, allow\ng, lead, dev\ng, user:bob, lead\n");
        assert_eq!(
            p.role_names().into_iter().collect::<Vec<_>>(),
            ["dev", "lead"]
        );
    }

    #[test]
    fn diff_compares_canonical_rules() {
        let old = policy("p, dev, container.create, *, allow\ng,user:bob,dev\n");
        let new = policy("# x\ng, user:bob, dev\np, dev, container.start, *, allow\n");
        let d = diff(&old, &new);
        assert_eq!(d.removed.len(), 1);
        assert_eq!(d.removed[0].number, 1);
        assert_eq!(
            d.added[0].rule.to_string(),
            "p, dev, container.start, *, allow"
        );
        assert_eq!(d.added[0].number, 3);
        assert!(!d.model_changed);
        assert!(diff(&old, &old).is_empty());
    }
}
