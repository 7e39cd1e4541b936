//! The Docker Engine API as moat speaks it. The engine's router and the
//! gateway's classifier are both built from this crate's one route table, so
//! the gateway can never authorize a request the engine would read
//! differently: no parser differential, the root of most authorizing-proxy
//! bypasses. The policy tool's `check` and `docs/routes.md` come from the
//! same table.
//!
//! - [`classify`](mod@classify): method + request-target as received → [`Route`] (action,
//!   object, API version), or a [`ClassifyError`] saying why it is refused.
//! - [`routes`](mod@routes): the route table itself, one [`RouteSpec`] per method and
//!   path pattern.
//! - [`action`]: every operation by its stable dotted name ([`Action`]), with
//!   whether it is read-only, how it uses its connection, what its body is.
//! - [`object`]: what a path names ([`Object`], [`ObjectKind`]).
//! - [`target`]: the path rules: one percent-decoding pass, no dot or empty
//!   segments, length caps ([`TargetError`]).
//! - [`version`]: the `/vX.Y` prefix and the range served ([`ApiVersion`]).
//! - [`reference`](mod@reference): the tables rendered as Markdown for `docs/routes.md`.
//! - [`query`]: the query string, parsed as dockerd parses it.
//! - [`container`]: the body of `container.create` (Docker's `Config` and
//!   `HostConfig`), parsed the same way by the gateway and the engine.
//! - [`exec`]: the bodies of `exec.create` and `exec.start`.
//! - [`image_ref`]: image references, normalized as Docker normalizes them.
//!
//! This crate depends on no other moat crate.

pub mod action;
pub mod classify;
pub mod container;
pub mod exec;
pub mod image_ref;
pub mod object;
pub mod query;
pub mod reference;
pub mod routes;
pub mod target;
pub mod version;

pub use action::{Access, Action, BodyUse, Connection, Server, UnknownAction};
pub use classify::{ClassifyError, Route, classify};
pub use object::{Object, ObjectKind};
pub use routes::{RouteSpec, routes};
pub use target::{MAX_PATH_LEN, MAX_QUERY_LEN, TargetError};
pub use version::{ApiVersion, MAX_API_VERSION, MIN_API_VERSION, VersionError};
