//! Every operation moat serves, by a stable dotted name, with the facts the
//! gateway needs before it forwards a call: does it change anything, how does
//! it use its connection, and does its body have to be read to judge it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether a call changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Changes nothing in the engine, in moat or in a registry. Read-only is
    /// not harmless: logs, exports, archives and saved images disclose what
    /// is inside containers and images, so policy still names them.
    ReadOnly,
    /// Creates, changes or removes something, or drives a running process.
    Mutating,
}

/// How a call uses its connection: what the gateway must do when forwarding
/// it (buffering, time-outs, a start record in the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Connection {
    /// One request, one bounded response.
    Plain,
    /// The response may last as long as the client or the server likes
    /// (follow, progress, long-poll), so it is streamed, never buffered.
    Streaming,
    /// The connection may be taken over (`Upgrade: tcp`, `h2c` or a
    /// websocket) and carries bytes both ways until one side closes it.
    Hijacked,
}

/// What the request body is to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyUse {
    /// The endpoint takes no body. A gateway should refuse one rather than
    /// forward bytes nobody looked at.
    None,
    /// A JSON document the decision may depend on: the gateway buffers it
    /// (up to a cap), parses it with the engine's own types, and forwards
    /// exactly the bytes it judged.
    Json,
    /// A stream (a tar archive, an image tarball) forwarded as it arrives and
    /// never examined; the decision rests on the method, path and query.
    Stream,
}

/// Which process answers a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// Forwarded to the engine's socket.
    Engine,
    /// moat's admin API, answered by the gateway itself and never forwarded.
    Gateway,
}

/// Declares [`Action`] from one line per operation, so its name, summary and
/// properties are written once, next to each other, and [`Action::all`]
/// cannot miss one.
macro_rules! actions {
    ($(
        #[doc = $summary:literal]
        $variant:ident = $name:literal, $access:ident, $connection:ident, $body:ident;
    )*) => {
        /// An operation of the Docker Engine API (v1.41 semantics) or of
        /// moat's admin API. Its dotted name ([`Action::as_str`]) is what
        /// policies, audit records and the docs use; it never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Action {
            $(#[doc = $summary] $variant,)*
        }

        impl Action {
            const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The stable dotted name, e.g. `container.create`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// One line on what the call does, for docs and the policy tool.
            pub fn summary(self) -> &'static str {
                let summary = match self {
                    $(Action::$variant => $summary,)*
                };
                summary.trim()
            }

            pub const fn access(self) -> Access {
                match self {
                    $(Action::$variant => Access::$access,)*
                }
            }

            pub const fn connection(self) -> Connection {
                match self {
                    $(Action::$variant => Connection::$connection,)*
                }
            }

            pub const fn body_use(self) -> BodyUse {
                match self {
                    $(Action::$variant => BodyUse::$body,)*
                }
            }
        }
    };
}

actions! {
    // name, access, connection, body

    /// Check that the server answers (`docker` pings before anything else).
    SystemPing = "system.ping", ReadOnly, Plain, None;
    /// Report the server's version and API version range.
    SystemVersion = "system.version", ReadOnly, Plain, None;
    /// Report system-wide information (`docker info`).
    SystemInfo = "system.info", ReadOnly, Plain, None;
    /// Stream events as they happen (`docker events`).
    SystemEvents = "system.events", ReadOnly, Streaming, None;
    /// Report disk usage (`docker system df`).
    SystemDf = "system.df", ReadOnly, Plain, None;
    /// Check registry credentials (`docker login`); the body carries them.
    Auth = "auth", ReadOnly, Plain, Json;

    /// List containers.
    ContainerList = "container.list", ReadOnly, Plain, None;
    /// Create a container from a JSON configuration.
    ContainerCreate = "container.create", Mutating, Plain, Json;
    /// Inspect a container.
    ContainerInspect = "container.inspect", ReadOnly, Plain, None;
    /// List the processes running in a container.
    ContainerTop = "container.top", ReadOnly, Plain, None;
    /// Read a container's output, optionally following it.
    ContainerLogs = "container.logs", ReadOnly, Streaming, None;
    /// List the files changed in a container's filesystem.
    ContainerChanges = "container.changes", ReadOnly, Plain, None;
    /// Export a container's filesystem as a tar archive.
    ContainerExport = "container.export", ReadOnly, Streaming, None;
    /// Read a container's resource usage, once or as a stream.
    ContainerStats = "container.stats", ReadOnly, Streaming, None;
    /// Resize a container's TTY.
    ContainerResize = "container.resize", Mutating, Plain, None;
    /// Start a container.
    ContainerStart = "container.start", Mutating, Plain, None;
    /// Stop a container.
    ContainerStop = "container.stop", Mutating, Plain, None;
    /// Restart a container.
    ContainerRestart = "container.restart", Mutating, Plain, None;
    /// Send a signal to a container.
    ContainerKill = "container.kill", Mutating, Plain, None;
    /// Change a container's resource limits and restart policy.
    ContainerUpdate = "container.update", Mutating, Plain, Json;
    /// Rename a container.
    ContainerRename = "container.rename", Mutating, Plain, None;
    /// Freeze a container's processes.
    ContainerPause = "container.pause", Mutating, Plain, None;
    /// Thaw a container's processes.
    ContainerUnpause = "container.unpause", Mutating, Plain, None;
    /// Attach to a container's stdio over the hijacked connection.
    ContainerAttach = "container.attach", Mutating, Hijacked, None;
    /// Attach to a container's stdio over a websocket; a separate action so policy can refuse the browser-reachable variant alone.
    ContainerAttachWebsocket = "container.attach.websocket", Mutating, Hijacked, None;
    /// Wait for a container to stop; a long poll, answered when it does.
    ContainerWait = "container.wait", ReadOnly, Streaming, None;
    /// Remove a container.
    ContainerRemove = "container.remove", Mutating, Plain, None;
    /// Stat a path in a container's filesystem.
    ContainerArchiveHead = "container.archive.head", ReadOnly, Plain, None;
    /// Copy a path out of a container as a tar archive (`docker cp` from).
    ContainerArchiveGet = "container.archive.get", ReadOnly, Streaming, None;
    /// Extract a tar archive into a container (`docker cp` to).
    ContainerArchivePut = "container.archive.put", Mutating, Plain, Stream;
    /// Remove stopped containers.
    ContainerPrune = "container.prune", Mutating, Plain, None;
    /// Create an image from a container; the container is named by the `container` query parameter.
    ContainerCommit = "container.commit", Mutating, Plain, Json;

    /// Create an exec instance in a running container.
    ExecCreate = "exec.create", Mutating, Plain, Json;
    /// Start an exec instance, attached over the hijacked connection unless detached.
    ExecStart = "exec.start", Mutating, Hijacked, Json;
    /// Resize an exec instance's TTY.
    ExecResize = "exec.resize", Mutating, Plain, None;
    /// Inspect an exec instance.
    ExecInspect = "exec.inspect", ReadOnly, Plain, None;

    /// List images.
    ImageList = "image.list", ReadOnly, Plain, None;
    /// Pull an image (`fromImage`), or import one from a URL or the streamed body (`fromSrc`).
    ImageCreate = "image.create", Mutating, Streaming, Stream;
    /// Inspect an image.
    ImageInspect = "image.inspect", ReadOnly, Plain, None;
    /// Show an image's layer history.
    ImageHistory = "image.history", ReadOnly, Plain, None;
    /// Push an image to a registry.
    ImagePush = "image.push", Mutating, Streaming, None;
    /// Give an image another name.
    ImageTag = "image.tag", Mutating, Plain, None;
    /// Remove an image or one of its names.
    ImageRemove = "image.remove", Mutating, Plain, None;
    /// Search a registry for images.
    ImageSearch = "image.search", ReadOnly, Plain, None;
    /// Remove unused images.
    ImagePrune = "image.prune", Mutating, Plain, None;
    /// Export one or more images as a tarball (`docker save`).
    ImageSave = "image.save", ReadOnly, Streaming, None;
    /// Import images from a tarball (`docker load`).
    ImageLoad = "image.load", Mutating, Streaming, Stream;

    /// Build an image from a streamed build context (the classic builder's endpoint).
    Build = "build", Mutating, Streaming, Stream;
    /// Remove build cache.
    BuildPrune = "build.prune", Mutating, Plain, None;
    /// Cancel a running build.
    BuildCancel = "build.cancel", Mutating, Plain, None;
    /// Open a BuildKit session over the hijacked connection (files and secrets flow from the client).
    Session = "session", Mutating, Hijacked, None;
    /// Speak BuildKit's gRPC control API over an h2c upgrade (buildx's docker driver); as powerful as a build.
    Grpc = "grpc", Mutating, Hijacked, None;

    /// List volumes.
    VolumeList = "volume.list", ReadOnly, Plain, None;
    /// Create a volume; driver options can name host paths.
    VolumeCreate = "volume.create", Mutating, Plain, Json;
    /// Inspect a volume.
    VolumeInspect = "volume.inspect", ReadOnly, Plain, None;
    /// Remove a volume.
    VolumeRemove = "volume.remove", Mutating, Plain, None;
    /// Remove unused volumes.
    VolumePrune = "volume.prune", Mutating, Plain, None;

    /// List networks.
    NetworkList = "network.list", ReadOnly, Plain, None;
    /// Inspect a network.
    NetworkInspect = "network.inspect", ReadOnly, Plain, None;
    /// Create a network.
    NetworkCreate = "network.create", Mutating, Plain, Json;
    /// Remove a network.
    NetworkRemove = "network.remove", Mutating, Plain, None;
    /// Connect a container, named in the body, to a network.
    NetworkConnect = "network.connect", Mutating, Plain, Json;
    /// Disconnect a container, named in the body, from a network.
    NetworkDisconnect = "network.disconnect", Mutating, Plain, Json;
    /// Remove unused networks.
    NetworkPrune = "network.prune", Mutating, Plain, None;

    /// List plugins.
    PluginList = "plugin.list", ReadOnly, Plain, None;
    /// Ask a registry which privileges a plugin wants.
    PluginPrivileges = "plugin.privileges", ReadOnly, Plain, None;
    /// Install a plugin, granting the privileges listed in the body.
    PluginPull = "plugin.pull", Mutating, Streaming, Json;
    /// Inspect a plugin.
    PluginInspect = "plugin.inspect", ReadOnly, Plain, None;
    /// Remove a plugin.
    PluginRemove = "plugin.remove", Mutating, Plain, None;
    /// Enable a plugin.
    PluginEnable = "plugin.enable", Mutating, Plain, None;
    /// Disable a plugin.
    PluginDisable = "plugin.disable", Mutating, Plain, None;
    /// Upgrade a plugin, granting the privileges listed in the body.
    PluginUpgrade = "plugin.upgrade", Mutating, Streaming, Json;
    /// Create a plugin from a streamed tar archive of its root filesystem and config.
    PluginCreate = "plugin.create", Mutating, Plain, Stream;
    /// Push a plugin to a registry.
    PluginPush = "plugin.push", Mutating, Streaming, None;
    /// Change a plugin's settings.
    PluginSet = "plugin.set", Mutating, Plain, Json;

    /// Inspect the swarm.
    SwarmInspect = "swarm.inspect", ReadOnly, Plain, None;
    /// Create a swarm.
    SwarmInit = "swarm.init", Mutating, Plain, Json;
    /// Join a swarm.
    SwarmJoin = "swarm.join", Mutating, Plain, Json;
    /// Leave the swarm.
    SwarmLeave = "swarm.leave", Mutating, Plain, None;
    /// Change the swarm's settings.
    SwarmUpdate = "swarm.update", Mutating, Plain, Json;
    /// Read the key that unlocks the swarm's encrypted state (a secret, though reading it changes nothing).
    SwarmUnlockKey = "swarm.unlockkey", ReadOnly, Plain, None;
    /// Unlock a locked swarm.
    SwarmUnlock = "swarm.unlock", Mutating, Plain, Json;

    /// List swarm nodes.
    NodeList = "node.list", ReadOnly, Plain, None;
    /// Inspect a swarm node.
    NodeInspect = "node.inspect", ReadOnly, Plain, None;
    /// Remove a swarm node.
    NodeRemove = "node.remove", Mutating, Plain, None;
    /// Change a swarm node.
    NodeUpdate = "node.update", Mutating, Plain, Json;

    /// List services.
    ServiceList = "service.list", ReadOnly, Plain, None;
    /// Create a service.
    ServiceCreate = "service.create", Mutating, Plain, Json;
    /// Inspect a service.
    ServiceInspect = "service.inspect", ReadOnly, Plain, None;
    /// Change a service.
    ServiceUpdate = "service.update", Mutating, Plain, Json;
    /// Remove a service.
    ServiceRemove = "service.remove", Mutating, Plain, None;
    /// Read a service's logs.
    ServiceLogs = "service.logs", ReadOnly, Streaming, None;

    /// List swarm tasks.
    TaskList = "task.list", ReadOnly, Plain, None;
    /// Inspect a swarm task.
    TaskInspect = "task.inspect", ReadOnly, Plain, None;
    /// Read a swarm task's logs.
    TaskLogs = "task.logs", ReadOnly, Streaming, None;

    /// List swarm secrets.
    SecretList = "secret.list", ReadOnly, Plain, None;
    /// Create a swarm secret.
    SecretCreate = "secret.create", Mutating, Plain, Json;
    /// Inspect a swarm secret (its metadata).
    SecretInspect = "secret.inspect", ReadOnly, Plain, None;
    /// Remove a swarm secret.
    SecretRemove = "secret.remove", Mutating, Plain, None;
    /// Change a swarm secret's labels.
    SecretUpdate = "secret.update", Mutating, Plain, Json;

    /// List swarm configs.
    ConfigList = "config.list", ReadOnly, Plain, None;
    /// Create a swarm config.
    ConfigCreate = "config.create", Mutating, Plain, Json;
    /// Inspect a swarm config.
    ConfigInspect = "config.inspect", ReadOnly, Plain, None;
    /// Remove a swarm config.
    ConfigRemove = "config.remove", Mutating, Plain, None;
    /// Change a swarm config's labels.
    ConfigUpdate = "config.update", Mutating, Plain, Json;

    /// Ask a registry for an image's manifest digest and platforms.
    DistributionInspect = "distribution.inspect", ReadOnly, Plain, None;

    /// Tell the caller who moat thinks they are and which roles they hold.
    MoatWhoami = "moat.whoami", ReadOnly, Plain, None;
    /// Read the authorization policy.
    MoatPolicyGet = "moat.policy.get", ReadOnly, Plain, None;
    /// Replace the authorization policy (validated before it takes effect).
    MoatPolicyPut = "moat.policy.put", Mutating, Plain, Json;
    /// Explain how the policy would decide a request, without making it.
    MoatCheck = "moat.check", ReadOnly, Plain, Json;
    /// Reload the policy, CA and CRL from disk.
    MoatReload = "moat.reload", Mutating, Plain, None;
    /// Report the audit log's state (chain head, last checkpoint).
    MoatAuditStatus = "moat.audit.status", ReadOnly, Plain, None;
    /// Enroll: exchange a one-time token and a CSR for a client certificate.
    MoatEnroll = "moat.enroll", Mutating, Plain, Json;
    /// Renew: exchange a CSR for a new certificate for the caller's own identity.
    MoatRenew = "moat.renew", Mutating, Plain, Json;
}

impl Action {
    /// Every action, in declaration order (grouped by family).
    pub const fn all() -> &'static [Action] {
        Action::ALL
    }

    pub const fn is_read_only(self) -> bool {
        matches!(self.access(), Access::ReadOnly)
    }

    /// Whether the call may take over its connection (attach, exec start,
    /// BuildKit's session and gRPC).
    pub const fn hijacks(self) -> bool {
        matches!(self.connection(), Connection::Hijacked)
    }

    /// Whether the response may be long-lived, so it must be streamed. A
    /// hijacked call streams too.
    pub const fn streams(self) -> bool {
        !matches!(self.connection(), Connection::Plain)
    }

    /// The first component of the name: `container` for
    /// `container.archive.get`, `build` for `build.prune`, `auth` for `auth`.
    pub fn family(self) -> &'static str {
        let name = self.as_str();
        name.split_once('.').map_or(name, |(family, _)| family)
    }

    /// Whether the gateway answers the call itself (moat's admin API).
    pub fn served_by(self) -> Server {
        if self.family() == "moat" {
            Server::Gateway
        } else {
            Server::Engine
        }
    }

    /// Whether the call only means something on a swarm manager. moat's
    /// engine is never one and answers these "not supported"; they are
    /// classified so policy can refuse them by name.
    pub fn needs_swarm(self) -> bool {
        matches!(
            self.family(),
            "swarm" | "node" | "service" | "task" | "secret" | "config"
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not one of [`Action::all`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Action, UnknownAction> {
        Action::all()
            .iter()
            .copied()
            .find(|action| action.as_str() == name)
            .ok_or_else(|| UnknownAction(name.to_owned()))
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Action, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_lowercase_dotted() {
        let mut seen = HashSet::new();
        for action in Action::all() {
            let name = action.as_str();
            assert!(seen.insert(name), "{name} declared twice");
            assert!(
                name.split('.')
                    .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase())),
                "{name} is not lowercase words joined by dots"
            );
        }
        assert_eq!(seen.len(), Action::all().len());
    }

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for &action in Action::all() {
            assert_eq!(action.as_str().parse::<Action>(), Ok(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{action}\""));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), action);
        }
        assert_eq!(
            "container.exec".parse::<Action>(),
            Err(UnknownAction("container.exec".into()))
        );
        assert!(serde_json::from_str::<Action>("\"Container.Create\"").is_err());
    }

    #[test]
    fn every_action_has_a_one_line_summary() {
        for action in Action::all() {
            let summary = action.summary();
            assert!(!summary.is_empty(), "{action}");
            assert!(!summary.contains('\n'), "{action}");
            assert!(summary.ends_with('.'), "{action}: {summary}");
        }
    }

    #[test]
    fn hijacking_calls_are_exactly_the_attach_exec_and_buildkit_ones() {
        let hijacking: Vec<_> = Action::all().iter().filter(|a| a.hijacks()).collect();
        assert_eq!(
            hijacking,
            [
                &Action::ContainerAttach,
                &Action::ContainerAttachWebsocket,
                &Action::ExecStart,
                &Action::Session,
                &Action::Grpc,
            ]
        );
        assert!(hijacking.iter().all(|a| a.streams()));
        assert!(!Action::Build.hijacks());
    }

    #[test]
    fn long_lived_responses_are_streamed() {
        for action in [
            Action::SystemEvents,
            Action::ContainerLogs,
            Action::ContainerStats,
            Action::ContainerWait,
            Action::ContainerExport,
            Action::ContainerArchiveGet,
            Action::ImageCreate,
            Action::ImagePush,
            Action::ImageLoad,
            Action::ImageSave,
            Action::Build,
            Action::PluginPull,
        ] {
            assert!(action.streams(), "{action}");
        }
        for action in [
            Action::SystemInfo,
            Action::ContainerCreate,
            Action::ContainerArchiveHead,
        ] {
            assert!(!action.streams(), "{action}");
        }
    }

    #[test]
    fn bodies_the_decision_depends_on_are_json() {
        for action in [
            Action::ContainerCreate,
            Action::ContainerUpdate,
            Action::ExecCreate,
            Action::NetworkCreate,
            Action::NetworkConnect,
            Action::VolumeCreate,
            Action::PluginPull,
            Action::PluginSet,
            Action::ServiceCreate,
            Action::ServiceUpdate,
            Action::SwarmInit,
            Action::MoatPolicyPut,
            Action::MoatCheck,
            Action::MoatEnroll,
            Action::MoatRenew,
        ] {
            assert_eq!(action.body_use(), BodyUse::Json, "{action}");
        }
        for action in [
            Action::Build,
            Action::ImageLoad,
            Action::ImageCreate,
            Action::ContainerArchivePut,
        ] {
            assert_eq!(action.body_use(), BodyUse::Stream, "{action}");
        }
        for action in [
            Action::ContainerStart,
            Action::ImagePush,
            Action::SystemPing,
        ] {
            assert_eq!(action.body_use(), BodyUse::None, "{action}");
        }
    }

    #[test]
    fn read_only_means_nothing_changes() {
        for action in [
            Action::SystemInfo,
            Action::ContainerList,
            Action::ContainerLogs,
            Action::ContainerWait,
            Action::ImageSave,
            Action::MoatCheck,
        ] {
            assert!(action.is_read_only(), "{action}");
        }
        for action in [
            Action::ContainerAttach,
            Action::ContainerResize,
            Action::ExecCreate,
            Action::ImagePush,
            Action::Session,
            Action::MoatReload,
        ] {
            assert!(!action.is_read_only(), "{action}");
        }
    }

    #[test]
    fn families_servers_and_swarm() {
        assert_eq!(Action::ContainerArchiveGet.family(), "container");
        assert_eq!(Action::BuildPrune.family(), "build");
        assert_eq!(Action::Build.family(), "build");
        assert_eq!(Action::Auth.family(), "auth");
        assert_eq!(Action::MoatPolicyPut.served_by(), Server::Gateway);
        assert_eq!(Action::ContainerCreate.served_by(), Server::Engine);
        assert!(Action::ServiceCreate.needs_swarm());
        assert!(Action::SecretList.needs_swarm());
        assert!(!Action::ContainerCreate.needs_swarm());
    }
}
