//! What a request asks for: [`Permission`] names (every [`Action`], plus
//! the privileges a request body or query can ask for on top of its action)
//! and [`Requirement`], a permission on one object.

use std::fmt;
use std::str::FromStr;

use moat_api::{Action, ObjectKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The shape of the object a permission is checked on; policy validation
/// uses it to refuse a rule whose object could never match, and the docs
/// table is built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectForm {
    /// Always `*`: the permission is a flag.
    Any,
    /// A host path, normalized lexically: `/srv/data`.
    HostPath,
    /// A capability name without `CAP_`, upper case: `SYS_ADMIN`, or `ALL`.
    Capability,
    /// A TCP/UDP port number: `80`.
    Port,
    /// An image repository, normalized as Docker does, without tag or
    /// digest: `docker.io/library/alpine`; or `sha256:HEX` for an image
    /// named by id.
    Repository,
    /// A URL or git address, as given: `https://example.com/ctx.tar`.
    Url,
    /// A name as given (container, volume, driver, cgroup path).
    Name,
}

impl ObjectForm {
    /// How the docs describe it.
    pub fn describe(self) -> &'static str {
        match self {
            ObjectForm::Any => "`*`",
            ObjectForm::HostPath => "host path, lexically normalized (`/srv/data`, `/dev/fuse`)",
            ObjectForm::Capability => "capability without `CAP_` (`SYS_ADMIN`, `ALL`)",
            ObjectForm::Port => "host port (`80`)",
            ObjectForm::Repository => {
                "repository (`docker.io/library/alpine`); for `image.use` also `sha256:ID`, an image id"
            }
            ObjectForm::Url => "URL or git address, as given",
            ObjectForm::Name => "name, as given",
        }
    }
}

/// Declares the permissions that are not actions, each written once with
/// its name, its object and what it is derived from.
macro_rules! privileges {
    ($(
        #[doc = $summary:literal]
        $variant:ident = $name:literal, $form:ident, $from:literal;
    )*) => {
        /// A permission: an [`Action`] (`container.create`, named as in
        /// `docs/routes.md`) or one of the privileges a request can ask
        /// for on top of its action (`container.privileged`, `host.bind`,
        /// `image.use`, ...). Its dotted name is what policies and audit
        /// records use.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            /// The call itself.
            Action(Action),
            $(#[doc = $summary] $variant,)*
        }

        impl Permission {
            /// Every permission that is not an action.
            pub const PRIVILEGES: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The stable dotted name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    Permission::Action(action) => action.as_str(),
                    $(Permission::$variant => $name,)*
                }
            }

            /// What the object is for a privilege; `None` for an action,
            /// whose object is what its path names (or `*`).
            pub const fn object_form(self) -> Option<ObjectForm> {
                match self {
                    Permission::Action(_) => None,
                    $(Permission::$variant => Some(ObjectForm::$form),)*
                }
            }

            /// One line on what the permission allows.
            pub fn summary(self) -> &'static str {
                match self {
                    Permission::Action(action) => action.summary(),
                    $(Permission::$variant => $summary.trim(),)*
                }
            }

            /// Where a request asks for it, for the docs.
            pub fn derived_from(self) -> &'static str {
                match self {
                    Permission::Action(_) => "the route (method and path)",
                    $(Permission::$variant => $from,)*
                }
            }
        }
    };
}

privileges! {
    /// Run a privileged container (all capabilities, no seccomp, all devices).
    Privileged = "container.privileged", Any, "`HostConfig.Privileged`";
    /// Add a capability (each one asked for, even one Docker gives by default).
    CapAdd = "container.cap_add", Capability, "each of `HostConfig.CapAdd`";
    /// Put a container under a chosen cgroup.
    CgroupParent = "container.cgroup_parent", Name, "`HostConfig.CgroupParent` (create, update); `cgroupparent` (build)";
    /// Act on containers (and their exec instances) the caller does not own; the gateway adds it.
    ContainerAny = "container.any", Any, "added by the gateway when the container is not the caller's";
    /// Act on volumes the caller does not own; the gateway adds it.
    VolumeAny = "volume.any", Any, "added by the gateway when the volume is not the caller's";
    /// Act on networks the caller does not own; the gateway adds it.
    NetworkAny = "network.any", Any, "added by the gateway when the network is not the caller's";
    /// Share the host's network namespace.
    HostNetwork = "host.network", Any, "`HostConfig.NetworkMode=host`; `networkmode=host` (build)";
    /// Share the host's PID namespace.
    HostPid = "host.pid", Any, "`HostConfig.PidMode=host`";
    /// Share the host's IPC namespace.
    HostIpc = "host.ipc", Any, "`HostConfig.IpcMode=host`";
    /// Share the host's UTS namespace (hostname).
    HostUts = "host.uts", Any, "`HostConfig.UTSMode=host`";
    /// Run without a user namespace: container root is host root.
    HostUserns = "host.userns", Any, "`HostConfig.UsernsMode=host`";
    /// Share the host's cgroup namespace.
    HostCgroupns = "host.cgroupns", Any, "`HostConfig.CgroupnsMode=host`";
    /// Mount a host path into a container.
    HostBind = "host.bind", HostPath, "`HostConfig.Binds` with an absolute source, `HostConfig.Mounts` of type `bind`; `device` of a volume's driver options";
    /// Give a container a host device.
    HostDevice = "host.device", HostPath, "`PathOnHost` of each of `HostConfig.Devices` (create, update)";
    /// Publish a container port on a host port below 1024.
    HostPortPrivileged = "host.port_privileged", Port, "each host port below 1024 in `HostConfig.PortBindings`";
    /// Run without a seccomp filter.
    SeccompUnconfined = "security.seccomp_unconfined", Any, "`seccomp=unconfined` in `HostConfig.SecurityOpt`";
    /// Run with a custom seccomp profile (it can allow anything).
    SeccompProfile = "security.seccomp_profile", Any, "`seccomp={...}` (a JSON profile) in `HostConfig.SecurityOpt`";
    /// Run without an AppArmor profile.
    ApparmorUnconfined = "security.apparmor_unconfined", Any, "`apparmor=unconfined` in `HostConfig.SecurityOpt`";
    /// Unmask /proc and /sys paths Docker masks.
    SystempathsUnconfined = "security.systempaths_unconfined", Any, "`systempaths=unconfined` in `HostConfig.SecurityOpt`";
    /// Run a container from an image in this repository.
    ImageUse = "image.use", Repository, "`Image` (create); `*` for every build (its `FROM` is in the context, unread)";
    /// Pull from this repository.
    ImagePull = "image.pull", Repository, "`fromImage` and `tag` (image.create); `*` for every build (its `FROM` may pull)";
    /// Give an image a name in this repository (images are shared, so a name can shadow another user's image).
    ImageName = "image.name", Repository, "`repo`/`tag` (image.tag, container.commit, image.create import); each `t` (build)";
    /// Import an image from this source (`-` for the request body, else a URL the engine fetches).
    ImageImport = "image.import", Url, "`fromSrc` (image.create)";
    /// Build from a remote context the engine fetches.
    BuildRemote = "build.remote", Url, "`remote` (build)";
    /// Mount a named volume.
    VolumeUse = "volume.use", Name, "`HostConfig.Binds` with a name as source, `HostConfig.Mounts` of type `volume`";
    /// Create a volume with a driver other than `local`, or with driver options.
    VolumeDriver = "volume.driver", Name, "`Driver`/`DriverOpts` (volume.create), a `volume` mount's `DriverConfig` (create); the object is the driver";
    /// Create a network with a driver other than `bridge`, or with driver options.
    NetworkDriver = "network.driver", Name, "`Driver`/`Options` (network.create); the object is the driver";
    /// Exec as root (or as the container's default user, which is root unless the image says otherwise).
    ExecRoot = "exec.root", Name, "`User` empty, `root` or `0` (exec.create); the object is the container";
    /// Exec with all capabilities.
    ExecPrivileged = "exec.privileged", Name, "`Privileged` (exec.create); the object is the container";
}

impl Permission {
    /// Every permission: the actions in `moat_api`'s order, then the
    /// privileges.
    pub fn all() -> impl Iterator<Item = Permission> {
        Action::all()
            .iter()
            .map(|&action| Permission::Action(action))
            .chain(Permission::PRIVILEGES.iter().copied())
    }

    /// The permission to act on objects of `kind` that the caller does not
    /// own, if moat tracks owners of that kind: `container.any` for
    /// containers and exec instances, `volume.any`, `network.any`.
    pub fn on_others(kind: ObjectKind) -> Option<Permission> {
        match kind {
            ObjectKind::Container | ObjectKind::Exec => Some(Permission::ContainerAny),
            ObjectKind::Volume => Some(Permission::VolumeAny),
            ObjectKind::Network => Some(Permission::NetworkAny),
            _ => None,
        }
    }
}

impl From<Action> for Permission {
    fn from(action: Action) -> Permission {
        Permission::Action(action)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is neither an action nor a privilege.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission {0:?}")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(name: &str) -> Result<Permission, UnknownPermission> {
        Permission::all()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| UnknownPermission(name.to_owned()))
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Permission, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One permission on one object: `host.bind` on `/srv/data`,
/// `container.logs` on `web`, `container.privileged` on `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub permission: Permission,
    /// The object, in the permission's [`ObjectForm`]; `*` when the
    /// permission is a flag or the call names no object.
    pub object: String,
}

impl Requirement {
    pub fn new(permission: impl Into<Permission>, object: impl Into<String>) -> Requirement {
        Requirement {
            permission: permission.into(),
            object: object.into(),
        }
    }

    /// The permission on `*`.
    pub fn flag(permission: impl Into<Permission>) -> Requirement {
        Requirement::new(permission, "*")
    }

    /// What the gateway adds when a call targets an object of `kind` the
    /// caller does not own (see [`Permission::on_others`]).
    pub fn on_others(kind: ObjectKind) -> Option<Requirement> {
        Permission::on_others(kind).map(Requirement::flag)
    }
}

impl fmt::Display for Requirement {
    /// `host.bind:/srv`, or just `container.privileged` when the object
    /// is `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object == "*" {
            f.write_str(self.permission.as_str())
        } else {
            write!(f, "{}:{}", self.permission, self.object)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_never_an_action() {
        let mut seen = HashSet::new();
        for permission in Permission::all() {
            assert!(seen.insert(permission.as_str()), "{permission} twice");
        }
        for privilege in Permission::PRIVILEGES {
            assert!(
                privilege.as_str().parse::<Action>().is_err(),
                "{privilege} is also an action"
            );
            assert!(privilege.object_form().is_some());
        }
    }

    #[test]
    fn names_round_trip() {
        for permission in Permission::all() {
            assert_eq!(permission.as_str().parse::<Permission>(), Ok(permission));
            let json = serde_json::to_string(&permission).unwrap();
            assert_eq!(
                serde_json::from_str::<Permission>(&json).unwrap(),
                permission
            );
        }
        assert!("container.exec".parse::<Permission>().is_err());
    }

    #[test]
    fn displays_like_the_design() {
        assert_eq!(
            Requirement::new(Permission::HostBind, "/").to_string(),
            "host.bind:/"
        );
        assert_eq!(
            Requirement::flag(Permission::Privileged).to_string(),
            "container.privileged"
        );
        assert_eq!(
            Requirement::on_others(ObjectKind::Exec),
            Some(Requirement::flag(Permission::ContainerAny))
        );
        assert_eq!(Requirement::on_others(ObjectKind::Image), None);
    }
}
