//! One request becomes the set of [`Requirement`]s it needs: its action on
//! the object its path names, plus one requirement for each privilege its
//! body or query asks for (DESIGN.md §2 step 4).
//!
//! Bodies are parsed with the engine's own types from `moat_api`, so the
//! gateway judges the fields the engine acts on. Where `moat_api` has no
//! type (port bindings, `container.update`, volume and network creation),
//! a small local struct reads only the fields the decision needs; serde's
//! derived structs refuse a duplicated field, so `{"Privileged":false,
//! "Privileged":true}` cannot be read one way here and another there.
//!
//! Anything the policy cannot judge is an error (the gateway answers 400),
//! never a silent allow: an unparseable body, a namespace mode or security
//! option the engine does not know, a query parameter given twice.

mod container;
mod image;

use std::collections::HashSet;

use moat_api::exec::{ExecConfig, ExecStartConfig};
use moat_api::query::{Query, QueryError};
use moat_api::{Action, BodyUse, ClassifyError, Route, classify};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::permission::{Permission, Requirement};

/// Why a request's requirements cannot be derived. Each is the client's
/// fault and answered 400 with this message.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error("{action} needs a JSON body")]
    MissingBody { action: Action },

    #[error("{action} takes no body")]
    UnexpectedBody { action: Action },

    #[error("invalid JSON body for {action}: {source}")]
    Json {
        action: Action,
        #[source]
        source: serde_json::Error,
    },

    /// A body field holds something the policy cannot judge.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },

    /// A query parameter holds something the policy cannot judge.
    #[error("query parameter {key}: {reason}")]
    Query { key: &'static str, reason: String },
}

/// Why [`derive_request`] could not produce requirements.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Derive(#[from] DeriveError),
}

/// The requirements of a classified request. `body` is the buffered JSON
/// body for actions that are judged on it (`None` or empty when there is
/// none); streamed bodies (tar archives) are never passed.
///
/// The first requirement is always the action itself, on the object the
/// path names (or `*`); privileges follow in the order the request asks
/// for them, without duplicates.
pub fn derive(
    route: &Route,
    query: &Query,
    body: Option<&[u8]>,
) -> Result<Vec<Requirement>, DeriveError> {
    use Action::*;
    let action = route.action;
    let body = body.filter(|b| !b.is_empty());
    // Bodies read below with a type are checked there; any other judged
    // body must at least be JSON, so no bytes go by that nobody could read.
    let typed = matches!(
        action,
        ContainerCreate
            | ContainerUpdate
            | ExecCreate
            | ExecStart
            | VolumeCreate
            | NetworkCreate
            | NetworkConnect
            | NetworkDisconnect
            | Auth
    );
    match (action.body_use(), body) {
        (BodyUse::None, Some(_)) => return Err(DeriveError::UnexpectedBody { action }),
        (BodyUse::Json, Some(bytes)) if !typed => {
            parse::<serde::de::IgnoredAny>(action, bytes)?;
        }
        _ => {}
    }
    let object = route.object.as_ref().map(|o| o.name());
    let mut needs = Needs::default();
    match action {
        ContainerCreate => container::create(query, required(action, body)?, &mut needs)?,
        ContainerUpdate => container::update(object, required(action, body)?, &mut needs)?,
        ContainerCommit => image::commit(query, &mut needs)?,
        ExecCreate => exec_create(object, required(action, body)?, &mut needs)?,
        ExecStart => {
            if let Some(bytes) = body {
                parse::<ExecStartConfig>(action, bytes)?;
            }
            needs.action(action, object);
        }
        ImageCreate => image::create(query, &mut needs)?,
        ImagePush => image::push(object, &mut needs)?,
        ImageTag => image::tag(object, query, &mut needs)?,
        ImageSave => image::save(object, query, &mut needs),
        Build => image::build(query, &mut needs)?,
        VolumeCreate => volume_create(body, &mut needs)?,
        NetworkCreate => network_create(required(action, body)?, &mut needs)?,
        NetworkConnect | NetworkDisconnect => {
            network_connect(action, object, required(action, body)?, &mut needs)?
        }
        Auth => auth(required(action, body)?, &mut needs)?,
        PluginPull => needs.action(action, single(query, "remote")?.filter(|r| !r.is_empty())),
        _ => needs.action(action, object),
    }
    Ok(needs.0)
}

/// Classifies `method` and `target`, parses the query, and derives: what
/// `moat policy check USER METHOD PATH [BODY]` asks.
pub fn derive_request(
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<(Route, Vec<Requirement>), RequestError> {
    let route = classify(method, target)?;
    let query = Query::parse(route.query.as_deref())?;
    let requirements = derive(&route, &query, body)?;
    Ok((route, requirements))
}

/// Requirements in order, each once. The set keeps a body with thousands
/// of repeated binds or port ranges linear.
#[derive(Default)]
pub(crate) struct Needs(Vec<Requirement>, HashSet<Requirement>);

impl Needs {
    fn push(&mut self, permission: impl Into<Permission>, object: impl Into<String>) {
        let requirement = Requirement::new(permission, object);
        if self.1.insert(requirement.clone()) {
            self.0.push(requirement);
        }
    }

    fn flag(&mut self, permission: Permission) {
        self.push(permission, "*");
    }

    /// The action on `object`, or on `*` when there is none.
    fn action(&mut self, action: Action, object: Option<&str>) {
        self.push(action, object.unwrap_or("*"));
    }
}

fn required(action: Action, body: Option<&[u8]>) -> Result<&[u8], DeriveError> {
    body.ok_or(DeriveError::MissingBody { action })
}

fn parse<T: DeserializeOwned>(action: Action, body: &[u8]) -> Result<T, DeriveError> {
    serde_json::from_slice(body).map_err(|source| DeriveError::Json { action, source })
}

/// A query parameter that must not be given twice: dockerd and moat both
/// read the first, but a value that could be read two ways is refused.
fn single<'q>(query: &'q Query, key: &'static str) -> Result<Option<&'q str>, DeriveError> {
    let mut values = query.get_all(key);
    let first = values.next();
    if values.next().is_some() {
        return Err(DeriveError::Query {
            key,
            reason: "given more than once".into(),
        });
    }
    Ok(first)
}

fn field(field: &'static str, reason: impl ToString) -> DeriveError {
    DeriveError::Field {
        field,
        reason: reason.to_string(),
    }
}

/// `exec.create`: `exec.root` when the process would run as root (an
/// empty `User` is the container's user, root unless the image says
/// otherwise, which the gateway cannot see), `exec.privileged`.
fn exec_create(container: Option<&str>, body: &[u8], needs: &mut Needs) -> Result<(), DeriveError> {
    let exec: ExecConfig = parse(Action::ExecCreate, body)?;
    let container = container.unwrap_or("*");
    needs.push(Action::ExecCreate, container);
    if runs_as_root(&exec.user) {
        needs.push(Permission::ExecRoot, container);
    }
    if exec.privileged {
        needs.push(Permission::ExecPrivileged, container);
    }
    Ok(())
}

/// `""`, `root`, `0`, `00`, `root:staff`, `0:0`.
fn runs_as_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("").trim();
    name.is_empty() || name == "root" || name.parse::<u64>() == Ok(0)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeCreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: Option<std::collections::BTreeMap<String, String>>,
}

/// `volume.create`: the volume's name, and `volume.driver` (plus the host
/// path a `local` volume would mount) when it is more than a plain local
/// volume. Docker allows an empty body (a generated name).
fn volume_create(body: Option<&[u8]>, needs: &mut Needs) -> Result<(), DeriveError> {
    let spec: VolumeCreateBody = match body {
        Some(bytes) => parse(Action::VolumeCreate, bytes)?,
        None => VolumeCreateBody {
            name: None,
            driver: None,
            driver_opts: None,
        },
    };
    needs.action(
        Action::VolumeCreate,
        spec.name.as_deref().filter(|n| !n.is_empty()),
    );
    container::volume_driver(
        "DriverOpts",
        spec.driver.as_deref().unwrap_or(""),
        &spec.driver_opts.unwrap_or_default(),
        needs,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkCreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    options: Option<std::collections::BTreeMap<String, String>>,
}

/// `network.create`: the network's name, and `network.driver` when it is
/// not a plain bridge (macvlan and friends reach the host's links; bridge
/// options can name a host bridge).
fn network_create(body: &[u8], needs: &mut Needs) -> Result<(), DeriveError> {
    let spec: NetworkCreateBody = parse(Action::NetworkCreate, body)?;
    needs.action(
        Action::NetworkCreate,
        spec.name.as_deref().filter(|n| !n.is_empty()),
    );
    let driver = spec
        .driver
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or("bridge");
    if driver != "bridge" || spec.options.is_some_and(|o| !o.is_empty()) {
        needs.push(Permission::NetworkDriver, driver);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkConnectBody {
    #[serde(default)]
    container: Option<String>,
}

/// `network.connect`/`disconnect`: the network; the container named in
/// the body must be there (the gateway checks that the caller owns it).
fn network_connect(
    action: Action,
    network: Option<&str>,
    body: &[u8],
    needs: &mut Needs,
) -> Result<(), DeriveError> {
    let spec: NetworkConnectBody = parse(action, body)?;
    if spec.container.as_deref().is_none_or(str::is_empty) {
        return Err(field("Container", "no container given"));
    }
    needs.action(action, network);
    Ok(())
}

#[derive(Deserialize)]
struct AuthBody {
    #[serde(default)]
    serveraddress: Option<String>,
}

/// Docker's default when `serveraddress` is empty.
const DEFAULT_AUTH_SERVER: &str = "https://index.docker.io/v1/";

/// `auth` (`docker login`): on the registry the engine will contact. Only
/// the address is read; the credentials are not kept.
fn auth(body: &[u8], needs: &mut Needs) -> Result<(), DeriveError> {
    let spec: AuthBody = parse(Action::Auth, body)?;
    let server = spec
        .serveraddress
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_AUTH_SERVER);
    needs.push(Action::Auth, server);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
