//! The shared enforcer: casbin, compiled from a [`Policy`], behind an
//! atomically swapped pointer, with a decision cache per compiled policy.
//!
//! Each subject the identity speaks as (`user:alice`, then each
//! `group:...`) is enforced with casbin's RBAC model; the request is
//! allowed when some subject's rules allow it and no subject's rules deny
//! it, so deny wins across a person's groups as it does within one.
//!
//! casbin's `explain` feature would say which rule matched, but it drags
//! in `logging` (a slog thread per enforcer). casbin does let its effector
//! be replaced, and the effector sees every rule's effect in policy order:
//! moat's `DenyWins` effector implements the one effect moat accepts and records
//! the index of the first allow and of the deny that matched, so the
//! decision and its explanation come from the same evaluation.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use arc_swap::ArcSwap;
use casbin::function_map::OperatorFunction;
use casbin::rhai::Dynamic;
use casbin::{
    CoreApi, DefaultModel, EffectKind, Effector, EffectorStream, Model, NullAdapter, RbacApi,
};

use crate::cache::DecisionCache;
use crate::identity::Identity;
use crate::permission::Requirement;
use crate::policy::{Policy, PolicyError};
use crate::rules::RuleKind;
use crate::verdict::{Decision, PolicyLine, Rule, Verdict};

/// The one effect moat's model may declare (casbin writes `p.eft` as
/// `p_eft`).
const EFFECT: &str = "some(where (p_eft == allow)) && !some(where (p_eft == deny))";

/// Functions a matcher may call: moat's `moatMatch`, casbin's RBAC `g`,
/// and casbin's built-in matchers.
const MATCHER_FUNCTIONS: &[&str] = &[
    "g",
    "moatMatch",
    "regexMatch",
    "keyMatch",
    "keyMatch2",
    "keyMatch3",
    "keyMatch4",
    "keyMatch5",
];

/// The enforcer the gateway shares between all connections. Reads never
/// block on a reload; a reload compiles the new policy first and swaps
/// only if it compiled, so the last good policy stays.
pub struct Enforcer {
    current: ArcSwap<Compiled>,
}

/// One policy, compiled, with the decisions made under it.
pub(crate) struct Compiled {
    policy: Arc<Policy>,
    casbin: casbin::Enforcer,
    /// casbin's policy index → the line it came from.
    lines: Vec<Rule>,
    cache: DecisionCache,
}

impl Enforcer {
    pub fn new(policy: Policy) -> Result<Enforcer, PolicyError> {
        Ok(Enforcer {
            current: ArcSwap::from_pointee(compile(&policy)?),
        })
    }

    /// Replaces the policy, and with it every cached decision. On error
    /// nothing changes.
    pub fn reload(&self, policy: Policy) -> Result<(), PolicyError> {
        self.current.store(Arc::new(compile(&policy)?));
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.current.load().policy)
    }

    /// Decides every requirement. The verdict allows only if each does, and
    /// an empty list is denied (a request always needs its action).
    pub fn decide(&self, who: &Identity, requirements: &[Requirement]) -> Verdict {
        let compiled = self.current.load();
        let mut allowed = !requirements.is_empty();
        let decisions = requirements
            .iter()
            .map(|requirement| {
                let decision = compiled.decide(who, requirement);
                allowed &= decision.allowed;
                decision
            })
            .collect();
        Verdict { allowed, decisions }
    }

    /// Decides one requirement.
    pub fn check(&self, who: &Identity, requirement: &Requirement) -> Decision {
        self.current.load().decide(who, requirement)
    }

    /// The roles the identity holds, directly or by inheritance, through
    /// its user and its groups, sorted (for `moat.whoami` and
    /// explanations).
    pub fn roles(&self, who: &Identity) -> Vec<String> {
        let compiled = self.current.load();
        let roles: BTreeSet<String> = who
            .subjects()
            .flat_map(|subject| compiled.casbin.get_implicit_roles_for_user(&subject, None))
            .collect();
        roles.into_iter().collect()
    }
}

impl Compiled {
    fn decide(&self, who: &Identity, requirement: &Requirement) -> Decision {
        let key = self.cache.key(who, requirement);
        let (allowed, rule) = match self.cache.get(key, who, requirement) {
            Some(hit) => hit,
            None => {
                let (allowed, rule) = self.evaluate(who, requirement);
                // A failed evaluation is not remembered: it is denied
                // either way, and the next request gets to try again.
                if !matches!(rule, Rule::Failed(_)) {
                    self.cache
                        .insert(key, who, requirement, allowed, rule.clone());
                }
                (allowed, rule)
            }
        };
        Decision {
            requirement: requirement.clone(),
            allowed,
            rule,
        }
    }

    fn evaluate(&self, who: &Identity, requirement: &Requirement) -> (bool, Rule) {
        let mut first_allow = None;
        for subject in who.subjects() {
            match self.enforce(&subject, requirement) {
                Ok(Matched {
                    deny: Some(deny), ..
                }) => return (false, self.line(deny)),
                Ok(Matched { allow, .. }) => first_allow = first_allow.or(allow),
                Err(reason) => return (false, Rule::Failed(reason.into())),
            }
        }
        match first_allow {
            Some(index) => {
                let rule = self.line(index);
                (!matches!(rule, Rule::Failed(_)), rule)
            }
            None => (false, Rule::DefaultDeny),
        }
    }

    /// One subject through casbin, with what [`DenyWins`] saw.
    fn enforce(&self, subject: &str, requirement: &Requirement) -> Result<Matched, String> {
        MATCHED.set(None);
        let request = (
            subject,
            requirement.permission.as_str(),
            requirement.object.as_str(),
        );
        // A matcher function that panics (casbin's keyMatch slices strings
        // by byte) must deny this request, not take the gateway down.
        let result = catch_unwind(AssertUnwindSafe(|| self.casbin.enforce(request)));
        let matched = MATCHED.take();
        match result {
            Ok(Ok(allowed)) => {
                let matched = matched.ok_or("the effector saw no evaluation")?;
                if allowed != matched.allows() {
                    return Err("casbin and the effector disagree".into());
                }
                Ok(matched)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the matcher panicked".into()),
        }
    }

    fn line(&self, index: usize) -> Rule {
        self.lines
            .get(index)
            .cloned()
            .unwrap_or_else(|| Rule::Failed(format!("no policy line {index}").into()))
    }
}

/// Builds casbin's enforcer from a policy, checking the model's shape.
pub(crate) fn compile(policy: &Policy) -> Result<Compiled, PolicyError> {
    let model_error = |reason: String| PolicyError::Model { reason };
    let model =
        block_on(DefaultModel::from_str(policy.model())).map_err(|e| model_error(e.to_string()))?;
    check_model(&model).map_err(model_error)?;

    let mut casbin = block_on(casbin::Enforcer::new(model, NullAdapter))
        .map_err(|e| model_error(e.to_string()))?;
    casbin.add_function("moatMatch", OperatorFunction::Arg2(moat_match));
    casbin.set_effector(Box::new(DenyWins));

    for line in policy.rules() {
        let (section, fields) = match &line.rule {
            RuleKind::Permission {
                subject,
                permission,
                object,
                effect,
            } => (
                "p",
                vec![
                    subject.clone(),
                    permission.clone(),
                    object.clone(),
                    effect.as_str().to_owned(),
                ],
            ),
            RuleKind::Grouping { subject, role } => ("g", vec![subject.clone(), role.clone()]),
        };
        // Straight into the model (no adapter, nothing async); rules were
        // checked to be unique, so casbin's index i is our i-th p rule.
        if !casbin.get_mut_model().add_policy(section, section, fields) {
            return Err(PolicyError::Line {
                line: line.number,
                text: line.rule.to_string(),
                reason: "casbin refused the rule".into(),
            });
        }
    }
    let lines = policy
        .permission_rules()
        .map(|line| {
            Rule::Line(Arc::new(PolicyLine {
                number: line.number,
                text: line.rule.to_string(),
            }))
        })
        .collect();
    casbin
        .build_role_links()
        .map_err(|e| model_error(e.to_string()))?;

    let compiled = Compiled {
        policy: Arc::new(policy.clone()),
        casbin,
        lines,
        cache: DecisionCache::new(),
    };
    // Evaluate once now, so a matcher that cannot run fails the load, not
    // the first request.
    compiled
        .enforce("user:", &Requirement::flag(moat_api::Action::SystemPing))
        .map_err(|reason| model_error(format!("the matcher does not evaluate: {reason}")))?;
    Ok(compiled)
}

/// The model must be moat's shape: requests `sub, perm, obj`, rules
/// `sub, perm, obj, eft`, one role relation `g = _, _`, the deny-wins
/// effect, one matcher calling only known functions. Anything else would
/// be read differently by the code that fills and reads it.
fn check_model(model: &DefaultModel) -> Result<(), String> {
    let sections = model.get_model();
    for (section, assertions) in sections {
        if assertions.len() != 1 || !assertions.contains_key(section.as_str()) {
            let keys: Vec<&str> = assertions.keys().map(String::as_str).collect();
            return Err(format!(
                "section {section} must define only {section} (found {})",
                keys.join(", ")
            ));
        }
    }
    let get = |section: &str, name: &str| {
        sections
            .get(section)
            .and_then(|a| a.get(section))
            .ok_or_else(|| format!("[{name}] {section} is missing"))
    };
    let tokens = |section: &str, name: &str, want: &[&str]| -> Result<(), String> {
        let assertion = get(section, name)?;
        let have: Vec<String> = assertion
            .tokens
            .iter()
            .map(|t| t.replace(&format!("{section}_"), ""))
            .collect();
        if have != want {
            return Err(format!(
                "[{name}] {section} must be `{}`, not `{}`",
                want.join(", "),
                assertion.value
            ));
        }
        Ok(())
    };
    tokens("r", "request_definition", &["sub", "perm", "obj"])?;
    tokens("p", "policy_definition", &["sub", "perm", "obj", "eft"])?;

    let g = get("g", "role_definition")?;
    if g.value.split(',').map(str::trim).collect::<Vec<_>>() != ["_", "_"] {
        return Err(format!(
            "[role_definition] g must be `_, _`, not `{}`",
            g.value
        ));
    }
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    let e = get("e", "policy_effect")?;
    if squash(&e.value) != squash(EFFECT) {
        return Err(format!(
            "[policy_effect] e must be `{}` (allow if some rule allows and none denies)",
            EFFECT.replace("p_eft", "p.eft")
        ));
    }
    let m = get("m", "matchers")?;
    for function in called_functions(&m.value) {
        if !MATCHER_FUNCTIONS.contains(&function) {
            return Err(format!(
                "the matcher calls {function}(); it may call {}",
                MATCHER_FUNCTIONS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Names directly followed by `(` in a matcher expression.
fn called_functions(expression: &str) -> impl Iterator<Item = &str> {
    let bytes = expression.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            if bytes.get(j) == Some(&b'(') {
                out.push(&expression[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out.into_iter()
}

/// `moatMatch(value, pattern)`: a pattern is `*`, an exact string, or a
/// prefix ending in `*`. Compares bytes, so no input can make it panic.
fn moat_match(value: Dynamic, pattern: Dynamic) -> Dynamic {
    let (Ok(value), Ok(pattern)) = (
        value.into_immutable_string(),
        pattern.into_immutable_string(),
    ) else {
        return false.into();
    };
    pattern_matches(&value, &pattern).into()
}

/// The pattern language of `policy.csv` (see `moat_match`).
pub fn pattern_matches(value: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.as_bytes().starts_with(prefix.as_bytes()),
        None => value == pattern,
    }
}

/// Which rules matched in one casbin evaluation, by policy index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Matched {
    /// The first rule that allowed.
    allow: Option<usize>,
    /// The rule that denied (evaluation stops there).
    deny: Option<usize>,
}

impl Matched {
    fn allows(self) -> bool {
        self.allow.is_some() && self.deny.is_none()
    }
}

thread_local! {
    /// Written by [`DenyWinsStream::next`] at the end of an evaluation on
    /// this thread, read right after `enforce` returns on the same thread.
    static MATCHED: Cell<Option<Matched>> = const { Cell::new(None) };
}

/// `some(where (p.eft == allow)) && !some(where (p.eft == deny))`, keeping
/// the indices of the rules that decided.
struct DenyWins;

impl Effector for DenyWins {
    fn new_stream(&self, _expr: &str, cap: usize) -> Box<dyn EffectorStream> {
        // `check_model` admits only the one effect this implements.
        Box::new(DenyWinsStream {
            cap,
            index: 0,
            matched: Matched::default(),
        })
    }
}

struct DenyWinsStream {
    cap: usize,
    index: usize,
    matched: Matched,
}

impl EffectorStream for DenyWinsStream {
    fn next(&self) -> bool {
        MATCHED.set(Some(self.matched));
        self.matched.allows()
    }

    fn push_effect(&mut self, effect: EffectKind) -> bool {
        match effect {
            EffectKind::Allow => {
                self.matched.allow.get_or_insert(self.index);
            }
            EffectKind::Deny => {
                self.matched.deny = Some(self.index);
                return true;
            }
            EffectKind::Indeterminate => {}
        }
        self.index += 1;
        self.index >= self.cap
    }
}

/// Runs one of casbin's loading futures to completion on this thread.
/// Loading from strings never waits on anything (casbin's reader is
/// tokio's over an in-memory cursor), so no runtime is needed; the waker
/// parks and unparks the thread in case a future ever does return
/// `Pending`.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests;
