//! The route table: every method and path moat serves, the action each one
//! is, and the object its path names. The engine's router, the gateway's
//! classifier, the policy tool and docs/routes.md all read this one table.
//!
//! Patterns are literal segments with at most one parameter: `{id}` or
//! `{name}` matches exactly one segment, `{*name}` one or more (image and
//! plugin references contain `/`). The paths are Docker Engine API v1.41's,
//! without the optional `/vX.Y` prefix, plus moat's admin API under
//! `/moat/v1`.

use std::sync::OnceLock;

use crate::action::Action;
use crate::object::ObjectKind::{self, *};

pub const GET: &str = "GET";
pub const HEAD: &str = "HEAD";
pub const POST: &str = "POST";
pub const PUT: &str = "PUT";
pub const DELETE: &str = "DELETE";

/// One row of the route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// The HTTP method, upper case as on the wire.
    pub method: &'static str,
    /// The path pattern (see the module documentation).
    pub pattern: &'static str,
    pub action: Action,
    /// What the pattern's parameter names; `None` when it has none.
    pub object: Option<ObjectKind>,
}

const fn route(
    method: &'static str,
    pattern: &'static str,
    action: Action,
    object: Option<ObjectKind>,
) -> RouteSpec {
    RouteSpec {
        method,
        pattern,
        action,
        object,
    }
}

/// The table, grouped as Docker's API reference groups it. Order does not
/// decide matches (see `classify`), but it is the order of the docs.
#[rustfmt::skip] // a table reads best as a table
static ROUTES: &[RouteSpec] = &[
    // System
    route(GET,    "/_ping",                     Action::SystemPing,               None),
    route(HEAD,   "/_ping",                     Action::SystemPing,               None),
    route(GET,    "/version",                   Action::SystemVersion,            None),
    route(GET,    "/info",                      Action::SystemInfo,               None),
    route(GET,    "/events",                    Action::SystemEvents,             None),
    route(GET,    "/system/df",                 Action::SystemDf,                 None),
    route(POST,   "/auth",                      Action::Auth,                     None),
    // Containers
    route(GET,    "/containers/json",           Action::ContainerList,            None),
    route(POST,   "/containers/create",         Action::ContainerCreate,          None),
    route(GET,    "/containers/{id}/json",      Action::ContainerInspect,         Some(Container)),
    route(GET,    "/containers/{id}/top",       Action::ContainerTop,             Some(Container)),
    route(GET,    "/containers/{id}/logs",      Action::ContainerLogs,            Some(Container)),
    route(GET,    "/containers/{id}/changes",   Action::ContainerChanges,         Some(Container)),
    route(GET,    "/containers/{id}/export",    Action::ContainerExport,          Some(Container)),
    route(GET,    "/containers/{id}/stats",     Action::ContainerStats,           Some(Container)),
    route(POST,   "/containers/{id}/resize",    Action::ContainerResize,          Some(Container)),
    route(POST,   "/containers/{id}/start",     Action::ContainerStart,           Some(Container)),
    route(POST,   "/containers/{id}/stop",      Action::ContainerStop,            Some(Container)),
    route(POST,   "/containers/{id}/restart",   Action::ContainerRestart,         Some(Container)),
    route(POST,   "/containers/{id}/kill",      Action::ContainerKill,            Some(Container)),
    route(POST,   "/containers/{id}/update",    Action::ContainerUpdate,          Some(Container)),
    route(POST,   "/containers/{id}/rename",    Action::ContainerRename,          Some(Container)),
    route(POST,   "/containers/{id}/pause",     Action::ContainerPause,           Some(Container)),
    route(POST,   "/containers/{id}/unpause",   Action::ContainerUnpause,         Some(Container)),
    route(POST,   "/containers/{id}/attach",    Action::ContainerAttach,          Some(Container)),
    route(GET,    "/containers/{id}/attach/ws", Action::ContainerAttachWebsocket, Some(Container)),
    route(POST,   "/containers/{id}/wait",      Action::ContainerWait,            Some(Container)),
    route(DELETE, "/containers/{id}",           Action::ContainerRemove,          Some(Container)),
    route(HEAD,   "/containers/{id}/archive",   Action::ContainerArchiveHead,     Some(Container)),
    route(GET,    "/containers/{id}/archive",   Action::ContainerArchiveGet,      Some(Container)),
    route(PUT,    "/containers/{id}/archive",   Action::ContainerArchivePut,      Some(Container)),
    route(POST,   "/containers/prune",          Action::ContainerPrune,           None),
    route(POST,   "/commit",                    Action::ContainerCommit,          None),
    // Exec: creating one targets the container, the rest the exec instance.
    route(POST,   "/containers/{id}/exec",      Action::ExecCreate,               Some(Container)),
    route(POST,   "/exec/{id}/start",           Action::ExecStart,                Some(Exec)),
    route(POST,   "/exec/{id}/resize",          Action::ExecResize,               Some(Exec)),
    route(GET,    "/exec/{id}/json",            Action::ExecInspect,              Some(Exec)),
    // Images
    route(GET,    "/images/json",               Action::ImageList,                None),
    route(POST,   "/images/create",             Action::ImageCreate,              None),
    route(GET,    "/images/{*name}/json",       Action::ImageInspect,             Some(Image)),
    route(GET,    "/images/{*name}/history",    Action::ImageHistory,             Some(Image)),
    route(POST,   "/images/{*name}/push",       Action::ImagePush,                Some(Image)),
    route(POST,   "/images/{*name}/tag",        Action::ImageTag,                 Some(Image)),
    route(DELETE, "/images/{*name}",            Action::ImageRemove,              Some(Image)),
    route(GET,    "/images/search",             Action::ImageSearch,              None),
    route(POST,   "/images/prune",              Action::ImagePrune,               None),
    route(GET,    "/images/{*name}/get",        Action::ImageSave,                Some(Image)),
    route(GET,    "/images/get",                Action::ImageSave,                None),
    route(POST,   "/images/load",               Action::ImageLoad,                None),
    // Build
    route(POST,   "/build",                     Action::Build,                    None),
    route(POST,   "/build/prune",               Action::BuildPrune,               None),
    route(POST,   "/build/cancel",              Action::BuildCancel,              None),
    route(POST,   "/session",                   Action::Session,                  None),
    route(POST,   "/grpc",                      Action::Grpc,                     None),
    // Volumes
    route(GET,    "/volumes",                   Action::VolumeList,               None),
    route(POST,   "/volumes/create",            Action::VolumeCreate,             None),
    route(GET,    "/volumes/{name}",            Action::VolumeInspect,            Some(Volume)),
    route(DELETE, "/volumes/{name}",            Action::VolumeRemove,             Some(Volume)),
    route(POST,   "/volumes/prune",             Action::VolumePrune,              None),
    // Networks
    route(GET,    "/networks",                  Action::NetworkList,              None),
    route(GET,    "/networks/{id}",             Action::NetworkInspect,           Some(Network)),
    route(DELETE, "/networks/{id}",             Action::NetworkRemove,            Some(Network)),
    route(POST,   "/networks/create",           Action::NetworkCreate,            None),
    route(POST,   "/networks/{id}/connect",     Action::NetworkConnect,           Some(Network)),
    route(POST,   "/networks/{id}/disconnect",  Action::NetworkDisconnect,        Some(Network)),
    route(POST,   "/networks/prune",            Action::NetworkPrune,             None),
    // Plugins
    route(GET,    "/plugins",                   Action::PluginList,               None),
    route(GET,    "/plugins/privileges",        Action::PluginPrivileges,         None),
    route(POST,   "/plugins/pull",              Action::PluginPull,               None),
    route(GET,    "/plugins/{*name}/json",      Action::PluginInspect,            Some(Plugin)),
    route(DELETE, "/plugins/{*name}",           Action::PluginRemove,             Some(Plugin)),
    route(POST,   "/plugins/{*name}/enable",    Action::PluginEnable,             Some(Plugin)),
    route(POST,   "/plugins/{*name}/disable",   Action::PluginDisable,            Some(Plugin)),
    route(POST,   "/plugins/{*name}/upgrade",   Action::PluginUpgrade,            Some(Plugin)),
    route(POST,   "/plugins/create",            Action::PluginCreate,             None),
    route(POST,   "/plugins/{*name}/push",      Action::PluginPush,               Some(Plugin)),
    route(POST,   "/plugins/{*name}/set",       Action::PluginSet,                Some(Plugin)),
    // Swarm: classified so policy can refuse them by name; moat's engine is
    // never a swarm manager.
    route(GET,    "/swarm",                     Action::SwarmInspect,             None),
    route(POST,   "/swarm/init",                Action::SwarmInit,                None),
    route(POST,   "/swarm/join",                Action::SwarmJoin,                None),
    route(POST,   "/swarm/leave",               Action::SwarmLeave,               None),
    route(POST,   "/swarm/update",              Action::SwarmUpdate,              None),
    route(GET,    "/swarm/unlockkey",           Action::SwarmUnlockKey,           None),
    route(POST,   "/swarm/unlock",              Action::SwarmUnlock,              None),
    route(GET,    "/nodes",                     Action::NodeList,                 None),
    route(GET,    "/nodes/{id}",                Action::NodeInspect,              Some(Node)),
    route(DELETE, "/nodes/{id}",                Action::NodeRemove,               Some(Node)),
    route(POST,   "/nodes/{id}/update",         Action::NodeUpdate,               Some(Node)),
    route(GET,    "/services",                  Action::ServiceList,              None),
    route(POST,   "/services/create",           Action::ServiceCreate,            None),
    route(GET,    "/services/{id}",             Action::ServiceInspect,           Some(Service)),
    route(POST,   "/services/{id}/update",      Action::ServiceUpdate,            Some(Service)),
    route(DELETE, "/services/{id}",             Action::ServiceRemove,            Some(Service)),
    route(GET,    "/services/{id}/logs",        Action::ServiceLogs,              Some(Service)),
    route(GET,    "/tasks",                     Action::TaskList,                 None),
    route(GET,    "/tasks/{id}",                Action::TaskInspect,              Some(Task)),
    route(GET,    "/tasks/{id}/logs",           Action::TaskLogs,                 Some(Task)),
    route(GET,    "/secrets",                   Action::SecretList,               None),
    route(POST,   "/secrets/create",            Action::SecretCreate,             None),
    route(GET,    "/secrets/{id}",              Action::SecretInspect,            Some(Secret)),
    route(DELETE, "/secrets/{id}",              Action::SecretRemove,             Some(Secret)),
    route(POST,   "/secrets/{id}/update",       Action::SecretUpdate,             Some(Secret)),
    route(GET,    "/configs",                   Action::ConfigList,               None),
    route(POST,   "/configs/create",            Action::ConfigCreate,             None),
    route(GET,    "/configs/{id}",              Action::ConfigInspect,            Some(Config)),
    route(DELETE, "/configs/{id}",              Action::ConfigRemove,             Some(Config)),
    route(POST,   "/configs/{id}/update",       Action::ConfigUpdate,             Some(Config)),
    // Distribution
    route(GET,    "/distribution/{*name}/json", Action::DistributionInspect,      Some(Image)),
    // moat's admin API, answered by the gateway; never under a /vX.Y prefix.
    route(GET,    "/moat/v1/whoami",            Action::MoatWhoami,               None),
    route(GET,    "/moat/v1/policy",            Action::MoatPolicyGet,            None),
    route(PUT,    "/moat/v1/policy",            Action::MoatPolicyPut,            None),
    route(POST,   "/moat/v1/check",             Action::MoatCheck,                None),
    route(POST,   "/moat/v1/reload",            Action::MoatReload,               None),
    route(GET,    "/moat/v1/audit/status",      Action::MoatAuditStatus,          None),
    route(POST,   "/moat/v1/enroll",            Action::MoatEnroll,               None),
    route(POST,   "/moat/v1/renew",             Action::MoatRenew,                None),
];

/// Every route moat serves, in the order of the docs.
pub fn routes() -> &'static [RouteSpec] {
    ROUTES
}

/// A route's pattern split once into what matching needs.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub spec: &'static RouteSpec,
    prefix: Vec<&'static str>,
    parameter: Option<Parameter>,
    suffix: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parameter {
    OneSegment,
    Segments,
}

impl CompiledRoute {
    /// Panics on a malformed pattern: the table is static, and a test
    /// compiles every row.
    fn new(spec: &'static RouteSpec) -> CompiledRoute {
        let body = spec
            .pattern
            .strip_prefix('/')
            .unwrap_or_else(|| panic!("pattern {} must start with '/'", spec.pattern));
        let mut prefix = Vec::new();
        let mut parameter = None;
        let mut suffix = Vec::new();
        for segment in body.split('/') {
            assert!(
                !segment.is_empty(),
                "pattern {} has an empty segment",
                spec.pattern
            );
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    parameter.is_none(),
                    "pattern {} has two parameters",
                    spec.pattern
                );
                parameter = Some(if name.starts_with('*') {
                    Parameter::Segments
                } else {
                    Parameter::OneSegment
                });
            } else {
                assert!(
                    !segment.contains(['{', '}', '*']),
                    "pattern {} has a malformed parameter",
                    spec.pattern
                );
                if parameter.is_some() {
                    suffix.push(segment);
                } else {
                    prefix.push(segment);
                }
            }
        }
        CompiledRoute {
            spec,
            prefix,
            parameter,
            suffix,
        }
    }

    /// How many segments the pattern fixes. When several routes with the
    /// same method match a path, the one that fixes more wins: the literal
    /// `/images/json` over an image called `json`, as in Docker.
    pub fn literal_segments(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// Matches decoded segments: `None` if they do not fit the pattern,
    /// otherwise the parameter's value (segments joined with `/`), if any.
    pub fn capture(&self, segments: &[String]) -> Option<Option<String>> {
        let fixed = self.literal_segments();
        let free = segments.len().checked_sub(fixed)?;
        let fits = match self.parameter {
            None => free == 0,
            Some(Parameter::OneSegment) => free == 1,
            Some(Parameter::Segments) => free >= 1,
        };
        let (head, rest) = segments.split_at(self.prefix.len().min(segments.len()));
        let (middle, tail) = rest.split_at(free.min(rest.len()));
        let literals_match = fits
            && head.iter().zip(&self.prefix).all(|(s, p)| s == p)
            && tail.iter().zip(&self.suffix).all(|(s, p)| s == p);
        if !literals_match {
            return None;
        }
        Some(self.parameter.map(|_| middle.join("/")))
    }
}

/// The table compiled once per process.
pub(crate) fn compiled() -> &'static [CompiledRoute] {
    static COMPILED: OnceLock<Vec<CompiledRoute>> = OnceLock::new();
    COMPILED.get_or_init(|| ROUTES.iter().map(CompiledRoute::new).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::action::Server;

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(compiled().len(), routes().len());
    }

    #[test]
    fn no_method_and_pattern_is_listed_twice() {
        let mut seen = HashSet::new();
        for spec in routes() {
            assert!(
                seen.insert((spec.method, spec.pattern)),
                "{} {} listed twice",
                spec.method,
                spec.pattern
            );
        }
    }

    #[test]
    fn every_action_has_a_route() {
        for action in Action::all() {
            assert!(
                routes().iter().any(|spec| spec.action == *action),
                "{action} has no route"
            );
        }
    }

    #[test]
    fn a_parameter_and_an_object_kind_come_together() {
        for route in compiled() {
            let spec = route.spec;
            assert_eq!(
                route.parameter.is_some(),
                spec.object.is_some(),
                "{} {}",
                spec.method,
                spec.pattern
            );
            if let Some(kind) = spec.object {
                assert_eq!(
                    route.parameter == Some(Parameter::Segments),
                    kind.spans_segments(),
                    "{} {}: a {kind} parameter must {}span segments",
                    spec.method,
                    spec.pattern,
                    if kind.spans_segments() { "" } else { "not " }
                );
            }
        }
    }

    #[test]
    fn methods_are_the_five_the_api_uses() {
        for spec in routes() {
            assert!(
                [GET, HEAD, POST, PUT, DELETE].contains(&spec.method),
                "{}",
                spec.method
            );
        }
    }

    #[test]
    fn moat_routes_and_only_they_are_served_by_the_gateway() {
        for spec in routes() {
            assert_eq!(
                spec.pattern.starts_with("/moat/v1/"),
                spec.action.served_by() == Server::Gateway,
                "{}",
                spec.pattern
            );
        }
    }

    fn strings(segments: &[&str]) -> Vec<String> {
        segments.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_segment_parameters_take_exactly_one() {
        let start = compiled()
            .iter()
            .find(|r| r.spec.pattern == "/containers/{id}/start")
            .unwrap();
        assert_eq!(
            start.capture(&strings(&["containers", "web", "start"])),
            Some(Some("web".into()))
        );
        assert_eq!(
            start.capture(&strings(&["containers", "a", "b", "start"])),
            None
        );
        assert_eq!(start.capture(&strings(&["containers", "start"])), None);
        assert_eq!(
            start.capture(&strings(&["containers", "web", "stop"])),
            None
        );
        assert_eq!(start.capture(&[]), None);
    }

    #[test]
    fn spanning_parameters_take_everything_between_prefix_and_suffix() {
        let inspect = compiled()
            .iter()
            .find(|r| r.spec.pattern == "/images/{*name}/json")
            .unwrap();
        assert_eq!(
            inspect.capture(&strings(&[
                "images",
                "registry:5000",
                "team",
                "app:1",
                "json"
            ])),
            Some(Some("registry:5000/team/app:1".into()))
        );
        assert_eq!(
            inspect.capture(&strings(&["images", "a", "json", "json"])),
            Some(Some("a/json".into()))
        );
        assert_eq!(inspect.capture(&strings(&["images", "json"])), None);
        assert_eq!(inspect.capture(&strings(&["images", "a", "get"])), None);
        assert_eq!(inspect.capture(&strings(&["other", "a", "json"])), None);
    }
}
