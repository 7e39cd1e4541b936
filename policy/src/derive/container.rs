//! `container.create` and `container.update`: the `HostConfig` fields that
//! reach past the container's own sandbox.

use std::collections::BTreeMap;

use moat_api::Action;
use moat_api::container::{ContainerConfig, DeviceMapping, HostConfig, null_default};
use moat_api::query::Query;
use serde::Deserialize;

use super::{DeriveError, Needs, field, parse, single};
use crate::hostpath;
use crate::image_ref;
use crate::permission::Permission;

/// `container.create`: the action on the requested name (or `*`), the
/// image, and every privilege in `HostConfig`.
pub(super) fn create(query: &Query, body: &[u8], needs: &mut Needs) -> Result<(), DeriveError> {
    let config: ContainerConfig = parse(Action::ContainerCreate, body)?;
    // Fields moat_api's type does not carry, read from the same bytes.
    let extra: ExtraConfig = parse(Action::ContainerCreate, body)?;

    let name = single(query, "name")?.filter(|n| !n.is_empty());
    needs.action(Action::ContainerCreate, name);

    if config.image.is_empty() {
        return Err(field("Image", "no image given"));
    }
    for object in image_ref::image_objects(&config.image).map_err(|e| field("Image", e))? {
        needs.push(Permission::ImageUse, object);
    }

    let host = &config.host_config;
    if host.privileged {
        needs.flag(Permission::Privileged);
    }
    for cap in &host.cap_add {
        needs.push(Permission::CapAdd, capability(cap)?);
    }
    namespaces(host, needs)?;
    security_options(&host.security_opt, needs)?;
    devices(&host.devices, needs)?;
    if !host.cgroup_parent.is_empty() {
        needs.push(Permission::CgroupParent, host.cgroup_parent.as_str());
    }
    binds(&host.binds, needs)?;
    mounts(host, &extra.host_config.mounts, needs)?;
    ports(&extra.host_config.port_bindings, needs)?;
    Ok(())
}

/// `CapAdd` entries as the engine reads them: `net_admin`, `CAP_NET_ADMIN`
/// and `NET_ADMIN` are `NET_ADMIN`; `all` is `ALL`.
fn capability(name: &str) -> Result<String, DeriveError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare.is_empty()
        || !bare
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(field(
            "HostConfig.CapAdd",
            format!("{name:?} is not a capability"),
        ));
    }
    Ok(bare.to_owned())
}

/// The namespace modes the engine accepts (`engine/src/spec.rs`); `host`
/// is a privilege, the private ones are not, anything else (joining
/// another container's namespace, a named network) is refused.
fn namespaces(host: &HostConfig, needs: &mut Needs) -> Result<(), DeriveError> {
    let modes: [(&'static str, &str, &[&str], Permission); 6] = [
        (
            "HostConfig.NetworkMode",
            &host.network_mode,
            &["", "default", "bridge", "none"],
            Permission::HostNetwork,
        ),
        (
            "HostConfig.PidMode",
            &host.pid_mode,
            &["", "private"],
            Permission::HostPid,
        ),
        (
            "HostConfig.IpcMode",
            &host.ipc_mode,
            &["", "private", "shareable", "none"],
            Permission::HostIpc,
        ),
        (
            "HostConfig.UTSMode",
            &host.uts_mode,
            &["", "private"],
            Permission::HostUts,
        ),
        (
            "HostConfig.UsernsMode",
            &host.userns_mode,
            &["", "private"],
            Permission::HostUserns,
        ),
        (
            "HostConfig.CgroupnsMode",
            &host.cgroupns_mode,
            &["", "private"],
            Permission::HostCgroupns,
        ),
    ];
    for (name, mode, private, permission) in modes {
        if mode == "host" {
            needs.flag(permission);
        } else if !private.contains(&mode) {
            return Err(field(name, format!("mode {mode:?} is not supported")));
        }
    }
    Ok(())
}

/// `SecurityOpt`, split as the engine splits it (at the first `=` or
/// `:`). Options the engine would not accept are refused here too.
fn security_options(options: &[String], needs: &mut Needs) -> Result<(), DeriveError> {
    for option in options {
        let (key, value) = match option.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true" | "false")) => {}
            ("seccomp", Some("unconfined")) => needs.flag(Permission::SeccompUnconfined),
            ("seccomp", Some(json)) if json.trim_start().starts_with('{') => {
                needs.flag(Permission::SeccompProfile)
            }
            ("apparmor", Some("unconfined")) => needs.flag(Permission::ApparmorUnconfined),
            // moat's hosts have no AppArmor or SELinux: the engine accepts
            // and ignores other profiles and labels, as dockerd does there.
            ("apparmor", Some(_)) | ("label", Some(_)) => {}
            ("systempaths", Some("unconfined")) => needs.flag(Permission::SystempathsUnconfined),
            _ => {
                return Err(field(
                    "HostConfig.SecurityOpt",
                    format!("unsupported security option {option:?}"),
                ));
            }
        }
    }
    Ok(())
}

fn devices(devices: &[DeviceMapping], needs: &mut Needs) -> Result<(), DeriveError> {
    for device in devices {
        let path = hostpath::normalize(&device.path_on_host)
            .map_err(|e| field("HostConfig.Devices", e))?;
        needs.push(Permission::HostDevice, path);
    }
    Ok(())
}

/// `SRC:DST[:OPTS]`, split as the engine splits it: a `SRC` starting with
/// `/` is a host path, anything else a volume name.
fn binds(binds: &[String], needs: &mut Needs) -> Result<(), DeriveError> {
    const FIELD: &str = "HostConfig.Binds";
    for bind in binds {
        let parts: Vec<&str> = bind.split(':').collect();
        let src = match parts.as_slice() {
            [src, _] | [src, _, _] => *src,
            _ => {
                return Err(field(
                    FIELD,
                    format!("{bind:?} is not SOURCE:TARGET[:OPTIONS]"),
                ));
            }
        };
        if src.starts_with('/') {
            needs.push(
                Permission::HostBind,
                hostpath::normalize(src).map_err(|e| field(FIELD, e))?,
            );
        } else if src.is_empty() {
            return Err(field(FIELD, format!("{bind:?} has no source")));
        } else {
            needs.push(Permission::VolumeUse, src);
        }
    }
    Ok(())
}

/// `Mounts`: `bind` sources are host paths, `volume` sources volume names
/// (an empty one is an anonymous volume, the container's own), `tmpfs`
/// needs nothing. A volume mount that brings its own driver configuration
/// is a volume creation in disguise and is judged as one.
fn mounts(host: &HostConfig, extra: &[ExtraMount], needs: &mut Needs) -> Result<(), DeriveError> {
    const FIELD: &str = "HostConfig.Mounts";
    for (i, mount) in host.mounts.iter().enumerate() {
        match mount.r#type.as_str() {
            "bind" => {
                let path = hostpath::normalize(&mount.source).map_err(|e| field(FIELD, e))?;
                needs.push(Permission::HostBind, path);
            }
            "volume" => {
                if !mount.source.is_empty() {
                    needs.push(Permission::VolumeUse, mount.source.as_str());
                }
                if let Some(driver) = extra
                    .get(i)
                    .and_then(|m| m.volume_options.as_ref())
                    .and_then(|o| o.driver_config.as_ref())
                {
                    volume_driver(FIELD, &driver.name, &driver.options, needs)?;
                }
            }
            "tmpfs" => {}
            other => {
                return Err(field(
                    FIELD,
                    format!("mount type {other:?} is not supported (bind, volume or tmpfs)"),
                ));
            }
        }
    }
    Ok(())
}

/// A volume driver and its options: `volume.driver` when it is more than
/// a plain local volume, and for the `local` driver's `device` option the
/// host path it mounts (`o=bind`: `host.bind`; otherwise a block device:
/// `host.device`).
pub(super) fn volume_driver(
    what: &'static str,
    driver: &str,
    options: &BTreeMap<String, String>,
    needs: &mut Needs,
) -> Result<(), DeriveError> {
    let driver = if driver.is_empty() { "local" } else { driver };
    if driver != "local" || !options.is_empty() {
        needs.push(Permission::VolumeDriver, driver);
    }
    if let Some(device) = options.get("device").filter(|d| d.starts_with('/')) {
        let path = hostpath::normalize(device).map_err(|e| field(what, e))?;
        let bind = options.get("o").is_some_and(|o| {
            o.split(',')
                .any(|opt| opt.trim() == "bind" || opt.trim() == "rbind")
        });
        let permission = if bind {
            Permission::HostBind
        } else {
            Permission::HostDevice
        };
        needs.push(permission, path);
    }
    Ok(())
}

/// `PortBindings`: each host port below 1024 (`""` and `0` pick a free
/// high port), in port order. `HostPort` may be a range, `8000-8010`.
fn ports(
    bindings: &BTreeMap<String, Option<Vec<PortBinding>>>,
    needs: &mut Needs,
) -> Result<(), DeriveError> {
    const FIELD: &str = "HostConfig.PortBindings";
    // A bitmap, not a list: a body may repeat `1-1023` many times over.
    const PRIVILEGED: usize = 1024;
    let mut privileged = [false; PRIVILEGED];
    for binding in bindings.values().flatten().flatten() {
        let host_port = binding.host_port.trim();
        if host_port.is_empty() {
            continue;
        }
        let bad = || {
            field(
                FIELD,
                format!("{host_port:?} is not a port or a range of ports"),
            )
        };
        let (low, high) = match host_port.split_once('-') {
            Some((low, high)) => (low.parse::<u16>(), high.parse::<u16>()),
            None => (host_port.parse::<u16>(), host_port.parse::<u16>()),
        };
        let (Ok(low), Ok(high)) = (low, high) else {
            return Err(bad());
        };
        if low > high {
            return Err(bad());
        }
        let (low, high) = (usize::from(low.max(1)), usize::from(high));
        if low < PRIVILEGED {
            privileged[low..=high.min(PRIVILEGED - 1)].fill(true);
        }
    }
    for (port, _) in privileged.iter().enumerate().filter(|(_, on)| **on) {
        needs.push(Permission::HostPortPrivileged, port.to_string());
    }
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExtraConfig {
    #[serde(default, deserialize_with = "null_default")]
    host_config: ExtraHostConfig,
}

/// What `moat_api::container::HostConfig` leaves out and policy needs.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExtraHostConfig {
    /// `{"80/tcp": [{"HostIp": "", "HostPort": "80"}], "22/tcp": null}`
    #[serde(default, deserialize_with = "null_default")]
    port_bindings: BTreeMap<String, Option<Vec<PortBinding>>>,
    /// Same order as `HostConfig.Mounts`.
    #[serde(default, deserialize_with = "null_default")]
    mounts: Vec<ExtraMount>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PortBinding {
    #[serde(default, deserialize_with = "null_default")]
    host_port: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExtraMount {
    #[serde(default)]
    volume_options: Option<VolumeOptions>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct VolumeOptions {
    #[serde(default)]
    driver_config: Option<DriverConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DriverConfig {
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    options: BTreeMap<String, String>,
}

/// `container.update`'s body (Docker's `UpdateConfig`): the resources that
/// reach the host. moat_api has no type for it yet.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateConfig {
    #[serde(default, deserialize_with = "null_default")]
    cgroup_parent: String,
    #[serde(default, deserialize_with = "null_default")]
    devices: Vec<DeviceMapping>,
    #[serde(default, deserialize_with = "null_default")]
    device_cgroup_rules: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    device_requests: Vec<serde_json::Value>,
}

/// `container.update`: the action on the container, its devices and
/// cgroup parent. Device cgroup rules and device requests (GPUs) cannot be
/// judged by path and are refused.
pub(super) fn update(
    container: Option<&str>,
    body: &[u8],
    needs: &mut Needs,
) -> Result<(), DeriveError> {
    let update: UpdateConfig = parse(Action::ContainerUpdate, body)?;
    needs.action(Action::ContainerUpdate, container);
    if !update.device_cgroup_rules.is_empty() {
        return Err(field(
            "DeviceCgroupRules",
            "device cgroup rules are not supported",
        ));
    }
    if !update.device_requests.is_empty() {
        return Err(field("DeviceRequests", "device requests are not supported"));
    }
    devices(&update.devices, needs)?;
    if !update.cgroup_parent.is_empty() {
        needs.push(Permission::CgroupParent, update.cgroup_parent.as_str());
    }
    Ok(())
}
