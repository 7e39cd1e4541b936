//! The object a call targets, as named in its path: the thing ownership is
//! checked on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of object a route's path parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Container,
    Exec,
    Image,
    Volume,
    Network,
    Plugin,
    Node,
    Service,
    Task,
    Secret,
    Config,
}

impl ObjectKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Container => "container",
            ObjectKind::Exec => "exec",
            ObjectKind::Image => "image",
            ObjectKind::Volume => "volume",
            ObjectKind::Network => "network",
            ObjectKind::Plugin => "plugin",
            ObjectKind::Node => "node",
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
            ObjectKind::Secret => "secret",
            ObjectKind::Config => "config",
        }
    }

    /// Whether a name of this kind may contain `/`, so that its path
    /// parameter spans segments. Image and plugin references do
    /// (`registry:5000/team/app:1.0`); container, volume and network names
    /// and every id are a single segment.
    pub const fn spans_segments(self) -> bool {
        matches!(self, ObjectKind::Image | ObjectKind::Plugin)
    }

    /// The object of this kind with the given name or id.
    pub fn named(self, name: String) -> Object {
        match self {
            ObjectKind::Container => Object::Container(name),
            ObjectKind::Exec => Object::Exec(name),
            ObjectKind::Image => Object::Image(name),
            ObjectKind::Volume => Object::Volume(name),
            ObjectKind::Network => Object::Network(name),
            ObjectKind::Plugin => Object::Plugin(name),
            ObjectKind::Node => Object::Node(name),
            ObjectKind::Service => Object::Service(name),
            ObjectKind::Task => Object::Task(name),
            ObjectKind::Secret => Object::Secret(name),
            ObjectKind::Config => Object::Config(name),
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object a request targets, with its name or id exactly as the path
/// gave it (percent-decoded once). Resolving a name or an id prefix to the
/// object it means is the engine's job; this is what the client asked for.
///
/// Serialized for audit records as `{"kind": "container", "name": "web"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Object {
    Container(String),
    Exec(String),
    /// An image reference: a name with optional tag or digest, or an id.
    /// For `distribution.inspect` it is a reference in a registry.
    Image(String),
    Volume(String),
    Network(String),
    /// A plugin reference, such as `vieux/sshfs:latest`.
    Plugin(String),
    Node(String),
    Service(String),
    Task(String),
    Secret(String),
    Config(String),
}

impl Object {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Object::Container(_) => ObjectKind::Container,
            Object::Exec(_) => ObjectKind::Exec,
            Object::Image(_) => ObjectKind::Image,
            Object::Volume(_) => ObjectKind::Volume,
            Object::Network(_) => ObjectKind::Network,
            Object::Plugin(_) => ObjectKind::Plugin,
            Object::Node(_) => ObjectKind::Node,
            Object::Service(_) => ObjectKind::Service,
            Object::Task(_) => ObjectKind::Task,
            Object::Secret(_) => ObjectKind::Secret,
            Object::Config(_) => ObjectKind::Config,
        }
    }

    /// The name or id as given in the path.
    pub fn name(&self) -> &str {
        match self {
            Object::Container(name)
            | Object::Exec(name)
            | Object::Image(name)
            | Object::Volume(name)
            | Object::Network(name)
            | Object::Plugin(name)
            | Object::Node(name)
            | Object::Service(name)
            | Object::Task(name)
            | Object::Secret(name)
            | Object::Config(name) => name,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [ObjectKind; 11] = [
        ObjectKind::Container,
        ObjectKind::Exec,
        ObjectKind::Image,
        ObjectKind::Volume,
        ObjectKind::Network,
        ObjectKind::Plugin,
        ObjectKind::Node,
        ObjectKind::Service,
        ObjectKind::Task,
        ObjectKind::Secret,
        ObjectKind::Config,
    ];

    #[test]
    fn kind_and_name_survive_the_round_trip() {
        for kind in KINDS {
            let object = kind.named("x".into());
            assert_eq!(object.kind(), kind);
            assert_eq!(object.name(), "x");
            assert_eq!(object.to_string(), format!("{kind} x"));
        }
    }

    #[test]
    fn serializes_as_kind_and_name() {
        let object = Object::Image("docker.io/library/alpine:3".into());
        let json = serde_json::to_string(&object).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"image","name":"docker.io/library/alpine:3"}"#
        );
        assert_eq!(serde_json::from_str::<Object>(&json).unwrap(), object);
        for kind in KINDS {
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
    }
}
