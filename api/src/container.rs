//! A container's configuration, in the shape of the Docker Engine API's
//! `Config` and `HostConfig` objects (the JSON `docker create` sends), for
//! the fields the engine acts on. The gateway decides on exactly these
//! types and the engine runs exactly these, so a field the gateway did not
//! see is a field the engine ignores.
//!
//! Docker's clients send `null` for many empty fields, so every collection
//! and flag here reads `null` as empty; fields the runtime does not act on
//! are ignored when parsing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// `null` → the type's default, anything else as usual.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub hostname: String,
    #[serde(default, deserialize_with = "null_default")]
    pub domainname: String,
    /// `name`, `uid`, `name:group` or `uid:gid`, looked up in the image.
    #[serde(default, deserialize_with = "null_default")]
    pub user: String,
    #[serde(default, deserialize_with = "null_default")]
    pub attach_stdin: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub attach_stdout: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub attach_stderr: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub tty: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub open_stdin: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub stdin_once: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub cmd: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    #[serde(default, deserialize_with = "null_default")]
    pub working_dir: String,
    #[serde(default, deserialize_with = "null_default")]
    pub entrypoint: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub stop_signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `SRC:DST[:OPTS]`: SRC an absolute host path or a volume name.
    #[serde(default, deserialize_with = "null_default")]
    pub binds: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub mounts: Vec<MountSpec>,
    #[serde(default, deserialize_with = "null_default")]
    pub network_mode: String,
    #[serde(default, deserialize_with = "null_default")]
    pub pid_mode: String,
    #[serde(default, deserialize_with = "null_default")]
    pub ipc_mode: String,
    #[serde(default, rename = "UTSMode", deserialize_with = "null_default")]
    pub uts_mode: String,
    #[serde(default, deserialize_with = "null_default")]
    pub userns_mode: String,
    #[serde(default, deserialize_with = "null_default")]
    pub cgroupns_mode: String,
    #[serde(default, deserialize_with = "null_default")]
    pub privileged: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub readonly_rootfs: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub cap_add: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub cap_drop: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub security_opt: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub devices: Vec<DeviceMapping>,
    #[serde(default, deserialize_with = "null_default")]
    pub cgroup_parent: String,
    #[serde(default, deserialize_with = "null_default")]
    pub memory: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub memory_swap: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(default, deserialize_with = "null_default")]
    pub nano_cpus: i64,
    #[serde(default, deserialize_with = "null_default")]
    pub cpu_shares: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, deserialize_with = "null_default")]
    pub auto_remove: bool,
    #[serde(default, deserialize_with = "null_default")]
    pub tmpfs: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_default")]
    pub extra_hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountSpec {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(default, deserialize_with = "null_default")]
    pub r#type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub source: String,
    #[serde(default, deserialize_with = "null_default")]
    pub target: String,
    #[serde(default, deserialize_with = "null_default")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceMapping {
    #[serde(default, deserialize_with = "null_default")]
    pub path_on_host: String,
    #[serde(default, deserialize_with = "null_default")]
    pub path_in_container: String,
    #[serde(default, deserialize_with = "null_default")]
    pub cgroup_permissions: String,
}

impl ContainerConfig {
    /// The process to run: the entrypoint followed by the command.
    pub fn args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_docker_cli_sends() {
        let json = r#"{"Hostname":"","User":"","Tty":false,"Env":null,"Cmd":["echo","hi"],
            "Image":"busybox","Entrypoint":null,"Labels":{},"HostConfig":{"Binds":null,
            "Memory":33554432,"PidsLimit":null,"CapAdd":["NET_ADMIN"],"Privileged":false,
            "UsernsMode":"","Mounts":null,"LogConfig":{"Type":"","Config":{}}}}"#;
        let c: ContainerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.args(), vec!["echo", "hi"]);
        assert_eq!(c.host_config.memory, 32 << 20);
        assert_eq!(c.host_config.cap_add, vec!["NET_ADMIN"]);
        assert!(c.env.is_empty() && c.host_config.binds.is_empty());
    }

    #[test]
    fn a_wrongly_typed_field_is_an_error() {
        let err = serde_json::from_str::<ContainerConfig>(r#"{"HostConfig":{"Privileged":"yes"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn a_duplicated_field_is_an_error() {
        let err = serde_json::from_str::<ContainerConfig>(
            r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");
    }
}
