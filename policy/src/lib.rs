//! Who may do what. The gateway hands this crate a classified request and
//! the identity from the client's certificate; the crate turns the request
//! into every permission it needs (its action, plus each privilege its
//! body or query asks for: a privileged container, a host path, an added
//! capability, an image from some registry), and decides each against
//! casbin role policies in which users and groups hold roles, roles hold
//! allow and deny rules, deny wins and anything not allowed is denied.
//! Every decision names the policy line that made it, for the audit log,
//! for the 403 message, and for `moat policy check`.
//!
//! - [`identity`]: [`Identity`], the caller (user and groups).
//! - [`permission`]: [`Permission`] names and [`Requirement`] (a permission
//!   on an object).
//! - [`derive`](mod@derive): a request ([`moat_api::Route`], query, body) → its
//!   requirements ([`derive()`], [`DeriveError`]).
//! - [`hostpath`]: lexical normalization of host paths (no symlinks
//!   followed: see `docs/policy.md`).
//! - [`image_ref`]: image references → normalized repositories.
//! - [`policy`](mod@policy): [`Policy`], a validated `model.conf` +
//!   `policy.csv`, from a directory or built in; [`validate`].
//! - [`rules`]: reading and checking `policy.csv` line by line.
//! - [`edit`]: [`Draft`], a change to a policy that keeps its comments and
//!   is validated whole before it is written; locks; [`diff`](edit::diff).
//! - [`enforcer`]: [`Enforcer`], casbin behind an atomically swapped
//!   pointer, with a decision cache per policy.
//! - [`verdict`]: [`Verdict`], [`Decision`] and the [`Rule`] that decided.
//! - [`explain`]: [`Explanation`], a verdict as a table or JSON.
//! - [`reference`](mod@reference): the permission table of
//!   `docs/policy.md`.
//!
//! This crate depends on `moat-api` and on no other moat crate.

mod cache;
pub mod derive;
pub mod edit;
pub mod enforcer;
pub mod explain;
pub mod hostpath;
pub mod identity;
pub mod image_ref;
pub mod permission;
pub mod policy;
pub mod reference;
pub mod rules;
pub mod verdict;

pub use derive::{DeriveError, RequestError, derive, derive_request};
pub use edit::{Draft, RuleDiff};
pub use enforcer::Enforcer;
pub use explain::Explanation;
pub use identity::Identity;
pub use permission::{ObjectForm, Permission, Requirement};
pub use policy::{Policy, PolicyError, validate};
pub use rules::{Effect, RuleKind, RuleLine};
pub use verdict::{Decision, PolicyLine, Rule, Verdict};
